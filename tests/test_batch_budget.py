"""The failure-rate budget of engine.map judges a batch only once 20 runs have finished."""

from __future__ import annotations

import pytest

from asyncflow import Engine, Flow

pytestmark = pytest.mark.anyio


def failing_first(failures: int) -> Flow:
    """A flow whose step fails for ``n < failures`` and succeeds after."""
    flow = Flow("failing-first")

    @flow.step
    async def check(n: int) -> int:
        if n < failures:
            raise ValueError(f"item {n} fails")
        return n

    return flow


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_failure_rate_is_judged_from_twenty_finished_runs_on(concurrency: int) -> None:
    """19 failures in a row do not stop the batch; the 20th finished run is judged.

    With max_failure_rate=0.5, the first 19 runs fail and every later one succeeds: the batch
    keeps launching until 20 runs finished (19 of them failed, 95% over the budget) and stops
    there, with the runs still in flight finishing.
    """
    async with Engine(store=None) as engine:
        batch = engine.map(
            failing_first(19),
            ({"n": n} for n in range(200)),
            concurrency=concurrency,
            max_failure_rate=0.5,
        )
        summary = await batch.summary()
    assert summary.failed == 19
    assert summary.stopped is not None
    assert "max_failure_rate=0.5" in summary.stopped
    # Stopped at the 20th result: only the runs already in flight then finished after it.
    assert 20 <= summary.failed + summary.succeeded <= 20 + concurrency - 1
