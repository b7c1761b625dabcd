"""Engine.map: streaming, bounded, isolated, budgeted batches."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from asyncflow import (
    AsyncflowError,
    Batch,
    BatchProgress,
    Engine,
    Event,
    Flow,
    ProgressBar,
    RunInputError,
    RunResult,
    RunStatus,
)
from tests.helpers import Child, InFlight, dones, log_lines

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
    from pathlib import Path

    from anyio.abc import TaskGroup

pytestmark = pytest.mark.anyio


def doubling_flow() -> Flow:
    flow = Flow("double")

    @flow.step
    async def double(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative: {x}")
        return x * 2

    return flow


async def test_results_stream_in_finishing_order() -> None:
    """A fast run is yielded before a slow one that started earlier."""
    flow = Flow("stream")
    release_slow = anyio.Event()

    @flow.step
    async def work(name: str) -> str:
        if name == "slow":
            await release_slow.wait()
        return name

    seen: list[str] = []
    async with Engine(store=None) as engine:
        with anyio.fail_after(5):
            async for result in engine.map(flow, [{"name": "slow"}, {"name": "fast"}]):
                seen.append(str(result.outputs["work"]))
                release_slow.set()
    assert seen == ["fast", "slow"]


async def test_concurrency_bound_is_never_exceeded() -> None:
    """At most `concurrency` runs are in flight, and the bound is reached."""
    flow = Flow("bounded")
    in_flight = InFlight()
    gate = anyio.Event()

    @flow.step
    async def work(n: int) -> int:
        with in_flight:
            await gate.wait()
        return n

    async with Engine(store=None) as engine, anyio.create_task_group() as tg:
        batch = engine.map(flow, ({"n": n} for n in range(50)), concurrency=3)
        summary_box: list[object] = []

        async def consume() -> None:
            summary_box.append(await batch.summary())

        tg.start_soon(consume)
        await wait_all_tasks_blocked()
        assert in_flight.now == 3
        gate.set()
    assert in_flight.peak == 3
    assert batch.statistics().succeeded == 50


async def test_inputs_are_pulled_lazily() -> None:
    """A stalled consumer stops the batch from pulling inputs: memory follows concurrency."""
    flow = doubling_flow()
    pulled = 0

    def inputs() -> Iterator[dict[str, int]]:
        nonlocal pulled
        for x in range(100_000):
            pulled += 1
            yield {"x": x}

    async with Engine(store=None) as engine:
        async with engine.map(flow, inputs(), concurrency=4) as batch:
            first = await batch.__anext__()
            await wait_all_tasks_blocked()
            # 4 runs blocked on a buffer of 4 results, one taken, one slot being refilled.
            assert pulled <= 2 * 4 + 2
        assert first.ok


async def test_one_failure_does_not_stop_the_others() -> None:
    """Failed runs are reported; the rest succeed; the summary counts both."""
    flow = doubling_flow()
    async with Engine(store=None) as engine:
        summary = await engine.map(flow, [{"x": x} for x in (1, -1, 2, -2, 3)]).summary()
    assert (summary.succeeded, summary.failed, summary.total) == (3, 2, 5)
    assert summary.not_started == 0
    assert not summary.ok
    assert sorted(r.inputs["x"] for r in summary.failures) == [-2, -1]  # type: ignore[type-var]


async def test_failure_budget_stops_launching() -> None:
    """Past max_failures no new run starts; the rest are reported as not started."""
    flow = doubling_flow()
    async with Engine(store=None) as engine:
        summary = await engine.map(
            flow, [{"x": -1 - n} for n in range(100)], concurrency=1, max_failures=2
        ).summary()
    assert summary.failed == 3
    assert summary.not_started == 97
    assert summary.stopped is not None
    assert "max_failures=2" in summary.stopped


async def test_failure_rate_budget_with_unsized_inputs() -> None:
    """max_failure_rate stops a batch whose recent runs mostly fail (judged from 20 runs on)."""
    flow = doubling_flow()
    launched = 0

    async def inputs() -> AsyncIterator[dict[str, int]]:
        nonlocal launched
        for n in range(1_000):
            launched += 1
            yield {"x": 1 if n < 30 else -1}

    async with Engine(store=None) as engine:
        summary = await engine.map(flow, inputs(), concurrency=1, max_failure_rate=0.5).summary()
    assert summary.stopped is not None
    assert "max_failure_rate=0.5" in summary.stopped
    assert summary.succeeded == 30
    assert summary.not_started is None  # unknown: the generator has no length
    assert launched < 100


async def test_async_generator_inputs_and_explicit_run_ids() -> None:
    """Inputs may come from an async generator, as (run_id, inputs) pairs."""
    flow = doubling_flow()

    async def inputs() -> AsyncIterator[tuple[str, dict[str, int]]]:
        for x in range(10):
            yield f"doc-{x}", {"x": x}

    async with Engine(store=None) as engine:
        results = {r.run_id: r.outputs["double"] async for r in engine.map(flow, inputs())}
    assert results == {f"doc-{x}": 2 * x for x in range(10)}


async def test_bad_item_inputs_fail_that_item_only() -> None:
    """An item with missing inputs is a failed result with a clear error, not a crashed batch."""
    flow = doubling_flow()
    async with Engine(store=None) as engine:
        results = [r async for r in engine.map(flow, [{"x": 1}, {"y": 2}, {"x": 3}])]
    failed = [r for r in results if r.status is RunStatus.FAILED]
    assert len(results) == 3
    assert len(failed) == 1
    assert isinstance(failed[0].error, RunInputError)
    assert "missing 'x' (needed by 'double'); unexpected input 'y'" in str(failed[0].error)
    assert failed[0].run_id == "double-item-1"


async def test_malformed_item_raises_after_the_runs_in_flight() -> None:
    """An item that is neither a mapping nor a pair raises TypeError, naming the item."""
    flow = doubling_flow()
    got: list[int] = []

    async def consume(engine: Engine) -> None:
        async for r in engine.map(flow, [{"x": 1}, 42], concurrency=1):  # type: ignore[list-item]
            got.append(int(r.outputs["double"]))  # type: ignore[call-overload]

    async with Engine(store=None) as engine:
        with pytest.raises(TypeError, match=r"item 1 is int 42.*mapping of run inputs"):
            await consume(engine)
    assert got == [2]


async def test_progress_events_and_bar() -> None:
    """BatchProgress events count what happened; the bar draws them."""
    flow = doubling_flow()
    events: list[Event] = []
    out = io.StringIO()
    bar = ProgressBar(out, force=True)
    async with Engine(store=None, observers=[events.append, bar]) as engine:
        await engine.map(flow, [{"x": x} for x in (1, 2, -3)], name="nums").summary()
    last = [e for e in events if isinstance(e, BatchProgress)][-1]
    assert last.finished
    assert (last.batch, last.done, last.succeeded, last.failed, last.total) == ("nums", 3, 2, 1, 3)
    assert last.in_flight == 0
    assert "3/3" in out.getvalue()
    assert "failed 1" in out.getvalue()


async def test_total_gives_generator_inputs_a_total_and_an_eta() -> None:
    """map(..., total=N) over a generator: progress events and the bar show N, and an eta."""
    events: list[Event] = []
    out = io.StringIO()
    bar = ProgressBar(out, force=True)
    inputs = ({"x": x} for x in range(1, 5))
    async with Engine(store=None, observers=[events.append, bar]) as engine:
        summary = await engine.map(doubling_flow(), inputs, total=4, name="gen").summary()
        untold = engine.map(doubling_flow(), ({"x": x} for x in range(1, 5)), name="untold")
        await untold.summary()
    gen = [e for e in events if isinstance(e, BatchProgress) and e.batch == "gen"]
    assert {e.total for e in gen} == {4}
    assert gen[-1].eta == 0.0
    assert summary.total == 4
    assert "4/4" in out.getvalue()
    last_untold = [e for e in events if isinstance(e, BatchProgress) and e.batch == "untold"][-1]
    assert (last_untold.total, last_untold.eta) == (None, None)


@pytest.mark.parametrize("total", [-1, 2.5, "4"])
async def test_total_must_be_a_count(total: object) -> None:
    """A total that is not a whole number of inputs is refused before anything runs."""
    async with Engine(store=None) as engine:
        with pytest.raises(ValueError, match="total="):
            engine.map(doubling_flow(), [], total=total)  # type: ignore[arg-type]


async def test_closing_the_engine_stops_an_abandoned_batch() -> None:
    """A batch left mid-iteration is cancelled when its engine closes; iterating says so."""
    flow = Flow("hang")
    started = anyio.Event()

    @flow.step
    async def hang(x: int) -> None:
        started.set()
        await anyio.sleep_forever()

    async with Engine(store=None) as engine:
        batch = engine.map(flow, [{"x": 1}])
        async with anyio.create_task_group() as tg:
            tg.start_soon(batch.__anext__)  # starts the batch, then waits for its first result
            await started.wait()
            tg.cancel_scope.cancel()
    with pytest.raises(AsyncflowError, match="stopped before it finished"):
        await batch.__anext__()


def _log_lines(path: Path) -> list[tuple[str, str, str]]:
    return [(kind, run, step) for kind, run, step in (line.split() for line in log_lines(path))]


def test_sigkilled_batch_resumes_with_only_the_rest(tmp_path: Path) -> None:
    """A batch killed halfway with SIGKILL, run again, restores what was done and runs the rest."""
    n = 300
    store, log = tmp_path / "store", tmp_path / "log"
    args = ("tests.batch_child", str(store), str(log), str(n))
    child = Child(*args, log=log)
    # Kill once a good share of steps is durable: progress-driven, not a guessed sleep.
    child.wait_for(lambda lines: dones(lines) >= 200)
    child.kill()
    first = _log_lines(log)
    done = {(run, step) for kind, run, step in first if kind == "done"}
    half_done = {run for run, step in done if step == "parse" and (run, "score") not in done}
    fully_done = {run for run, step in done if step == "score"}
    assert fully_done
    assert len(fully_done) < n

    summary = Child(*args, log=log).finish_json(timeout=120)
    assert isinstance(summary, dict)
    assert sorted(summary) == ["failed", "restored", "succeeded"]
    assert (summary["succeeded"], summary["failed"]) == (n, 0)
    # Fully done runs are restored (a few more may have been saved just before the kill).
    assert len(fully_done) <= summary["restored"] <= len(fully_done) + 16
    rerun = _log_lines(log)[len(first) :]
    executed = {(run, step) for kind, run, step in rerun if kind == "exec"}
    # Nothing whose checkpoint was durable ran again: half-done runs resumed at their second
    # step (or restored it, when its save beat the kill but its log line did not).
    assert not executed & done
    assert half_done
    assert not {(run, "parse") for run in half_done} & executed
    ever = {(run, step) for kind, run, step in first if kind == "exec"} | executed
    assert all((f"item-{x}", step) in ever for x in range(n) for step in ("parse", "score"))


class RecordingRunner:
    """A runner that is not an Engine: its own task group, its own event list, runs on an engine."""

    def __init__(self, engine: Engine, tg: TaskGroup) -> None:
        self.engine = engine
        self.tg = tg
        self.events: list[Event] = []
        self.run_ids: list[str | None] = []

    def start_soon(self, fn: Callable[[], Coroutine[object, object, None]], /) -> None:
        self.tg.start_soon(fn)

    @property
    def emit(self) -> Callable[[Event], None]:
        return self.events.append

    def run(
        self,
        flow: Flow,
        /,
        *,
        run_id: str | None,
        fail_fast: bool | None,
        inputs: Mapping[str, object],
    ) -> Awaitable[RunResult]:
        self.run_ids.append(run_id)
        return self.engine.run(flow, run_id=run_id, fail_fast=fail_fast, traceparent=None, **inputs)


async def test_a_batch_runs_on_any_runner_not_only_an_engine() -> None:
    """Batch needs only start_soon, emit and run: a service or an executor can drive it."""
    flow = Flow("runner")

    @flow.step
    async def double(x: int) -> int:
        return 2 * x

    async with Engine(store=None) as engine, anyio.create_task_group() as tg:
        runner = RecordingRunner(engine, tg)
        batch = Batch(
            runner,
            flow,
            [{"x": 1}, ("two", {"x": 2})],
            concurrency=2,
            max_failures=None,
            max_failure_rate=None,
            fail_fast=None,
            name=None,
            progress=False,
        )
        summary = await batch.summary()
    assert (summary.succeeded, summary.failed) == (2, 0)
    assert sorted(runner.run_ids, key=str) == [None, "two"]
    progress = [e for e in runner.events if isinstance(e, BatchProgress)]
    assert progress[-1].finished
    assert progress[-1].succeeded == 2
