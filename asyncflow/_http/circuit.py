"""Per-host concurrency gates and circuit breakers, as an httpx transport.

Every request through the engine's client passes, for its host key ``scheme://host:port``:

1. the circuit: while it is open the request fails at once with :class:`CircuitOpenError`
   (or, with ``HostPolicy(on_open="wait")``, waits for it), and nothing is sent;
2. a concurrency gate (an :class:`anyio.CapacityLimiter`) in front of httpx's pool, so the pool
   never holds far more waiting requests than connections (httpx's pool slows down badly when
   thousands of tasks queue on it), held until the response body is closed;
3. the circuit once more, now authoritative, after the gate: a request that queued at the gate
   while the circuit opened is not sent.

Outcomes: a transport error (connect, read, timeouts...) and a 5xx or 429 response are
failures; other responses, 4xx included, are returned as they are. A 5xx/429 response is still
returned to the caller (the breaker does not raise for it), so ``raise_for_status`` and the
retry policy see the real response and its ``Retry-After``. A request cut off by a step's own
deadline (:func:`step_deadline`) while the host has it is a failure too, as a read timeout would
be. Every other cancellation (the caller's, a fail-fast sibling's, the engine closing, a
deadline inside the step's code, a step deadline that fires while the request waits at our own
gate or pool) and other exceptions count for nothing. Other 4xx answers neither trip nor close
the circuit. A response that is not a failure by its status is judged when its body closes: a
transport error or the step's deadline while reading the body (the host stalled, trickled or
dropped the connection mid-answer) is a failure, another cancellation while reading counts for
nothing, and otherwise the status decides. So a trial request closes the circuit only once its
body is closed; a streamed response must be closed (``async with client.stream(...)``, as httpx
asks anyway), or its host's trial stays in flight.

aiobreaker 1.2.0 is the state machine (consecutive-failure counting, transitions, listeners).
Its defects are guarded here:

- half-open lets every concurrent caller through: we admit exactly one trial request per
  half-open period; the others fail (or wait); a cancelled or 4xx-answered trial frees the slot;
- its reopen-time helpers mix local time and UTC: we keep our own monotonic reopen deadline
  (``anyio.current_time()``) and never call them for decisions; the open-to-half-open move is
  ours too;
- its ``datetime.utcnow()`` DeprecationWarning (Python 3.12+) would, under warnings-as-errors,
  stop it from ever opening: we ignore that warning category for aiobreaker's modules only, and
  only around our calls into it;
- ``sleep_until_open`` is asyncio-only and its Redis storage blocks the loop: neither is used;
- the ``CircuitBreakerError`` it raises when tripping would replace the real error: the caller
  always gets the real response or error, and a later :class:`CircuitOpenError` has the error
  that opened the circuit as its ``__cause__``.
"""

from __future__ import annotations

import enum
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Literal

import aiobreaker
import anyio
import httpx

from asyncflow._errors import CircuitOpenError
from asyncflow._events import CircuitStateChanged
from asyncflow._status import CircuitState, OnOpen

from .pool import QUEUED, ClosingStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    from asyncflow._events import Emitter

__all__ = [
    "BreakerTransport",
    "HostPolicy",
    "HostStatistics",
    "host_key",
    "is_transport_failure",
    "step_deadline",
]


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """How requests to one host are protected.

    Attributes:
        fail_max: consecutive failures (transport errors and timeouts, requests cut off by a
            step's deadline, 5xx, 429) that open the circuit.
        reset_timeout: seconds the circuit stays open before one trial request is admitted.
        max_concurrency: requests to this host in flight at once through the engine's client;
            ``None`` for the engine's connection pool size.
        on_open: ``"fail"`` (default) or ``"wait"``; see :class:`OnOpen`.
    """

    fail_max: int = 5
    reset_timeout: float = 30.0
    max_concurrency: int | None = None
    on_open: OnOpen | Literal["fail", "wait"] = OnOpen.FAIL

    def __post_init__(self) -> None:
        if not isinstance(self.fail_max, int) or self.fail_max < 1:
            raise ValueError(f"HostPolicy(fail_max={self.fail_max!r}): give a whole number >= 1.")
        if not (isinstance(self.reset_timeout, int | float) and self.reset_timeout > 0):
            raise ValueError(
                f"HostPolicy(reset_timeout={self.reset_timeout!r}): give positive seconds."
            )
        if self.max_concurrency is not None and (
            not isinstance(self.max_concurrency, int) or self.max_concurrency < 1
        ):
            raise ValueError(
                f"HostPolicy(max_concurrency={self.max_concurrency!r}): give a whole number "
                f">= 1, or None for the engine's connection pool size."
            )
        try:
            on_open = OnOpen(self.on_open)
        except ValueError:
            raise ValueError(
                f"HostPolicy(on_open={self.on_open!r}): give 'fail' or 'wait'."
            ) from None
        object.__setattr__(self, "on_open", on_open)


