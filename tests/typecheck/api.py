"""The public API as users write it: type-checked by mypy, never run."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, assert_type

import anyio
import httpx
from starlette.applications import Starlette

from asyncflow import (
    Batch,
    BatchStatistics,
    BatchSummary,
    CircuitState,
    Context,
    Engine,
    Flow,
    FlowRef,
    HostPolicy,
    LeaseLostError,
    RunHook,
    RunResult,
    StepResult,
    StepStatus,
)
from asyncflow.events import (
    BatchProgress,
    Event,
    HttpRequestFinished,
    Observer,
    StepStarted,
    StepSucceeded,
    StoreWrite,
)
from asyncflow.observe import LogObserver, redact_urls
from asyncflow.observe.otel import OpenTelemetryObserver
from asyncflow.stores import (
    CheckpointStore,
    FileStore,
    Lease,
    MemoryStore,
    RunCheckpoints,
    RunInfo,
    SqliteStore,
)
from asyncflow.stores.postgres import PostgresStore
from asyncflow.testing import check_checkpoint_store
from asyncflow.web import LiveView, runs_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from asyncflow.executors import Executor

flow = Flow("documents")


@flow.step
async def ingest(path: str) -> dict[str, str]:
    return {"path": path}


@flow.step(timeout=30.0, concurrency=50)
async def enrich(ingest: dict[str, str], ctx: Context) -> dict[str, str]:
    assert_type(ctx.http, httpx.AsyncClient)  # present inside a step: no None check
    return {**ingest, "run": ctx.run_id}


@flow.step(after=[enrich])
async def notify() -> None: ...


async def users_code() -> None:
    # The decorator keeps the function's own signature: it can still be called directly.
    assert_type(await ingest("a.txt"), dict[str, str])
    async with Engine() as engine:
        result = await engine.run(flow, path="a.txt")
        assert_type(result, RunResult)
        assert_type(result.steps["enrich"], StepResult)
        if result.steps["enrich"].status is StepStatus.SUCCEEDED:
            result.raise_for_status()
        batch = engine.map(flow, ({"path": f"{n}.txt"} for n in range(10)), concurrency=5, total=10)
        assert_type(batch, Batch)
        assert_type(batch.statistics(), BatchStatistics)
        async for item in batch:
            assert_type(item, RunResult)
        assert_type(await engine.map(flow, [("id-1", {"path": "b.txt"})]).summary(), BatchSummary)


async def users_logging_code() -> None:
    observer: Observer = LogObserver("app.flows", retry_level=10)
    async with Engine(observers=[observer, LogObserver()]):
        assert_type(redact_urls("https://u:p@h/x?k=1"), str)


async def users_store_code() -> None:
    # Every store is a CheckpointStore to the type checker, as a user's own store would be.
    stores: list[CheckpointStore] = [
        FileStore(".asyncflow"),
        MemoryStore(),
        SqliteStore("runs.db", busy_timeout=10.0),
        PostgresStore("postgresql://app@db/app", max_size=20, prepare_threshold=None),
    ]
    store = MemoryStore()
    async with Engine(store=store) as engine:
        await engine.run(flow, run_id="doc-1", path="a.txt")
    async with store.open():
        assert_type(await store.load_run("doc-1"), RunCheckpoints)
        async for info in store.list_runs():
            assert_type(info, RunInfo)
            assert_type(info.failed_steps, tuple[str, ...])
    await check_checkpoint_store(MemoryStore, persistent=True)
    await check_checkpoint_store(lambda: FileStore("x"), leases_expire=False)
    assert stores


async def users_lease_code() -> None:
    store = MemoryStore()
    async with Engine(store=store, lease_ttl=10.0) as engine:
        assert_type(engine.owner, str)
        assert_type(await engine.admit(flow, run_id="hook-1", path="a.txt"), bool)
        await engine.resume(flow, "hook-1")
        lease = await store.claim_run("r", owner=engine.owner, ttl=10.0)
        if lease is not None:
            assert_type(lease, Lease)
            assert_type(lease.epoch, int)
            assert_type(await store.renew_leases([lease], ttl=10.0), list[Lease | None])
            await store.release_run(lease)
        async for info in store.list_runs(status="pending", since="2026-01-01T00:00:00"):
            assert_type(info.status, str)
    try:
        pass
    except LeaseLostError as exc:
        assert_type(exc.epoch, int)


def users_observer(event: Event) -> None:
    # An exporter imports the events alone; a plain function is an Observer.
    if isinstance(event, StepSucceeded):
        assert_type(event.attempts, int)


observer: Observer = users_observer


def users_flow_refs() -> None:
    # A flow named by text (the CLI, a service, a worker) and back.
    ref = FlowRef.parse("examples/hello.py:flow")
    assert_type(ref.load(), Flow)
    assert_type(FlowRef.of(flow), FlowRef)
    assert_type(str(ref), str)


async def users_runs_page() -> None:
    # The runs page over an engine's store, live, with the new events' fields.
    view = LiveView()
    async with Engine(store=".asyncflow", observers=[view]) as engine:
        assert engine.store is not None
        app = runs_app(engine.store, live=view, flows=[flow, "examples/hello.py:flow"])
        assert_type(app, Starlette)
    for host in view.hosts.values():
        assert_type(host.state, CircuitState)


def users_exporter(event: Event) -> None:
    if isinstance(event, HttpRequestFinished):
        assert_type(event.status_class, str)
    elif isinstance(event, StoreWrite):
        assert_type(event.error, str | None)
    elif isinstance(event, StepStarted):
        assert_type(event.flow, str)
    elif isinstance(event, BatchProgress):
        assert_type(event.batch_id, str)


chunks = Flow("chunks")


@chunks.step
async def split(text: str) -> list[str]:
    return text.split()


@chunks.step(map_over=split, concurrency=8, when=lambda split: bool(split))
async def embed(split: str, ctx: Context) -> list[float]:
    child = await ctx.run(flow, key=split, path=split)
    assert_type(child, RunResult)
    return [float(len(split))]


@chunks.step(map_over="split")
async def count(split: str) -> int:
    return len(split)


@chunks.step
async def join(embed: list[list[float]] | None = None) -> int:
    return len(embed or [])


async def users_postgres_code() -> None:
    store = PostgresStore("postgresql://app@db/app", migrate=False, retry_timeout=60.0)
    async with store.open():
        lease = await store.claim_run("r", owner="me", ttl=30.0)
        if lease is None:
            with anyio.move_on_after(5):
                await store.wait_released("r")
        async for info in store.list_runs(status="failed", since="2026-01-01T00:00:00+00:00"):
            assert_type(info, RunInfo)


async def users_service(items: AsyncIterator[dict[str, str]]) -> None:
    # The shape: triggers of every kind in one Service, entered inside an app.
    from asyncflow import Service
    from asyncflow.triggers import Cron, NewFiles, Queue, RedisStream, Webhook

    service = Service(
        Engine(store="runs/"),
        triggers=[
            Cron("*/5 * * * *", flow, tz="Europe/Paris", inputs=lambda t: {"path": t.isoformat()}),
            Webhook("/documents", flow, secret="s", inputs=lambda body: {"path": body["path"]}),
            NewFiles("inbox/", flow, pattern="*.txt", inputs=lambda p: {"path": str(p)}),
            RedisStream("redis://127.0.0.1:6379/0", stream="documents", group="g", flow=flow),
            Queue(items, flow, key=lambda item: item["id"]),
        ],
        host="127.0.0.1",
        port=8080,
    )
    service.mount("/metrics", service.app)
    async with service:
        assert_type(service.accepting, bool)
        await service.wait_idle()


async def users_dask_code() -> None:
    # The executor is a keyword of map; the plugin takes the engine's factory.
    import functools

    from distributed import Client

    from asyncflow.executors.dask import AsyncflowPlugin, DaskExecutor

    async with Client("tcp://scheduler:8786", asynchronous=True) as client:
        await client.register_plugin(AsyncflowPlugin(functools.partial(Engine, store="shared")))
        executor: Executor = DaskExecutor(client)
        async with Engine(store=None) as engine:
            batch = engine.map(flow, [{"path": "a.txt"}], executor=executor)
            assert_type(batch, Batch)


versioned = Flow("versioned")


@versioned.step(version="2")
async def summarise(text: str, ctx: Context) -> str:
    assert_type(ctx.resource("prefix", str), str)
    assert_type(ctx.resources["prefix"], object)
    return text


async def users_rate_trace_and_forget_code() -> None:
    policy = HostPolicy(rate=10, burst=5)
    tracing = OpenTelemetryObserver()
    hook: RunHook = tracing
    async with Engine(
        hosts={"api.example.com": policy}, resources={"prefix": "> "}, observers=[tracing]
    ) as engine:
        result = await engine.run(versioned, traceparent=None, text="x")
        assert_type(result.started, datetime | None)
        assert_type(result.steps["summarise"].finished, datetime | None)
        assert_type(await engine.forget(result.run_id, step="summarise"), bool)
    assert hook
