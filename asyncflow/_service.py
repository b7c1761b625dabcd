"""Service: triggers admit runs into an engine's store, and the service runs them, bounded.

Every trigger offers its events through one admission path (:class:`_Intake`): the event's run
id is deterministic, the run is recorded with a create-if-absent in the store, and only then is
the source acknowledged. Runs admitted and not finished are bounded per trigger and in total;
a full bound pushes back on the source (a webhook answers 429, a consumer stops reading).
"""

from __future__ import annotations

import logging
import signal
import socket
from typing import TYPE_CHECKING, Any

import anyio

from ._errors import AsyncflowError, RunInputError
from ._net import listening_socket
from ._plan import compile_plan
from .events import ScheduleLag, TriggerAdmitted, TriggerDuplicate, TriggerInvalid, TriggerRejected
from .triggers._base import STOPPING, Admission, Outcome, Trigger

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, MutableMapping, Sequence
    from types import TracebackType

    from anyio.abc import TaskGroup

    from ._engine import Engine
    from ._flow import Flow
    from .stores import CheckpointStore

__all__ = ["Service"]

logger = logging.getLogger("asyncflow.service")

#: Default bound on runs admitted and not finished, across every trigger of a service.
DEFAULT_MAX_IN_FLIGHT = 100
#: Default seconds that runs in flight get to finish at shutdown before they are cancelled.
DEFAULT_GRACE = 30.0
#: Statuses of runs a service (re)starts when it opens: admitted and never finished.
_UNFINISHED = ("pending", "running")

ASGIApp = Any  # an ASGI application: (scope, receive, send) -> awaitable


