"""The command line over the public API: run flows, and inspect and forget the runs a store keeps.

::

    asyncflow run    path/to/pipeline.py:flow  path=a.txt retries=3   # inputs as key=value
    asyncflow run    path/to/pipeline.py:flow  --input path=a.txt -i 'tags=["x"]'  # the same
    asyncflow map    path/to/pipeline.py:flow  inputs.jsonl --out results.jsonl
    asyncflow resume path/to/pipeline.py:flow doc-42
    asyncflow runs   --status failed --since 1h      # the runs in the store (--json: JSON lines)
    asyncflow show   doc-42                          # a run's inputs and steps
    asyncflow forget doc-42                          # delete a run's checkpoints
    asyncflow graph  path/to/pipeline.py:flow --format mermaid
    asyncflow web    --port 8000 --flow path/to/pipeline.py:flow  # the runs page (extra [web])
    asyncflow serve  path/to/service.py:service --port 8080   # until SIGTERM or SIGINT
    asyncflow store migrate postgresql://host/db     # print the schema a SQL store lacks (--apply)
    asyncflow store prune --finished-before 30d      # delete the runs that ended 30 days ago

``TARGET`` is a :class:`~asyncflow.FlowRef`: ``module:attribute`` or ``file.py:attribute``
naming a :class:`Flow`. Values of
``key=value`` inputs (as words, or each after ``--input``/``-i``) are read as JSON when they
parse (``n=3``, ``tags=["a"]``, ``ok=true``), else as text (``path=a.txt``; ``id='"7"'`` for the
text ``7``). ``map`` reads its JSON lines as the batch asks for them, never the whole file first.
``run`` and ``resume`` write ``asyncflow: run <id>`` on stderr as the run starts (so a run that
is killed has told its id), then its JSON report on stdout. The store is ``--store DIR``, a
FileStore folder (``.asyncflow`` by default, as for the engine), or any store with
``--store-ref module:attribute`` naming a :class:`~asyncflow.stores.CheckpointStore` (or a
function returning one).
Exit status: 0 when the run succeeded, 1 when it failed, 2 for bad usage: a malformed target
or input, a module that is missing or fails to import, a flow that is not valid, an unknown
run, a path that is not a store; 3 when the store failed (it cannot be read or written, or
refuses). Every error is one line on stderr, ``asyncflow: error: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import logging
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO, TypeVar

import anyio

from . import __version__
from ._checkpointing import FORGOTTEN, NOT_TAKEN_DIGEST, TAKEN_DIGEST, forget
from ._details import recorded_steps
from ._engine import DEFAULT_CHECKPOINT_DIR, Engine
from ._errors import AsyncflowError, CheckpointError
from ._hooks import validate_traceparent
from ._plan import RESERVED_INPUTS
from ._ref import FlowRef, _import, _import_file
from ._status import StepStatus
from .events import RunStarted
from .stores import FileStore, prune_runs
from .stores._file.disk import JOURNAL_DIR
from .stores._file.runfiles import list_run_ids
from .stores._retention import FINISHED

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

    from ._flow import Flow
    from ._result import RunResult
    from .events import Event
    from .stores import CheckpointStore, RunInfo, StepCheckpoint

__all__ = ["main"]

T = TypeVar("T")

#: How deeply a key=value input may nest lists and objects.
MAX_INPUT_DEPTH = 100


class UsageError(Exception):
    """The command line is wrong; the message says how."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"asyncflow: error: {message} (see {self.prog} --help)\n")


def parse_inputs(pairs: Sequence[str]) -> dict[str, object]:
    """``key=value`` words to run inputs; values as JSON when they parse, else as text.

    Raises:
        UsageError: a word is not ``name=value``, a name is given twice or is an option of the
            run (``run_id``, ``fail_fast``), or a value is nested too deeply.
    """
    inputs: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"{pair!r}: give inputs as name=value, e.g. path=a.txt or n=3.")
        if key in RESERVED_INPUTS:
            option = "--" + key.replace("_", "-")
            raise UsageError(f"{pair!r}: {key} is not a run input; use {option}.")
        if key in inputs:
            raise UsageError(f"Input {key!r} is given twice; give it once.")
        inputs[key] = _value(key, raw)
    return inputs