@dataclass(frozen=True, slots=True)
class HostStatistics:
    """A snapshot of one host's circuit and gate."""

    host: str
    state: CircuitState
    fail_counter: int
    #: requests holding a gate slot (sent, or reading their response)
    in_flight: int
    #: requests waiting for the circuit (``on_open="wait"``) or for a gate slot
    waiting: int
    retry_after: float


#: circuits kept before forgettable ones are dropped (see BreakerTransport's ``max_hosts``)
MAX_HOSTS = 10_000

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def host_key(url: httpx.URL | str) -> str:
    """The breaker key of a URL: ``scheme://host:port``, the port always written out."""
    url = httpx.URL(url)
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme, 0)
    host = url.host
    if ":" in host:
        host = f"[{host}]"
    return f"{url.scheme}://{host}:{port}"


def resolve_hosts(
    hosts: Mapping[str, HostPolicy],
) -> tuple[dict[str, HostPolicy], dict[str, HostPolicy]]:
    """Split ``Engine(hosts=...)`` keys into exact ``scheme://host:port`` keys and bare hosts.

    Raises:
        ValueError: a key is not a host name or a ``scheme://host[:port]`` URL, or a value is
            not a :class:`HostPolicy`.
    """
    exact: dict[str, HostPolicy] = {}
    bare: dict[str, HostPolicy] = {}
    for key, policy in hosts.items():
        if not isinstance(policy, HostPolicy):
            raise ValueError(f"hosts[{key!r}] is {policy!r}; give a HostPolicy(...).")
        if "://" in key:
            url = httpx.URL(key)
            if not url.host or url.path not in ("", "/") or url.query:
                raise ValueError(
                    f"hosts key {key!r}: give 'scheme://host[:port]' without a path, "
                    f"or a bare host name."
                )
            exact[host_key(url)] = policy
        else:
            try:
                url = httpx.URL(f"http://{key}")
            except httpx.InvalidURL:
                url = None
            has_port = key.rsplit("]", 1)[-1].count(":") > 0
            if url is None or not url.host or has_port or url.raw_path != b"/":
                raise ValueError(
                    f"hosts key {key!r}: give a bare host name ('api.example.com') or "
                    f"'scheme://host:port'."
                )
            bare[url.host] = policy
    return exact, bare


def is_transport_failure(error: BaseException) -> bool:
    """Whether ``error`` says the host or the network failed: an httpx transport error or timeout.

    Not the errors that are our own side's fault: an unsupported URL scheme, a request httpx
    could not write, or no free connection in our own pool (``UnsupportedProtocol``,
    ``LocalProtocolError``, ``PoolTimeout``).
    """
    return isinstance(error, httpx.TransportError) and not isinstance(
        error, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.PoolTimeout
    )


#: The step deadlines the current code runs under, outermost first, each with the error it means.
_deadlines: ContextVar[tuple[tuple[anyio.CancelScope, BaseException], ...]] = ContextVar(
    "asyncflow_step_deadlines", default=()
)


@contextmanager
def step_deadline(seconds: float, error: BaseException) -> Iterator[anyio.CancelScope]:
    """``anyio.move_on_after(seconds)``, the expiry of which is a failure of the hosts it cuts off.

    A request through :class:`BreakerTransport` that this deadline cancels while the host has it
    (connecting, sending, awaiting or reading the answer) counts against the host's circuit, with
    ``error`` (what the caller raises when the block was cut off) as the error that opened it.
    Cancellations from anywhere else still count for nothing.
    """
    with anyio.move_on_after(seconds) as scope:
        token = _deadlines.set((*_deadlines.get(), (scope, error)))
        try:
            yield scope
        finally:
            _deadlines.reset(token)


