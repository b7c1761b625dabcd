"""Run events: what observers (logging, metrics, progress, tracing) receive.

An observer is any callable taking one :data:`Event`. Observers are called synchronously, in
the order registered, from the task that made the event: keep them fast and never block. An
observer that raises is reported with a warning-level log record and otherwise ignored, so a
broken progress bar never fails a run. When no observer is registered, no event is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from ._status import CircuitState, RunStatus

__all__ = [
    "BatchProgress",
    "CheckpointDiscarded",
    "CircuitStateChanged",
    "Event",
    "Observer",
    "RunFinished",
    "RunStarted",
    "StepFailed",
    "StepNotTaken",
    "StepRestored",
    "StepRetrying",
    "StepSkipped",
    "StepStarted",
    "StepSucceeded",
]


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run began."""

    run_id: str
    flow: str
    time: float


@dataclass(frozen=True, slots=True)
class RunFinished:
    """A run ended; ``status`` says how."""

    run_id: str
    flow: str
    status: RunStatus
    time: float


@dataclass(frozen=True, slots=True)
class StepStarted:
    """A step's first attempt began."""

    run_id: str
    step: str
    time: float


@dataclass(frozen=True, slots=True)
class StepSucceeded:
    """A step returned its output."""

    run_id: str
    step: str
    time: float
    attempts: int


@dataclass(frozen=True, slots=True)
class StepFailed:
    """A step failed for good (after its retries)."""

    run_id: str
    step: str
    time: float
    attempts: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class StepSkipped:
    """A step will not run: ``reason`` names the failed dependency, or says the run stopped."""

    run_id: str
    step: str
    time: float
    reason: str


@dataclass(frozen=True, slots=True)
class StepNotTaken:
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
class StepRetrying:
    """An attempt failed with a retryable error; the next one starts after ``wait`` seconds."""

    run_id: str
    step: str
    time: float
    attempt: int
    wait: float
    error: BaseException


@dataclass(frozen=True, slots=True)
class StepRestored:
    """A step's output was loaded from its checkpoint instead of running the step."""

    run_id: str
    step: str
    time: float


@dataclass(frozen=True, slots=True)
class CheckpointDiscarded:
    """A checkpoint file could not be used (corrupt, truncated, foreign) and was moved aside."""

    run_id: str
    step: str | None
    time: float
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class CircuitStateChanged:
    """A host's circuit changed state.

    ``host`` is the host key ``scheme://host:port``. States are :class:`CircuitState` members,
    a ``StrEnum``, so they also compare equal to ``"closed"``, ``"open"`` and ``"half-open"``.
    """

    host: str
    old: CircuitState
    new: CircuitState
    time: float


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Where a batch (:meth:`Engine.map`) stands: sent at most every 0.1 s and when it ends.

    ``total`` is ``None`` when the inputs have no length. ``rate`` is finished runs per second
    since the batch started; ``eta`` the seconds left at that rate, when ``total`` is known.
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
)


class Observer(Protocol):
    """Receives every event of an engine. See the module docstring for the rules."""

    def __call__(self, event: Event, /) -> None:
        """Handle one event. Must not block."""
