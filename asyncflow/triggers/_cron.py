"""Cron: runs on a schedule in a time zone, with a stored watermark, catch-up and overlap."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol

import anyio

from ._base import Intake, Outcome, Trigger, default_name

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from anyio.abc import TaskStatus

    from asyncflow._flow import Flow
    from asyncflow.stores import CheckpointStore

__all__ = ["Clock", "Cron", "SystemClock"]

#: The flow name of the records that keep triggers' state (a cron's watermark) in the store.
STATE_FLOW = "asyncflow.trigger-state"
#: A tick more than this many seconds past its instant is "missed": the catch-up policy decides.
LATE = 60.0


class Clock(Protocol):
    """Wall time for schedules: real in production, driven by hand in tests."""

    def now(self) -> float:
        """The current POSIX time in seconds."""

    async def sleep_until(self, deadline: float, /) -> None:
        """Return at POSIX time ``deadline`` or later (at once if it has passed)."""


class SystemClock:
    """The system's wall clock; sleeps re-check it, so a suspended machine wakes on time."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    async def sleep_until(self, deadline: float, /) -> None:
        """Sleep in steps of at most 30 s until the wall clock reaches ``deadline``."""
        while (left := deadline - time.time()) > 0:  # noqa: ASYNC110 - the wall clock has no event
            await anyio.sleep(min(left, 30.0))


Catchup = Literal["latest", "all", "none"]
Overlap = Literal["skip", "buffer_one", "allow"]