def _deadline_error(exc: BaseException) -> BaseException | None:
    """The error of the step deadline that ``exc`` is the cancellation of, if it is one."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        for scope, error in _deadlines.get():
            if scope.cancel_called:  # only its deadline cancels it
                return error
    return None


class _Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


_FROM_AIOBREAKER = {
    aiobreaker.CircuitBreakerState.CLOSED: CircuitState.CLOSED,
    aiobreaker.CircuitBreakerState.OPEN: CircuitState.OPEN,
    aiobreaker.CircuitBreakerState.HALF_OPEN: CircuitState.HALF_OPEN,
}

#: Ticket of the one trial request of a half-open period; closed-state tickets are epochs >= 0.
_TRIAL = -1


class _Fed(Exception):
    """A private marker fed to aiobreaker as "a failure"; never leaves this module."""


def _fail() -> None:
    raise _Fed


def _succeed() -> None:
    return None


class _Listener(aiobreaker.CircuitBreakerListener):  # type: ignore[misc]
    def __init__(self, circuit: Circuit) -> None:
        self._circuit = circuit

    def state_change(self, breaker: object, old: object, new: object) -> None:
        self._circuit.changed(getattr(old, "state", None), getattr(new, "state", None))


class Circuit:
    """One host's gate and breaker. Lives on the event loop thread; no locks needed."""

    __slots__ = (
        "breaker",
        "emit",
        "epoch",
        "event",
        "gate",
        "key",
        "last_error",
        "last_failure",
        "policy",
        "reason",
        "reopen_at",
        "trial_busy",
        "waiting",
    )

    def __init__(self, key: str, policy: HostPolicy, gate_size: int, emit: Emitter | None) -> None:
        self.key = key
        self.policy = policy
        self.emit = emit
        self.gate = anyio.CapacityLimiter(gate_size)
        self.epoch = 0
        self.reopen_at = 0.0
        self.trial_busy = False
        self.waiting = 0
        self.event = anyio.Event()
        self.last_failure = ""
        self.last_error: BaseException | None = None
        self.reason = ""
        self.breaker = aiobreaker.CircuitBreaker(
            fail_max=policy.fail_max,
            timeout_duration=timedelta(seconds=policy.reset_timeout),
            listeners=[_Listener(self)],
            name=key,
        )

    @property
    def state(self) -> CircuitState:
        """The circuit's state as aiobreaker holds it."""
        return _FROM_AIOBREAKER[self.breaker.current_state]

    # -- transitions --------------------------------------------------------------------------

    def changed(self, old: object, new: object) -> None:
        """Handle aiobreaker's state change: keep our deadline, wake waiters, emit the event."""
        new_state = _FROM_AIOBREAKER.get(new, CircuitState.CLOSED)
        old_state = _FROM_AIOBREAKER.get(old, CircuitState.CLOSED)
        now = anyio.current_time()
        if new_state is CircuitState.OPEN:
            self.reopen_at = now + self.policy.reset_timeout
            self.epoch += 1
            if old_state is CircuitState.HALF_OPEN:
                self.reason = "the trial request failed"
            else:
                self.reason = f"{self.policy.fail_max} consecutive failure(s)"
        if new_state is not CircuitState.HALF_OPEN:
            self.trial_busy = False
        self._wake()
        if self.emit:
            self.emit(CircuitStateChanged(self.key, old_state, new_state, now))

    def _wake(self) -> None:
        self.event.set()
        self.event = anyio.Event()

    def _feed(self, outcome: _Outcome) -> None:
        """Tell aiobreaker about one counted outcome; it counts, trips, closes and notifies."""
        with warnings.catch_warnings():
            # aiobreaker calls datetime.utcnow() when it opens (deprecated in 3.12). We never use
            # its datetimes; silence exactly that category from exactly that package.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"aiobreaker\b")
            try:
                self.breaker.call(_fail if outcome is _Outcome.FAILURE else _succeed)
            except (_Fed, aiobreaker.CircuitBreakerError):
                pass  # aiobreaker re-raises our marker, or its own error when it trips

    # -- admission ----------------------------------------------------------------------------

    def admissible(self) -> bool:
        """Whether :meth:`admit` would admit a request now (no side effects)."""
        state = self.breaker.current_state
        if state is aiobreaker.CircuitBreakerState.CLOSED:
            return True
        if state is aiobreaker.CircuitBreakerState.OPEN:
            return anyio.current_time() >= self.reopen_at
        return not self.trial_busy

    def admit(self) -> int | None:
        """Admit one request: its ticket, or ``None`` when the circuit refuses it now."""
        state = self.breaker.current_state
        if state is aiobreaker.CircuitBreakerState.CLOSED:
            return self.epoch
        if state is aiobreaker.CircuitBreakerState.OPEN:
            if anyio.current_time() < self.reopen_at:
                return None
            self.breaker.half_open()  # ours to decide: aiobreaker's own check mixes timezones
        if self.trial_busy:
            return None
        self.trial_busy = True
        return _TRIAL

    def retry_after(self) -> float:
        """Seconds until a trial may be admitted (``reset_timeout`` while a trial is out)."""
        if self.breaker.current_state is aiobreaker.CircuitBreakerState.OPEN:
            return max(0.0, self.reopen_at - anyio.current_time())
        if self.trial_busy:
            return self.policy.reset_timeout
        return 0.0

    async def enter(self, borrower: object) -> int:
        """Wait for the gate and the circuit; return the request's ticket.

        Raises:
            CircuitOpenError: the circuit is open and the policy says ``"fail"``.
        """
        gate = self.gate
        while True:
            if self.admissible():
                try:
                    gate.acquire_on_behalf_of_nowait(borrower)
                except anyio.WouldBlock:
                    self.waiting += 1
                    try:
                        await gate.acquire_on_behalf_of(borrower)
                    finally:
                        self.waiting -= 1
                ticket = self.admit()
                if ticket is not None:
                    return ticket
                gate.release_on_behalf_of(borrower)
            await self._refused()

    async def _refused(self) -> None:
        if self.policy.on_open is OnOpen.FAIL:
            wait = self.retry_after()
            if self.trial_busy:
                why = "a trial request is in flight"
            else:
                why = f"a trial request is allowed in {wait:.2f} s"
            last = f" (last: {self.last_failure})" if self.last_failure else ""
            raise CircuitOpenError(
                f"The circuit for {self.key} is open: {self.reason}{last}; the request was not "
                f"sent and {why}. Resume the run later, "
                f"or use HostPolicy(on_open='wait') to wait for the circuit.",
                host=self.key,
                retry_after=wait,
            ) from self.last_error
        event = self.event
        self.waiting += 1
        try:
            if self.trial_busy:
                await event.wait()  # the trial's outcome (or its cancellation) sets it
            else:
                with anyio.move_on_after(self.retry_after()):
                    await event.wait()
        finally:
            self.waiting -= 1

    # -- outcomes -----------------------------------------------------------------------------

    def record(
        self, ticket: int, outcome: _Outcome, failure: str, error: BaseException | None
    ) -> None:
        """Count one finished request. Stale outcomes (admitted before a trip) are ignored."""
        if outcome is _Outcome.FAILURE:
            self.last_failure = failure
            self.last_error = error
        if ticket == _TRIAL:
            if self.breaker.current_state is not aiobreaker.CircuitBreakerState.HALF_OPEN:
                return
            if outcome is _Outcome.NEUTRAL:
                self.trial_busy = False  # cancelled or 4xx: the next request is the trial
                self._wake()
                return
            self._feed(outcome)
            return
        if (
            ticket != self.epoch
            or self.breaker.current_state is not aiobreaker.CircuitBreakerState.CLOSED
        ):
            return
        if outcome is _Outcome.FAILURE:
            self._feed(outcome)
        elif outcome is _Outcome.SUCCESS and self.breaker.fail_counter:
            self._feed(outcome)  # a success resets the consecutive-failure count

    def forgettable(self) -> bool:
        """Closed, no failure counted, nothing in flight or waiting: a new circuit is the same."""
        return (
            self.breaker.current_state is aiobreaker.CircuitBreakerState.CLOSED
            and not self.breaker.fail_counter
            and not self.gate.borrowed_tokens
            and not self.waiting
        )

    def statistics(self) -> HostStatistics:
        """A snapshot of this circuit."""
        return HostStatistics(
            host=self.key,
            state=self.state,
            fail_counter=int(self.breaker.fail_counter),
            in_flight=int(self.gate.borrowed_tokens),
            waiting=self.waiting,
            retry_after=self.retry_after(),
        )


