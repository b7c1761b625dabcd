"""OpenTelemetry traces of runs: a span per run, a child span per step attempt.

Needs the ``otel`` extra (``opentelemetry-api`` only: the SDK and its exporters are the
application's)::

    from asyncflow.observe.otel import OpenTelemetryObserver

    async with Engine(observers=[OpenTelemetryObserver()]) as engine: ...

The observer is a :class:`~asyncflow.RunHook`: the engine wraps each run in a span named
``run <flow>`` and each attempt of each step in a span named ``step <name>``, a child of its
run's, current while the attempt runs, so spans the step's own code or its HTTP client starts
(``opentelemetry-instrumentation-httpx`` on ``engine.http``) nest under the attempt. Attributes
are ``asyncflow.run_id``, ``asyncflow.flow``, ``asyncflow.step``, ``asyncflow.attempt`` and, on
the run's span when it ends, ``asyncflow.status``. Span events: ``retry`` (on the run's span:
step, attempt, wait, error), ``circuit`` (on the span current where the circuit changed, the
attempt whose request changed it: host, old, new), ``step failed`` (for good: step, attempts,
error), ``restored``, ``skipped`` and ``checkpoint discarded`` (on the run's span). A failed attempt's span has status ERROR and an
``exception`` event; a cancelled one is not an error (attribute ``asyncflow.cancelled``).
Messages are redacted like the logs' (no query strings, no credentials in URLs).

The run's trace context (its span's W3C ``traceparent``) is kept in the run's manifest, so a run
that runs again (``engine.resume``, or the same run id after a crash) continues the trace it
started in: its new run span is a child of the first one. ``Engine.run(traceparent=...)`` makes
a caller's trace (a webhook's incoming header) the run's parent; without one, the span current
where ``engine.run`` is called is (an instrumented web handler's).
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib import metadata
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from asyncflow._status import RunStatus
from asyncflow.events import (
    CheckpointDiscarded,
    CircuitStateChanged,
    RunFinished,
    StepFailed,
    StepRestored,
    StepRetrying,
    StepSkipped,
)

from ._redact import redact_urls

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.trace import Span, TracerProvider

    from asyncflow.events import Event

__all__ = ["OpenTelemetryObserver"]

_PROPAGATOR = TraceContextTextMapPropagator()


def _version() -> str:
    try:
        return metadata.version("asyncflow-engine")
    except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        return "0+unknown"


def _described(error: BaseException, prefix: str) -> dict[str, str]:
    """``error``'s type and message (URLs redacted) as ``<prefix>.type`` and ``.message``."""
    return {f"{prefix}.type": type(error).__name__, f"{prefix}.message": redact_urls(str(error))}


class OpenTelemetryObserver:
    """Spans for runs and step attempts, events for retries and circuits. See the module.

    Args:
        tracer_provider: where spans go; the global one (``trace.set_tracer_provider``) when
            not given.
    """

    def __init__(self, *, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("asyncflow", _version(), tracer_provider=tracer_provider)
        #: the span of each run in progress, by run id
        self._runs: dict[str, Span] = {}

    @contextmanager
    def run_context(
        self, run_id: str, flow: str, traceparent: str | None, /
    ) -> Iterator[str | None]:
        """A span for the run, current while it runs; yields its traceparent."""
        parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        attributes = {"asyncflow.run_id": run_id, "asyncflow.flow": flow}
        with self._tracer.start_as_current_span(
            f"run {flow}",
            context=parent,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            outer = self._runs.get(run_id)
            self._runs[run_id] = span
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)  # the current context: this span
            try:
                with _recorded(span):
                    yield carrier.get("traceparent")
            finally:
                if outer is None:
                    del self._runs[run_id]
                else:
                    self._runs[run_id] = outer

    @contextmanager
    def attempt_context(self, run_id: str, step: str, attempt: int, /) -> Iterator[None]:
        """A span for one attempt of a step, a child of the run's, current while it runs.

        When the sampler dropped the run's trace (its span records nothing and is not sampled),
        the attempt starts no span of its own: the run's non-recording span stays current, so
        spans the step's code starts still see an unsampled parent (``ParentBased`` drops them).
        """
        run = self._runs.get(run_id)
        if (
            run is not None
            and not run.is_recording()
            and not run.get_span_context().trace_flags.sampled
        ):
            yield
            return
        attributes: dict[str, str | int] = {
            "asyncflow.run_id": run_id,
            "asyncflow.step": step,
            "asyncflow.attempt": attempt,
        }
        with (
            self._tracer.start_as_current_span(
                f"step {step}",
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
            _recorded(span),
        ):
            yield

    def __call__(self, event: Event, /) -> None:
        """Turn retries, circuit changes and restores into span events; finish run spans."""
        if isinstance(event, CircuitStateChanged):
            current = trace.get_current_span()
            if current.is_recording():
                current.add_event(
                    "circuit",
                    {"asyncflow.host": event.host, "old": event.old.value, "new": event.new.value},
                )
            return
        run_id = getattr(event, "run_id", None)
        span = self._runs.get(run_id) if isinstance(run_id, str) else None
        if span is None:
            return
        if isinstance(event, StepRetrying):
            span.add_event(
                "retry",
                {
                    "asyncflow.step": event.step,
                    "asyncflow.attempt": event.attempt,
                    "wait": event.wait,
                    **_described(event.error, "error"),
                },
            )
        elif isinstance(event, StepFailed):
            span.add_event(
                "step failed",
                {
                    "asyncflow.step": event.step,
                    "asyncflow.attempts": event.attempts,
                    **_described(event.error, "error"),
                },
            )
        elif isinstance(event, StepRestored):
            span.add_event("restored", {"asyncflow.step": event.step})
        elif isinstance(event, StepSkipped):
            span.add_event("skipped", {"asyncflow.step": event.step, "reason": event.reason})
        elif isinstance(event, CheckpointDiscarded):
            span.add_event(
                "checkpoint discarded",
                {"asyncflow.step": event.step or "", "reason": redact_urls(event.reason)},
            )
        elif isinstance(event, RunFinished):
            span.set_attribute("asyncflow.status", event.status.value)
            if event.status is RunStatus.FAILED:
                span.set_status(Status(StatusCode.ERROR, "a step failed"))


@contextmanager
def _recorded(span: Span) -> Iterator[None]:
    """Record an error leaving the block on ``span``; a cancellation is not one."""
    if not span.is_recording():
        yield
        return
    try:
        yield
    except Exception as exc:
        described = _described(exc, "exception")
        span.add_event("exception", described)
        span.set_status(
            Status(StatusCode.ERROR, f"{type(exc).__name__}: {described['exception.message']}")
        )
        raise
    except BaseException:
        span.set_attribute("asyncflow.cancelled", True)
        raise
