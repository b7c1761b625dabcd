"""Per-host gates and circuits as an httpx transport: the layer ``ctx.http`` sends through.

Every request through the engine's client is admitted by its host (``host.py``: the circuit,
the gate, the circuit again), waits for the host's rate when it has one (``rate.py``), is sent
through the inner transport (the sharded pool, ``pool.py``), and its outcome is counted by the
rules of ``failures.py``.

A 5xx/429 response is still returned to the caller (the transport does not raise for it), so
``raise_for_status`` and the retry policy see the real response and its ``Retry-After``. A
response that is not a failure by its status is judged when its body closes: a transport error
or the step's deadline while reading the body (the host stalled, trickled or dropped the
connection mid-answer) is a failure, another cancellation while reading counts for nothing, and
otherwise the status decides. So a trial request closes the circuit only once its body is
closed; a streamed response must be closed (``async with client.stream(...)``, as httpx asks
anyway), or its host's trial stays in flight.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import httpx

from .failures import Outcome, failure_of, status_outcome
from .host import Host
from .policy import HostPolicies, host_key
from .pool import QUEUED, ClosingStream
from .rate import parse_retry_after

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from asyncflow._emit import Emitter

    from .circuit import Ticket
    from .host import HostStatistics
    from .policy import HostPolicy

__all__ = ["MAX_HOSTS", "BreakerTransport"]

#: hosts kept before forgettable ones are dropped (see BreakerTransport's ``max_hosts``)
MAX_HOSTS = 10_000


class _JudgedBody(ClosingStream):
    """A body whose request is judged when it closes, so a host failing mid-body is counted.

    A transport error or a step's deadline while reading: a failure. Otherwise cancelled while
    reading: neutral. Otherwise, read to its end or closed early, the status decides (the host
    did answer).
    """

    __slots__ = ("_borrower", "_error", "_host", "_outcome", "_ticket")

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        host: Host,
        borrower: object,
        ticket: Ticket,
        outcome: Outcome,
    ) -> None:
        super().__init__(stream, self._judge)
        self._host = host
        self._borrower = borrower
        self._ticket = ticket
        self._outcome = outcome
        self._error: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except BaseException as exc:
            if (failure := failure_of(exc)) is not None:
                self._outcome, self._error = Outcome.FAILURE, failure
            elif not isinstance(exc, GeneratorExit):  # GeneratorExit: the caller stopped reading
                self._outcome = Outcome.NEUTRAL
            raise

    def _judge(self) -> None:
        error = self._error
        failure = "" if error is None else f"{type(error).__name__} in the body"
        self._host.leave(self._borrower, self._ticket, self._outcome, failure, error)


class BreakerTransport(httpx.AsyncBaseTransport):
    """An httpx transport that applies each host's gate and circuit before ``inner``.

    Args:
        inner: the transport that sends requests (httpx's pool).
        hosts: per-host policies; keys are bare host names (any scheme and port) or
            ``scheme://host[:port]`` (that one origin; wins over a bare host).
        default: the policy of every other host.
        default_concurrency: the gate size when a policy's ``concurrency`` is ``None``.
        emit: receives :class:`~asyncflow.CircuitStateChanged` events.
        max_hosts: how many hosts' circuits are kept before the forgettable ones are dropped:
            closed, no failure counted, nothing in flight or waiting (a new circuit for that
            host is the same). Open or failing circuits are always kept, so a crawl over
            millions of hosts holds memory for the troubled ones only.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        default: HostPolicy | None = None,
        default_concurrency: int = 100,
        emit: Emitter | None = None,
        max_hosts: int = MAX_HOSTS,
    ) -> None:
        self._inner = inner
        self._max_hosts = self._sweep_at = max_hosts
        self._policies = HostPolicies(hosts, default)
        self._default_concurrency = default_concurrency
        self._emit = emit
        self._hosts: dict[tuple[bytes, bytes, int | None], Host] = {}
        self._by_key: dict[str, Host] = {}

    def policy_for(self, url: httpx.URL | str) -> HostPolicy:
        """The policy that applies to ``url``: exact origin, then bare host, then the default."""
        return self._policies.for_url(url)

    def _host(self, url: httpx.URL) -> Host:
        key = host_key(url)
        host = self._by_key.get(key)
        if host is None:
            if len(self._by_key) >= self._sweep_at:
                self._sweep()
            policy = self._policies.for_url(url)
            size = policy.concurrency or self._default_concurrency
            host = self._by_key[key] = Host(key, policy, size, self._emit)
        self._hosts[(url.raw_scheme, url.raw_host, url.port)] = host
        return host

    def _sweep(self) -> None:
        """Drop forgettable hosts; sweep again once twice as many are kept (amortised O(1))."""
        kept = {key: h for key, h in self._by_key.items() if not h.forgettable()}
        self._by_key = kept
        self._hosts = {raw: h for raw, h in self._hosts.items() if kept.get(h.key) is h}
        self._sweep_at = max(self._max_hosts, 2 * len(kept))

    def statistics(self) -> dict[str, HostStatistics]:
        """A snapshot of every host's circuit kept now, by host key."""
        return {key: h.statistics() for key, h in self._by_key.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its host's circuit and gate.

        Raises:
            CircuitOpenError: the host's circuit is open (policy ``"fail"``); nothing was sent.
        """
        url = request.url
        host = self._hosts.get((url.raw_scheme, url.raw_host, url.port))
        if host is None:
            host = self._host(url)
        borrower = object()
        ticket = await host.enter(borrower)
        rate = host.rate
        if rate is not None:
            try:
                await host.wait_rate(rate)
            except BaseException:
                host.leave(borrower, ticket, Outcome.NEUTRAL)  # never sent: our own wait
                raise
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as exc:
            # Cancelled while queued in our own pool (ShardedTransport leaves its mark): unsent.
            queued = request.extensions.pop(QUEUED, False)
            failure = failure_of(exc, sent=not queued)
            if failure is not None:
                host.leave(borrower, ticket, Outcome.FAILURE, type(failure).__name__, failure)
            else:
                # Other cancellations and anything else: not the host's fault; frees a trial slot.
                host.leave(borrower, ticket, Outcome.NEUTRAL)
            raise
        status = response.status_code
        outcome = status_outcome(status)
        if status == 429 and rate is not None:
            # The host's quota is spent: everyone waits, not only this caller's retry.
            value = response.headers.get("retry-after")
            seconds = None if value is None else parse_retry_after(value)
            if seconds:
                rate.pause(seconds)
        if response.is_closed:
            # Read in full by the inner transport (httpx.MockTransport, a Response(content=...)):
            # the host has answered, and no body will close later to judge it and free the slot.
            host.leave(borrower, ticket, outcome, f"HTTP {status}")
            return response
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        if outcome is Outcome.FAILURE:
            host.record(ticket, outcome, f"HTTP {status}")
            release = partial(host.gate.release_on_behalf_of, borrower)
            response.stream = ClosingStream(stream, release)
        else:
            response.stream = _JudgedBody(stream, host, borrower, ticket, outcome)
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()
