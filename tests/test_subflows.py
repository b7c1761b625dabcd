"""Sub-flows: a step runs another flow on its engine through ``ctx.run``."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import anyio
import pytest

from asyncflow import (
    AsyncflowError,
    Batch,
    CircuitOpenError,
    Context,
    Engine,
    Event,
    FileStore,
    Flow,
    HostPolicy,
    RunInputError,
    RunResult,
    RunStarted,
    StepFailed,
    StepStatus,
    SubflowDepthError,
)
from asyncflow.stores import MemoryStore
from tests.helpers import InFlight, until

if TYPE_CHECKING:
    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio


def output(result: RunResult, step: str) -> int:
    """A step's int output from a run that must have succeeded."""
    value = result.raise_for_status().outputs[step]
    assert isinstance(value, int)
    return value


def child_flow(calls: list[str]) -> Flow:
    child = Flow("child")

    @child.step
    async def a(x: int) -> int:
        calls.append(f"a{x}")
        return x + 1

    @child.step
    async def b(a: int) -> int:
        calls.append(f"b{a}")
        return a * 10

    return child


async def test_a_sub_flow_runs_on_the_same_engine_store_and_observers() -> None:
    """The child's run id is derived from the parent's run and step.

    Its events and checkpoints go where the parent's go.
    """
    calls: list[str] = []
    child = child_flow(calls)
    parent = Flow("parent")

    @parent.step
    async def call(n: int, ctx: Context) -> int:
        first = await ctx.run(child, x=n)
        second = await ctx.run(child, x=n + 1)
        named = await ctx.run(child, key="named", x=n + 2)
        return sum(output(r, "b") for r in (first, second, named))

    events: list[Event] = []
    store = MemoryStore()
    async with Engine(store=store, observers=[events.append]) as engine:
        result = await engine.run(parent, run_id="p1", n=1)
        kept = await store.load_run("p1.call")
    assert result.outputs["call"] == 20 + 30 + 40
    started = [(e.run_id, e.flow) for e in events if isinstance(e, RunStarted)]
    assert started == [
        ("p1", "parent"),
        ("p1.call", "child"),
        ("p1.call.2", "child"),
        ("p1.call.named", "child"),
    ]
    assert kept.manifest is not None
    assert kept.manifest.status == "succeeded"
    assert set(kept.steps) == {"a", "b"}


async def test_a_sub_flow_shares_the_engine_circuits(host_a: FlakyServer) -> None:
    """Failures the child sees open the host's circuit for the parent too."""
    child = Flow("child-http")

    @child.step
    async def get(url: str, ctx: Context) -> int:
        response = await ctx.http.get(url)
        response.raise_for_status()
        return response.status_code

    parent = Flow("parent-http")

    @parent.step
    async def outer(url: str, ctx: Context) -> str:
        for k in range(2):
            child_result = await ctx.run(child, key=str(k), url=url)
            if child_result.ok:
                return "child succeeded"
        try:
            await ctx.http.get(url)
        except CircuitOpenError:
            return "open"
        return "closed"

    host_a.outage = True
    async with Engine(store=None, host_policy=HostPolicy(fail_max=2, reset_timeout=60.0)) as engine:
        result = await engine.run(parent, url=host_a.url + "/x")
        states = {host: s.state for host, s in engine.host_statistics().items()}
    assert result.outputs["outer"] == "open"
    assert host_a.requests == 2  # the children's two; the parent's was refused unsent
    assert list(states.values()) == ["open"]


async def test_parents_filling_the_engine_limit_do_not_deadlock_their_children() -> None:
    """concurrency=2 and four parents waiting on sub-flows: all finish.

    Before, a waiting parent held its slot: two parents filled the engine and their children
    waited forever. A waiting step now lends its slots out.
    """
    calls: list[str] = []
    child = child_flow(calls)
    parent = Flow("parents")

    @parent.step
    async def wait_for_child(n: int, ctx: Context) -> int:
        return output(await ctx.run(child, x=n), "b")

    async with Engine(store=None, concurrency=2) as engine:
        with anyio.fail_after(20):
            results = [r async for r in engine.map(parent, [{"n": n} for n in range(4)])]
    assert sorted(output(r, "wait_for_child") for r in results) == [10, 20, 30, 40]


ENGINE: Engine | None = None