class _JudgedBody(ClosingStream):
    """A body whose request is judged when it closes, so a host failing mid-body is counted.

    A transport error or a step's deadline while reading: a failure. Otherwise cancelled while
    reading: neutral. Otherwise, read to its end or closed early, the status decides (the host
    did answer).
    """

    __slots__ = ("_borrower", "_circuit", "_error", "_outcome", "_ticket")

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        circuit: Circuit,
        borrower: object,
        ticket: int,
        outcome: _Outcome,
    ) -> None:
        super().__init__(stream, self._judge)
        self._circuit = circuit
        self._borrower = borrower
        self._ticket = ticket
        self._outcome = outcome
        self._error: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except BaseException as exc:
            if is_transport_failure(exc):
                self._outcome, self._error = _Outcome.FAILURE, exc
            elif (timeout := _deadline_error(exc)) is not None:
                self._outcome, self._error = _Outcome.FAILURE, timeout
            elif not isinstance(exc, GeneratorExit):  # GeneratorExit: the caller stopped reading
                self._outcome = _Outcome.NEUTRAL
            raise

    def _judge(self) -> None:
        circuit = self._circuit
        circuit.gate.release_on_behalf_of(self._borrower)
        error = self._error
        failure = "" if error is None else f"{type(error).__name__} in the body"
        circuit.record(self._ticket, self._outcome, failure, error)


