"""What events carry: step events the flow's name, batch progress a batch id of its own."""

from __future__ import annotations

import pytest

from asyncflow import BatchProgress, Engine, Event, Flow, Retry, StepRetrying, StepSkipped

pytestmark = pytest.mark.anyio


@pytest.mark.usefixtures("no_waits")
async def test_step_events_name_the_flow() -> None:
    """Every step event of a run says the run's flow: started, retrying, failed, skipped..."""
    flow = Flow("named")
    tries = [1]

    @flow.step(retry=Retry(attempts=3, on=RuntimeError))
    async def first() -> int:
        if tries:
            tries.pop()
            raise RuntimeError("once")
        return 1

    @flow.step
    async def second(first: int) -> int:
        raise ValueError("no")

    @flow.step
    async def third(second: int) -> int:
        return second

    seen: list[Event] = []
    async with Engine(store=".store", observers=[seen.append]) as engine:
        await engine.run(flow, run_id="r-1")
        await engine.run(flow, run_id="r-1")  # restores `first`
    steps = [e for e in seen if type(e).__name__.startswith("Step")]
    kinds = {type(e).__name__ for e in steps}
    assert kinds >= {"StepStarted", "StepRetrying", "StepSucceeded", "StepFailed"}
    assert kinds >= {"StepSkipped", "StepRestored"}
    assert {getattr(e, "flow", None) for e in steps} == {"named"}
    assert any(isinstance(e, StepRetrying) for e in steps)
    assert any(isinstance(e, StepSkipped) for e in steps)


async def test_batches_of_one_name_have_their_own_ids() -> None:
    """Two batches of the same flow share its name but not their batch_id."""
    flow = Flow("one")

    @flow.step
    async def double(n: int) -> int:
        return 2 * n

    seen: list[Event] = []
    async with Engine(store=None, observers=[seen.append]) as engine:
        for _ in range(2):
            async for _result in engine.map(flow, [{"n": 1}, {"n": 2}], progress=False):
                pass
    finals = [e for e in seen if isinstance(e, BatchProgress) and e.finished]
    assert [e.batch for e in finals] == ["one", "one"]
    assert len({e.batch_id for e in finals}) == 2
    assert all(e.batch_id.startswith("one-") for e in finals)