async def test_engine_map_from_inside_a_step_no_longer_deadlocks() -> None:
    """The spelling issue 15 reported: a step calls engine.map through a module global.

    With concurrency=2 and two outer runs, each outer step holds a slot while it iterates; the
    inner runs need slots too. The waiting step lends them out, so the batch finishes.
    """
    global ENGINE
    calls: list[str] = []
    child = child_flow(calls)
    outer = Flow("outer")

    @outer.step
    async def fan(n: int) -> list[int]:
        assert ENGINE is not None
        batch = ENGINE.map(child, [{"x": n * 10 + k} for k in range(3)], concurrency=3)
        inner = [output(r, "b") async for r in batch]
        direct = await ENGINE.run(child, x=n)
        return sorted([*inner, output(direct, "b")])

    try:
        async with Engine(store=None, concurrency=2) as ENGINE:
            with anyio.fail_after(20):
                results = [r async for r in ENGINE.map(outer, [{"n": 1}, {"n": 2}])]
    finally:
        ENGINE = None
    assert sorted(tuple(cast("list[int]", r.outputs["fan"])) for r in results) == [
        (20, 110, 120, 130),
        (30, 210, 220, 230),
    ]


async def test_a_step_limit_still_bounds_parents_waiting_for_sub_flows() -> None:
    """Waiting parents lend their engine slot, not their step's: concurrency=2 holds."""
    in_flight = InFlight()
    two_in = anyio.Event()  # children wait until two parents are in at once
    child = Flow("held-until-two")

    @child.step
    async def b(x: int) -> int:
        await two_in.wait()
        return x * 10

    parent = Flow("bounded-parents")

    @parent.step(concurrency=2)
    async def wait_for_child(n: int, ctx: Context) -> int:
        with in_flight:
            if in_flight.now == 2:
                two_in.set()
            return output(await ctx.run(child, x=n), "b")

    async with Engine(store=None, concurrency=3) as engine:
        with anyio.fail_after(20):
            results = [r async for r in engine.map(parent, [{"n": n} for n in range(6)])]
    assert all(r.ok for r in results)
    assert in_flight.peak == 2


async def test_a_recursive_flow_with_a_step_limit_of_one_terminates() -> None:
    """A step with concurrency=1 whose sub-flow is its own flow: the nested run shares its slot."""
    tree = Flow("countdown")

    @tree.step(concurrency=1)
    async def down(n: int, ctx: Context) -> int:
        if n == 0:
            return 0
        return 1 + output(await ctx.run(tree, n=n - 1), "down")

    async with Engine(store=None) as engine:
        with anyio.fail_after(20):
            result = await engine.run(tree, n=5)
    assert result.outputs["down"] == 5


async def test_a_sub_flow_resumes_with_its_parent() -> None:
    """The child failed in its second step; resuming the parent restores the child's first."""
    calls: list[str] = []
    broken = {"b": True}
    child = Flow("child-resume")

    @child.step
    async def a(x: int) -> int:
        calls.append("a")
        return x + 1

    @child.step
    async def b(a: int) -> int:
        calls.append("b")
        if broken["b"]:
            raise ValueError("not yet")
        return a * 10

    parent = Flow("parent-resume")

    @parent.step
    async def outer(x: int, ctx: Context) -> int:
        return output(await ctx.run(child, x=x), "b")

    async with Engine(store=FileStore("store")) as engine:
        first = await engine.run(parent, run_id="job", x=1)
        assert first.steps["outer"].status is StepStatus.FAILED
        broken["b"] = False
        resumed = await engine.resume(parent, "job")
        child_kept = await engine.resume(child, "job.outer")
    assert resumed.outputs["outer"] == 20
    assert calls == ["a", "b", "b"]
    assert child_kept.restored


async def test_items_of_a_fan_out_run_sub_flows_under_their_own_ids() -> None:
    """ctx.run from an item: the run id names the item."""
    calls: list[str] = []
    child = child_flow(calls)
    flow = Flow("fan-sub")

    @flow.step
    async def numbers() -> list[int]:
        return [1, 2, 3]

    @flow.step(map_over=numbers)
    async def each(numbers: int, ctx: Context) -> int:
        return output(await ctx.run(child, x=numbers), "b")

    events: list[Event] = []
    async with Engine(store=None, observers=[events.append]) as engine:
        result = await engine.run(flow, run_id="f")
    assert result.outputs["each"] == [20, 30, 40]
    children = sorted(e.run_id for e in events if isinstance(e, RunStarted) and e.flow == "child")
    assert children == ["f.each.0", "f.each.1", "f.each.2"]