def _status_outcome(status: int) -> _Outcome:
    if status >= 500 or status == 429:
        return _Outcome.FAILURE
    if status >= 400:
        return _Outcome.NEUTRAL
    return _Outcome.SUCCESS


class BreakerTransport(httpx.AsyncBaseTransport):
    """An httpx transport that applies each host's gate and circuit before ``inner``.

    Args:
        inner: the transport that sends requests (httpx's pool).
        hosts: per-host policies; keys are bare host names (any scheme and port) or
            ``scheme://host[:port]`` (that one origin; wins over a bare host).
        default: the policy of every other host.
        default_concurrency: the gate size when a policy's ``max_concurrency`` is ``None``.
        emit: receives :class:`CircuitStateChanged` events.
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
        self._exact, self._bare = resolve_hosts(hosts or {})
        self._default = default if default is not None else HostPolicy()
        self._default_concurrency = default_concurrency
        self._emit = emit
        self._circuits: dict[tuple[bytes, bytes, int | None], Circuit] = {}
        self._by_key: dict[str, Circuit] = {}

    def policy_for(self, url: httpx.URL | str) -> HostPolicy:
        """The policy that applies to ``url``: exact origin, then bare host, then the default."""
        url = httpx.URL(url)
        return self._exact.get(host_key(url)) or self._bare.get(url.host) or self._default

    def _circuit(self, url: httpx.URL) -> Circuit:
        key = host_key(url)
        circuit = self._by_key.get(key)
        if circuit is None:
            if len(self._by_key) >= self._sweep_at:
                self._sweep()
            policy = self.policy_for(url)
            size = policy.max_concurrency or self._default_concurrency
            circuit = self._by_key[key] = Circuit(key, policy, size, self._emit)
        self._circuits[(url.raw_scheme, url.raw_host, url.port)] = circuit
        return circuit

    def _sweep(self) -> None:
        """Drop forgettable circuits; sweep again once twice as many are kept (amortised O(1))."""
        kept = {key: c for key, c in self._by_key.items() if not c.forgettable()}
        self._by_key = kept
        self._circuits = {raw: c for raw, c in self._circuits.items() if kept.get(c.key) is c}
        self._sweep_at = max(self._max_hosts, 2 * len(kept))

    def statistics(self) -> dict[str, HostStatistics]:
        """A snapshot of every host's circuit kept now, by host key."""
        return {key: c.statistics() for key, c in self._by_key.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its host's circuit and gate.

        Raises:
            CircuitOpenError: the host's circuit is open (policy ``"fail"``); nothing was sent.
        """
        url = request.url
        circuit = self._circuits.get((url.raw_scheme, url.raw_host, url.port))
        if circuit is None:
            circuit = self._circuit(url)
        borrower = object()
        ticket = await circuit.enter(borrower)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as exc:
            circuit.gate.release_on_behalf_of(borrower)
            # Cancelled while queued in our own pool (ShardedTransport leaves its mark): unsent.
            queued = request.extensions.pop(QUEUED, False)
            timeout = None if queued else _deadline_error(exc)
            if is_transport_failure(exc):
                circuit.record(ticket, _Outcome.FAILURE, type(exc).__name__, exc)
            elif timeout is not None:
                circuit.record(ticket, _Outcome.FAILURE, type(timeout).__name__, timeout)
            else:
                # Other cancellations and anything else: not the host's fault; frees a trial slot.
                circuit.record(ticket, _Outcome.NEUTRAL, "", None)
            raise
        status = response.status_code
        outcome = _status_outcome(status)
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        if outcome is _Outcome.FAILURE:
            circuit.record(ticket, outcome, f"HTTP {status}", None)
            release = partial(circuit.gate.release_on_behalf_of, borrower)
            response.stream = ClosingStream(stream, release)
        else:
            response.stream = _JudgedBody(stream, circuit, borrower, ticket, outcome)
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()
