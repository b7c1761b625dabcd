"""One owner per run: single-flight in an engine, worker processes sharing a batch and a folder.

Real processes on one FileStore folder, a real loopback server counting each document's calls,
real SIGKILL.
"""

from __future__ import annotations

import collections
import functools
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest

from asyncflow import Engine, FileStore, Flow, LeaseLostError, StepStatus
from asyncflow.stores import MemoryStore
from tests.helpers import Child, dones, log_lines, until
from tests.test_checkpoint_crash import check_no_reexecution

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from asyncflow.stores import CheckpointStore, Lease
    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio

DOCS = 600


def expected(docs: int) -> dict[str, str]:
    return {f"doc-{n}": f"/doc/{n}:{n * 7 % 11}" for n in range(docs)}


def doc_calls(server: FlakyServer) -> collections.Counter[str]:
    return collections.Counter({p: c for p, c in server.paths.items() if p.startswith("/doc/")})


async def test_two_processes_on_one_batch_and_folder_call_each_document_once(
    tmp_path: Path, host_a: FlakyServer
) -> None:
    """Two workers run the same 600 documents: 600 calls in all, each document's once."""
    log = tmp_path / "log"
    args = ("tests.lease_child", str(tmp_path / "s"), str(log), host_a.url, str(DOCS))
    # One log of steps for both; standard output and error each their own (beside "one", "two").
    one, two = Child(*args, log=tmp_path / "one"), Child(*args, log=tmp_path / "two")
    outs = [await anyio.to_thread.run_sync(c.finish_json, 120) for c in (one, two)]
    assert outs == [expected(DOCS), expected(DOCS)]
    calls = doc_calls(host_a)
    assert sum(calls.values()) == DOCS
    assert set(calls.values()) == {1}
    lines = log_lines(log)
    assert check_no_reexecution(lines) == 2 * DOCS  # each step of each document ran once
    execs = collections.Counter(ln for ln in lines if ln.startswith("exec"))
    assert set(execs.values()) == {1}


async def test_a_worker_sigkilled_mid_batch_leaves_the_other_to_finish_every_document_once(
    tmp_path: Path, host_a: FlakyServer
) -> None:
    """The survivor takes over the dead one's runs; a durable step never runs again."""
    log = tmp_path / "log"
    args = ("tests.lease_child", str(tmp_path / "s"), str(log), host_a.url, str(DOCS))
    doomed, survivor = Child(*args, log=tmp_path / "doomed"), Child(*args, log=tmp_path / "two")

    def half_done() -> bool:
        return doomed.wait_for(lambda _: dones(log_lines(log)) >= DOCS)

    await anyio.to_thread.run_sync(half_done)
    doomed.kill()
    killed_at = doc_calls(host_a)
    assert await anyio.to_thread.run_sync(survivor.finish_json, 120) == expected(DOCS)
    calls = doc_calls(host_a)
    assert set(calls) == {f"/doc/{n}" for n in range(DOCS)}
    repeated = sum(calls.values()) - DOCS
    # Only fetches in flight at the kill repeat: at most one batch's concurrency (20).
    assert repeated <= 20, (repeated, sum(killed_at.values()))
    check_no_reexecution(log_lines(log))
    # A last pass restores everything and calls nothing.
    again = Child(*args, log=tmp_path / "again")
    assert await anyio.to_thread.run_sync(again.finish_json, 120) == expected(DOCS)
    assert sum(doc_calls(host_a).values()) == sum(calls.values())


def counted_flow(calls: list[str], gate: anyio.Event) -> Flow:
    flow = Flow("counted")

    @flow.step
    async def work(key: str) -> str:
        calls.append(key)
        await gate.wait()
        return key.upper()

    return flow


@pytest.mark.parametrize("store", ["memory", "files", "none"])
async def test_five_callers_of_one_run_in_one_engine_share_one_execution(store: str) -> None:
    calls: list[str] = []
    gate = anyio.Event()
    flow = counted_flow(calls, gate)
    chosen: CheckpointStore | str | None = (
        MemoryStore() if store == "memory" else "ckpt" if store == "files" else None
    )
    async with Engine(store=chosen) as engine:
        results = []

        async def call() -> None:
            results.append(await engine.run(flow, key="k"))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call)
            await until(lambda: len(calls) == 1)
            gate.set()
        assert calls == ["k"]
        assert len(results) == 5
        assert all(r is results[0] for r in results)
        assert results[0].outputs == {"work": "K"}
        # Once it is over, calling again is a new call (restored from its checkpoint).
        later = await engine.run(flow, key="k")
        assert later.outputs == {"work": "K"}