def _value(key: str, raw: str) -> object:
    too_deep = UsageError(
        f"Input {key!r} is nested more than {MAX_INPUT_DEPTH} levels deep; the command line "
        f"takes flatter values (pass a path to a file for such data)."
    )
    try:
        value = json.loads(raw)
    except RecursionError as exc:
        raise too_deep from exc
    except ValueError:
        return raw
    # Iteratively: a value just under json's own limit would overflow later recursive code.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > MAX_INPUT_DEPTH:
                raise too_deep
            stack.extend(
                (v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)
            )
    return value


def report(result: RunResult) -> dict[str, object]:
    """A JSON-friendly account of a run: status and each step's status, attempts and error."""
    return {
        "run_id": result.run_id,
        "flow": result.flow,
        "status": result.status.value,
        "steps": {
            name: {
                "status": step.status.value,
                "attempts": step.attempts,
                **({"error": f"{type(step.error).__name__}: {step.error}"} if step.error else {}),
            }
            for name, step in result.steps.items()
        },
    }


class StoreUnusable(Exception):
    """The store failed or refused; the message says what happened (exit status 3)."""


def _tell_run_id(event: Event) -> None:
    """Write a run's id on stderr as it starts: a run killed later has still told its id."""
    if isinstance(event, RunStarted):
        print(f"asyncflow: run {event.run_id}", file=sys.stderr, flush=True)


def _engine(args: argparse.Namespace, *, tell: bool) -> Engine:
    store: str | CheckpointStore | None = None if args.no_store else args.store
    if args.store_ref is not None and not args.no_store:
        store = args.chosen_store
    return Engine(store=store, observers=[_tell_run_id] if tell else ())


def _fail_fast(args: argparse.Namespace) -> bool | None:
    return True if args.fail_fast else None  # None: the engine's default


async def _run(flow: Flow, args: argparse.Namespace, inputs: dict[str, object]) -> RunResult:
    async with _engine(args, tell=True) as engine:
        fail_fast = _fail_fast(args)
        traceparent = args.traceparent
        if args.command == "resume":
            return await engine.resume(
                flow, args.run_id, fail_fast=fail_fast, traceparent=traceparent
            )
        return await engine.run(
            flow, run_id=args.run_id, fail_fast=fail_fast, traceparent=traceparent, **inputs
        )


#: How much of the inputs file ``map`` reads at a time: it never holds the whole file.
READ_CHUNK = 1 << 16


async def read_batch(path: str) -> AsyncIterator[dict[str, object] | tuple[str, dict[str, object]]]:
    """The inputs of ``map``, read as the batch asks for them: one JSON object per line.

    Blank lines are skipped. A ``"run_id"`` key in a line is that run's id, not an input. The
    file is read a chunk at a time on a worker thread, so memory holds the runs in flight and
    one chunk, whatever the file's size.

    Raises:
        UsageError: the file cannot be read, or a line is not a JSON object (the runs of the
            lines before it have run by then).
    """
    try:
        f = await anyio.open_file(path, "rb")
    except OSError as exc:
        raise UsageError(f"Cannot read the inputs {path!r}: {exc}.") from exc
    async with f:
        n = 0
        tail = b""
        while True:
            try:
                chunk = await f.read1(READ_CHUNK)  # what is there: a pipe may have less
            except OSError as exc:
                raise UsageError(f"Cannot read the inputs {path!r}: {exc}.") from exc
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop() if chunk else b""
            for raw in lines:
                n += 1
                if raw.strip():
                    yield _batch_line(path, n, raw)
            if not chunk:
                return


def _batch_line(path: str, n: int, raw: bytes) -> dict[str, object] | tuple[str, dict[str, object]]:
    try:
        inputs = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}, line {n}: not UTF-8 text ({exc}).") from exc
    except (ValueError, RecursionError):
        inputs = None
    if not isinstance(inputs, dict):
        raise UsageError(
            f"{path}, line {n}: give each run's inputs as a JSON object on one line, e.g. "
            f'{{"path": "a.txt", "n": 3}}. The runs of the lines before it have run.'
        )
    run_id = inputs.pop("run_id", None)
    if run_id is not None and not isinstance(run_id, str):
        raise UsageError(f'{path}, line {n}: "run_id" must be a string.')
    return inputs if run_id is None else (run_id, inputs)