class Service:
    """Runs flows in response to events: triggers admit runs, the service runs them.

    Args:
        engine: the engine that runs the flows; it needs a store (admission is a record in it).
            The service opens it on entry and closes it on exit, unless it is already open.
        triggers: where runs come from (:mod:`asyncflow.triggers`); their names must differ.
        host: the address :meth:`serve` listens on.
        port: the port :meth:`serve` listens on (0: any free one; see :attr:`url`).
        max_in_flight: the most runs admitted and not finished, all triggers together.
        grace: seconds that runs in flight get to finish at shutdown; then they are cancelled,
            which is not a failure: they resume from their checkpoints at the next start.

    ``async with service:`` starts the triggers and, first, every run of its triggers that was
    admitted and not finished (by an earlier process that stopped or died). :attr:`app` is the
    ASGI app (``/healthz``, the webhooks, what :meth:`mount` adds); mount it into your own
    Starlette or FastAPI app and enter the service in that app's lifespan, or run it with
    :meth:`serve` (``asyncflow serve module:service`` on the command line).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        triggers: Sequence[Trigger] = (),
        host: str = "127.0.0.1",
        port: int = 8080,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight={max_in_flight!r}: give a whole number of at least 1.")
        if not grace >= 0:
            raise ValueError(f"grace={grace!r}: give the seconds (0 or more) runs get at shutdown.")
        seen: dict[str, Trigger] = {}
        for trigger in triggers:
            if not isinstance(trigger, Trigger):
                raise TypeError(
                    f"{trigger!r} is not a Trigger: give Cron, Webhook, NewFiles, Queue or "
                    f"RedisStream objects from asyncflow.triggers."
                )
            if trigger.name in seen:
                raise ValueError(
                    f"Two triggers are named {trigger.name!r} ({seen[trigger.name]!r} and "
                    f"{trigger!r}): their run ids would collide. Give one of them name=..."
                )
            seen[trigger.name] = trigger
        self.engine = engine
        self.triggers: tuple[Trigger, ...] = tuple(triggers)
        self.host = host
        self.port = port
        self.grace = grace
        self._total = anyio.CapacityLimiter(max_in_flight)
        self._intakes = {t.name: _Intake(self, t) for t in self.triggers}
        self._mounts: list[tuple[str, ASGIApp]] = []
        self._app: ASGIApp | None = None
        self._accepting = False
        self._active: set[str] = set()
        self._drained = anyio.Event()
        self._runs: TaskGroup | None = None
        self._intake_tg: TaskGroup | None = None
        self._opened_engine = False
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"Service(triggers={[t.name for t in self.triggers]!r})"

    # -- the ASGI app --------------------------------------------------------------------

    @property
    def app(self) -> ASGIApp:
        """The service's ASGI app: ``/healthz``, each webhook's route, and what was mounted.

        Built on first use; it needs the ``service`` extra (Starlette).
        """
        if self._app is None:
            from ._service_app import build_app

            self._app = build_app(self, self._mounts)
        return self._app

    def mount(self, path: str, app: ASGIApp, /) -> None:
        """Serve the ASGI ``app`` under ``path`` (``"/runs"``, ``"/metrics"``) in :attr:`app`."""
        if not isinstance(path, str) or not path.startswith("/") or path == "/":
            raise ValueError(f"mount path {path!r}: give a path like '/runs' (not '/').")
        if any(p == path for p, _ in self._mounts):
            raise ValueError(f"Something is already mounted at {path!r}; choose another path.")
        self._mounts.append((path, app))
        if self._app is not None:
            from ._service_app import add_mount

            add_mount(self._app, path, app)

    @property
    def url(self) -> str:
        """Where :meth:`serve` listens (``http://host:port``), once it does."""
        if self._url is None:
            raise AsyncflowError("The service is not serving; start it with service.serve().")
        return self._url

    # -- state --------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether the service takes events: entered and not stopping."""
        return self._accepting

    async def wait_idle(self) -> None:
        """Return once no run admitted by this service is in flight (at once if none is)."""
        while self._active:
            await self._drained.wait()

    def _taking(self) -> bool:
        # A call, not an attribute: read afresh after every await (and mypy narrows no call).
        return self._accepting

    def statistics(self) -> dict[str, object]:
        """Runs in flight in total and by trigger, and whether events are taken."""
        return {
            "accepting": self._accepting,
            "in_flight": int(self._total.borrowed_tokens),
            "max_in_flight": int(self._total.total_tokens),
            "triggers": {name: i.statistics() for name, i in self._intakes.items()},
        }

    # -- lifetime -----------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        if self._runs is not None:
            raise RuntimeError("This Service is already running; a Service is entered once.")
        engine = self.engine
        self._opened_engine = engine._stack is None
        if self._opened_engine:
            await engine.__aenter__()
        try:
            if engine.store is None:
                raise AsyncflowError(
                    "A Service needs an engine with a store: admission is a record in it. "
                    "Give Engine(store='runs/') or another CheckpointStore."
                )
            runs = anyio.create_task_group()
            await runs.__aenter__()
            self._runs = runs
            self._accepting = True
            intake_tg = anyio.create_task_group()
            await intake_tg.__aenter__()
            self._intake_tg = intake_tg
            try:
                unfinished = await self._unfinished()
                # In the background: with more of them than slots, the triggers start meanwhile.
                intake_tg.start_soon(self._restart, unfinished, name="asyncflow restart")
                for trigger in self.triggers:
                    await intake_tg.start(trigger.run, self._intakes[trigger.name])
            except BaseException:
                await self._stop(cancel_runs=True)
                raise
        except BaseException:
            if self._opened_engine:
                await engine.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._stop(cancel_runs=False)
        finally:
            if self._opened_engine:
                await self.engine.__aexit__(None, None, None)

    async def _stop(self, *, cancel_runs: bool) -> None:
        """Stop intake, give runs in flight the grace period, then cancel what is left."""
        self._accepting = False
        intake_tg, self._intake_tg = self._intake_tg, None
        runs, self._runs = self._runs, None
        try:
            if intake_tg is not None:
                intake_tg.cancel_scope.cancel()
                await intake_tg.__aexit__(None, None, None)
            if runs is not None and not cancel_runs:
                with anyio.move_on_after(self.grace):
                    await self.wait_idle()
        finally:
            # Also when the block above was cancelled from outside: the runs' group is left
            # before the engine's, whatever happens.
            if runs is not None:
                if self._active:
                    logger.info(
                        "shutdown: cancelling %d runs; they resume at the next start",
                        len(self._active),
                    )
                runs.cancel_scope.cancel()
                await runs.__aexit__(None, None, None)

    async def _unfinished(self) -> list[tuple[Trigger, str]]:
        """This service's triggers' runs that were admitted and never finished."""
        store = self.engine.store
        assert store is not None
        by_prefix = {f"{t.name}@": t for t in self.triggers}
        found: list[tuple[Trigger, str]] = []
        for status in _UNFINISHED:
            async for info in store.list_runs(status=status):
                trigger = by_prefix.get(info.run_id.split("@", 1)[0] + "@")
                if trigger is not None and info.flow == trigger.flow.name:
                    found.append((trigger, info.run_id))
        return found

    async def _restart(self, runs: list[tuple[Trigger, str]]) -> None:
        """Start each of ``runs`` (a previous process's leftovers) as slots free up."""
        for trigger, run_id in runs:
            intake = self._intakes[trigger.name]
            release = await intake.acquire(wait=True)
            assert release is not None
            self._start(intake, trigger.flow, run_id, release)

    def _start(self, intake: _Intake, flow: Flow, run_id: str, release: Callable[[], None]) -> None:
        assert self._runs is not None
        if run_id in self._active:  # already running here (admitted, then listed at start)
            release()
            return
        self._active.add(run_id)
        intake.started()
        self._runs.start_soon(
            self._run, intake, flow, run_id, release, name=f"asyncflow run {run_id}"
        )

    async def _run(
        self, intake: _Intake, flow: Flow, run_id: str, release: Callable[[], None]
    ) -> None:
        try:
            await self.engine.resume(flow, run_id)
        except Exception:
            logger.exception("run %s of flow %s could not be run", run_id, flow.name)
        finally:
            self._active.discard(run_id)
            intake.finished()
            release()
            if not self._active:
                self._drained.set()
                self._drained = anyio.Event()

    # -- serving ------------------------------------------------------------------------

    async def serve(self, *, ready: Callable[[str], None] | None = None) -> None:
        """Serve :attr:`app` on ``host:port`` with the triggers running, until SIGTERM/SIGINT.

        On the signal: intake stops (webhooks answer 503), HTTP connections close, runs in
        flight get ``grace`` seconds, then the rest are cancelled (they resume at the next
        start). ``ready`` is called with the URL once the service listens.
        """

        def listening(url: str) -> None:
            self._url = url
            if ready is not None:
                ready(url)

        def stopping() -> None:
            self._accepting = False  # webhooks answer 503 while connections close

        try:
            async with self:
                await serve_asgi(self.app, self.host, self.port, ready=listening, stopping=stopping)
        finally:
            self._url = None


async def serve_asgi(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None],
    stopping: Callable[[], None] | None = None,
    signals: bool = True,
) -> None:
    """Serve ``app`` with uvicorn until SIGTERM/SIGINT (when ``signals``) or cancellation.

    ``ready`` gets the URL once it listens; ``stopping`` is called when a signal came, before
    the connections close.
    """
    import uvicorn

    sock = listening_socket(host, port)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        interface="asgi3",
        lifespan="off",
        log_config=None,  # never reconfigure the process's logging
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    shut = False
    try:
        async with anyio.create_task_group() as tg:
            await server.startup(sockets=[sock])
            if signals:
                tg.start_soon(_stop_on_signal, server, name="asyncflow signals")
            ready(
                f"http://[{host}]:{bound}"
                if sock.family == socket.AF_INET6
                else f"http://{host}:{bound}"
            )
            await server.main_loop()
            if stopping is not None:
                stopping()
            shut = True
            await server.shutdown(sockets=[sock])
            tg.cancel_scope.cancel()
    finally:
        # Cancelled from outside: the listening server must still be closed, or its accept
        # callback outlives the socket and takes the connections of the next one on its fd.
        if not shut and getattr(server, "started", False):
            server.force_exit = True
            with anyio.move_on_after(3, shield=True):
                await server.shutdown(sockets=[sock])
        sock.close()