async def test_a_flow_that_calls_itself_forever_stops_at_the_depth_limit() -> None:
    """The innermost step fails with SubflowDepthError naming the limit and what to check."""
    loop = Flow("loop")

    @loop.step
    async def again(n: int, ctx: Context) -> int:
        return output(await ctx.run(loop, n=n + 1), "again")

    depth_errors: list[SubflowDepthError] = []

    def on_event(event: Event) -> None:
        if isinstance(event, StepFailed) and isinstance(event.error.__cause__, SubflowDepthError):
            depth_errors.append(event.error.__cause__)

    async with Engine(store=None, observers=[on_event]) as engine:
        result = await engine.run(loop, run_id="l", n=0)
    assert not result.ok
    [err] = depth_errors
    assert err.depth == 20
    assert len(err.chain) == 22  # the outermost run, 20 nested, and the one refused
    assert err.chain[:2] == ("l", "l.again")
    assert "over the limit of 20" in str(err)
    assert "needs a case that stops" in str(err)


async def test_a_reserved_name_given_to_ctx_run_fails_the_step_clearly() -> None:
    """run_id= is not a sub-flow input: the step fails saying how to name a call instead."""
    child = child_flow([])
    parent = Flow("reserved")

    @parent.step
    async def outer(ctx: Context) -> object:
        return await ctx.run(child, run_id="mine", x=1)

    async with Engine(store=None) as engine:
        result = await engine.run(parent)
    err = result.steps["outer"].error
    assert err is not None
    assert isinstance(err.__cause__, RunInputError)
    assert "name the call with key=" in str(err)


async def test_ctx_run_outside_an_engine_says_so() -> None:
    """A Context made by hand has no engine to run a sub-flow on."""
    ctx = Context(run_id="r", step="s")
    with pytest.raises(AsyncflowError, match="made outside an engine"):
        await ctx.run(child_flow([]), x=1)


async def test_a_batch_a_step_leaves_running_keeps_no_slot_of_that_step() -> None:
    """A step breaks out of a batch it started; the batch runs on and leaks no slot.

    The batch's runs are the engine's own: once the step has ended they can neither hold nor
    take back the step's slot, so afterwards a run can still use both of the engine's slots.
    """
    released = anyio.Event()
    child = Flow("held-child")

    @child.step
    async def b(x: int) -> int:
        if x > 0:
            await released.wait()
        return x * 10

    outer = Flow("leaves-early")
    batches: list[Batch] = []

    @outer.step
    async def first_only() -> int:
        assert ENGINE is not None
        batch = ENGINE.map(child, [{"x": k} for k in range(5)], concurrency=5)
        batches.append(batch)
        async for result in batch:
            return output(result, "b")
        raise AssertionError("the batch gave nothing")

    # Two steps that each wait for the other: this run needs both of the engine's slots.
    pair = Flow("pair")
    seen = {"p": anyio.Event(), "q": anyio.Event()}

    @pair.step
    async def p() -> str:
        seen["p"].set()
        await seen["q"].wait()
        return "p"

    @pair.step
    async def q() -> str:
        seen["q"].set()
        await seen["p"].wait()
        return "q"

    global ENGINE
    try:
        async with Engine(store=None, concurrency=2) as ENGINE:
            with anyio.fail_after(20):
                left = await ENGINE.run(outer)
                # The other four finish only now, after the step that started them.
                released.set()
                await until(lambda: batches[0].statistics().done == 5)
                both = await ENGINE.run(pair)
            await batches[0].aclose()
    finally:
        ENGINE = None
    assert left.outputs["first_only"] == 0
    assert both.outputs == {"p": "p", "q": "q"}


async def test_a_step_that_waits_for_its_own_run_fails_instead_of_deadlocking() -> None:
    """engine.run from a step with the step's own run id would wait for itself: refused."""
    flow = Flow("self-wait")

    @flow.step
    async def again(ctx: Context) -> str:
        assert ENGINE is not None
        await ENGINE.run(flow, run_id=ctx.run_id)
        return "never"

    global ENGINE
    try:
        async with Engine(store=None) as ENGINE:
            with anyio.fail_after(20):
                result = await ENGINE.run(flow, run_id="me")
    finally:
        ENGINE = None
    err = result.steps["again"].error
    assert err is not None
    assert "Run 'me' cannot wait for itself" in str(err)
