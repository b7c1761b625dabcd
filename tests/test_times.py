"""Results and events carry wall-clock times people can read; durations stay monotonic."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from asyncflow import Engine, Event, Flow, RunStarted, StepResult, StepSucceeded

pytestmark = pytest.mark.anyio

flow = Flow("times")


@flow.step
async def first() -> int:
    return 1


@flow.step
async def second(first: int) -> int:
    return first + 1


async def test_results_and_events_have_wall_clock_times() -> None:
    events: list[Event] = []
    before = datetime.fromtimestamp(time.time(), UTC)
    async with Engine(store=None, observers=[events.append]) as engine:
        result = await engine.run(flow)
    after = datetime.fromtimestamp(time.time(), UTC)
    assert result.started is not None
    assert result.finished is not None
    assert before <= result.started <= result.finished <= after
    assert result.started.tzinfo is UTC
    for step in result.steps.values():
        assert step.started is not None
        assert step.finished is not None
        assert before <= step.started <= step.finished <= after
        # The same moments as the monotonic readings, which durations come from.
        assert step.duration == step.finished_at - step.started_at  # type: ignore[operator]
    assert result.duration == result.finished_at - result.started_at
    started = [e for e in events if isinstance(e, RunStarted | StepSucceeded)]
    assert len(started) == 3
    for event in events:
        assert before <= event.at <= after
        assert abs(event.at.timestamp() - event.wall_time) < 1e-5  # microseconds


def test_a_result_made_by_hand_has_no_wall_times() -> None:
    """Without the run's clock offset there is nothing to convert: None, not 1970."""
    step = StepResult(name="x", status="succeeded", started_at=1.0, finished_at=2.0)  # type: ignore[arg-type]  # a StrEnum value
    assert step.started is None
    assert step.duration == 1.0


def test_wall_time_does_not_change_event_equality() -> None:
    assert RunStarted("r", "f", 1.0, wall_time=5.0) == RunStarted("r", "f", 1.0, wall_time=6.0)
