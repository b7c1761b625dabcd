"""The runs page as a Starlette app: ``runs_app(store)``, read-only, rendered from the store."""

from __future__ import annotations

import datetime as dt
import difflib
import heapq
import logging
from contextlib import asynccontextmanager
from html import escape
from typing import TYPE_CHECKING

import anyio
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from asyncflow._cli import CORRUPT, UsageError, _run_files, parse_since
from asyncflow._details import recorded_steps, waits_for
from asyncflow._errors import CheckpointError
from asyncflow._flow import Flow
from asyncflow._plan import compile_plan
from asyncflow._ref import FlowRef
from asyncflow.stores import FileStore

from ._render import (
    StepRow,
    badge,
    batches_html,
    dag_svg,
    error_html,
    gantt_svg,
    hosts_html,
    inputs_html,
    page,
    table,
    when,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

    from starlette.requests import Request

    from asyncflow.stores import CheckpointStore, RunCheckpoints, RunInfo

    from ._live import LiveView, RunView

__all__ = ["MAX_ROWS", "runs_app"]

#: The most runs the table shows (the newest first); filters narrow it down.
MAX_ROWS = 500
_STATUSES = ("pending", "running", "succeeded", "failed", CORRUPT)
_LOGGER = logging.getLogger("asyncflow")


def runs_app(
    store: CheckpointStore,
    *,
    live: LiveView | None = None,
    flows: Iterable[Flow | str] = (),
    refresh: float = 5.0,
    open_store: bool = False,
    title: str = "asyncflow runs",
) -> Starlette:
    """The runs page: an ASGI app to serve on its own or mount (the Service mounts it at /runs).

    Pages: ``/`` the runs table (filters ``?flow=&status=&since=``, ``since`` as for
    ``asyncflow runs``: an ISO time or ``30m``, ``2h``, ``1d``) and, with ``live``, each host's
    circuit, each batch's progress and the runs running now; ``/run/{run_id}`` a run's inputs,
    step table, timeline, graph coloured by status, and errors with their cause chains.

    Args:
        store: where runs are read from. It must be open while the app serves: an engine's
            store is while the engine is; or pass ``open_store=True`` to open it in the app's
            lifespan (only when the app is served on its own: a mounted app's lifespan is not
            run).
        live: a :class:`~asyncflow.web.LiveView` attached to the engine doing the work, for
            circuits, batches and running steps; without it the page shows only the store.
        flows: flows (or ``module:attribute`` references) whose graph is drawn for their runs;
            a run of another flow is drawn from the steps its manifest lists.
        refresh: seconds between reloads of a page showing something that moves.
        open_store: open ``store`` for the app's lifespan.
        title: the pages' heading.

    Raises:
        FlowRefError: a reference in ``flows`` cannot be imported.
        ValueError: ``refresh`` is not positive.
    """
    if not refresh > 0:
        raise ValueError(f"refresh={refresh!r}: give the seconds between reloads, above 0.")
    known: dict[str, Flow] = {}
    for f in flows:
        flow = f if isinstance(f, Flow) else FlowRef.parse(f).load()
        known[flow.name] = flow
    view = _Pages(store, live, known, refresh, title)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not open_store:
            yield
            return
        async with store.open():
            yield

    return Starlette(
        routes=[
            Route("/", view.index, name="runs"),
            Route("/run/{run_id}", view.run, name="run"),
        ],
        lifespan=lifespan,
    )


class _Pages:
    """The page handlers over one store."""

    def __init__(
        self,
        store: CheckpointStore,
        live: LiveView | None,
        flows: Mapping[str, Flow],
        refresh: float,
        title: str,
    ) -> None:
        self._store = store
        self._live = live
        self._flows = flows
        self._refresh = refresh
        self._title = title

    # -- the runs table ------------------------------------------------------------------------

    async def index(self, request: Request) -> HTMLResponse:
        q = request.query_params
        flow = q.get("flow") or None
        status = q.get("status") or None
        since_text = q.get("since") or ""
        problem = ""
        since: str | None = None
        if status is not None and status not in _STATUSES:
            problem = f"status {status!r}: choose one of {', '.join(_STATUSES)}."
            status = None
        if since_text:
            try:
                since = parse_since(since_text).astimezone(dt.UTC).isoformat()
            except UsageError as exc:
                problem = str(exc)
        try:
            runs, total, corrupt = await self._listing(flow, status, since)
        except CheckpointError as exc:
            return self._failed(exc)
        rows = [
            (
                f'<a href="{request.url_for("run", run_id=r.run_id)}">{escape(r.run_id)}</a>',
                badge(r.status),
                escape(r.flow),
                when(r.created_at),
                when(r.updated_at),
                escape(", ".join(r.failed_steps)) or "-",
            )
            for r in runs
        ]
        rows += [
            (
                escape(run_id),
                badge(CORRUPT),
                "-",
                "-",
                "-",
                f"unreadable: <code>{escape(path)}</code>",
            )
            for run_id, path in corrupt
        ]
        shown = f"{len(runs)} of {total}" if total > len(runs) else f"{total}"
        body = [
            self._filters(flow, status, since_text),
            f'<p class="err">{escape(problem)}</p>' if problem else "",
            f"<p>{shown} run(s){' (newest first)' if total else ''}</p>",
            table(
                ("Run", "Status", "Flow", "Created", "Updated", "Failed steps"),
                rows,
                empty="No runs match." if (flow or status or since) else "No runs yet.",
            ),
        ]
        moving = any(r.status == "running" for r in runs)
        if self._live is not None:
            body.append(self._live_html(request))
            moving = True
        return HTMLResponse(
            page(self._title, "".join(body), refresh=self._refresh if moving else None)
        )

    async def _listing(
        self, flow: str | None, status: str | None, since: str | None
    ) -> tuple[list[RunInfo], int, list[tuple[str, str]]]:
        """The newest MAX_ROWS runs that match, how many match, and corrupt run files."""
        store = self._store
        newest: list[tuple[str, str, RunInfo]] = []
        total = 0
        listed: set[str] = set()
        if status != CORRUPT:
            async for info in store.list_runs(flow=flow, status=status, since=since):
                total += 1
                listed.add(info.run_id)
                item = (info.created_at, info.run_id, info)
                if len(newest) < MAX_ROWS:
                    heapq.heappush(newest, item)
                else:
                    heapq.heappushpop(newest, item)
        corrupt: list[tuple[str, str]] = []
        if (
            isinstance(store, FileStore)
            and flow is None
            and since is None
            and status
            in (
                None,
                CORRUPT,
            )
        ):
            if status == CORRUPT:
                listed = {info.run_id async for info in store.list_runs()}
            files = await anyio.to_thread.run_sync(_run_files, store.directory)
            corrupt = [(i, str(p)) for i, p in files.items() if i not in listed]
            total += len(corrupt)
        runs = [info for _, _, info in sorted(newest, reverse=True)]
        return runs, total, corrupt

    def _filters(self, flow: str | None, status: str | None, since: str) -> str:
        options = "".join(
            f'<option value="{s}"{" selected" if s == status else ""}>{s}</option>'
            for s in ("", *_STATUSES)
        )
        return (
            '<form method="get">'
            f'<label>Flow <input name="flow" value="{escape(flow or "")}"></label>'
            f'<label>Status <select name="status">{options}</select></label>'
            f'<label>Updated since <input name="since" placeholder="1h, 2d or an ISO time" '
            f'value="{escape(since)}"></label><button type="submit">Filter</button></form>'
        )

    def _live_html(self, request: Request) -> str:
        live = self._live
        assert live is not None
        running = [
            (
                f'<a href="{request.url_for("run", run_id=run_id)}">{escape(run_id)}</a>',
                escape(r.flow),
                when(r.started),
                escape(", ".join(n for n, s in r.steps.items() if s.status == "running")) or "-",
            )
            for run_id, r in reversed(list(live.runs.items()))
        ][:MAX_ROWS]
        return (
            "<h2>Batches</h2>"
            + batches_html(live.batches)
            + "<h2>Running now</h2>"
            + table(("Run", "Flow", "Started", "Steps running"), running, empty="Nothing runs.")
            + "<h2>Hosts</h2>"
            + hosts_html(live.hosts)
        )

    # -- one run ---------------------------------------------------------------------------

    async def run(self, request: Request) -> HTMLResponse:
        run_id = request.path_params["run_id"]
        try:
            kept = await self._store.load_run(run_id)
        except CheckpointError as exc:
            return self._failed(exc)
        live_run = self._live.runs.get(run_id) if self._live is not None else None
        m = kept.manifest
        if m is None and not kept.steps and not kept.discarded and live_run is None:
            return await self._unknown(request, run_id)
        status = m.status if m is not None else ("running" if live_run else "unknown")
        steps = self._steps(kept, live_run, running=status == "running")
        back = f'<p><a href="{request.url_for("runs")}">&larr; all runs</a></p>'
        facts = [("Status", badge(status))]
        if m is not None:
            facts += [
                ("Flow", escape(m.flow)),
                ("Created", when(m.created_at)),
                ("Updated", when(m.updated_at)),
            ]
        body = [
            back,
            table(("", ""), facts, empty=""),
            "<h2>Inputs</h2>",
            inputs_html(m.inputs) if m is not None else '<p class="muted">Not kept.</p>',
            "<h2>Steps</h2>",
            table(
                ("Step", "Status", "Attempts", "Started", "Duration", "Error"),
                (
                    (
                        escape(s.name),
                        badge(s.status),
                        "-" if s.attempts is None else str(s.attempts),
                        when(s.started_at),
                        "-" if s.duration is None else f"{s.duration:.3f} s",
                        error_html(s.error),
                    )
                    for s in steps
                ),
                empty="No steps known.",
            ),
            "<h2>Timeline</h2>",
            gantt_svg(steps),
            "<h2>Graph</h2>",
            dag_svg(steps),
        ]
        failed = [s for s in steps if s.error]
        if failed:
            body.append("<h2>Errors</h2>")
            body += [f"<h3>{escape(s.name)}</h3>{error_html(s.error)}" for s in failed]
        for d in kept.discarded:
            what = f"step {d.step!r}" if d.step is not None else "the run file"
            body.append(
                f'<p class="err">Discarded {escape(what)}: {escape(d.reason)} '
                f"(kept in <code>{escape(d.path or 'nothing')}</code>)</p>"
            )
        if m is not None and status == "running" and not recorded_steps(m.details):
            body.append(
                '<p class="muted">Step details are written when the run ends; until then the '
                "steps shown are those checkpointed"
                + (" and those the live view has seen." if live_run else ".")
                + "</p>"
            )
        refresh = self._refresh if status in ("running", "pending") else None
        return HTMLResponse(page(f"run {run_id}", "".join(body), refresh=refresh))

    def _steps(
        self, kept: RunCheckpoints, live_run: RunView | None, *, running: bool
    ) -> list[StepRow]:
        """Each step of the run, in the flow's order when it is known, with what is known."""
        m = kept.manifest
        recorded = recorded_steps(m.details) if m is not None else {}
        flow = self._flows.get(m.flow) if m is not None else None
        order: list[tuple[str, tuple[str, ...]]]
        if flow is not None:
            plan = compile_plan(flow)
            after = waits_for(plan)
            order = [(s.name, tuple(a)) for s, a in zip(plan.steps, after, strict=True)]
        else:
            order = [(name, _after(d)) for name, d in recorded.items()]
            seen = {name for name, _ in order}
            for name in [*kept.steps, *(live_run.steps if live_run else ())]:
                if name not in seen:
                    seen.add(name)
                    order.append((name, ()))
        rows = []
        for name, after_names in order:
            d = recorded.get(name)
            if d is not None:
                rows.append(_recorded(name, after_names, d))
                continue
            s = live_run.steps.get(name) if live_run is not None else None
            if s is not None:
                done = s.finished if s.finished is not None else None
                rows.append(
                    StepRow(
                        name,
                        s.status,
                        s.attempts or None,
                        after_names,
                        s.started,
                        done,
                        None if done is None or s.started is None else done - s.started,
                    )
                )
            elif name in kept.steps:
                rows.append(StepRow(name, "succeeded", after=after_names))
            elif m is not None and name in m.failed_steps:
                rows.append(StepRow(name, "failed", after=after_names))
            else:
                rows.append(StepRow(name, "pending" if running else "unknown", after=after_names))
        return rows

    async def _unknown(self, request: Request, run_id: str) -> HTMLResponse:
        try:
            ids = [info.run_id async for info in self._store.list_runs()]
        except CheckpointError as exc:
            return self._failed(exc)
        near = [i for i in ids if i.startswith(run_id)][:5]
        near += [
            i for i in difflib.get_close_matches(run_id, ids, n=5, cutoff=0.5) if i not in near
        ]
        links = ", ".join(
            f'<a href="{request.url_for("run", run_id=i)}">{escape(i)}</a>' for i in near[:5]
        )
        hint = f"Did you mean {links}?" if links else "See the list of runs."
        body = (
            f'<p class="err">There is no run {escape(repr(run_id))} in this store. {hint}</p>'
            f'<p><a href="{request.url_for("runs")}">&larr; all runs</a></p>'
        )
        return HTMLResponse(page("unknown run", body), status_code=404)

    def _failed(self, exc: CheckpointError) -> HTMLResponse:
        _LOGGER.warning("runs page: the store failed: %s", exc)
        body = f'<p class="err">The store cannot be read: {escape(str(exc))}</p>'
        return HTMLResponse(page(self._title, body), status_code=503)


def _after(d: Mapping[str, object]) -> tuple[str, ...]:
    after = d.get("after")
    return tuple(str(a) for a in after) if isinstance(after, list) else ()


def _seconds(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def _recorded(name: str, after: tuple[str, ...], d: Mapping[str, object]) -> StepRow:
    """A step as the final manifest's details recorded it."""
    attempts = d.get("attempts")
    duration = d.get("duration")
    error = d.get("error")
    return StepRow(
        name,
        str(d.get("status", "unknown")),
        attempts if isinstance(attempts, int) else None,
        after,
        _seconds(d.get("started_at")),
        _seconds(d.get("finished_at")),
        float(duration) if isinstance(duration, int | float) else None,
        error if isinstance(error, dict) else None,
    )