async def _map(flow: Flow, args: argparse.Namespace, out: TextIO) -> int:
    """Run the batch, writing each run's report as a JSON line as it finishes; count failures."""
    batch = read_batch(args.inputs)
    failed = 0
    async with _engine(args, tell=False) as engine:
        runs = engine.map(
            flow, batch, concurrency=args.concurrency, fail_fast=_fail_fast(args), progress=None
        )
        async for result in runs:
            failed += not result.ok
            out.write(json.dumps(report(result)) + "\n")
    return failed


# --- inspecting a store ---------------------------------------------------------------------

#: What a run file that cannot be read shows as in ``runs``.
CORRUPT = "corrupt"
_ASIDE = re.compile(r"(.+)\.json\.corrupt-\d+")
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None, *, option: str = "--since") -> datetime:
    """Read ``--since``: an ISO 8601 time (UTC unless it says), or a time ago (``30m``, ``1d``).

    Ago is a whole number of ``s``, ``m``, ``h``, ``d`` or ``w``.

    Raises:
        UsageError: it is neither.
    """
    m = _RELATIVE.fullmatch(text.strip())
    if m is not None:
        ago = timedelta(**{_UNITS[m[2]]: int(m[1])})
        return (now or datetime.now(UTC)) - ago
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: give an ISO time (2026-01-31T12:00) or a time ago (30m, 2h, 1d)."
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


#: What a --store-ref must name: an object with the CheckpointStore methods (or a maker of one).
_STORE_METHODS = ("open", "load_run", "save_manifest", "save_step", "list_runs", "delete_run")


def referenced_store(text: str) -> CheckpointStore:
    """The store ``--store-ref module:attribute`` names: a store, or a function returning one.

    Raises:
        UsageError: the text is malformed, or it names something else.
        FlowRefError: the module is missing or fails to import.
    """
    where, sep, attr = text.rpartition(":")
    if not sep or not where or not attr:
        raise UsageError(
            f"--store-ref {text!r}: give the store as module:attribute or path/to/file.py:attribute."
        )
    module = _import_file(where) if FlowRef(where, attr).is_file else _import(where)
    value = getattr(module, attr, None)
    if callable(value) and not all(hasattr(value, m) for m in _STORE_METHODS):
        value = value()
    if not all(hasattr(value, m) for m in _STORE_METHODS):
        raise UsageError(
            f"--store-ref {text!r} is {type(value).__name__}, not a CheckpointStore (with "
            f"{', '.join(_STORE_METHODS)}) nor a function returning one."
        )
    store: CheckpointStore = value  # type: ignore[assignment]
    return store


def _named(store: CheckpointStore) -> str:
    return str(store.directory) if isinstance(store, FileStore) else repr(store)


def _store(args: argparse.Namespace) -> CheckpointStore:
    """The store of an inspecting command: ``--store-ref``'s, or the FileStore in ``--store``.

    A folder must exist and be a store already: inspecting never makes one.

    Raises:
        UsageError: there is nothing there, or it is not a store.
    """
    if args.store_ref is not None:
        return args.chosen_store  # type: ignore[no-any-return]
    directory: str = args.store
    path = Path(directory)
    if not path.exists():
        raise UsageError(
            f"There is no store at {directory!r} (no run has saved checkpoints there); give the "
            f"folder runs were saved in with --store DIR."
        )
    if not path.is_dir() or not (path / JOURNAL_DIR).is_dir():
        raise UsageError(
            f"{directory!r} is not an asyncflow store (a folder with a {JOURNAL_DIR} folder in "
            f"it); give the folder runs were saved in with --store DIR."
        )
    return FileStore(path)


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


async def _within(store: CheckpointStore, fn: Callable[[], Awaitable[T]]) -> T:
    """``await fn()`` with the store open; what it raises is raised after the store's block.

    So it is not wrapped in an ExceptionGroup by the task group the store's block runs.
    """
    failed: Exception | None = None
    async with store.open():
        try:
            result = await fn()
        except Exception as exc:
            failed = exc
    if failed is not None:
        raise failed
    return result


