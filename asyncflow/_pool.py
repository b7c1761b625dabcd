"""httpx's connection pool, split into small shards so its bookkeeping stays cheap.

httpcore's pool (1.0.9) re-examines every connection for every queued request whenever a
request starts or ends, and for each idle connection it counts the idle ones again. With 100
connections that is some 10,000 checks per event: 4.5-5 ms of client CPU per request on this
machine at 100 in flight, against 0.9 ms in shards of 8 and 1.8 ms in shards of 16
(``benchmarks/bench_http.py`` measures it). Split into shards of at most :data:`SHARD_SIZE`
connections, each event touches one small shard only. Smaller shards would save a little
more CPU but reuse connections worse when several hosts share the pool.

A request goes to the first shard with a free connection slot (so a light load keeps reusing
the first shard's warm connections), or, when every shard is full, to the least loaded one.
The total number of connections stays ``max_connections``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Callable

__all__ = ["SHARD_SIZE", "ClosingStream", "ShardedTransport"]

#: connections per shard at most
SHARD_SIZE = 8


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
    def shards(self) -> int:
        """How many pools the connections are split into."""
        return len(self._shards)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Each shard's connection limit."""
        return tuple(self._sizes)

    @property
    def loads(self) -> tuple[int, ...]:
        """Requests each shard holds now: sent, queued in it, or with a body still open."""
        return tuple(self._load)

    def _pick(self) -> int:
        load = self._load
        sizes = self._sizes
        for i, n in enumerate(load):
            if n < sizes[i]:
                return i
        return load.index(min(load))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the chosen shard; its slot is held until the body closes."""
        i = self._pick()
        self._load[i] += 1
        try:
            response = await self._shards[i].handle_async_request(request)
        except BaseException:
            self._load[i] -= 1
            raise
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = ClosingStream(stream, lambda: self._release(i))
        return response

    def _release(self, i: int) -> None:
        self._load[i] -= 1

    async def aclose(self) -> None:
        """Close every shard's connections (all of them, even when one fails to close)."""
        async with contextlib.AsyncExitStack() as stack:
            for shard in self._shards:
                stack.push_async_callback(shard.aclose)
