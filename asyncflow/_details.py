"""The ``details`` a run's final manifest keeps: each step's status, attempts, times and error.

Written once per run, when it ends (``_checkpointing``); read by ``asyncflow show`` and the runs
page. The JSON shape (``RunManifest.details``, see the store protocol)::

    {"steps": {"fetch": {"status": "failed", "attempts": 3, "after": [],
                         "started_at": "2026-01-31T12:00:00.125+00:00",
                         "finished_at": "2026-01-31T12:00:01.500+00:00", "duration": 1.375,
                         "error": {"type": "StepError", "message": "...",
                                   "causes": [{"type": "ConnectError", "message": "..."}]}}}}

``started_at``/``finished_at`` are wall-clock ISO 8601 UTC (``null`` for a step that did not run),
``duration`` is seconds on the engine's clock (to the microsecond), ``after`` the steps it
waited for, and ``error`` is there only for a failed step, its messages with URLs redacted.
Other top-level keys (a trace context) are kept as they are.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import TYPE_CHECKING, cast

from ._status import StepStatus
from .observe._redact import redact_urls

if TYPE_CHECKING:
    from ._plan import Plan
    from ._result import RunResult

__all__ = ["MAX_CAUSES", "describe_error", "recorded_steps", "run_details", "waits_for"]

#: How many causes of a step's error are kept (a chain can be long, or loop).
MAX_CAUSES = 10
#: How long one error message may be in the manifest, in characters.
MAX_MESSAGE = 2000


def waits_for(plan: Plan) -> list[list[str]]:
    """Each step's direct dependencies by name (a walk over the edges: small beside the JSON)."""
    after: list[list[str]] = [[] for _ in plan.steps]
    for i, dependents in enumerate(plan.dependents):
        for j in dependents:
            after[j].append(plan.steps[i].name)
    return after


def _one(exc: BaseException) -> dict[str, str]:
    message = redact_urls(str(exc))
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    return {"type": type(exc).__name__, "message": message}


def describe_error(exc: BaseException) -> dict[str, object]:
    """``exc`` as JSON-ready data: type, message, and its ``__cause__``/``__context__`` chain."""
    causes: list[dict[str, str]] = []
    seen = {id(exc)}
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cause is not None and id(cause) not in seen and len(causes) < MAX_CAUSES:
        seen.add(id(cause))
        causes.append(_one(cause))
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return {**_one(exc), "causes": causes}


@functools.lru_cache(maxsize=8)
def _iso_second(second: int) -> str:
    return dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _iso(t: float | None, offset: float) -> str | None:
    """A clock reading as wall-clock ISO 8601 UTC to the millisecond (``isoformat``'s form).

    Once per step start and finish of every run: the formatted second is reused.
    """
    if t is None:
        return None
    second, ms = divmod(int((t + offset) * 1000), 1000)  # truncated, as isoformat does
    return f"{_iso_second(second)}.{ms:03d}+00:00"


#: One encoder for every run (json.dumps with options builds one per call).
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: Each status as JSON text.
_STATUS = {status: f'"{status.value}"' for status in StepStatus}


def _heads(plan: Plan) -> tuple[tuple[str, str], ...]:
    """Each step's entry around its status and attempts: its name and its waits are the plan's."""
    heads = plan.derived.get("details")
    if heads is None:
        after = waits_for(plan)
        heads = plan.derived["details"] = tuple(
            (f'{_ENCODE(s.name)}:{{"status":', f',"after":{_ENCODE(after[i])}')
            for i, s in enumerate(plan.steps)
        )
    return cast("tuple[tuple[str, str], ...]", heads)


def _stamp(t: float | None, offset: float) -> str:
    return "null" if t is None else f'"{_iso(t, offset)}"'


def run_details(plan: Plan, result: RunResult, offset: float, previous: str = "") -> str:
    """The final manifest's ``details`` JSON for ``result``.

    Written as text from parts the plan keeps (once per run, so no dict is built and encoded):
    the same text ``json`` writes for the shape in the module docstring.

    Args:
        plan: the run's plan (for each step's dependencies).
        result: the finished run.
        offset: wall-clock seconds minus the engine clock's reading, to date the clock's times.
        previous: the running manifest's details, whose other keys are kept.
    """
    heads = _heads(plan)
    parts: list[str] = []
    steps = result.steps
    for i, s in enumerate(plan.steps):
        r = steps.get(s.name)
        if r is None:
            continue
        start, end = r.started_at, r.finished_at
        head, after = heads[i]
        entry = (
            f'{head}{_STATUS[r.status]},"attempts":{r.attempts}{after}'
            f',"started_at":{_stamp(start, offset)},"finished_at":{_stamp(end, offset)},'
            f'"duration":{"null" if start is None or end is None else repr(round(end - start, 6))}'
        )
        if r.error is not None:
            entry += f',"error":{_ENCODE(describe_error(r.error))}'
        parts.append(entry + "}")
    text = f'"steps":{{{",".join(parts)}}}'
    if not previous:
        return f"{{{text}}}"
    try:
        details = json.loads(previous)
    except ValueError:
        details = {}
    if not isinstance(details, dict):
        details = {}
    details.pop("steps", None)
    if not details:
        return f"{{{text}}}"
    return f"{_ENCODE(details)[:-1]},{text}}}"


def recorded_steps(details: str) -> dict[str, dict[str, object]]:
    """The ``"steps"`` of a manifest's details, by name; empty when there are none or bad."""
    try:
        parsed = json.loads(details) if details else {}
    except ValueError:
        return {}
    steps = parsed.get("steps") if isinstance(parsed, dict) else None
    if not isinstance(steps, dict):
        return {}
    return {str(k): v for k, v in steps.items() if isinstance(v, dict)}
