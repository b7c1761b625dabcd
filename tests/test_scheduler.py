"""The dataflow scheduler: readiness, failure isolation, limits, timeouts, cancellation, events."""

from __future__ import annotations

from functools import partial

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from asyncflow import (
    AsyncflowError,
    Engine,
    Event,
    Flow,
    RunFailedError,
    RunFinished,
    RunInputError,
    RunStarted,
    RunStatus,
    StepError,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepStatus,
    StepSucceeded,
    StepTimeoutError,
)
from tests.helpers import InFlight

pytestmark = pytest.mark.anyio


async def test_a_step_starts_while_an_unrelated_slow_step_runs() -> None:
    """Dataflow, not levels: b1 -> b2 runs to the end while the slow root `a` still waits.

    `a` only finishes when b2 has run, so a level-by-level scheduler would deadlock here.
    """
    flow = Flow("dataflow")
    b2_done = anyio.Event()

    @flow.step
    async def a() -> str:
        await b2_done.wait()
        return "a"

    @flow.step
    async def b1() -> int:
        return 1

    @flow.step
    async def b2(b1: int) -> int:
        b2_done.set()
        return b1 + 1

    @flow.step
    async def join(a: str, b2: int) -> str:
        return f"{a}{b2}"

    events: list[Event] = []
    async with Engine(store=None, observers=[events.append]) as engine:
        with anyio.fail_after(5):
            result = await engine.run(flow)
    assert result.outputs["join"] == "a2"
    order = [
        (type(e).__name__, e.step) for e in events if isinstance(e, StepStarted | StepSucceeded)
    ]
    assert order.index(("StepSucceeded", "b2")) < order.index(("StepSucceeded", "a"))
    assert order.index(("StepStarted", "b2")) < order.index(("StepSucceeded", "a"))


async def test_result_reports_each_step() -> None:
    """A succeeded run has each output, status, attempt count and times."""
    flow = Flow("simple")

    @flow.step
    async def ingest(path: str, suffix: str = "!") -> str:
        return path + suffix

    @flow.step
    async def summarize(ingest: str) -> str:
        return ingest.upper()

    async with Engine(store=None) as engine:
        result = await engine.run(flow, path="a.txt")
    assert result.status is RunStatus.SUCCEEDED
    assert result.ok
    assert result.outputs == {"ingest": "a.txt!", "summarize": "A.TXT!"}
    step = result.steps["summarize"]
    assert step.status is StepStatus.SUCCEEDED
    assert step.attempts == 1
    assert step.error is None
    assert step.duration is not None
    assert step.duration >= 0
    assert result.steps["ingest"].finished_at is not None
    assert step.started_at is not None
    assert result.steps["ingest"].finished_at <= step.started_at
    assert result.raise_for_status() is result


async def test_failure_skips_dependents_and_spares_independent_branches() -> None:
    """A failed step skips its transitive dependents; unrelated branches run to the end."""
    flow = Flow("isolation")

    @flow.step
    async def bad() -> int:
        raise ValueError("boom")

    @flow.step
    async def child(bad: int) -> int:
        return bad

    @flow.step
    async def grandchild(child: int) -> int:
        return child

    @flow.step(after=[bad])
    async def ordered() -> None: ...

    @flow.step
    async def good() -> int:
        return 7

    @flow.step
    async def good_child(good: int) -> int:
        return good * 2

    events: list[Event] = []
    async with Engine(store=None, observers=[events.append]) as engine:
        result = await engine.run(flow)
    assert result.status is RunStatus.FAILED
    statuses = {n: r.status for n, r in result.steps.items()}
    assert statuses == {
        "bad": StepStatus.FAILED,
        "child": StepStatus.SKIPPED,
        "grandchild": StepStatus.SKIPPED,
        "ordered": StepStatus.SKIPPED,
        "good": StepStatus.SUCCEEDED,
        "good_child": StepStatus.SUCCEEDED,
    }
    assert result.outputs == {"good": 7, "good_child": 14}
    err = result.steps["bad"].error
    assert isinstance(err, StepError)
    assert err.step == "bad"
    assert isinstance(err.__cause__, ValueError)
    skipped = {e.step: e.reason for e in events if isinstance(e, StepSkipped)}
    assert skipped == {
        "child": "step 'bad' failed",
        "grandchild": "step 'bad' failed",
        "ordered": "step 'bad' failed",
    }
    with pytest.raises(
        RunFailedError, match=r"'bad' \(StepError.*ValueError: boom.*skipped"
    ) as info:
        result.raise_for_status()
    assert set(info.value.errors) == {"bad"}
    assert info.value.__cause__ is err


