"""Run events: what observers (logging, metrics, progress, tracing) receive.

An observer is any callable taking one :data:`Event`. Observers are called synchronously, in
the order registered, from the task that made the event: keep them fast and never block. An
observer that raises is reported with a warning-level log record and otherwise ignored, so a
broken progress bar never fails a run. When no observer is registered, no event is built.

Step events (``StepStarted`` ... ``StepRestored``) carry the run's flow name in ``flow``.
Times: an event's ``time`` is a monotonic reading (the event loop's clock, ``anyio.current_time()``):
subtract two for a duration, never show one to a person. ``wall_time`` is the wall clock
(``time.time()``, POSIX seconds) when the event was made, and ``at`` the same as a UTC
``datetime``, for people and logs.
"""

from __future__ import annotations

import datetime as _dt
import time as _time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ._status import CircuitState, RunStatus

__all__ = [
    "BatchProgress",
    "CheckpointDiscarded",
    "CircuitStateChanged",
    "Event",
    "HttpRequestFinished",
    "Observer",
    "RunFinished",
    "RunHook",
    "RunStarted",
    "ScheduleLag",
    "StepFailed",
    "StepNotTaken",
    "StepRestored",
    "StepRetrying",
    "StepSkipped",
    "StepStarted",
    "StepSucceeded",
    "StoreWrite",
    "TriggerAdmitted",
    "TriggerDuplicate",
    "TriggerInvalid",
    "TriggerRejected",
]


@dataclass(frozen=True, slots=True)
class _Wall:
    """What every event has: the wall-clock time it was made (keyword-only, filled in)."""

    #: ``time.time()`` when the event was made: POSIX seconds, for people (not for durations).
    wall_time: float = field(default_factory=_time.time, kw_only=True, compare=False, repr=False)

    @property
    def at(self) -> _dt.datetime:
        """``wall_time`` as a UTC ``datetime``."""
        return _dt.datetime.fromtimestamp(self.wall_time, _dt.UTC)


@dataclass(frozen=True, slots=True)
class RunStarted(_Wall):
    """A run began."""

    run_id: str
    flow: str
    time: float


@dataclass(frozen=True, slots=True)
class RunFinished(_Wall):
    """A run ended; ``status`` says how."""

    run_id: str
    flow: str
    status: RunStatus
    time: float


@dataclass(frozen=True, slots=True)
class StepStarted(_Wall):
    """A step's first attempt began."""

    run_id: str
    step: str
    time: float
    flow: str = ""


@dataclass(frozen=True, slots=True)
class StepSucceeded(_Wall):
    """A step returned its output."""

    run_id: str
    step: str
    time: float
    attempts: int
    flow: str = ""


@dataclass(frozen=True, slots=True)
class StepFailed(_Wall):
    """A step failed for good (after its retries)."""

    run_id: str
    step: str
    time: float
    attempts: int
    error: BaseException
    flow: str = ""


@dataclass(frozen=True, slots=True)
class StepSkipped(_Wall):
    """A step will not run: ``reason`` names the failed dependency, or says the run stopped."""

    run_id: str
    step: str
    time: float
    reason: str
    flow: str = ""


@dataclass(frozen=True, slots=True)
class StepNotTaken(_Wall):
    """A step will not run because a condition said so (not a failure).

    ``reason`` says whether its own ``when=`` was false (``restored`` when that decision came
    from the run's checkpoint) or it needs the output of a step that was not taken.
    """

    run_id: str
    step: str
    time: float
    reason: str
    restored: bool = False


@dataclass(frozen=True, slots=True)
class StepRetrying(_Wall):
    """An attempt failed with a retryable error; the next one starts after ``wait`` seconds."""

    run_id: str
    step: str
    time: float
    attempt: int
    wait: float
    error: BaseException
    flow: str = ""


@dataclass(frozen=True, slots=True)
class StepRestored(_Wall):
    """A step's output was loaded from its checkpoint instead of running the step."""

    run_id: str
    step: str
    time: float
    flow: str = ""


@dataclass(frozen=True, slots=True)
class CheckpointDiscarded(_Wall):
    """A checkpoint file could not be used (corrupt, truncated, foreign) and was moved aside."""

    run_id: str
    step: str | None
    time: float
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class CircuitStateChanged(_Wall):
    """A host's circuit changed state.

    ``host`` is the host key ``scheme://host:port``. States are :class:`CircuitState` members,
    a ``StrEnum``, so they also compare equal to ``"closed"``, ``"open"`` and ``"half-open"``.
    """

    host: str
    old: CircuitState
    new: CircuitState
    time: float


