"""DaskExecutor on a real LocalCluster: worker processes, a real loopback server, real SIGKILLs.

Each worker process has 4 run slots (``threads_per_worker=4``: async tasks run on the worker's
loop and use none of those threads) and the ``documents`` flow allows 4 enrich calls at once per
worker engine. The store every engine shares is a SqliteStore file; the tests of durability run
on a FileStore folder too.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import pytest

pytest.importorskip("distributed")

import dask
from distributed import Client, LocalCluster

from asyncflow import (
    Engine,
    ExecutorError,
    Flow,
    FlowRefError,
    RunFinished,
    RunInputError,
    RunResult,
    RunStatus,
    StepError,
    StepStatus,
    StepSucceeded,
)
from asyncflow.executors.dask import PLUGIN_NAME, AsyncflowPlugin, DaskExecutor
from asyncflow.testing import FlakyServer, serve_flaky
from tests.executors.dask_flows import (
    ParseError,
    broken,
    documents,
    engine_factory,
    fatal,
    limited,
    make_store,
    slow,
    two_hosts,
)
from tests.helpers import ROOT, Child, InFlight, until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from asyncflow import Event

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

WORKERS = 2
SLOTS = 4


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@pytest.fixture
def store_dir(tmp_path: Path, store_kind: str) -> str:
    """The shared store, as dask_flows.make_store reads it."""
    name = "store.db" if store_kind == "sqlite" else "store"
    return f"{store_kind}:{tmp_path / name}"


@pytest.fixture
async def client(store_dir: str) -> AsyncIterator[Client]:
    async with (
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=SLOTS,
            processes=True,
            asynchronous=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster, asynchronous=True) as client,
    ):
        await client.register_plugin(AsyncflowPlugin(engine_factory(store_dir)))
        yield client
        # A worker a test killed may still be restarting: closing the cluster before it is back
        # races distributed's own teardown.
        await client.wait_for_workers(WORKERS)


def docs(n: int, api: str) -> list[tuple[str, dict[str, object]]]:
    return [(f"doc-{i:03d}", {"doc": f"doc-{i:03d}", "api": api}) for i in range(n)]


async def stored(client: Client, store_dir: str) -> dict[str, str]:
    """Each run's manifest status, read by a store of its own once the workers' engines closed."""
    await client.unregister_worker_plugin(PLUGIN_NAME)
    store = make_store(store_dir)
    async with store.open():
        return {info.run_id: info.status async for info in store.list_runs()}


@pytest.mark.parametrize("store_kind", ["sqlite", "file"])
async def test_a_batch_runs_on_the_workers_with_the_same_interface(
    client: Client, host_a: FlakyServer, store_dir: str
) -> None:
    """Results stream back once per input, through faults; workers' events reach observers."""
    host_a.error_rate = 0.2
    events: list[Event] = []
    items = docs(30, host_a.url)
    async with Engine(store=make_store(store_dir), observers=[events.append]) as engine:
        batch = engine.map(documents, items, executor=DaskExecutor(client))
        seen = Counter([r.run_id async for r in batch])
        summary = await batch.summary()
    assert seen == Counter(rid for rid, _ in items)
    assert summary.ok, summary.failures
    assert summary.succeeded == 30
    done = {(e.run_id, e.step) for e in events if isinstance(e, StepSucceeded)}
    assert done == {(rid, s) for rid, _ in items for s in ("enrich", "save")}
    assert {e.run_id for e in events if isinstance(e, RunFinished)} == set(seen)
    assert all(host_a.count(f"/enrich/{rid}") >= 1 for rid, _ in items)
    assert set((await stored(client, store_dir)).values()) == {"succeeded"}


async def test_events_of_a_run_in_flight_reach_the_observers_before_it_ends(
    client: Client, host_a: FlakyServer
) -> None:
    """The worker sends a long run's events while it runs, not only with its result."""
    host_a.hang = True
    events: list[Event] = []
    async with Engine(store=None, observers=[events.append]) as engine:
        batch = engine.map(slow, [{"doc": "d", "api": host_a.url}], executor=DaskExecutor(client))
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                results.extend([r async for r in batch])

            results: list[object] = []
            tg.start_soon(consume)
            await until(
                lambda: any(isinstance(e, StepSucceeded) and e.step == "first" for e in events)
            )
            assert results == []  # the run is still waiting on the server
            host_a.release()
            host_a.hang = False
    assert len(results) == 1
    assert [e.step for e in events if isinstance(e, StepSucceeded)] == ["first", "second"]


async def test_results_carry_outputs_and_the_run_s_own_inputs(
    client: Client, host_a: FlakyServer
) -> None:
    async with Engine(store=None) as engine:
        results = [
            r
            async for r in engine.map(documents, docs(3, host_a.url), executor=DaskExecutor(client))
        ]
    by_id = {r.run_id: r for r in results}
    assert by_id["doc-001"].outputs["save"] == "saved doc-001"
    assert by_id["doc-001"].inputs == {"doc": "doc-001", "api": host_a.url}
    assert by_id["doc-001"].steps["enrich"].status is StepStatus.SUCCEEDED


