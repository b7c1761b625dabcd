"""Run hooks (:class:`~asyncflow.events.RunHook`) around runs, and the trace a manifest keeps.

A run's trace context lives in its manifest's ``details`` as ``{"trace": {"traceparent": ...}}``
(W3C Trace Context), so a run that runs again (a resume, the same run id after a crash)
continues the trace it started in: the first traceparent kept is kept for good.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .events import RunHook
    from .stores import RunManifest

__all__ = ["kept_traceparent", "run_contexts", "trace_details", "validate_traceparent"]

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def validate_traceparent(value: object) -> str | None:
    """``value`` when it is ``None`` or a W3C ``traceparent`` header value.

    Raises:
        ValueError: anything else, naming the expected form.
    """
    if value is None or (isinstance(value, str) and _TRACEPARENT.fullmatch(value.strip())):
        return None if value is None else value.strip()
    raise ValueError(
        f"traceparent={value!r} is not a W3C traceparent: give the incoming request's "
        f"'traceparent' header as it is, e.g. '00-4bf92f3577b34da6a3ce929d0e0e4736-"
        f"00f067aa0ba902b7-01', or None."
    )


@contextmanager
def run_contexts(
    hooks: tuple[RunHook, ...], run_id: str, flow: str, parent: str | None
) -> Iterator[str | None]:
    """Enter each hook's run context; yield the first traceparent one of them gives."""
    with ExitStack() as stack:
        found = None
        for hook in hooks:
            given = stack.enter_context(hook.run_context(run_id, flow, parent))
            found = found or given
        yield found


def kept_traceparent(manifest: RunManifest | None) -> str | None:
    """The traceparent ``manifest`` keeps, or ``None`` (no manifest, no trace, unreadable)."""
    if manifest is None or not manifest.details:
        return None
    try:
        details = json.loads(manifest.details)
    except ValueError:
        return None
    trace = details.get("trace") if isinstance(details, dict) else None
    value = trace.get("traceparent") if isinstance(trace, dict) else None
    return value if isinstance(value, str) else None


def trace_details(traceparent: str | None) -> str:
    """The ``details`` of a running manifest: the run's trace, or nothing."""
    if traceparent is None:
        return ""
    return json.dumps({"trace": {"traceparent": traceparent}}, separators=(",", ":"))