@dataclass(frozen=True, slots=True)
class BatchProgress(_Wall):
    """Where a batch (:meth:`Engine.map`) stands: sent at most every 0.1 s and when it ends.

    ``total`` is ``None`` when the inputs have no length. ``rate`` is finished runs per second
    since the batch started; ``eta`` the seconds left at that rate, when ``total`` is known.
    ``batch`` is the batch's name (the flow's unless ``name=`` was given); ``batch_id`` is
    unique to one ``map`` call, so two batches of the same name can be told apart.
    """

    batch: str
    time: float
    done: int
    succeeded: int
    failed: int
    restored: int
    in_flight: int
    total: int | None
    rate: float
    eta: float | None
    finished: bool = False
    batch_id: str = ""


@dataclass(frozen=True, slots=True)
class HttpRequestFinished(_Wall):
    """A request through the engine's HTTP client ended: answered, failed, or refused unsent.

    ``status`` is the response's HTTP status, or ``None`` when there was none: then ``error``
    names what happened instead (the exception's type, ``"CircuitOpenError"`` when the host's
    circuit refused it). ``duration`` is seconds from the request's admission to its response
    headers (or its failure). Cancelled requests are not reported.
    """

    host: str
    status: int | None
    error: str | None
    duration: float
    time: float

    @property
    def status_class(self) -> str:
        """``"2xx"`` ... ``"5xx"`` by the status, else ``"error"`` (or ``"refused"``, unsent)."""
        if self.status is not None:
            return f"{self.status // 100}xx"
        return "refused" if self.error == "CircuitOpenError" else "error"


@dataclass(frozen=True, slots=True)
class StoreWrite(_Wall):
    """The checkpoint store finished a write of a run: a step's checkpoint or its final manifest.

    ``kind`` is ``"step"`` or ``"manifest"``; ``step`` names the step of a step write.
    ``duration`` is seconds the write took; ``error`` is the type name of what the store raised,
    ``None`` when the write succeeded.
    """

    run_id: str
    kind: str
    step: str | None
    duration: float
    error: str | None
    time: float


@dataclass(frozen=True, slots=True)
class TriggerAdmitted(_Wall):
    """A trigger's event was admitted: its run is recorded in the store and will start."""

    trigger: str
    flow: str
    run_id: str
    time: float


@dataclass(frozen=True, slots=True)
class TriggerDuplicate(_Wall):
    """A trigger's event was seen before (a redelivery, another process): its run exists."""

    trigger: str
    flow: str
    run_id: str
    time: float


@dataclass(frozen=True, slots=True)
class TriggerRejected(_Wall):
    """A trigger's event was not admitted now; the source may offer it again.

    ``reason`` says why: the backlog is full, the service is stopping, a bad signature.
    """

    trigger: str
    flow: str
    run_id: str
    time: float
    reason: str


@dataclass(frozen=True, slots=True)
class TriggerInvalid(_Wall):
    """A trigger's event cannot become a run (``reason``: malformed body, wrong inputs)."""

    trigger: str
    flow: str
    run_id: str
    time: float
    reason: str


@dataclass(frozen=True, slots=True)
class ScheduleLag(_Wall):
    """A cron tick was admitted ``lag`` seconds after its instant ``scheduled`` (POSIX time).

    Large after downtime, or when the event loop is overloaded.
    """

    trigger: str
    flow: str
    run_id: str
    time: float
    scheduled: float
    lag: float


Event: TypeAlias = (
    RunStarted
    | RunFinished
    | StepStarted
    | StepSucceeded
    | StepFailed
    | StepSkipped
    | StepNotTaken
    | StepRetrying
    | StepRestored
    | CheckpointDiscarded
    | CircuitStateChanged
    | BatchProgress
    | HttpRequestFinished
    | StoreWrite
    | TriggerAdmitted
    | TriggerDuplicate
    | TriggerRejected
    | TriggerInvalid
    | ScheduleLag
)


class Observer(Protocol):
    """Receives every event of an engine. See the module docstring for the rules."""

    def __call__(self, event: Event, /) -> None:
        """Handle one event. Must not block."""


@runtime_checkable
class RunHook(Protocol):
    """An observer that also wraps each run and each step attempt in a context (tracing).

    The engine enters :meth:`run_context` around a whole run and :meth:`attempt_context`
    around each attempt of each step, in the task that runs it, so whatever the context sets
    (a current span in a context variable) is current for the step's own code and for the HTTP
    requests it makes. An observer given to ``Engine(observers=[...])`` that has both methods is
    used as a hook too. The contexts must not swallow exceptions.
    """

    def run_context(
        self, run_id: str, flow: str, traceparent: str | None, /
    ) -> AbstractContextManager[str | None]:
        """Wrap one run; yield the W3C ``traceparent`` of the run's trace, or ``None``.

        ``traceparent`` is the run's parent: the one given to ``Engine.run(traceparent=...)``,
        or the one kept in the run's manifest when it runs again (a resume), else ``None``.
        What is yielded is kept in the run's manifest for the next time it runs.
        """

    def attempt_context(
        self, run_id: str, step: str, attempt: int, /
    ) -> AbstractContextManager[None]:
        """Wrap one attempt of a step (attempts count from 1)."""