async def test_fail_fast_cancels_running_steps() -> None:
    """With fail_fast, the first failure cancels running siblings and skips what has not started."""
    flow = Flow("fast")
    sibling_started = anyio.Event()
    sibling_cancelled = anyio.Event()

    @flow.step
    async def sibling() -> None:
        sibling_started.set()
        try:
            await anyio.sleep_forever()
        finally:
            sibling_cancelled.set()

    @flow.step
    async def bad() -> None:
        await sibling_started.wait()
        raise RuntimeError("first failure")

    @flow.step
    async def after_sibling(sibling: None) -> None: ...

    async with Engine(store=None) as engine:
        with anyio.fail_after(5):
            result = await engine.run(flow, fail_fast=True)
    assert sibling_cancelled.is_set()
    assert result.status is RunStatus.FAILED
    assert result.steps["bad"].status is StepStatus.FAILED
    assert result.steps["sibling"].status is StepStatus.CANCELLED
    assert result.steps["after_sibling"].status is StepStatus.SKIPPED


@pytest.mark.parametrize("limit", [1, 3])
async def test_per_step_concurrency_holds_across_runs(limit: int) -> None:
    """concurrency= bounds a step across every run of the engine; the maximum is reached."""
    flow = Flow("limited")
    in_flight = InFlight()
    release = anyio.Event()

    @flow.step(concurrency=limit)
    async def call(n: int) -> int:
        with in_flight:
            await release.wait()
        return n

    async with Engine(store=None) as engine, anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(partial(engine.run, flow, n=n))
        await wait_all_tasks_blocked()
        assert in_flight.now == limit
        release.set()
    assert in_flight.peak == limit


async def test_two_flows_named_alike_do_not_share_step_limits() -> None:
    """Per-step limits belong to the flow object: a same-named flow and step get their own."""
    in_flight = 0
    release = anyio.Event()

    def limited_flow() -> Flow:
        flow = Flow("same name")

        @flow.step(concurrency=1)
        async def call() -> None:
            nonlocal in_flight
            in_flight += 1
            await release.wait()

        return flow

    first, second = limited_flow(), limited_flow()
    async with Engine(store=None) as engine, anyio.create_task_group() as tg:
        tg.start_soon(partial(engine.run, first, run_id="first"))
        tg.start_soon(partial(engine.run, second, run_id="second"))
        await wait_all_tasks_blocked()
        assert in_flight == 2
        release.set()


async def test_a_flow_keeps_its_step_limits_when_steps_are_added() -> None:
    """Adding a step recompiles the flow; runs before and after still share the old step's limit."""
    flow = Flow("growing")
    in_flight = 0
    release = anyio.Event()

    @flow.step(concurrency=1)
    async def call() -> None:
        nonlocal in_flight
        in_flight += 1
        await release.wait()
        in_flight -= 1

    async with Engine(store=None) as engine, anyio.create_task_group() as tg:
        tg.start_soon(engine.run, flow)
        await wait_all_tasks_blocked()

        @flow.step
        async def later(call: None) -> None: ...

        tg.start_soon(engine.run, flow)
        await wait_all_tasks_blocked()
        assert in_flight == 1
        release.set()


async def test_engine_limit_bounds_steps_in_flight() -> None:
    """Engine(concurrency=) bounds steps in flight across all runs and steps."""
    flow = Flow("wide")
    in_flight = InFlight()
    release = anyio.Event()

    async def work() -> None:
        with in_flight:
            await release.wait()

    for k in range(20):
        flow.step(name=f"w{k}")(work)

    async with Engine(store=None, concurrency=4) as engine, anyio.create_task_group() as tg:
        tg.start_soon(engine.run, flow)
        tg.start_soon(partial(engine.run, flow, run_id="second"))
        await wait_all_tasks_blocked()
        assert in_flight.now == 4
        release.set()
    assert in_flight.peak == 4


