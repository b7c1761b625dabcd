from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
import redis.asyncio as redis

from asyncflow import Engine, Event, Flow, Service, TriggerInvalid
from asyncflow.triggers import Queue, RedisStream
from tests.helpers import statuses, until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.triggers.conftest import RedisServer

pytestmark = pytest.mark.anyio


async def _one(item: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    yield item


def doc_flow(done: list[str], gate: anyio.Event | None = None) -> Flow:
    flow = Flow("docs")

    @flow.step
    async def ingest(doc: str) -> str:
        if gate is not None:
            await gate.wait()
        done.append(doc)
        return doc

    return flow


async def test_a_queue_admits_each_item_once_and_acks_after_admission(tmp_path: Path) -> None:
    done: list[str] = []
    acked: list[dict[str, str]] = []
    send, receive = anyio.create_memory_object_stream[dict[str, str]](10)

    async def ack(item: dict[str, str]) -> None:
        acked.append(item)

    trigger = Queue(
        receive,
        doc_flow(done),
        key=lambda item: item["id"],
        inputs=lambda i: {"doc": i["doc"]},
        ack=ack,
    )
    engine = Engine(store=tmp_path / "runs")
    async with receive, send, Service(engine, triggers=[trigger]):
        for item in [{"id": "1", "doc": "a"}, {"id": "2", "doc": "b"}, {"id": "1", "doc": "a"}]:
            await send.send(item)
        await until(lambda: len(acked) == 3)
        await until(lambda: sorted(done) == ["a", "b"])
        assert engine.store is not None
        runs = await statuses(engine.store)
    assert sorted(runs) == ["queue-docs@1", "queue-docs@2"]


async def test_a_full_service_stops_pulling_from_the_queue(tmp_path: Path) -> None:
    """With one run allowed in flight, the second item is not taken until the first finishes."""
    done: list[str] = []
    gate = anyio.Event()
    send, receive = anyio.create_memory_object_stream[dict[str, str]](0)  # a send waits for a pull
    trigger = Queue(receive, doc_flow(done, gate))
    service = Service(Engine(store=tmp_path / "runs"), triggers=[trigger], max_in_flight=1)
    async with receive, send, service:
        await send.send({"doc": "a"})
        await send.send({"doc": "b"})  # pulled: waits for a slot before admission
        await until(lambda: service.statistics()["in_flight"] == 1)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.WouldBlock):
            send.send_nowait({"doc": "c"})  # nobody pulls while full
        gate.set()
        await until(lambda: sorted(done) == ["a", "b"])


async def test_redis_entries_run_once_with_xack_after_admission(
    tmp_path: Path, redis_url: str
) -> None:
    done: list[str] = []
    client: Any = redis.from_url(redis_url, decode_responses=True)
    async with client:
        ids = [await client.xadd("docs", {"doc": d}) for d in ("a", "b")]
        trigger = RedisStream(redis_url, stream="docs", group="g", flow=doc_flow(done), block=0.05)
        engine = Engine(store=tmp_path / "runs")
        async with Service(engine, triggers=[trigger]):
            await until(lambda: sorted(done) == ["a", "b"])

            async def pending() -> int:
                return int((await client.xpending("docs", "g"))["pending"])

            while await pending():  # noqa: ASYNC110 - a state on the server
                await anyio.sleep(0.01)
            assert engine.store is not None
            runs = await statuses(engine.store)
    assert sorted(runs) == sorted(f"redis-docs@{i}" for i in ids)


async def test_a_dead_consumers_pending_entries_are_claimed_and_run_once(
    tmp_path: Path, redis_url: str
) -> None:
    """Entries a consumer read and never acknowledged are claimed after the idle time.

    One was not admitted yet: it runs. The other was (the crash came between admission and
    XACK): it is a duplicate, acknowledged, not run again.
    """
    done: list[str] = []
    client: Any = redis.from_url(redis_url, decode_responses=True)
    async with client:
        await client.xgroup_create("docs", "g", id="0", mkstream=True)
        first = await client.xadd("docs", {"doc": "a"})
        second = await client.xadd("docs", {"doc": "b"})
        await client.xreadgroup("g", "dead", {"docs": ">"}, count=10)  # delivered, never acked
        flow = doc_flow(done)
        engine = Engine(store=tmp_path / "runs")
        trigger = RedisStream(
            redis_url, stream="docs", group="g", flow=flow, claim_idle=0.05, block=0.05
        )
        # The dead consumer's process admitted `second` before it died (same trigger name).
        earlier = Queue(_one({"doc": "b"}), flow, name="redis-docs", key=lambda _: second)
        async with Service(Engine(store=tmp_path / "runs"), triggers=[earlier]) as service:
            await until(lambda: done == ["b"])
        async with Service(engine, triggers=[trigger]) as service:
            await until(lambda: sorted(done) == ["a", "b"])
            while int((await client.xpending("docs", "g"))["pending"]):  # noqa: ASYNC110
                await anyio.sleep(0.01)
            counts = service.statistics()["triggers"]
            assert isinstance(counts, dict)
            assert counts["redis-docs"]["admitted"] == 1
            assert counts["redis-docs"]["duplicate"] == 1
    assert done == ["b", "a"]
    assert first != second


async def test_a_poison_entry_is_dead_lettered_after_max_failures(
    tmp_path: Path, redis_url: str
) -> None:
    done: list[str] = []
    events: list[Event] = []
    client: Any = redis.from_url(redis_url, decode_responses=True)
    async with client:
        bad = await client.xadd("docs", {"document": "x"})  # not the flow's input
        await client.xadd("docs", {"doc": "ok"})
        trigger = RedisStream(
            redis_url, stream="docs", group="g", flow=doc_flow(done), max_failures=3, block=0.05
        )
        async with Service(
            Engine(store=tmp_path / "runs", observers=[events.append]), triggers=[trigger]
        ):
            await until(lambda: done == ["ok"])
            while not await client.xlen("docs:dead"):  # noqa: ASYNC110 - a state on the server
                await anyio.sleep(0.01)
            dead = await client.xrange("docs:dead")
            assert int((await client.xpending("docs", "g"))["pending"]) == 0
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields["_id"] == bad
    assert fields["document"] == "x"
    assert "doc" in fields["_error"]
    assert sum(isinstance(e, TriggerInvalid) for e in events) == 3


async def test_the_consumer_outlives_a_redis_restart(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The server goes away and comes back empty: the consumer carries on.

    It reconnects, makes its group again, and runs what arrives after.
    """
    done: list[str] = []
    trigger = RedisStream(
        redis_server.url, stream="docs", group="g", flow=doc_flow(done), block=0.05
    )
    async with Service(Engine(store=tmp_path / "runs"), triggers=[trigger]) as service:
        client: Any = redis.from_url(redis_server.url, decode_responses=True)
        async with client:
            await client.xadd("docs", {"doc": "before"})
            await until(lambda: done == ["before"])
        await anyio.to_thread.run_sync(redis_server.restart)
        client = redis.from_url(redis_server.url, decode_responses=True)
        async with client:
            await client.xadd("docs", {"doc": "after"})
            await until(lambda: done == ["before", "after"])
        assert service.accepting
