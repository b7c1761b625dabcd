"""One host's circuit: the state machine, on aiobreaker, and the guards its defects need.

The circuit is closed while its host answers, opens after ``fail_max`` consecutive failures,
stays open ``reset_timeout`` seconds, then admits exactly one trial request (half-open), whose
outcome closes or reopens it. It is pure bookkeeping on the event loop thread: no locks, no
awaits. Waiting for it, and the gate in front of the host, are ``host.py``'s.

Each admitted request holds a ticket, given back with its outcome. A closed-circuit ticket is
the circuit's epoch, which grows each time it opens, so an outcome admitted before a trip (a
stale one) is ignored: a slow request sent while the host was still healthy neither reopens nor
closes a circuit that has moved on. The trial's ticket is :data:`TRIAL`.
"""

from __future__ import annotations

import enum
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, TypeAlias

import aiobreaker
import anyio

from asyncflow._status import CircuitState

from .failures import Outcome

if TYPE_CHECKING:
    from collections.abc import Callable

    from .policy import HostPolicy

__all__ = ["TRIAL", "Circuit", "Ticket"]


class _Trial(enum.Enum):
    TRIAL = "trial"


#: The ticket of the one trial request of a half-open period.
TRIAL = _Trial.TRIAL

#: A request's ticket: the epoch it was admitted in (closed circuit), or :data:`TRIAL`.
Ticket: TypeAlias = int | Literal[_Trial.TRIAL]

_FROM_AIOBREAKER = {
    aiobreaker.CircuitBreakerState.CLOSED: CircuitState.CLOSED,
    aiobreaker.CircuitBreakerState.OPEN: CircuitState.OPEN,
    aiobreaker.CircuitBreakerState.HALF_OPEN: CircuitState.HALF_OPEN,
}
_CLOSED = aiobreaker.CircuitBreakerState.CLOSED
_OPEN = aiobreaker.CircuitBreakerState.OPEN
_HALF_OPEN = aiobreaker.CircuitBreakerState.HALF_OPEN


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
        self._circuit._changed(getattr(old, "state", None), getattr(new, "state", None))