async def test_timeout_fails_the_step() -> None:
    """A step past its timeout fails with StepTimeoutError; the hanging call is cancelled."""
    flow = Flow("slow")
    cancelled = False

    @flow.step(timeout=0.05)
    async def hang() -> None:
        nonlocal cancelled
        try:
            await anyio.sleep_forever()
        finally:
            cancelled = True

    @flow.step
    async def next_step(hang: None) -> None: ...

    async with Engine(store=None) as engine:
        result = await engine.run(flow)
    assert cancelled
    err = result.steps["hang"].error
    assert isinstance(err, StepTimeoutError)
    assert err.timeout == pytest.approx(0.05)
    assert "timed out after 0.05 s" in str(err)
    assert result.steps["next_step"].status is StepStatus.SKIPPED


async def test_a_timeout_error_raised_by_the_step_is_not_a_step_timeout() -> None:
    """Only the step's own deadline makes a StepTimeoutError; a TimeoutError it raises stays itself."""
    flow = Flow("own-timeout")

    @flow.step(timeout=10)
    async def raises() -> None:
        raise TimeoutError("upstream said so")

    async with Engine(store=None) as engine:
        result = await engine.run(flow)
    err = result.steps["raises"].error
    assert not isinstance(err, StepTimeoutError)
    assert isinstance(err, StepError)
    assert isinstance(err.__cause__, TimeoutError)


async def test_cancelling_the_caller_cancels_steps_and_is_not_a_failure() -> None:
    """Cancelling the awaiting task cancels every running step promptly and records no failure."""
    flow = Flow("cancel")
    started = 0
    cancelled = 0
    all_started = anyio.Event()

    async def hang() -> None:
        nonlocal started, cancelled
        started += 1
        if started == 3:
            all_started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled += 1

    for k in range(3):
        flow.step(name=f"h{k}")(hang)

    @flow.step(after=["h0"])
    async def later() -> None: ...

    events: list[Event] = []
    finished = False
    async with Engine(store=None, observers=[events.append]) as engine:
        with anyio.fail_after(5), anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    nonlocal finished
                    await engine.run(flow)
                    finished = True

                tg.start_soon(run)
                await all_started.wait()
                scope.cancel()
    assert scope.cancelled_caught
    assert not finished
    assert cancelled == 3
    assert not [e for e in events if isinstance(e, StepFailed | RunFinished)]


async def test_events_in_order_and_observer_errors_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every run emits typed events in order; an observer that raises never fails the run."""
    flow = Flow("events")

    @flow.step
    async def a() -> int:
        return 1

    @flow.step
    async def b(a: int) -> int:
        return a

    events: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("observer bug")

    async with Engine(store=None, observers=[broken, events.append]) as engine:
        result = await engine.run(flow, run_id="r1")
    assert result.ok
    kinds = [(type(e).__name__, getattr(e, "step", None)) for e in events]
    assert kinds == [
        ("RunStarted", None),
        ("StepStarted", "a"),
        ("StepSucceeded", "a"),
        ("StepStarted", "b"),
        ("StepSucceeded", "b"),
        ("RunFinished", None),
    ]
    assert isinstance(events[0], RunStarted)
    assert events[0].run_id == "r1"
    assert isinstance(events[-1], RunFinished)
    assert events[-1].status is RunStatus.SUCCEEDED
    assert "observer" in caplog.text


async def test_run_id_is_derived_from_flow_and_inputs() -> None:
    """Without run_id, the same flow and inputs give the same id; other inputs another."""
    flow = Flow("ids")

    @flow.step
    async def a(x: int) -> int:
        return x

    async with Engine(store=None) as engine:
        r1 = await engine.run(flow, x=1)
        r2 = await engine.run(flow, x=1)
        r3 = await engine.run(flow, x=2)
    assert r1.run_id == r2.run_id
    assert r1.run_id != r3.run_id
    assert r1.run_id.startswith("ids-")


async def test_engine_must_be_open() -> None:
    """Running on an engine that is not entered explains how to open it."""
    flow = Flow("closed")

    @flow.step
    async def a() -> None: ...

    with pytest.raises(AsyncflowError, match=r"async with Engine\(\) as engine"):
        await Engine(store=None).run(flow)


@pytest.mark.parametrize("store", [None, "checkpoints"])
async def test_errors_in_the_engine_block_propagate_unwrapped(store: str | None) -> None:
    """An error raised inside `async with Engine()` comes out as itself, not in an ExceptionGroup."""
    flow = Flow("plain-errors")

    @flow.step
    async def a(x: int) -> int:
        return x

    with pytest.raises(RunInputError, match="missing 'x'"):
        async with Engine(store=store) as engine:
            await engine.run(flow)
    with pytest.raises(KeyError):
        async with Engine(store=store) as engine:
            raise KeyError("mine")
