"""ShardedTransport: httpx's pool split into small shards, against a real server."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from asyncflow import CircuitState, Engine, HostPolicy

# ShardedTransport is internal: its sharding cannot be observed through the engine's client.
from asyncflow._http import ShardedTransport
from asyncflow.testing import serve_flaky
from tests.helpers import until

if TYPE_CHECKING:
    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio


def test_connections_are_split_evenly_and_bad_sizes_are_refused() -> None:
    assert ShardedTransport(100).sizes == (8,) * 9 + (7,) * 4
    assert ShardedTransport(20, shard_size=8).sizes == (7, 7, 6)
    assert ShardedTransport(5).sizes == (5,)
    with pytest.raises(ValueError, match="at least 1"):
        ShardedTransport(0)
    with pytest.raises(ValueError, match="at least 1"):
        ShardedTransport(10, shard_size=0)


async def test_a_light_load_keeps_reusing_one_warm_connection(host_a: FlakyServer) -> None:
    """One request at a time: the origin's home shard, and the same connection, every time."""
    transport = ShardedTransport(40, shard_size=8)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(10):
            assert (await client.get(host_a.url + "/one")).status_code == 200
        assert transport.loads == (0, 0, 0, 0, 0)
    assert len(host_a.peers) == 1


async def test_the_total_connection_limit_holds_across_shards(host_a: FlakyServer) -> None:
    """50 held requests over 20 connections in 3 shards: 20 reach the server, then all finish."""
    transport = ShardedTransport(20, shard_size=8)
    statuses: list[int] = []
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        host_a.hang = True

        async def call() -> None:
            statuses.append((await client.get(host_a.url + "/held")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(call)
            await host_a.wait_for_requests(20)
            # every shard full; the 30 others wait in the pool's queue, none inside a shard
            assert transport.loads == (7, 7, 6)
            assert transport.waiting == 30
            assert host_a.requests == 20
            host_a.reset()
        assert transport.loads == (0, 0, 0)
    assert statuses == [200] * 50
    assert len(host_a.peers) <= 20


async def test_a_queued_request_takes_whichever_connection_frees_first(
    host_a: FlakyServer, host_b: FlakyServer
) -> None:
    """A held host fills one shard; a request queued behind it still gets the other's slot."""
    transport = ShardedTransport(4, shard_size=2)
    timeout = httpx.Timeout(30.0, pool=20.0)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        host_a.hang = True
        host_b.hang = True
        statuses: list[int] = []

        async def call(url: str) -> None:
            statuses.append((await client.get(url)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(call, host_a.url + "/held")
                tg.start_soon(call, host_b.url + "/held")
            await host_a.wait_for_requests(2)
            await host_b.wait_for_requests(2)
            tg.start_soon(call, host_b.url + "/queued")
            await until(lambda: transport.waiting == 1)
            host_b.reset()  # host b's two slots free up; host a holds its own until the end
            await host_b.wait_for_requests(3)
            await until(lambda: len(statuses) == 3)
            assert statuses == [200] * 3
            host_a.reset()
    assert statuses == [200] * 5


async def test_no_free_connection_is_a_pool_timeout_not_a_host_failure(
    host_a: FlakyServer, host_b: FlakyServer
) -> None:
    """Every connection held by host a: a request to b times out in our pool; b's circuit stays closed."""
    async with Engine(store=None, max_connections=2, host_policy=HostPolicy(fail_max=1)) as engine:
        host_a.hang = True
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(engine.http.get, host_a.url + "/held")
            await host_a.wait_for_requests(2)
            with pytest.raises(httpx.PoolTimeout, match="max_connections"):
                await engine.http.get(host_b.url + "/x", timeout=httpx.Timeout(30.0, pool=0.1))
            host_a.reset()
        assert engine.host_statistics()[host_b.url].state is CircuitState.CLOSED
        assert (await engine.http.get(host_b.url + "/x")).status_code == 200
    assert host_b.requests == 1


async def test_many_hosts_keep_their_warm_connections() -> None:
    """Ten hosts called in turn, five rounds: one connection each, as with one httpx pool."""
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(serve_flaky()) for _ in range(10)]
        async with httpx.AsyncClient(transport=ShardedTransport(100)) as client:
            for _ in range(5):
                for server in servers:
                    assert (await client.get(server.url + "/again")).status_code == 200
        assert [len(server.peers) for server in servers] == [1] * 10


async def test_a_cancelled_or_failed_request_gives_its_slot_back(host_a: FlakyServer) -> None:
    transport = ShardedTransport(4, shard_size=2)
    async with httpx.AsyncClient(transport=transport) as client:
        host_a.hang = True
        with anyio.move_on_after(0.2):
            await client.get(host_a.url + "/cancelled")
        assert transport.loads == (0, 0)
        host_a.reset()
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.2:1/refused")
        assert transport.loads == (0, 0)
        async with client.stream("GET", host_a.url + "/streamed") as response:
            assert sum(transport.loads) == 1  # held while the body is open
            await response.aread()
        assert transport.loads == (0, 0)


async def test_the_engine_sends_through_shards_within_max_connections(
    host_a: FlakyServer,
) -> None:
    """Engine's client: breaker layer over ShardedTransport; max_connections bounds it all."""
    async with Engine(store=None, max_connections=40) as engine:
        inner = engine._breakers._inner if engine._breakers else None
        assert isinstance(inner, ShardedTransport)
        assert inner.sizes == (8, 8, 8, 8, 8)
        host_a.hang = True
        async with anyio.create_task_group() as tg:
            for _ in range(60):
                tg.start_soon(engine.http.get, host_a.url + "/held")
            await host_a.wait_for_requests(40)
            stats = engine.host_statistics()[host_a.url]
            assert (stats.in_flight, host_a.requests) == (40, 40)
            assert inner.loads == (8, 8, 8, 8, 8)  # the gate queues the rest, not the pools
            host_a.reset()
        assert inner.loads == (0,) * 5
    assert host_a.requests == 60
    assert len(host_a.peers) <= 40