async def _listing(
    store: CheckpointStore,
    *,
    flow: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
) -> list[dict[str, object]]:
    """The runs in the store as JSON-ready rows, by creation time; unreadable files as corrupt.

    The filters are the store's (``list_runs``); with any, no corrupt file is listed.
    """
    rows: list[dict[str, object]] = []
    after = None if since is None else _iso_ms(since)
    unfiltered = flow is None and status is None and since is None

    async def read() -> tuple[list[RunInfo], dict[str, Path]]:
        # Listed below as corrupt: the store's warning that it left them out would repeat it.
        _LOGGER.addFilter(_left_out)
        try:
            infos = [info async for info in store.list_runs(flow=flow, status=status, since=after)]
        finally:
            _LOGGER.removeFilter(_left_out)
        if not isinstance(store, FileStore) or not unfiltered:
            return infos, {}
        return infos, await anyio.to_thread.run_sync(_run_files, store.directory)

    infos, on_disk = await _within(store, read)
    listed = {info.run_id for info in infos}
    for info in sorted(infos, key=lambda i: (i.created_at, i.run_id)):
        rows.append(
            {
                "run_id": info.run_id,
                "status": info.status,
                "flow": info.flow,
                "created_at": info.created_at,
                "updated_at": info.updated_at,
                "failed_steps": list(info.failed_steps),
            }
        )
    for run_id, path in on_disk.items():
        if run_id not in listed:
            rows.append({"run_id": run_id, "status": CORRUPT, "file": str(path)})
    return rows


_LOGGER = logging.getLogger("asyncflow")


def _iso_ms(when: datetime) -> str:
    """``when`` as the engine writes manifest times (UTC, to the millisecond), for comparing."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+00:00"


def _left_out(record: logging.LogRecord) -> bool:
    return "left out of the listing" not in str(record.msg)


def _run_files(root: Path) -> dict[str, Path]:
    """Each run id with a file in a FileStore folder: its run file, else a copy set aside.

    list_runs() leaves out the runs it cannot read: a run file that is unusable (left in place
    until the run is loaded), or one that loading moved aside to ``<run_id>.json.corrupt-<n>``.
    """
    files = {run_id: root / f"{run_id}.json" for run_id in list_run_ids(root)}
    for name in sorted(p.name for p in root.iterdir()):
        m = _ASIDE.fullmatch(name)
        if m is not None:
            files.setdefault(m[1], root / name)
    return files


def _matches(row: dict[str, object], args: argparse.Namespace, since: datetime | None) -> bool:
    if args.status is not None and row["status"] != args.status:
        return False
    if row["status"] == CORRUPT:
        return args.flow is None and since is None
    if args.flow is not None and row["flow"] != args.flow:
        return False
    if since is not None:
        try:
            updated = datetime.fromisoformat(str(row["updated_at"]))
        except ValueError:
            return False
        return updated >= since
    return True


def _print_runs(rows: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = [("RUN", "STATUS", "FLOW", "CREATED", "UPDATED", "FAILED STEPS")]
    for row in rows:
        if row["status"] == CORRUPT:
            table.append((str(row["run_id"]), CORRUPT, "-", "-", "-", f"unreadable: {row['file']}"))
            continue
        failed = row["failed_steps"]
        assert isinstance(failed, list)
        table.append(
            (
                str(row["run_id"]),
                str(row["status"]),
                str(row["flow"]),
                _when(str(row["created_at"])),
                _when(str(row["updated_at"])),
                ", ".join(failed) or "-",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    if not rows:
        print("(no runs)")


async def _known(store: CheckpointStore, run_id: str) -> None:
    """Raise a UsageError naming the nearest run ids when the store has no run ``run_id``."""
    ids = [str(row["run_id"]) for row in await _listing(store)]
    if run_id in ids:
        return
    # Ids that start with what was given (an id cut short), then the most alike.
    near = [i for i in ids if i.startswith(run_id)][:5]
    near += [i for i in difflib.get_close_matches(run_id, ids, n=5, cutoff=0.5) if i not in near]
    near = near[:5]
    hint = (
        f" Did you mean {', '.join(near)}?"
        if near
        else " See `asyncflow runs` for the runs it holds."
        if ids
        else " It holds no runs."
    )
    raise UsageError(f"There is no run {run_id!r} in the store {_named(store)!r}.{hint}")


async def _show(store: CheckpointStore, run_id: str) -> dict[str, object]:
    """What the store keeps of a run, JSON-ready."""
    await _known(store, run_id)
    kept = await _within(store, lambda: store.load_run(run_id))
    shown: dict[str, object] = {"run_id": run_id}
    m = kept.manifest
    steps = _kept_steps(kept.steps)
    if m is not None:
        shown.update(flow=m.flow, status=m.status, created_at=m.created_at)
        shown.update(updated_at=m.updated_at, failed_steps=list(m.failed_steps))
        try:
            shown["inputs"] = json.loads(m.inputs)
        except ValueError:
            shown["inputs"] = m.inputs
        recorded = recorded_steps(m.details)
        if recorded:
            # The final manifest's account, in the flow's order, with the checkpoints' facts;
            # a step forgotten since (`forget --step`) shows as that.
            kept_steps, steps = steps, {}
            for name, d in recorded.items():
                c = kept_steps.pop(name, {})
                forgotten = c.get("status") == "forgotten"
                steps[name] = {**d, **c, "status": c["status"] if forgotten else d.get("status")}
            steps.update(kept_steps)
        for name in m.failed_steps:
            if steps.get(name, {}).get("status") in (None, _TAKEN):
                steps[name] = {"status": "failed"}
    else:
        shown["status"] = "unknown (no manifest kept)"
    shown["steps"] = steps
    shown["discarded"] = [
        {"step": d.step, "reason": d.reason, "kept_in": d.path} for d in kept.discarded
    ]
    return shown


#: How `show` calls a step whose when= held and whose output is not kept (yet).
_TAKEN = "taken, not finished"
#: The checkpoint name of one item of a mapped step: ``enrich[17]``.
_ITEM_NAME = re.compile(r"(.+)\[(\d+)\]")


def _kept_steps(kept: Mapping[str, StepCheckpoint]) -> dict[str, dict[str, object]]:
    """Each kept step checkpoint, JSON-ready; a mapped step's items counted as one entry."""
    steps: dict[str, dict[str, object]] = {}
    items: dict[str, list[StepCheckpoint]] = {}
    for name, c in sorted(kept.items()):
        item = _ITEM_NAME.fullmatch(name)
        base = kept.get(item[1]) if item is not None else None
        if item is not None and (base is None or base.digest == TAKEN_DIGEST):
            items.setdefault(item[1], []).append(c)
        elif c.digest == NOT_TAKEN_DIGEST:
            steps[name] = {"status": StepStatus.NOT_TAKEN.value}
        elif c.digest == TAKEN_DIGEST:
            # when= held; the output is not kept yet (it ran and failed, or is running).
            steps[name] = {"status": _TAKEN}
        else:
            size = len(c.output.encode())
            status = "forgotten" if c.fingerprint == FORGOTTEN else "succeeded"
            steps[name] = {"status": status, "digest": c.digest, "output_bytes": size}
    for name, kept_items in items.items():
        steps[name] = {
            "status": "mapped",
            "items": len(kept_items),
            "output_bytes": sum(len(c.output.encode()) for c in kept_items),
        }
    return dict(sorted(steps.items()))


