"""One host's admission: its concurrency gate and its circuit, and waiting for either.

A request to a host passes, in this order (:meth:`Host.enter`):

1. the circuit: while it is open the request fails at once with :class:`CircuitOpenError`
   (or, with ``HostPolicy(on_open="wait")``, waits for it), and nothing is sent;
2. a concurrency gate (an :class:`anyio.CapacityLimiter`) in front of httpx's pool, so the pool
   never holds far more waiting requests than connections (httpx's pool slows down badly when
   thousands of tasks queue on it), held until the response body is closed;
3. the circuit once more, now authoritative, after the gate: a request that queued at the gate
   while the circuit opened is not sent;
4. with ``HostPolicy(rate=)``, the host's request rate (``rate.py``), last, just before sending
   (the transport waits for it: :meth:`Host.wait_rate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from asyncflow._errors import CircuitOpenError
from asyncflow._status import CircuitState, OnOpen
from asyncflow.events import CircuitStateChanged

from .circuit import Circuit
from .rate import HostRate

if TYPE_CHECKING:
    from asyncflow._emit import Emitter

    from .circuit import Ticket
    from .failures import Outcome
    from .policy import HostPolicy

__all__ = ["Host", "HostStatistics"]


@dataclass(frozen=True, slots=True)
class HostStatistics:
    """A snapshot of one host's circuit and gate."""

    host: str
    state: CircuitState
    fail_counter: int
    #: requests holding a gate slot (sent, or reading their response)
    in_flight: int
    #: requests waiting for the circuit (``on_open="wait"``), a gate slot or the host's rate
    waiting: int
    retry_after: float
    #: seconds until the pause a 429's ``Retry-After`` put on the host's rate ends (0: none)
    paused_for: float = 0.0


class Host:
    """One host's gate and circuit. Lives on the event loop thread; no locks needed.

    Args:
        key: the host key, ``scheme://host:port``.
        policy: the host's policy.
        gate_size: requests to the host in flight at once.
        emit: receives :class:`CircuitStateChanged` events.
    """

    __slots__ = ("circuit", "emit", "event", "gate", "key", "policy", "rate", "waiting")

    def __init__(self, key: str, policy: HostPolicy, gate_size: int, emit: Emitter | None) -> None:
        self.key = key
        self.policy = policy
        self.emit = emit
        self.gate = anyio.CapacityLimiter(gate_size)
        self.waiting = 0
        #: set (and replaced) whenever a waiting request should look at the circuit again
        self.event = anyio.Event()
        self.circuit = Circuit(policy, key, self._changed)
        #: the host's request rate, when its policy sets one
        self.rate = None if policy.rate is None else HostRate(policy.rate, policy.burst)

    def _changed(self, old: CircuitState, new: CircuitState, now: float) -> None:
        self._wake()
        if self.emit:
            self.emit(CircuitStateChanged(self.key, old, new, now))

    def _wake(self) -> None:
        self.event.set()
        self.event = anyio.Event()

    async def enter(self, borrower: object) -> Ticket:
        """Wait for the gate and the circuit; return the request's ticket.

        Raises:
            CircuitOpenError: the circuit is open and the policy says ``"fail"``.
        """
        gate = self.gate
        circuit = self.circuit
        while True:
            if circuit.admissible():
                try:
                    gate.acquire_on_behalf_of_nowait(borrower)
                except anyio.WouldBlock:
                    self.waiting += 1
                    try:
                        await gate.acquire_on_behalf_of(borrower)
                    finally:
                        self.waiting -= 1
                ticket = circuit.admit()
                if ticket is not None:
                    return ticket
                gate.release_on_behalf_of(borrower)
            await self._refused()

    async def wait_rate(self, rate: HostRate) -> None:
        """Wait for a place in the host's rate (counted as waiting meanwhile)."""
        self.waiting += 1
        try:
            await rate.acquire()
        finally:
            self.waiting -= 1

    async def _refused(self) -> None:
        circuit = self.circuit
        if self.policy.on_open is OnOpen.FAIL:
            wait = circuit.retry_after()
            if circuit.trial_busy:
                why = "a trial request is in flight"
            else:
                why = f"a trial request is allowed in {wait:.2f} s"
            last = f" (last: {circuit.last_failure})" if circuit.last_failure else ""
            raise CircuitOpenError(
                f"The circuit for {self.key} is open: {circuit.reason}{last}; the request was not "
                f"sent and {why}. Resume the run later, "
                f"or use HostPolicy(on_open='wait') to wait for the circuit.",
                host=self.key,
                retry_after=wait,
            ) from circuit.last_error
        event = self.event
        self.waiting += 1
        try:
            if circuit.trial_busy:
                await event.wait()  # the trial's outcome (or its cancellation) sets it
            else:
                with anyio.move_on_after(circuit.retry_after()):
                    await event.wait()
        finally:
            self.waiting -= 1

    def leave(
        self,
        borrower: object,
        ticket: Ticket,
        outcome: Outcome,
        failure: str = "",
        error: BaseException | None = None,
    ) -> None:
        """Give the gate slot back and count the request's outcome."""
        self.gate.release_on_behalf_of(borrower)
        self.record(ticket, outcome, failure, error)

    def record(
        self,
        ticket: Ticket,
        outcome: Outcome,
        failure: str = "",
        error: BaseException | None = None,
    ) -> None:
        """Count a request's outcome (its gate slot may still be held, by its open body)."""
        if self.circuit.record(ticket, outcome, failure, error):
            self._wake()

    def forgettable(self) -> bool:
        """Closed, no failure counted, nothing in flight or waiting, an idle rate: as new."""
        return (
            self.circuit.fresh()
            and not self.gate.borrowed_tokens
            and not self.waiting
            and (self.rate is None or self.rate.idle())
        )

    def statistics(self) -> HostStatistics:
        """A snapshot of this host's circuit and gate."""
        circuit = self.circuit
        return HostStatistics(
            host=self.key,
            state=circuit.state,
            fail_counter=circuit.fail_counter,
            in_flight=int(self.gate.borrowed_tokens),
            waiting=self.waiting,
            retry_after=circuit.retry_after(),
            paused_for=0.0 if self.rate is None else self.rate.paused_for(),
        )
