"""Retry: a step's retry policy, run on stamina's ``retry_context``.

What asyncflow adds on top of stamina, and why:

- **Transient errors only by default** (:func:`is_transient`): httpx transport errors and
  timeouts, HTTP 5xx and 429, and our :class:`StepTimeoutError`. Never other 4xx, never a
  :class:`CircuitOpenError` (an open circuit must not burn the retry budget), never anything
  that is not an ``Exception`` (cancellation always propagates).
- **We compute every wait ourselves** (:meth:`Retry.decide`, stamina's formula) and hand it to
  stamina through its backoff hook (a hook that returns a float is an explicit wait). That way
  the wait reported in :class:`~asyncflow.StepRetrying` is the wait taken; a server's
  ``Retry-After`` (seconds or an HTTP date) replaces the exponential backoff; and every wait is
  clamped to ``wait_max`` and to the time left: when the wait would use up the rest of
  ``Retry.timeout`` we stop at once with the real error instead of sleeping into a certain
  timeout. stamina clamps neither. So stamina gets the stop conditions (``attempts``,
  ``timeout``) and never its backoff arguments (``wait_*``), which it would not use; it still
  does the sleeping, and its testing mode still makes every wait 0.
- **Nothing secret reaches stamina's instrumentation.** stamina's retry hooks (stdlib logging,
  structlog, prometheus) are process-global: we leave them alone, because switching them off
  would change every other user of stamina in the process. Instead, ``retry_context`` never sees
  the step's arguments (a context block has no arguments), and the error stamina sees is a
  redacted carrier, :class:`AttemptFailed`, whose ``repr`` names only the step, the attempt and
  the error's type, never its message (an ``HTTPStatusError`` message holds the URL, which may
  hold an API key). The real error goes to our own :class:`~asyncflow.StepRetrying` event and is
  raised unchanged when the policy gives up.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import anyio
import httpx
import stamina

from ._errors import CircuitOpenError, StepTimeoutError
from ._http import is_failure_status, is_transport_failure, parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")

__all__ = ["AttemptFailed", "Retry", "call_with_retry", "is_transient", "retry_after"]

#: What ``Retry(on=...)`` accepts: exception types, or a predicate that returns whether to retry
#: (``True``/``False``) or an explicit wait in seconds (a float), like stamina's backoff hooks.
RetryOn: TypeAlias = (
    "type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool | float]"
)


def is_transient(error: Exception) -> bool:
    """Whether ``error`` is worth another attempt: the default ``Retry(on=...)``.

    True for httpx transport errors and timeouts (``PoolTimeout``, our own pool being busy,
    included), ``HTTPStatusError`` with a 5xx or 429 status, and :class:`StepTimeoutError`.
    False for other 4xx, for :class:`CircuitOpenError`, for httpx errors that are the caller's
    fault (``UnsupportedProtocol``, ``LocalProtocolError``) and for everything else.
    """
    if isinstance(error, CircuitOpenError):
        return False
    if isinstance(error, httpx.PoolTimeout):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        return is_failure_status(error.response.status_code)
    return isinstance(error, StepTimeoutError) or is_transport_failure(error)


def retry_after(error: Exception, *, now: float | None = None) -> float | None:
    """The wait in seconds a server asked for in ``error``, or ``None`` when it asked nothing.

    Reads the ``Retry-After`` header of an ``HTTPStatusError``'s response, as delta-seconds or as
    an HTTP date (compared with ``now``, a POSIX timestamp defaulting to the current time), and
    ``CircuitOpenError.retry_after``. A date in the past is 0; an unreadable header is ``None``.
    """
    if isinstance(error, CircuitOpenError):
        return max(0.0, error.retry_after)
    if not isinstance(error, httpx.HTTPStatusError):
        return None
    value = error.response.headers.get("retry-after")
    if value is None:
        return None
    return parse_retry_after(value, now=now)


@dataclass(frozen=True, slots=True)
class Retry:
    """How a step's failed attempts are retried. Names follow stamina's.

    The backoff before retry ``n`` (1-based) is
    ``min(wait_max, wait_initial * wait_exp_base ** (n - 1) + uniform(0, wait_jitter))``, or the
    server's ``Retry-After`` clamped to ``wait_max``. A wait that would use up the rest of
    ``timeout`` ends the retries at once with the last error.

    Attributes:
        attempts: the most attempts, the first one included.
        timeout: seconds all attempts and waits together may take; ``None`` for no limit. Each
            attempt is also cut off when it would run past it (a :class:`StepTimeoutError`).
        wait_initial: the first backoff, in seconds.
        wait_max: the longest backoff, in seconds, ``Retry-After`` included.
        wait_jitter: the most random seconds added to each backoff.
        wait_exp_base: the backoff grows by this factor each attempt.
        on: which errors are retried: an exception type, a tuple of them, or a predicate
            returning ``True``/``False`` or an explicit wait in seconds. Defaults to
            :func:`is_transient`. Only ``Exception`` instances are ever offered: cancellation
            is never retried.
    """

    attempts: int = 3
    timeout: float | None = 45.0
    wait_initial: float = 0.1
    wait_max: float = 5.0
    wait_jitter: float = 1.0
    wait_exp_base: float = 2.0
    on: RetryOn = is_transient

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"Retry(attempts={self.attempts!r}): give a whole number >= 1.")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(
                f"Retry(timeout={self.timeout!r}): give positive seconds, or None for no limit."
            )
        for name in ("wait_initial", "wait_max", "wait_jitter"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Retry({name}={value!r}): give a finite number of seconds >= 0.")
        if not self.wait_exp_base >= 1:
            raise ValueError(f"Retry(wait_exp_base={self.wait_exp_base!r}): give a number >= 1.")

    def decide(self, error: Exception, retry: int) -> float | None:
        """The wait before retry number ``retry`` after ``error``, or ``None`` not to retry.

        Not clamped to the time left; :func:`call_with_retry` does that.
        """
        on = self.on
        if isinstance(on, type | tuple):
            verdict: bool | float = isinstance(error, on)
        else:
            verdict = on(error)
        if verdict is False:
            return None
        asked = retry_after(error)
        if asked is None and not isinstance(verdict, bool):
            asked = max(0.0, float(verdict))
        if asked is not None:
            return min(self.wait_max, asked)
        jitter = random.uniform(0.0, self.wait_jitter) if self.wait_jitter else 0.0
        try:
            backoff = self.wait_initial * self.wait_exp_base ** (retry - 1) + jitter
        except OverflowError:
            backoff = self.wait_max
        return min(self.wait_max, backoff)


class AttemptFailed(Exception):
    """The redacted carrier stamina sees for a failed attempt; see the module docstring.

    ``error`` holds the real exception. ``repr``/``str`` name only the step (when given), the
    attempt and the error's type, so stamina's logging hooks cannot print secrets.
    """

    def __init__(self, error: Exception, attempt: int, label: str) -> None:
        super().__init__(f"{label}attempt {attempt} failed with {type(error).__name__}")
        self.error = error
        self.attempt = attempt

    def __repr__(self) -> str:
        return f"AttemptFailed({self.args[0]!r})"


async def call_with_retry(
    policy: Retry,
    attempt: Callable[[int, float | None], Awaitable[T]],
    *,
    on_retry: Callable[[int, Exception, float], None] | None = None,
    label: str = "",
) -> T:
    """Call ``attempt(n, budget)`` until it succeeds or the policy gives up.

    ``n`` counts attempts from 1; ``budget`` is the seconds left of ``policy.timeout`` (``None``
    when unbounded), which the attempt must not outlive. ``on_retry(n, error, wait)`` is called
    once per retry that really happens, after attempt ``n`` failed with ``error`` and before
    waiting ``wait`` seconds (the wait stamina will sleep: 0 in ``stamina.set_testing`` mode).
    ``label`` names the caller in the redacted carrier stamina's hooks see.

    Cancellation is never retried and propagates. When the policy gives up, the last error is
    raised as it is (not wrapped).
    """
    n = 0
    deadline = None if policy.timeout is None else anyio.current_time() + policy.timeout
    # In stamina's testing mode stamina may stop before our attempt cap (set_testing(attempts=)),
    # so a retry we approve may not happen: report it when the next attempt starts instead (the
    # waits are 0 in that mode, so nothing is reported late).
    testing = stamina.is_testing()
    pending: tuple[int, Exception, float] | None = None
    prefix = f"{label}: " if label else ""

    def hook(exc: Exception) -> bool | float:
        nonlocal pending
        if not isinstance(exc, AttemptFailed):
            return False  # not ours (cannot happen: every Exception is wrapped)
        error = exc.error
        if exc.attempt >= policy.attempts:
            return False
        wait = policy.decide(error, exc.attempt)
        if wait is None:
            return False
        if deadline is not None and wait >= deadline - anyio.current_time():
            return False  # the wait would use up the time left: give up now, with the real error
        if on_retry is not None:
            if testing:
                pending = (exc.attempt, error, 0.0)
            else:
                on_retry(exc.attempt, error, wait)
        return float(wait)

    failed: AttemptFailed
    try:
        # No wait_* arguments: the hook always answers with the wait (see the module docstring).
        async for retry in stamina.retry_context(
            on=hook, attempts=policy.attempts, timeout=policy.timeout
        ):
            with retry:
                n += 1
                if pending is not None and on_retry is not None:
                    report, pending = pending, None
                    on_retry(*report)
                budget = None if deadline is None else max(0.0, deadline - anyio.current_time())
                try:
                    return await attempt(n, budget)
                except Exception as exc:
                    raise AttemptFailed(exc, n, prefix) from None
    except AttemptFailed as exc:
        failed = exc
    # Raised outside the except block so the carrier does not become the error's __context__.
    raise failed.error