#: What `show` says of a run whose manifest has no step details (running, or older).
NOT_KEPT = (
    "No step details kept yet (they are written when the run ends): shown are the steps "
    "whose checkpoints are saved, and the names of failed steps."
)


def error_lines(error: object) -> list[str]:
    """A recorded error and its cause chain, one line each (``caused by`` before each cause)."""
    if not isinstance(error, dict):
        return []
    lines = [f"{error.get('type')}: {error.get('message')}"]
    causes = error.get("causes")
    for cause in causes if isinstance(causes, list) else []:
        if isinstance(cause, dict):
            lines.append(f"caused by {cause.get('type')}: {cause.get('message')}")
    return lines


def _print_show(shown: dict[str, object]) -> None:
    print(f"run {shown['run_id']}")
    for key in ("flow", "status", "created_at", "updated_at"):
        if key in shown:
            value = str(shown[key])
            print(f"  {key.replace('_at', '')}: {_when(value) if key.endswith('_at') else value}")
    if "inputs" in shown:
        print(f"  inputs: {json.dumps(shown['inputs'], ensure_ascii=False)}")
    steps = shown["steps"]
    assert isinstance(steps, dict)
    print("steps:" if steps else "steps: none kept")
    width = max((len(name) for name in steps), default=0)
    detailed = False
    for name, step in steps.items():
        detail = ""
        if "attempts" in step:
            detailed = True
            detail += f"  {step['attempts']} attempt(s)"
            duration = step.get("duration")
            if isinstance(duration, int | float):
                detail += f"  {duration:.3f} s"
            if step.get("started_at"):
                detail += f"  started {_when(str(step['started_at']))}"
        if "digest" in step:
            detail += f"  output {step['output_bytes']} bytes, digest {str(step['digest'])[:16]}"
        elif "items" in step:
            detail += f": {step['items']} items kept, output {step['output_bytes']} bytes"
        print(f"  {name.ljust(width)}  {step['status']}{detail}")
        for line in error_lines(step.get("error")):
            print(f"      {line}")
    discarded = shown["discarded"]
    assert isinstance(discarded, list)
    for d in discarded:
        what = f"step {d['step']!r}" if d["step"] is not None else "the run file"
        print(f"  discarded {what}: {d['reason']} (kept in {d['kept_in'] or 'nothing'})")
    if not detailed:
        print(NOT_KEPT)


