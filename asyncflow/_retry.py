"""RetryPolicy for steps, mapped onto stamina."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio
import stamina

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")

__all__ = ["Retry", "call_with_retry"]


@dataclass(frozen=True, slots=True)
class Retry:
    """How a step's failed attempts are retried. Names follow stamina's.

    Attributes:
        attempts: the most attempts, the first one included.
        timeout: seconds all attempts together may take; ``None`` for no limit.
        wait_initial: the first backoff, in seconds.
        wait_max: the longest backoff, in seconds.
        wait_jitter: the most random seconds added to each backoff.
        wait_exp_base: the backoff grows by this factor each attempt.
        on: which errors are retried: an exception type, a tuple of them, or a predicate.
    """

    attempts: int = 3
    timeout: float | None = 45.0
    wait_initial: float = 0.1
    wait_max: float = 5.0
    wait_jitter: float = 1.0
    wait_exp_base: float = 2.0
    on: type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool] = Exception


async def call_with_retry(
    policy: Retry,
    attempt: Callable[[int, float | None], Awaitable[T]],
    *,
    on_retry: Callable[[int, Exception, float], None] | None = None,
) -> T:
    """Call ``attempt(n, budget)`` until it succeeds or the policy gives up.

    ``n`` counts attempts from 1; ``budget`` is the seconds left of ``policy.timeout`` (``None``
    when unbounded), which the attempt must not outlive. Cancellation is never retried. The last
    error is raised as it is when the policy gives up.
    """
    n = 0
    deadline = None if policy.timeout is None else anyio.current_time() + policy.timeout
    async for retry in stamina.retry_context(
        on=policy.on,
        attempts=policy.attempts,
        timeout=policy.timeout,
        wait_initial=policy.wait_initial,
        wait_max=policy.wait_max,
        wait_jitter=policy.wait_jitter,
        wait_exp_base=policy.wait_exp_base,
    ):
        with retry:
            n += 1
            budget = None if deadline is None else max(0.0, deadline - anyio.current_time())
            return await attempt(n, budget)
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover
