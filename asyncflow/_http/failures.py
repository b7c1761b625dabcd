"""What counts as a host's failure: one set of rules for the circuit and for retries.

A request's outcome, judged from the host's side:

- **failure**: a transport error or timeout that the network or the host caused
  (:func:`is_transport_failure`), a 5xx or 429 answer (:func:`is_failure_status`), or the
  request cut off by a step's own deadline (:func:`step_deadline`) while the host had it
  (connecting, sending, awaiting or reading the answer), as a read timeout would be;
- **neutral**: other 4xx answers, every other cancellation (the caller's, a fail-fast sibling's,
  the engine closing, a deadline inside the step's code, a step deadline that fires while the
  request waits at our own gate or pool) and any other exception: not the host's doing;
- **success**: any other answer.

The circuit counts failures and successes and ignores neutral outcomes (``transport.py``). The
default retry predicate, :func:`asyncflow.is_transient`, retries the same transport failures and
failing statuses, plus what is transient on our own side.
"""

from __future__ import annotations

import enum
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import anyio
import httpx

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "Outcome",
    "failure_of",
    "is_failure_status",
    "is_transport_failure",
    "status_outcome",
    "step_deadline",
]


class Outcome(enum.Enum):
    """How one request went, for its host's circuit."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


def is_transport_failure(error: BaseException) -> bool:
    """Whether ``error`` says the host or the network failed: an httpx transport error or timeout.

    Not the errors that are our own side's fault: an unsupported URL scheme, a request httpx
    could not write, or no free connection in our own pool (``UnsupportedProtocol``,
    ``LocalProtocolError``, ``PoolTimeout``).
    """
    return isinstance(error, httpx.TransportError) and not isinstance(
        error, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.PoolTimeout
    )


def is_failure_status(status: int) -> bool:
    """Whether an HTTP status says the host failed: a 5xx, or 429 (too many requests)."""
    return status >= 500 or status == 429


def status_outcome(status: int) -> Outcome:
    """The outcome an answer with this status means: failing statuses, other 4xx, the rest."""
    if is_failure_status(status):
        return Outcome.FAILURE
    if status >= 400:
        return Outcome.NEUTRAL
    return Outcome.SUCCESS


#: The step deadlines the current code runs under, outermost first, each with the error it means.
_deadlines: ContextVar[tuple[tuple[anyio.CancelScope, BaseException], ...]] = ContextVar(
    "asyncflow_step_deadlines", default=()
)


@contextmanager
def step_deadline(seconds: float, error: BaseException) -> Iterator[anyio.CancelScope]:
    """``anyio.move_on_after(seconds)``, the expiry of which is a failure of the hosts it cuts off.

    A request that this deadline cancels while the host has it counts against the host's circuit,
    with ``error`` (what the caller raises when the block was cut off) as the error that opened
    it. Cancellations from anywhere else still count for nothing.
    """
    with anyio.move_on_after(seconds) as scope:
        token = _deadlines.set((*_deadlines.get(), (scope, error)))
        try:
            yield scope
        finally:
            _deadlines.reset(token)


def failure_of(exc: BaseException, *, sent: bool = True) -> BaseException | None:
    """The error that makes ``exc`` a failure of the host, or ``None`` when it is not one.

    ``exc`` itself for a transport failure; for the cancellation of a :func:`step_deadline`, that
    deadline's error, unless the request was never ``sent`` (it was still queued on our side).
    """
    if is_transport_failure(exc):
        return exc
    if sent and isinstance(exc, anyio.get_cancelled_exc_class()):
        for scope, error in _deadlines.get():
            if scope.cancel_called:  # only its deadline cancels it
                return error
    return None