async def _forget(store: CheckpointStore, run_id: str, step: str | None) -> bool:
    await _known(store, run_id)
    return await _within(store, lambda: forget(store, run_id, step))


_STORE_REF_HELP = "another store: module:attribute naming a CheckpointStore or a maker of one"


def _traceparent(text: str) -> str | None:
    try:
        return validate_traceparent(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    p = _Parser(prog="asyncflow", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"asyncflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a flow once (resuming its checkpoints, if any)")
    run.add_argument("target", help="module:flow or file.py:flow")
    run.add_argument("inputs", nargs="*", help="run inputs as name=value (JSON, else text)")
    run.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        dest="input_pairs",
        help="a run input, as the words above: the value is JSON when it parses, else text",
    )
    run.add_argument("--run-id", help="the run id (derived from the inputs when not given)")
    resume = sub.add_parser("resume", help="resume a run with the inputs saved in its manifest")
    resume.add_argument("target", help="module:flow or file.py:flow")
    resume.add_argument("run_id")
    batch = sub.add_parser("map", help="run a flow once per line of a JSON-lines file")
    batch.add_argument("target", help="module:flow or file.py:flow")
    batch.add_argument(
        "inputs", help='a file with one JSON object of inputs per line ("run_id" too)'
    )
    batch.add_argument("--out", help="write the results there as JSON lines (default: stdout)")
    batch.add_argument("--concurrency", type=int, default=100, help="runs at once (default 100)")
    for command in (run, resume):
        command.add_argument(
            "--traceparent",
            type=_traceparent,
            help="a W3C traceparent: the run's trace becomes its child",
        )
    for command in (run, resume, batch):
        command.add_argument("--store", default=DEFAULT_CHECKPOINT_DIR, help="checkpoint directory")
        command.add_argument("--store-ref", help=_STORE_REF_HELP)
        command.add_argument("--no-store", action="store_true", help="run without checkpoints")
        command.add_argument(
            "--fail-fast", action="store_true", help="cancel the rest of the run on a failure"
        )
    runs = sub.add_parser("runs", help="list the runs in a store")
    runs.add_argument("--flow", help="only runs of this flow (its name)")
    runs.add_argument("--status", choices=["pending", "running", "succeeded", "failed", CORRUPT])
    runs.add_argument("--since", help="only runs updated since: an ISO time, or 30m, 2h, 1d ago")
    show = sub.add_parser("show", help="a run's inputs and steps, as the store keeps them")
    show.add_argument("run_id")
    forget = sub.add_parser("forget", help="delete a run's checkpoints")
    forget.add_argument("run_id")
    forget.add_argument(
        "--step", help="forget only this step's checkpoint: it runs again on resume"
    )
    for command in (runs, show, forget):
        command.add_argument("--store", default=DEFAULT_CHECKPOINT_DIR, help="checkpoint directory")
        command.add_argument("--store-ref", help=_STORE_REF_HELP)
    for command in (runs, show):
        command.add_argument("--json", action="store_true", help="JSON (runs: one per line)")
    web = sub.add_parser("web", help="serve the runs page over a store (needs the web extra)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    web.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free one)")
    web.add_argument(
        "--flow",
        action="append",
        default=[],
        metavar="TARGET",
        help="a flow (module:flow or file.py:flow) whose graph is drawn for its runs; repeatable",
    )
    web.add_argument("--store", default=DEFAULT_CHECKPOINT_DIR, help="checkpoint directory")
    web.add_argument("--store-ref", help=_STORE_REF_HELP)
    serve = sub.add_parser("serve", help="run a Service (triggers, webhooks) until SIGTERM")
    serve.add_argument("target", help="module:service or file.py:service (or a maker of one)")
    serve.add_argument("--host", help="the address to listen on (default: the service's)")
    serve.add_argument("--port", type=int, help="the port to listen on (default: the service's)")
    graph = sub.add_parser("graph", help="draw the flow's steps and dependencies")
    graph.add_argument("target", help="module:flow or file.py:flow")
    graph.add_argument("--format", choices=["text", "mermaid", "dot"], default="text")
    store = sub.add_parser("store", help="manage a store: a SQL database's schema, retention")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    migrate = store_commands.add_parser(
        "migrate", help="print the schema migrations a database lacks, or apply them"
    )
    migrate.add_argument("database", help="a PostgreSQL DSN (postgresql://...) or a SQLite file")
    migrate.add_argument("--apply", action="store_true", help="apply them (default: print)")
    prune = store_commands.add_parser("prune", help="delete the runs that finished before a time")
    prune.add_argument(
        "--finished-before",
        required=True,
        metavar="WHEN",
        help="an ISO time (UTC unless it says), or a time ago: 30d, 12h, 2w",
    )
    prune.add_argument(
        "--status",
        action="append",
        choices=FINISHED,
        help="only runs that ended so (repeatable; default: succeeded and failed)",
    )
    prune.add_argument("--flow", help="only runs of this flow (its name)")
    prune.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    prune.add_argument("--store", default=DEFAULT_CHECKPOINT_DIR, help="checkpoint directory")
    prune.add_argument("--store-ref", help=_STORE_REF_HELP)
    return p