async def test_errors_come_back_intact(client: Client) -> None:
    """Type, message, attributes, cause chain and step survive the trip from the worker."""
    async with Engine(store=None) as engine:
        [result] = [
            r async for r in engine.map(broken, [{"text": "x"}], executor=DaskExecutor(client))
        ]
    assert result.status is RunStatus.FAILED
    error = result.steps["parse"].error
    assert isinstance(error, StepError)
    assert error.step == "parse"
    assert isinstance(error.__cause__, ParseError)
    assert error.__cause__.line == 3
    assert str(error.__cause__) == "not a number: 'x'"
    assert isinstance(error.__cause__.__cause__, ValueError)
    assert "invalid literal for int()" in str(error.__cause__.__cause__)


async def test_an_input_that_cannot_be_shipped_is_that_item_s_failure(
    client: Client, host_a: FlakyServer
) -> None:
    items: list[dict[str, object]] = [
        {"doc": "fine", "api": host_a.url},
        {"doc": object(), "api": host_a.url},
    ]
    async with Engine(store=None) as engine:
        results = {
            r.status: r
            for r in [r async for r in engine.map(documents, items, executor=DaskExecutor(client))]
        }
    assert results[RunStatus.SUCCEEDED].inputs["doc"] == "fine"
    failed = results[RunStatus.FAILED]
    assert isinstance(failed.error, RunInputError)
    assert failed.error.invalid == ("doc",)
    assert host_a.count("/enrich/fine") == 1


async def test_a_flow_other_processes_cannot_import_is_refused_at_map(client: Client) -> None:
    local = Flow("local")

    @local.step
    async def one() -> int:
        return 1

    async with Engine(store=None) as engine:
        with pytest.raises(FlowRefError, match="not bound to a name"):
            engine.map(local, [{}], executor=DaskExecutor(client))


async def test_a_synchronous_client_is_refused() -> None:
    class Sync:
        asynchronous = False

    with pytest.raises(TypeError, match="asynchronous=True"):
        DaskExecutor(Sync())  # type: ignore[arg-type]  # the wrong kind of client, on purpose


async def test_a_worker_without_the_plugin_fails_each_item_clearly(host_a: FlakyServer) -> None:
    async with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            asynchronous=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster, asynchronous=True) as client,
        Engine(store=None) as engine,
    ):
        [result] = [
            r
            async for r in engine.map(documents, docs(1, host_a.url), executor=DaskExecutor(client))
        ]
    assert isinstance(result.error, ExecutorError)
    assert "register_plugin(AsyncflowPlugin" in str(result.error)


async def test_a_cluster_semaphore_bounds_a_host_across_workers(client: Client) -> None:
    """Each worker engine allows 4 calls at once; the semaphore holds the cluster to 3."""
    in_flight = InFlight()

    class Counting(FlakyServer):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            with in_flight:
                await super().__call__(scope, receive, send)

    server = Counting()
    server.latency = 0.05
    async with serve_flaky("127.0.0.2", app=server) as running:
        items = [{"doc": f"d{i}", "api": running.url, "leases": 3} for i in range(24)]
        async with Engine(store=None) as engine:
            summary = await engine.map(limited, items, executor=DaskExecutor(client)).summary()
    assert summary.ok, summary.failures
    assert server.count("/enrich/d0") == 1
    assert in_flight.peak == 3


@pytest.mark.parametrize("store_kind", ["sqlite", "file"])
async def test_a_killed_worker_s_runs_finish_elsewhere_exactly_once(
    client: Client, host_a: FlakyServer, store_dir: str
) -> None:
    """SIGKILL one worker with runs in flight: every document finishes once, none is lost."""
    host_a.latency = 0.3
    items = docs(40, host_a.url)
    pids = await client.run(os.getpid)
    victim = next(iter(pids.values()))
    seen: Counter[str] = Counter()
    before_kill: set[str] = set()
    killed = False
    async with Engine(store=make_store(store_dir)) as engine:
        batch = engine.map(documents, items, executor=DaskExecutor(client))
        async for result in batch:
            assert result.ok, result.errors
            seen[result.run_id] += 1
            # Kill once 6 enrich requests are in flight: with 4 slots a worker, the victim
            # holds at least 2 of them.
            if not killed and len(seen) >= 4:
                await until(lambda: host_a.requests - len(seen) >= 6)
                before_kill = set(seen)
                os.kill(victim, signal.SIGKILL)
                killed = True
        summary = await batch.summary()
    assert killed
    assert summary.ok
    assert seen == Counter(rid for rid, _ in items)  # every document, each once
    assert set((await stored(client, store_dir)).values()) == {"succeeded"}
    counts = {rid: host_a.count(f"/enrich/{rid}") for rid, _ in items}
    assert all(counts[rid] == 1 for rid in before_kill)  # nothing finished ran again
    # The kill landed mid-batch. Whether a victim's run repeats its request depends on whether
    # its enrich checkpoint was durable before the kill (then it is restored): both are right.
    assert len(before_kill) < len(items)