async def test_a_waiting_caller_runs_the_run_when_the_first_caller_is_cancelled() -> None:
    calls: list[str] = []
    gate = anyio.Event()
    flow = counted_flow(calls, gate)
    async with Engine(store=MemoryStore()) as engine:
        got = []
        first = anyio.CancelScope()

        async def leader() -> None:
            with first:
                await engine.run(flow, key="k")

        async def follower() -> None:
            got.append(await engine.run(flow, key="k"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            await until(lambda: len(calls) == 1)
            tg.start_soon(follower)
            await anyio.wait_all_tasks_blocked()
            first.cancel()
            await until(lambda: len(calls) == 2)
            gate.set()
        assert [r.outputs for r in got] == [{"work": "K"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_engine_paused_past_its_lease_cannot_write_after_a_takeover() -> None:
    """Its step's save is refused, the run stops with LeaseLostError; the new owner's stays."""
    calls: list[str] = []
    gate = anyio.Event()
    flow = counted_flow(calls, gate)
    clock = Clock()
    store = MemoryStore(clock=clock)
    async with Engine(store=store, lease_ttl=10) as engine:
        failed: list[BaseException] = []

        async def run() -> None:
            try:
                await engine.run(flow, run_id="r", key="k")
            except LeaseLostError as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await until(lambda: len(calls) == 1)
            clock.now += 11  # the engine "paused" past its lease
            taken = await store.claim_run("r", owner="another engine", ttl=10)
            gate.set()
        assert taken is not None
        (error,) = failed
        assert isinstance(error, LeaseLostError)
        assert error.run_id == "r"
        assert "taken over by another owner" in str(error)
        loaded = await store.load_run("r")
        assert dict(loaded.steps) == {}  # nothing of the stale owner's was written
        # Released by the new owner, the run is this engine's again, and completes.
        await store.release_run(taken)
        done = await engine.run(flow, run_id="r", key="k")
        assert done.steps["work"].status is StepStatus.SUCCEEDED


async def test_admitted_runs_are_admitted_once_and_start_with_resume(tmp_path: Path) -> None:
    calls: list[str] = []
    gate = anyio.Event()
    gate.set()
    flow = counted_flow(calls, gate)
    async with Engine(store=tmp_path / "s") as engine:
        assert await engine.admit(flow, run_id="hook-1", key="a") is True
        assert await engine.admit(flow, run_id="hook-1", key="a") is False
        assert engine.store is not None
        (pending,) = [i async for i in engine.store.list_runs(status="pending")]
        assert (pending.run_id, pending.flow) == ("hook-1", "counted")
        assert calls == []
        result = await engine.resume(flow, "hook-1")
        assert result.outputs == {"work": "A"}
        manifest = (await engine.store.load_run("hook-1")).manifest
        assert manifest is not None
        assert (manifest.status, manifest.created_at) == ("succeeded", pending.created_at)
        assert await engine.admit(flow, run_id="hook-1", key="a") is False


class CountsRenewals(MemoryStore):
    """Counts renew_leases() calls; with ``lose``, reports every lease lost."""

    def __init__(self, clock: Clock, *, lose: bool = False) -> None:
        super().__init__(clock=clock)
        self.renewals = 0
        self.lose = lose

    async def renew_leases(self, leases: Sequence[Lease], /, *, ttl: float) -> list[Lease | None]:
        self.renewals += 1
        if self.lose:
            return [None for _ in leases]
        return await super().renew_leases(leases, ttl=ttl)


async def test_a_run_longer_than_its_lease_keeps_it_by_renewals() -> None:
    calls: list[str] = []
    gate = anyio.Event()
    flow = counted_flow(calls, gate)
    clock = Clock()
    store = CountsRenewals(clock)
    async with Engine(store=store, lease_ttl=0.3) as engine:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(engine.run, flow, run_id="r", key="k"))
            await until(lambda: len(calls) == 1)
            for n in range(1, 4):
                await until(lambda: store.renewals >= n)  # noqa: B023 - used at once
                clock.now += 0.25  # past the first ttl, not past a renewed one
            assert await store.claim_run("r", owner="other", ttl=1) is None
            gate.set()
    assert calls == ["k"]


async def test_a_lease_the_renewer_loses_stops_the_run_with_lease_lost_error() -> None:
    calls: list[str] = []
    flow = counted_flow(calls, anyio.Event())  # never set: only the lost lease ends the step
    store = CountsRenewals(Clock(), lose=True)
    async with Engine(store=store, lease_ttl=0.3) as engine:
        with pytest.raises(LeaseLostError, match="not renewed in time") as lost:
            await engine.run(flow, run_id="r", key="k")
    assert lost.value.run_id == "r"
    assert calls == ["k"]


async def test_a_refused_save_stops_the_other_steps_of_a_file_store_run(tmp_path: Path) -> None:
    """A FileStore lease never expires; a save it refuses still stops the whole run."""
    store = FileStore(tmp_path / "s")
    flow = Flow("refused")
    slow_started = anyio.Event()

    @flow.step
    async def slow() -> str:
        slow_started.set()
        await anyio.sleep_forever()
        return "never"

    @flow.step
    async def fast() -> str:
        await slow_started.wait()
        # Give the lease up under the run: its next save (this step's) is refused.
        held = await store.claim_run("r", owner=engine.owner, ttl=30)
        assert held is not None
        await store.release_run(held)
        return "done"

    async with Engine(store=store) as engine:
        with anyio.fail_after(30), pytest.raises(LeaseLostError, match="taken over") as lost:
            await engine.run(flow, run_id="r")
    assert lost.value.run_id == "r"