async def _load_store(text: str) -> CheckpointStore:
    return referenced_store(text)  # in a running loop, as _load


async def _load(target: str) -> Flow:
    # Inside a running loop, so a module that starts one at import fails at once (FlowRef says
    # how to fix it) rather than running its pipeline here. Nothing else runs on this loop yet.
    return FlowRef.parse(target).load()


def _inspect(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.command == "runs":
        since = parse_since(args.since) if args.since is not None else None
        status = None if args.status == CORRUPT else args.status
        listing = functools.partial(_listing, flow=args.flow, status=status, since=since)
        rows = anyio.run(listing, store)
        _print_runs([row for row in rows if _matches(row, args, since)], args.json)
    elif args.command == "show":
        shown = anyio.run(_show, store, args.run_id)
        if args.json:
            print(json.dumps(shown, indent=2))
        else:
            _print_show(shown)
    else:
        if args.step is None:
            anyio.run(_forget, store, args.run_id, None)
            print(f"forgot run {args.run_id}")
        elif anyio.run(_forget, store, args.run_id, args.step):
            print(f"forgot step {args.step} of run {args.run_id}: it runs again on resume")
        else:
            print(f"run {args.run_id} has no checkpoint of step {args.step!r}: nothing to forget")
    return 0


def _prune(args: argparse.Namespace) -> int:
    """``asyncflow store prune``: one line per run deleted (or kept), then a count."""
    before = parse_since(args.finished_before, option="--finished-before")
    store = _store(args)
    pruned = anyio.run(
        functools.partial(
            _within,
            store,
            lambda: prune_runs(
                store,
                finished_before=before,
                statuses=args.status or FINISHED,
                flow=args.flow,
                dry_run=args.dry_run,
            ),
        )
    )
    verb = "would delete" if args.dry_run else "deleted"
    for run_id in pruned.deleted:
        print(f"{verb} {run_id}")
    for run_id, reason in pruned.kept:
        print(f"kept {run_id}: {reason}")
    print(
        f"{verb} {len(pruned.deleted)} run(s) that finished before {before:%Y-%m-%d %H:%M:%S} UTC"
        + (f"; {len(pruned.kept)} kept for now (prune again later)" if pruned.kept else "")
    )
    return 0


def _web(args: argparse.Namespace) -> int:
    """Serve the runs page until interrupted; the address is told on stderr once it listens."""
    store = _store(args)
    try:
        import uvicorn

        from .web import runs_app
    except ImportError as exc:
        raise UsageError(
            f"asyncflow web needs the web extra ({exc}): pip install 'asyncflow-engine[web]'."
        ) from exc
    flows = [anyio.run(_load, ref) for ref in args.flow]
    app = runs_app(store, flows=flows, open_store=True)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    print(
                        f"asyncflow: the runs page is at http://{host}:{port}/ (Ctrl-C stops it)",
                        file=sys.stderr,
                        flush=True,
                    )

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = Server(config)
    anyio.run(server.serve)
    if not server.started:
        raise StoreUnusable(
            f"Could not serve the runs page at {args.host}:{args.port} (see the lines above)."
        )
    return 0


def _command(args: argparse.Namespace) -> int:
    if getattr(args, "store_ref", None) is not None:
        # Made once, so every part of the command uses the same store object.
        args.chosen_store = anyio.run(_load_store, args.store_ref)
    if args.command in ("runs", "show", "forget"):
        return _inspect(args)
    if args.command == "web":
        return _web(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "store" and args.store_command == "prune":
        return _prune(args)
    if args.command == "store":
        from .stores._sql.command import migrate_command

        return migrate_command(args.database, apply=args.apply, out=sys.stdout)
    # Imported and parsed before the run starts: an import does blocking I/O.
    flow = anyio.run(_load, args.target)
    if args.command == "graph":
        print(flow.draw(args.format))
        return 0
    if args.command == "map":
        if args.out is None:
            return 1 if anyio.run(_map, flow, args, sys.stdout) else 0
        try:
            with Path(args.out).open("w", encoding="utf-8") as out:
                return 1 if anyio.run(_map, flow, args, out) else 0
        except OSError as exc:
            raise StoreUnusable(f"Cannot write the results to {args.out!r}: {exc}.") from exc
    if args.command == "resume":
        # A run that is not there is a usage error (2), like one the store holds under no name.
        if args.no_store:
            raise UsageError("resume reads the run's manifest from a store: drop --no-store.")
        if args.store_ref is None and not Path(args.store).exists():
            raise UsageError(
                f"There is no run {args.run_id!r} to resume: there is no store at "
                f"{args.store!r}; give the folder it was saved in with --store DIR."
            )
        anyio.run(_known, _store(args), args.run_id)
    inputs = parse_inputs([*args.inputs, *args.input_pairs]) if args.command == "run" else {}
    result = anyio.run(_run, flow, args, inputs)
    print(json.dumps(report(result), indent=2))
    return 0 if result.ok else 1


def _serve(args: argparse.Namespace) -> int:
    from ._service import Service

    async def load() -> Service:  # in a running loop, as _load
        where, sep, attr = args.target.rpartition(":")
        if not sep or not where or not attr:
            raise UsageError(
                f"{args.target!r}: give the service as module:attribute or file.py:attribute."
            )
        module = _import_file(where) if FlowRef(where, attr).is_file else _import(where)
        value = getattr(module, attr, None)
        if callable(value) and not isinstance(value, Service):
            value = value()
        if not isinstance(value, Service):
            raise UsageError(
                f"{args.target!r} is {type(value).__name__}, not an asyncflow.Service nor a "
                f"function returning one."
            )
        return value

    service = anyio.run(load)
    if args.host is not None:
        service.host = args.host
    if args.port is not None:
        service.port = args.port

    def ready(url: str) -> None:
        print(f"asyncflow: serving on {url}", file=sys.stderr, flush=True)

    try:
        anyio.run(lambda: service.serve(ready=ready))
    except OSError as exc:  # the address cannot be bound
        raise UsageError(f"Cannot listen on {service.host} port {service.port}: {exc}.") from exc
    print("asyncflow: stopped", file=sys.stderr, flush=True)
    return 0


def _error(exc: BaseException) -> str:
    # One line, whatever the message holds: the documented form of every error.
    message = " ".join(line.strip() for line in str(exc).splitlines())
    return f"asyncflow: error: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``asyncflow`` and ``python -m asyncflow``; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        return _command(args)
    except (CheckpointError, StoreUnusable) as exc:
        print(_error(exc), file=sys.stderr)
        return 3
    except (UsageError, AsyncflowError) as exc:
        print(_error(exc), file=sys.stderr)
        return 2
