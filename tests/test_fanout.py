"""Fan-out inside a flow: ``map_over=`` runs a step once per item, bounded, durable per item."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncflow import (
    Context,
    Engine,
    Event,
    FanOutError,
    FileStore,
    Flow,
    FlowDefinitionError,
    LeaseLostError,
    Retry,
    StepError,
    StepFailed,
    StepRetrying,
    StepStarted,
    StepStatus,
)
from asyncflow.stores import Lease, MemoryStore, StepCheckpoint
from tests.helpers import InFlight, until

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio


def word_flow(*, concurrency: int | None = None, fail: frozenset[str] = frozenset()) -> Flow:
    """Split -> upper (mapped) -> join, over the words of a text; words in ``fail`` raise."""
    flow = Flow("words")

    @flow.step
    async def split(text: str) -> list[str]:
        return text.split()

    @flow.step(map_over=split, concurrency=concurrency)
    async def upper(split: str) -> str:
        if split in fail:
            raise ValueError(f"cannot take {split!r}")
        return split.upper()

    @flow.step
    async def join(upper: list[str]) -> str:
        return " ".join(upper)

    return flow


def counted_words(name: str, calls: list[str], *, joined: bool = False) -> Flow:
    """Split -> upper (mapped, each item's call noted in ``calls``) [-> join, noted too]."""
    flow = Flow(name)

    @flow.step
    async def split(text: str) -> list[str]:
        return text.split()

    @flow.step(map_over=split)
    async def upper(split: str) -> str:
        calls.append(split)
        return split.upper()

    if joined:

        @flow.step
        async def join(upper: list[str]) -> str:
            calls.append("join")
            return "".join(upper)

    return flow


async def test_items_are_joined_in_input_order_whatever_order_they_finish_in() -> None:
    """Item k finishes only after item k+1: the output is still in input order."""
    flow = Flow("reverse-finish")
    n = 6
    finished = [anyio.Event() for _ in range(n)]

    @flow.step
    async def items() -> list[int]:
        return list(range(n))

    @flow.step(map_over=items, concurrency=n)
    async def square(items: int) -> int:
        if items + 1 < n:
            await finished[items + 1].wait()
        finished[items].set()
        return items * items

    async with Engine(store=None) as engine:
        result = await engine.run(flow)
    assert result.ok
    assert result.outputs["square"] == [k * k for k in range(n)]
    assert result.steps["square"].status is StepStatus.SUCCEEDED
    assert result.steps["square"].attempts == n


async def test_concurrency_bounds_the_items_in_flight_and_the_tasks_alive() -> None:
    """10,000 items with concurrency=4: at most 4 calls at once, and never thousands of tasks."""
    flow = Flow("bounded")
    in_flight = InFlight()
    tasks_seen = 0

    @flow.step
    async def numbers(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over=numbers, concurrency=4)
    async def double(numbers: int) -> int:
        nonlocal tasks_seen
        with in_flight:
            tasks_seen = max(tasks_seen, len(asyncio.all_tasks()))
            await anyio.lowlevel.checkpoint()
            return numbers * 2

    async with Engine(store=None) as engine:
        result = await engine.run(flow, n=10_000)
    assert result.outputs["double"] == [2 * k for k in range(10_000)]
    assert in_flight.peak == 4
    # The test's own task and the step's workers: items are pulled, not spawned up front.
    assert tasks_seen <= 8


async def test_the_mapped_step_output_feeds_downstream_steps() -> None:
    """The joined list is what the next step receives."""
    async with Engine(store=None) as engine:
        result = await engine.run(word_flow(concurrency=2), text="a b c")
    assert result.outputs["join"] == "A B C"


async def test_an_empty_list_gives_an_empty_output() -> None:
    """No items: the mapped step succeeds with [] and its dependents run."""
    async with Engine(store=MemoryStore()) as engine:
        result = await engine.run(word_flow(), text="")
    assert result.ok
    assert result.outputs["upper"] == []
    assert result.outputs["join"] == ""
    assert result.steps["upper"].status is StepStatus.SUCCEEDED


async def test_a_generator_output_is_mapped_without_a_length() -> None:
    """Without a store a step may return any iterable, a generator too; items stream from it."""
    flow = Flow("gen")

    @flow.step
    async def numbers() -> object:
        return (k for k in range(5))

    @flow.step(map_over="numbers", concurrency=2)
    async def plus_one(numbers: int) -> int:
        return numbers + 1

    async with Engine(store=None) as engine:
        result = await engine.run(flow)
    assert result.outputs["plus_one"] == [1, 2, 3, 4, 5]


async def test_failed_items_fail_the_step_with_their_indices_after_the_others_ran() -> None:
    """Two bad items: FanOutError names indices 1 and 3; the good items all ran; join skipped."""
    async with Engine(store=None) as engine:
        result = await engine.run(word_flow(fail=frozenset({"bad"})), text="a bad c bad e")
    assert not result.ok
    err = result.steps["upper"].error
    assert isinstance(err, FanOutError)
    assert err.indices == [1, 3]
    assert set(err.failed) == {1, 3}
    assert isinstance(err.failed[1].__cause__, ValueError)
    assert "failed for 2 of 5 items (indices 1, 3)" in str(err)
    assert "cannot take 'bad'" in str(err)
    assert result.steps["join"].status is StepStatus.SKIPPED


async def test_each_item_is_retried_on_its_own(host_a: FlakyServer, no_waits: None) -> None:
    """A 503 on one item's first request retries that item alone; the step succeeds."""
    flow = Flow("fetch-many")
    retrying: list[StepRetrying] = []

    @flow.step
    async def paths(n: int) -> list[str]:
        return [f"/doc/{k}" for k in range(n)]

    @flow.step(map_over=paths, concurrency=1, retry=Retry(attempts=3))
    async def fetch(paths: str, url: str, ctx: Context) -> int:
        response = await ctx.http.get(url + paths)
        response.raise_for_status()
        return response.status_code

    def on_event(event: Event) -> None:
        if isinstance(event, StepRetrying):
            retrying.append(event)

    host_a.fail_next(1, status=503)
    async with Engine(store=None, observers=[on_event]) as engine:
        result = await engine.run(flow, n=4, url=host_a.url)
    assert result.ok, result.errors
    assert result.outputs["fetch"] == [200] * 4
    assert host_a.count("/doc/0") == 2  # concurrency=1: the first request was item 0's
    assert [host_a.count(f"/doc/{k}") for k in range(1, 4)] == [1, 1, 1]
    assert result.steps["fetch"].attempts == 5
    # Labelled by the step, not by the item: observers' labels stay few.
    assert [e.step for e in retrying] == ["fetch"]


async def test_a_resumed_run_runs_only_the_items_that_failed(host_a: FlakyServer) -> None:
    """Items are checkpointed one by one: the second run requests only the failed item again."""
    flow = Flow("fetch-resume")
    broken = {2}

    @flow.step
    async def paths(n: int) -> list[str]:
        return [f"/doc/{k}" for k in range(n)]

    @flow.step(map_over=paths, concurrency=3)
    async def fetch(paths: str, url: str, ctx: Context) -> str:
        k = int(paths.rsplit("/", 1)[1])
        target = f"{url}/status/500" if k in broken else url + paths
        response = await ctx.http.get(target)
        response.raise_for_status()
        return paths

    async with Engine(store=FileStore("store")) as engine:
        first = await engine.run(flow, run_id="docs", n=6, url=host_a.url)
        assert isinstance(first.steps["fetch"].error, FanOutError)
        assert first.steps["fetch"].error.indices == [2]
        broken.clear()
        second = await engine.run(flow, run_id="docs", n=6, url=host_a.url)
    assert second.ok
    assert second.outputs["fetch"] == [f"/doc/{k}" for k in range(6)]
    assert [host_a.count(f"/doc/{k}") for k in range(6)] == [1, 1, 1, 1, 1, 1]
    assert host_a.count("/status/500") == 1
    assert second.steps["fetch"].attempts == 1


async def test_a_fully_checkpointed_fan_out_is_restored_without_running_an_item() -> None:
    """Run twice: the second run restores every item; the step is RESTORED, nothing runs."""
    calls: list[str] = []
    flow = counted_words("restore-all", calls, joined=True)

    async with Engine(store=FileStore("store")) as engine:
        await engine.run(flow, text="x y z")
        again = await engine.run(flow, text="x y z")
    assert calls == ["x", "y", "z", "join"]
    assert again.restored
    assert again.outputs == {"split": ["x", "y", "z"], "upper": ["X", "Y", "Z"], "join": "XYZ"}


async def test_an_item_keeps_its_checkpoint_when_other_items_change() -> None:
    """Items are identified by their own content: changing one word re-runs only that word."""
    calls: list[str] = []
    flow = counted_words("per-item", calls)

    async with Engine(store=MemoryStore()) as engine:
        await engine.run(flow, run_id="r", text="a b c")
        calls.clear()
        result = await engine.run(flow, run_id="r", text="a B c")
    assert calls == ["B"]
    assert result.outputs["upper"] == ["A", "B", "C"]


async def test_a_sigkilled_fan_out_resumes_without_rerunning_durable_items(
    tmp_path: Path, host_a: FlakyServer
) -> None:
    """SIGKILL in the middle of a fan-out; the resume requests only the items not yet saved.

    Counted on the server: across the killed run and the resume, every item is requested once.
    """
    from tests.fanout_child import HOLD_FROM, ITEMS, WIDTH, flow
    from tests.helpers import Child

    store, log = tmp_path / "store", tmp_path / "log"
    child = Child("tests.fanout_child", str(store), str(log), host_a.url, log=log)
    held = {f"exec {k}" for k in range(HOLD_FROM, HOLD_FROM + WIDTH)}
    # Every worker holds an item >= HOLD_FROM: each saved its item before it took the next.
    await until(lambda: held <= set(child.lines()) or not child.alive())
    assert child.alive(), child.stderr()
    child.kill()
    assert [host_a.count(f"/item/{k}") for k in range(HOLD_FROM)] == [1] * HOLD_FROM
    assert host_a.requests == HOLD_FROM

    async with Engine(store=FileStore(store)) as engine:
        kept = await engine.store.load_run("fan") if engine.store is not None else None
        assert kept is not None
        assert {f"fetch[{k}]" for k in range(HOLD_FROM)} <= set(kept.steps)
        result = await engine.resume(flow, "fan")
    assert result.ok, result.errors
    assert result.outputs["fetch"] == [f"/item/{k}" for k in range(ITEMS)]
    assert [host_a.count(f"/item/{k}") for k in range(ITEMS)] == [1] * ITEMS


async def test_mapping_over_a_non_iterable_fails_the_step_clearly() -> None:
    """An int cannot be mapped over: the step fails naming both steps; nothing is called."""
    flow = Flow("not-iterable")

    @flow.step
    async def count() -> int:
        return 3

    @flow.step(map_over=count)
    async def each(count: int) -> int:
        raise AssertionError("never called")

    failed: list[StepFailed] = []
    async with Engine(
        store=None, observers=[lambda e: failed.extend([e] if isinstance(e, StepFailed) else [])]
    ) as engine:
        result = await engine.run(flow)
    err = result.steps["each"].error
    assert isinstance(err, StepError)
    assert "Step 'each' maps over the output of 'count', a int, which is not iterable" in str(err)
    assert "Return a list" in str(err)
    assert [e.step for e in failed] == ["each"]


@pytest.mark.parametrize(
    ("value", "why"),
    [("abc", "character by character"), ({"a": 1}, "list(d.items())")],
)
async def test_text_and_mappings_are_refused_as_sources(value: object, why: str) -> None:
    """A str (or a dict) is iterable but almost never meant item by item: refused, with a hint."""
    flow = Flow("refused")

    @flow.step
    async def source() -> object:
        return value

    @flow.step(map_over=source)
    async def each(source: object) -> object:
        return source

    async with Engine(store=None) as engine:
        result = await engine.run(flow)
    assert why in str(result.steps["each"].error)


async def test_an_item_that_cannot_be_checkpointed_fails_alone() -> None:
    """With a store, an item the codec cannot encode fails that item, named, not the others."""
    flow = Flow("unencodable")

    @flow.step
    async def source() -> list[object]:
        return [1, 2]

    @flow.step(map_over=source)
    async def each(source: int) -> object:
        return object() if source == 2 else source

    async with Engine(store=MemoryStore()) as engine:
        result = await engine.run(flow)
    err = result.steps["each"].error
    assert isinstance(err, FanOutError)
    assert err.indices == [1]
    assert "cannot be checkpointed" in str(err)


async def test_fail_fast_stops_the_items_at_the_first_failure() -> None:
    """With fail_fast, the first failed item cancels the items in flight."""
    flow = Flow("fail-fast")
    started: list[int] = []

    @flow.step
    async def source() -> list[int]:
        return list(range(100))

    @flow.step(map_over=source, concurrency=2)
    async def each(source: int) -> int:
        started.append(source)
        if source == 1:
            raise ValueError("boom")
        await anyio.sleep_forever()
        raise AssertionError

    async with Engine(store=None, fail_fast=True) as engine:
        result = await engine.run(flow)
    assert isinstance(result.steps["each"].error, FanOutError)
    assert started == [0, 1]


async def test_step_started_once_for_the_mapped_step() -> None:
    """Observers see the mapped step start and succeed once, not once per item."""
    events: list[Event] = []
    async with Engine(store=None, observers=[events.append]) as engine:
        await engine.run(word_flow(), text="a b c d")
    assert [e.step for e in events if isinstance(e, StepStarted)] == ["split", "upper", "join"]


@pytest.mark.parametrize(
    ("map_over", "message"),
    [
        ("nope", "maps over 'nope', which is not one of its parameters"),
        ("text", "maps over 'text', which is not one of its parameters named after a step"),
    ],
)
def test_map_over_must_name_a_data_dependency(map_over: str, message: str) -> None:
    """map_over= names a step whose output the step takes; anything else is a definition error."""
    flow = Flow("bad-map")

    @flow.step
    async def split(text: str) -> list[str]:
        return text.split()

    @flow.step(map_over=map_over)
    async def each(split: str, text: str) -> str:
        return split

    with pytest.raises(FlowDefinitionError, match=message) as info:
        flow.validate()
    assert info.value.step == "each"


def test_pictures_of_a_flow_show_fan_out_and_conditions() -> None:
    """Flow.draw marks a mapped step with its source and a conditional one with when."""
    flow = Flow("drawn")

    @flow.step
    async def split(text: str) -> list[str]:
        return text.split()

    @flow.step(map_over=split, concurrency=3)
    async def enrich(split: str) -> str:
        return split

    @flow.step(when=lambda enrich: bool(enrich))
    async def report(enrich: list[str]) -> int:
        return len(enrich)

    assert flow.draw().splitlines()[2:] == [
        "  enrich(split)  [concurrency=3, map_over=split]",
        "  report(enrich)  [when]",
    ]
    assert '    enrich["enrich (map_over=split)"]' in flow.draw("mermaid").splitlines()
    assert '    "report" [label="report (when)"];' in flow.draw("dot").splitlines()


class RecordingStore(MemoryStore):
    """A MemoryStore that notes the name of every checkpoint it saved."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.saved: list[str] = []

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        await super().save_step(checkpoint, lease=lease)
        self.saved.append(checkpoint.step)


async def test_items_saved_after_a_takeover_are_refused_and_the_run_stops() -> None:
    """Every item's save carries the run's lease: a stale owner's items write nothing."""
    now = [1000.0]
    store = RecordingStore(clock=lambda: now[0])
    gate = anyio.Event()
    flow = Flow("leased-items")

    @flow.step
    async def numbers() -> list[int]:
        return list(range(6))

    @flow.step(map_over=numbers, concurrency=2)
    async def each(numbers: int) -> int:
        if numbers >= 2:
            await gate.wait()
        return numbers

    async with Engine(store=store, lease_ttl=10) as engine:
        failed: list[BaseException] = []

        async def run() -> None:
            try:
                await engine.run(flow, run_id="r")
            except LeaseLostError as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await until(lambda: len(store.saved) == 3)
            now[0] += 11  # this engine "paused" past its lease
            taken = await store.claim_run("r", owner="another engine", ttl=10)
            assert taken is not None
            gate.set()
        kept = set((await store.load_run("r")).steps)
    assert len(failed) == 1
    assert sorted(store.saved) == ["each[0]", "each[1]", "numbers"]
    assert kept == {"numbers", "each[0]", "each[1]"}


def test_the_cli_shows_a_mapped_step_as_one_entry(capsys: pytest.CaptureFixture[str]) -> None:
    """`asyncflow show` counts a mapped step's kept items instead of listing each."""
    from asyncflow._cli import main as cli_main

    async def go() -> None:
        async with Engine(store=FileStore("store")) as engine:
            await engine.run(word_flow(), run_id="w", text="a bb ccc")

    anyio.run(go)
    assert cli_main(["show", "w", "--store", "store", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    upper = shown["steps"]["upper"]
    assert (upper["items"], upper["output_bytes"]) == (3, 12)  # beside the run's step details
    assert set(shown["steps"]) == {"split", "upper", "join"}
    assert cli_main(["show", "w", "--store", "store"]) == 0
    (line,) = [t for t in capsys.readouterr().out.splitlines() if t.startswith("  upper ")]
    assert line.endswith(": 3 items kept, output 12 bytes")


async def test_forgetting_a_mapped_step_forgets_every_item() -> None:
    """engine.forget(run, step=) on a mapped step: the resumed run runs every item again."""
    calls: list[str] = []
    flow = counted_words("forget-items", calls)

    async with Engine(store=MemoryStore()) as engine:
        await engine.run(flow, run_id="r", text="a b")
        assert await engine.forget("r", step="upper")
        assert not await engine.forget("r", step="upper")  # nothing left to forget
        again = await engine.resume(flow, "r")
    assert calls == ["a", "b", "a", "b"]
    assert again.steps["split"].status is StepStatus.RESTORED
    assert again.steps["upper"].status is StepStatus.SUCCEEDED
