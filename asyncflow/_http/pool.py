"""httpx's connection pool, split into small shards so its bookkeeping stays cheap.

httpcore's pool (1.0.9) re-examines every connection for every queued request whenever a
request starts or ends, and for each idle connection it counts the idle ones again. With 100
connections that is some 10,000 checks per event: 4.5-5 ms of client CPU per request on this
machine at 100 in flight, against 0.9 ms in shards of 8 and 1.8 ms in shards of 16
(``benchmarks/bench_http.py`` measures it). Split into shards of at most :data:`SHARD_SIZE`
connections, each event touches one small shard only. Smaller shards would save a little
more CPU but reuse connections worse when several hosts share the pool.

A request goes to its origin's home shard (a hash of scheme, host and port), or when that is
full to the next shard round with a free connection, so a host keeps reusing warm connections
and many hosts spread over the shards. No request ever queues inside a shard: when all
``max_connections`` are busy, requests wait in one first-come, first-served queue for the next
free connection, bounded by httpx's pool timeout as in httpx's own pool. The total number of
connections stays ``max_connections``.
"""

from __future__ import annotations

import contextlib
import math
from functools import partial
from typing import TYPE_CHECKING

import anyio
import httpx

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Callable

__all__ = ["QUEUED", "SHARD_SIZE", "ClosingStream", "ShardedTransport"]

#: connections per shard at most
SHARD_SIZE = 8

#: Set in a request's extensions while it waits for a free connection, and left set when it is
#: cancelled there: BreakerTransport then knows the host never had it (and takes the mark off).
QUEUED = "asyncflow.queued"


class ClosingStream(httpx.AsyncByteStream):
    """A response body that calls ``on_close`` once, when it is closed."""

    __slots__ = ("_on_close", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, on_close: Callable[[], None]) -> None:
        self._stream = stream
        self._on_close: Callable[[], None] | None = on_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class ShardedTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncHTTPTransport`` pools of at most ``shard_size`` connections each.

    Args:
        max_connections: connections in all, as ``httpx.Limits(max_connections=...)``.
        shard_size: connections per shard at most.
        verify: as httpx's ``verify``. One SSL context is built and shared by every shard
            (building one loads the CA bundle: about 70 ms each here).
        trust_env: as httpx's ``trust_env``.
    """

    def __init__(
        self,
        max_connections: int,
        *,
        shard_size: int = SHARD_SIZE,
        verify: ssl.SSLContext | str | bool = True,
        trust_env: bool = True,
    ) -> None:
        if max_connections < 1 or shard_size < 1:
            raise ValueError(
                f"ShardedTransport(max_connections={max_connections}, shard_size={shard_size}): "
                "both must be at least 1."
            )
        count = -(-max_connections // shard_size)
        base, extra = divmod(max_connections, count)
        self._sizes = [base + (i < extra) for i in range(count)]
        self._load = [0] * count
        # A request waits here (first come, first served), never inside a shard: queued in
        # one shard it could wait for that shard's connections while another shard frees up.
        self._slots = anyio.Semaphore(max_connections)
        context = httpx.create_ssl_context(verify=verify, trust_env=trust_env)
        self._shards = [
            httpx.AsyncHTTPTransport(
                verify=context,
                trust_env=trust_env,
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            )
            for n in self._sizes
        ]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Each shard's connection limit."""
        return tuple(self._sizes)

    @property
    def loads(self) -> tuple[int, ...]:
        """Requests each shard holds now: being sent, or with a body still open."""
        return tuple(self._load)

    @property
    def waiting(self) -> int:
        """Requests waiting for a free connection (every one of ``max_connections`` busy)."""
        return self._slots.statistics().tasks_waiting

    def _pick(self, request: httpx.Request) -> int:
        """The origin's home shard if it has a free slot, else the next one round that has."""
        url = request.url
        load = self._load
        sizes = self._sizes
        count = len(load)
        home = hash((url.raw_scheme, url.raw_host, url.port)) % count
        for k in range(count):
            i = (home + k) % count
            if load[i] < sizes[i]:
                return i
        raise AssertionError("a slot was acquired, so some shard has room")  # pragma: no cover

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through a shard with a free connection; held until the body closes.

        Raises:
            httpx.PoolTimeout: no connection was free within the request's pool timeout.
        """
        slots = self._slots
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            extensions = request.extensions
            timeout = extensions.get("timeout", {}).get("pool")
            extensions[QUEUED] = True
            with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
                await slots.acquire()
            del extensions[QUEUED]
            if scope.cancelled_caught:
                raise httpx.PoolTimeout(
                    f"No connection of the {sum(self._sizes)} was free within the pool timeout "
                    f"({timeout} s); raise Engine(max_connections=) or the pool timeout."
                ) from None
        i = self._pick(request)
        self._load[i] += 1
        try:
            response = await self._shards[i].handle_async_request(request)
        except BaseException:
            self._release(i)
            raise
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = ClosingStream(stream, partial(self._release, i))
        return response

    def _release(self, i: int) -> None:
        self._load[i] -= 1
        self._slots.release()

    async def aclose(self) -> None:
        """Close every shard's connections (all of them, even when one fails to close)."""
        async with contextlib.AsyncExitStack() as stack:
            for shard in self._shards:
                stack.push_async_callback(shard.aclose)