@pytest.mark.parametrize("store_kind", ["sqlite", "file"])
async def test_a_killed_worker_s_runs_resume_from_their_checkpoints(
    client: Client, host_a: FlakyServer, host_b: FlakyServer, store_dir: str
) -> None:
    """Runs whose first step was checkpointed on a killed worker restore it elsewhere."""
    host_b.hang = True  # every run waits in `publish`, after `fetch` is checkpointed
    items = [
        (f"run-{i}", {"doc": f"d{i}", "api": host_a.url, "sink": host_b.url}) for i in range(8)
    ]
    pids = await client.run(os.getpid)
    async with Engine(store=make_store(store_dir)) as engine, anyio.create_task_group() as tg:
        results: list[RunResult] = []

        async def consume() -> None:
            results.extend(
                [r async for r in engine.map(two_hosts, items, executor=DaskExecutor(client))]
            )

        tg.start_soon(consume)
        await host_b.wait_for_requests(8)  # 4 runs on each worker, all past `fetch`
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        host_b.hang = False
        host_b.release()
    assert sorted(r.run_id for r in results) == sorted(rid for rid, _ in items)
    assert all(r.ok for r in results), [r.errors for r in results]
    restored = [r for r in results if r.steps["fetch"].status is StepStatus.RESTORED]
    assert len(restored) == 4  # the victim's four
    assert all(host_a.count(f"/enrich/d{i}") == 1 for i in range(8))  # no fetch ran twice


@pytest.mark.parametrize("store_kind", ["sqlite", "file"])
async def test_a_restarted_coordinator_resumes_the_batch(
    client: Client, host_a: FlakyServer, store_dir: str, tmp_path: Path
) -> None:
    """SIGKILL the client process mid-batch and run it again: no finished run runs again."""
    host_a.latency = 0.05
    log = tmp_path / "child.log"
    address = client.scheduler_info()["address"]
    child = Child("tests.executors.dask_child", address, host_a.url, store_dir, str(log), log=log)
    try:
        await until(lambda: len(child.lines()) >= 10 or not child.alive())
        assert child.alive(), child.stderr()
    finally:
        child.proc.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(child.proc.wait)
        assert child.proc.stdin is not None
        child.proc.stdin.close()
    finished_first = {line.split()[1] for line in child.lines()}
    counts_then = {rid: host_a.count(f"/enrich/{rid}") for rid in finished_first}
    rerun = Child("tests.executors.dask_child", address, host_a.url, store_dir, str(log), log=log)
    first = len(child.lines())
    assert await anyio.to_thread.run_sync(rerun.proc.wait) == 0, rerun.stderr()
    assert rerun.proc.stdin is not None
    rerun.proc.stdin.close()
    results = [line.split() for line in rerun.lines()[first:]]
    assert sorted(rid for _, rid, _, _ in results) == [f"doc-{i:03d}" for i in range(40)]
    assert all(status == "succeeded" for _, _, status, _ in results)
    restored = {rid for _, rid, _, how in results if how == "restored"}
    assert finished_first <= restored
    assert {rid: host_a.count(f"/enrich/{rid}") for rid in finished_first} == counts_then


async def test_the_example_runs_and_resumes(tmp_path: Path) -> None:
    """examples/dask/run.py: one command, two clusters; the second run restores every document."""
    out = await anyio.run_process(
        [
            sys.executable,
            str(ROOT / "examples" / "dask" / "run.py"),
            "--documents",
            "20",
            "--out",
            str(tmp_path),
        ]
    )
    text = out.stdout.decode()
    assert "first run:  20 documents succeeded on 2 workers" in text
    assert "second run: 20 succeeded, 20 restored from checkpoints, 0 enrich requests" in text


async def test_a_run_that_keeps_killing_its_workers_fails_clearly() -> None:
    """Resubmitted after the scheduler gives up on it, then an ExecutorError naming the cause."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        async with (
            LocalCluster(
                n_workers=1,
                threads_per_worker=1,
                processes=True,
                asynchronous=True,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            await client.register_plugin(AsyncflowPlugin(functools.partial(Engine, store=None)))
            async with Engine(store=None) as engine:
                executor = DaskExecutor(client, resubmit=1)
                [result] = [
                    r
                    async for r in engine.map(fatal, [("doomed", {"doc": "x"})], executor=executor)
                ]
            # The nanny is restarting the worker again: closing the cluster before it is back
            # races distributed's own teardown ("can only join a started process").
            await client.wait_for_workers(1)
    assert isinstance(result.error, ExecutorError)
    assert "'doomed' was lost with its Dask workers 2 times" in str(result.error)
    assert type(result.error.__cause__).__name__ == "KilledWorker"
