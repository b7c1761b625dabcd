"""What a run returns: RunResult and StepResult (their status enums are in ``_status``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ._errors import RunFailedError
from ._status import RunStatus, StepStatus

if TYPE_CHECKING:
    from collections.abc import Mapping


def _wall(reading: float | None, offset: float | None) -> datetime | None:
    if reading is None or offset is None:
        return None
    return datetime.fromtimestamp(reading + offset, UTC)


class _WallTimes:
    """``started`` and ``finished`` on the wall clock, from monotonic readings and an offset."""

    __slots__ = ()
    started_at: float | None
    finished_at: float | None
    wall_offset: float | None

    @property
    def started(self) -> datetime | None:
        """When it started, on the wall clock (UTC); ``None`` when it did not start."""
        return _wall(self.started_at, self.wall_offset)

    @property
    def finished(self) -> datetime | None:
        """When it finished, on the wall clock (UTC); ``None`` when it did not run."""
        return _wall(self.finished_at, self.wall_offset)


@dataclass(frozen=True, slots=True)
class StepResult(_WallTimes):
    """The outcome of one step.

    ``started_at`` and ``finished_at`` are ``anyio.current_time()`` readings (monotonic seconds,
    for :attr:`duration`); ``None`` when the step did not start. :attr:`started` and
    :attr:`finished` are the same moments on the wall clock, as UTC datetimes, for people.
    """

    name: str
    status: StepStatus
    attempts: int = 0
    error: BaseException | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: add to a monotonic reading of this run to get POSIX time (``None``: not known)
    wall_offset: float | None = field(default=None, repr=False, compare=False)

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, or ``None`` when the step did not run."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class RunResult(_WallTimes):
    """The outcome of a run: its status, each succeeded step's output and each step's result.

    ``started_at`` and ``finished_at`` are monotonic readings (see :class:`StepResult`);
    :attr:`started` and :attr:`finished` are wall-clock UTC datetimes.
    """

    run_id: str
    flow: str
    status: RunStatus
    outputs: Mapping[str, object]
    steps: Mapping[str, StepResult]
    started_at: float = 0.0
    finished_at: float = 0.0
    inputs: Mapping[str, object] = field(default_factory=dict)
    #: a run-level error that kept the run from starting (bad inputs in a batch item).
    error: BaseException | None = None
    #: add to ``started_at`` or ``finished_at`` (monotonic) to get POSIX time
    wall_offset: float | None = field(default=None, repr=False, compare=False)

    @property
    def duration(self) -> float:
        """Seconds from the run's start to its finish (monotonic)."""
        return self.finished_at - self.started_at

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status is RunStatus.SUCCEEDED

    @property
    def restored(self) -> bool:
        """True when every step's output came from a checkpoint: nothing ran."""
        return all(r.status is StepStatus.RESTORED for r in self.steps.values())

    @property
    def errors(self) -> dict[str, BaseException]:
        """Each failed step's error, by step name; a run-level error under ``"<run>"``."""
        errors = {n: r.error for n, r in self.steps.items() if r.error is not None}
        if self.error is not None:
            errors["<run>"] = self.error
        return errors

    def raise_for_status(self) -> RunResult:
        """Return self when the run succeeded.

        Raises:
            RunFailedError: the run failed; ``.errors`` holds every failed step's error and the
                first one is the ``__cause__``.
        """
        if self.status is RunStatus.SUCCEEDED:
            return self
        errors = self.errors
        failed = ", ".join(f"{n!r} ({type(e).__name__}: {e})" for n, e in errors.items())
        skipped = [n for n, r in self.steps.items() if r.status is StepStatus.SKIPPED]
        extra = f"; skipped: {', '.join(map(repr, skipped))}" if skipped else ""
        raise RunFailedError(
            f"Run {self.run_id!r} of flow {self.flow!r} failed: {failed}{extra}. "
            f"Fix the cause and run it again with the same run id to resume.",
            run_id=self.run_id,
            errors=errors,
        ) from next(iter(errors.values()), None)