class Cron(Trigger):
    """Runs ``flow`` at each instant of a cron schedule in time zone ``tz``.

    The expression has 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds
    first), in Debian cron's dialect. Daylight saving time: a wall time skipped by a
    spring-forward fires once, at the first valid instant after it (the transition); a wall
    time repeated by a fall-back fires once, at its first occurrence.

    Each tick's run id is the trigger's name and the tick's instant in UTC
    (``cron-report@20261201T093000Z``), so several services on one store run each tick once.
    The last tick handled (its *watermark*) is kept in the store; a service that was down or
    suspended handles the ticks missed since then in one step, by ``catchup``:

    - ``"latest"`` (default): run the most recent missed tick only;
    - ``"all"``: run each missed tick in the last ``window`` seconds, at most ``max_catchup``
      (the most recent ones);
    - ``"none"``: run none of them; wait for the next tick.

    A tick is missed when it is more than 60 seconds late; ticks older than ``window`` are
    never caught up. ``overlap`` says what a tick does while this trigger's previous run is
    still running in this service: ``"skip"`` it (default; reported as rejected),
    ``"buffer_one"``: wait for that run to end, then run (ticks due meanwhile are then
    missed ticks), or ``"allow"`` both. ``jitter`` delays each tick's start by up to that many
    seconds, at random (the run id keeps the tick's instant).

    Args:
        inputs: the run inputs from the tick (an aware datetime in ``tz``); none by default.
        clock: where time comes from (:class:`SystemClock`; a hand-driven one in tests).
    """

    kind = "cron"

    def __init__(
        self,
        expr: str,
        flow: Flow,
        *,
        tz: str = "UTC",
        inputs: Callable[[datetime], Mapping[str, object]] | None = None,
        name: str | None = None,
        catchup: Catchup = "latest",
        window: float = 86400.0,
        max_catchup: int = 100,
        overlap: Overlap = "skip",
        jitter: float = 0.0,
        max_in_flight: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        from ._schedule import Schedule

        self.schedule = Schedule(expr, tz)
        if catchup not in ("latest", "all", "none"):
            raise ValueError(f"catchup={catchup!r}: give 'latest', 'all' or 'none'.")
        if overlap not in ("skip", "buffer_one", "allow"):
            raise ValueError(f"overlap={overlap!r}: give 'skip', 'buffer_one' or 'allow'.")
        if not window > 0 or not isinstance(max_catchup, int) or max_catchup < 1:
            raise ValueError(
                f"window={window!r}, max_catchup={max_catchup!r}: give a window in seconds "
                f"(more than 0) and a whole number of ticks (at least 1)."
            )
        if not jitter >= 0:
            raise ValueError(
                f"jitter={jitter!r}: give the most seconds to delay a tick (0 or more)."
            )
        super().__init__(
            flow, name=name or default_name("cron", flow.name), max_in_flight=max_in_flight
        )
        self.catchup: Catchup = catchup
        self.overlap: Overlap = overlap
        self.window = window
        self.max_catchup = max_catchup
        self.jitter = jitter
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._inputs = inputs

    @property
    def state_id(self) -> str:
        """The run id of the record keeping this trigger's watermark in the store."""
        return f"_trigger.{self.name}"

    async def run(self, intake: Intake, /, *, task_status: TaskStatus[None]) -> None:
        """Tick until cancelled: sleep to the next instant, then admit what is due."""
        store = intake.store
        last = await load_watermark(store, self.state_id)
        if last is None:  # first start: nothing was missed
            last = _at(self.clock.now())
            await save_watermark(store, self.state_id, last)
        task_status.started()
        while True:
            nxt = self.schedule.next_after(last)
            delay = random.uniform(0, self.jitter) if self.jitter else 0.0
            await self.clock.sleep_until(nxt.timestamp() + delay)
            now = self.clock.now()
            due = self.due(last, now)
            for tick in self.chosen(due, now):
                await self._tick(intake, tick)
            if due:
                last = due[-1]
                await save_watermark(store, self.state_id, last)

    def due(self, last: datetime, now: float) -> list[datetime]:
        """The ticks after ``last`` up to ``now``, within the catch-up window."""
        start = max(last, _at(now - self.window))
        return list(self.schedule.between(start, _at(now)))

    def chosen(self, due: list[datetime], now: float) -> list[datetime]:
        """Which of the due ticks run, by the catch-up policy."""
        on_time = [t for t in due if now - t.timestamp() <= LATE]
        missed = [t for t in due if now - t.timestamp() > LATE]
        if self.catchup == "none":
            return on_time
        if self.catchup == "latest":
            return on_time or missed[-1:]
        return missed[-self.max_catchup :] + on_time

    async def _tick(self, intake: Intake, tick: datetime) -> None:
        key = tick.strftime("%Y%m%dT%H%M%SZ")
        if self.overlap == "skip" and intake.in_flight:
            intake.refuse(key, Outcome.REJECTED, "overlap: the previous run is still running")
            return
        if self.overlap == "buffer_one":
            await intake.wait_idle()
        local = tick.astimezone(self.schedule.zone)
        inputs = self._inputs(local) if self._inputs is not None else {}
        admission = await intake.admit(key, inputs)
        if admission.outcome is Outcome.ADMITTED:
            scheduled = tick.timestamp()
            intake.report_lag(admission.run_id, scheduled, self.clock.now() - scheduled)


def _at(posix: float) -> datetime:
    return datetime.fromtimestamp(posix, UTC)


async def load_watermark(store: CheckpointStore, state_id: str) -> datetime | None:
    """The last tick handled, as kept in ``store`` (``None`` when never kept)."""
    manifest = (await store.load_run(state_id)).manifest
    if manifest is None:
        return None
    try:
        return datetime.fromisoformat(json.loads(manifest.inputs)["watermark"])
    except (ValueError, KeyError, TypeError):
        return None  # an unreadable record counts as none: no catch-up rather than a crash


async def save_watermark(store: CheckpointStore, state_id: str, tick: datetime) -> None:
    """Keep ``tick`` as the last tick handled; never moves it back (another service's)."""
    from asyncflow.stores import RunManifest

    old = await load_watermark(store, state_id)
    if old is not None and old >= tick:
        return
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    text = json.dumps({"watermark": tick.astimezone(UTC).isoformat()})
    await store.save_manifest(RunManifest(state_id, STATE_FLOW, "", text, "succeeded", now, now))