class Circuit:
    """One host's circuit, the one adapter of aiobreaker in the package.

    aiobreaker 1.2.0 counts consecutive failures, makes the transitions and notifies listeners.
    Its defects, and the guard for each:

    - half-open lets every concurrent caller through: :meth:`admit` hands out one trial ticket
      per half-open period and refuses the others; a trial that ends neutral (cancelled,
      answered 4xx) frees the slot for the next request;
    - its reopen-time helpers mix local time and UTC (hours off west of UTC, a ``TypeError``
      east of it): we keep our own monotonic reopen deadline (``anyio.current_time()``), never
      call them for decisions, and make the open-to-half-open move ourselves;
    - it calls ``datetime.utcnow()`` when it opens, whose ``DeprecationWarning`` (Python 3.12+)
      would, under warnings-as-errors, stop it from ever opening: that category is ignored for
      aiobreaker's modules only, and only around our calls into it;
    - ``sleep_until_open`` is asyncio-only and its Redis storage blocks the loop: neither is
      used;
    - the ``CircuitBreakerError`` it raises when tripping would replace the real error: it is
      swallowed here, so the caller always gets the real response or error, and
      :attr:`last_error` (the ``__cause__`` of a later ``CircuitOpenError``) is the error that
      opened the circuit.

    Args:
        policy: ``fail_max`` and ``reset_timeout`` are used.
        name: the host key, for aiobreaker's ``name``.
        on_change: called with ``(old, new, now)`` after each transition.
    """

    __slots__ = (
        "_breaker",
        "_on_change",
        "epoch",
        "last_error",
        "last_failure",
        "policy",
        "reason",
        "reopen_at",
        "trial_busy",
    )

    def __init__(
        self,
        policy: HostPolicy,
        name: str,
        on_change: Callable[[CircuitState, CircuitState, float], None],
    ) -> None:
        self.policy = policy
        self._on_change = on_change
        self.epoch = 0
        self.reopen_at = 0.0
        self.trial_busy = False
        #: why the circuit opened, for the error of a refused request
        self.reason = ""
        #: the last failure counted, described, and its error when it was one
        self.last_failure = ""
        self.last_error: BaseException | None = None
        self._breaker = aiobreaker.CircuitBreaker(
            fail_max=policy.fail_max,
            timeout_duration=timedelta(seconds=policy.reset_timeout),
            listeners=[_Listener(self)],
            name=name,
        )

    @property
    def state(self) -> CircuitState:
        """The circuit's state as aiobreaker holds it."""
        return _FROM_AIOBREAKER[self._breaker.current_state]

    @property
    def fail_counter(self) -> int:
        """Consecutive failures counted while closed."""
        return int(self._breaker.fail_counter)

    def _changed(self, old: object, new: object) -> None:
        """Handle aiobreaker's state change: keep our deadline and epoch, then tell the host."""
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
        self._on_change(old_state, new_state, now)

    def _feed(self, outcome: Outcome) -> None:
        """Tell aiobreaker about one counted outcome; it counts, trips, closes and notifies."""
        with warnings.catch_warnings():
            # aiobreaker calls datetime.utcnow() when it opens (deprecated in 3.12). We never use
            # its datetimes; silence exactly that category from exactly that package.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"aiobreaker\b")
            try:
                self._breaker.call(_fail if outcome is Outcome.FAILURE else _succeed)
            except (_Fed, aiobreaker.CircuitBreakerError):
                pass  # aiobreaker re-raises our marker, or its own error when it trips

    # -- admission ----------------------------------------------------------------------------

    def admissible(self) -> bool:
        """Whether :meth:`admit` would admit a request now (no side effects)."""
        state = self._breaker.current_state
        if state is _CLOSED:
            return True
        if state is _OPEN:
            return anyio.current_time() >= self.reopen_at
        return not self.trial_busy

    def admit(self) -> Ticket | None:
        """Admit one request: its ticket, or ``None`` when the circuit refuses it now."""
        state = self._breaker.current_state
        if state is _CLOSED:
            return self.epoch
        if state is _OPEN:
            if anyio.current_time() < self.reopen_at:
                return None
            self._breaker.half_open()  # ours to decide: aiobreaker's own check mixes timezones
        if self.trial_busy:
            return None
        self.trial_busy = True
        return TRIAL

    def retry_after(self) -> float:
        """Seconds until a trial may be admitted (``reset_timeout`` while a trial is out)."""
        if self._breaker.current_state is _OPEN:
            return max(0.0, self.reopen_at - anyio.current_time())
        if self.trial_busy:
            return self.policy.reset_timeout
        return 0.0

    # -- outcomes -----------------------------------------------------------------------------

    def record(
        self, ticket: Ticket, outcome: Outcome, failure: str, error: BaseException | None
    ) -> bool:
        """Count one finished request. Stale outcomes (admitted before a trip) are ignored.

        Returns:
            Whether a trial slot was freed without a transition (cancelled or 4xx trial): the
            next request may be the trial.
        """
        if outcome is Outcome.FAILURE:
            self.last_failure = failure
            self.last_error = error
        if ticket is TRIAL:
            if self._breaker.current_state is not _HALF_OPEN:
                return False
            if outcome is Outcome.NEUTRAL:
                self.trial_busy = False
                return True
            self._feed(outcome)
            return False
        if ticket != self.epoch or self._breaker.current_state is not _CLOSED:
            return False
        if outcome is Outcome.FAILURE:
            self._feed(outcome)
        elif outcome is Outcome.SUCCESS and self._breaker.fail_counter:
            self._feed(outcome)  # a success resets the consecutive-failure count
        return False

    def fresh(self) -> bool:
        """Closed with no failure counted: a new circuit for the host is the same."""
        return self._breaker.current_state is _CLOSED and not self._breaker.fail_counter