async def _stop_on_signal(server: Any) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("%s: stopping", signal.Signals(signum).name)
            server.should_exit = True
            return


class _Intake:
    """One trigger's admission path: bound, create-if-absent, start, report."""

    def __init__(self, service: Service, trigger: Trigger) -> None:
        self._service = service
        self._trigger = trigger
        own = trigger.max_in_flight
        self._own = anyio.CapacityLimiter(own) if own is not None else None
        self._counts: MutableMapping[str, int] = dict.fromkeys(Outcome, 0)
        self._running = 0
        self._idle = anyio.Event()
        self._idle.set()

    @property
    def accepting(self) -> bool:
        return self._service._accepting

    @property
    def in_flight(self) -> int:
        return self._running

    async def wait_idle(self) -> None:
        while self._running:
            await self._idle.wait()

    def started(self) -> None:
        """One more run of this trigger is in flight here."""
        if not self._running:
            self._idle = anyio.Event()
        self._running += 1

    def finished(self) -> None:
        """One run of this trigger ended."""
        self._running -= 1
        if not self._running:
            self._idle.set()

    @property
    def store(self) -> CheckpointStore:
        store = self._service.engine.store
        assert store is not None  # checked when the service is entered
        return store

    def report_lag(self, run_id: str, scheduled: float, lag: float, /) -> None:
        emit = self._service.engine._emit
        if emit:
            t = self._trigger
            now = self._service.engine._shared.clock()
            emit(ScheduleLag(t.name, t.flow.name, run_id, now, scheduled, lag))

    def refuse(self, key: str, outcome: Outcome, reason: str, /) -> Admission:
        return self._report(Admission(outcome, self._trigger.run_id(key), reason))

    def statistics(self) -> dict[str, int]:
        return {"in_flight": self._running, **{str(k): v for k, v in self._counts.items()}}

    async def acquire(self, *, wait: bool) -> Callable[[], None] | None:
        """Take one slot of this trigger and one of the service; ``None`` when full (nowait)."""
        token = object()
        limiters = [x for x in (self._own, self._service._total) if x is not None]
        taken: list[anyio.CapacityLimiter] = []
        try:
            for limiter in limiters:
                if wait:
                    await limiter.acquire_on_behalf_of(token)
                else:
                    limiter.acquire_on_behalf_of_nowait(token)
                taken.append(limiter)
        except anyio.WouldBlock:
            for limiter in taken:
                limiter.release_on_behalf_of(token)
            return None
        except BaseException:
            for limiter in taken:
                limiter.release_on_behalf_of(token)
            raise

        def release() -> None:
            for limiter in taken:
                limiter.release_on_behalf_of(token)

        return release

    async def admit(
        self,
        key: str,
        inputs: Mapping[str, object],
        /,
        *,
        wait: bool = True,
        traceparent: str | None = None,
    ) -> Admission:
        trigger = self._trigger
        run_id = trigger.run_id(key)
        if not self._service._taking():
            return self._report(Admission(Outcome.REJECTED, run_id, STOPPING))
        try:
            compile_plan(trigger.flow).check_inputs(inputs)
        except RunInputError as exc:
            return self._report(Admission(Outcome.INVALID, run_id, str(exc)))
        release = await self.acquire(wait=wait)
        if release is None:
            return self._report(
                Admission(Outcome.REJECTED, run_id, "too many runs in flight: retry later")
            )
        try:
            values: dict[str, Any] = dict(inputs)
            created = await self._service.engine.admit(
                trigger.flow, run_id=run_id, traceparent=traceparent, **values
            )
        except RunInputError as exc:
            release()
            return self._report(Admission(Outcome.INVALID, run_id, str(exc)))
        except BaseException:
            release()
            raise
        if not created:
            release()
            return self._report(Admission(Outcome.DUPLICATE, run_id))
        if not self._service._taking():  # stopping while the record was written: runs next start
            release()
            return self._report(Admission(Outcome.ADMITTED, run_id))
        self._service._start(self, trigger.flow, run_id, release)
        return self._report(Admission(Outcome.ADMITTED, run_id))

    def _report(self, admission: Admission) -> Admission:
        self._counts[admission.outcome] += 1
        emit = self._service.engine._emit
        if emit:
            t, flow, rid = self._trigger.name, self._trigger.flow.name, admission.run_id
            now = self._service.engine._shared.clock()
            outcome = admission.outcome
            if outcome is Outcome.ADMITTED:
                emit(TriggerAdmitted(t, flow, rid, now))
            elif outcome is Outcome.DUPLICATE:
                emit(TriggerDuplicate(t, flow, rid, now))
            elif outcome is Outcome.REJECTED:
                emit(TriggerRejected(t, flow, rid, now, admission.reason))
            else:
                emit(TriggerInvalid(t, flow, rid, now, admission.reason))
        return admission
