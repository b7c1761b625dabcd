"""One host's request rate: a leaky bucket (aiolimiter) that a 429's ``Retry-After`` pauses.

``HostPolicy(rate=r, burst=b)`` lets ``b`` requests go at once and ``r`` per second on average:
aiolimiter's ``AsyncLimiter(max_rate=b, time_period=b / r)``, a bucket of ``b`` that drains at
``r`` per second. So any window of ``t`` seconds holds at most ``b + r * t`` requests.

The wait is the last one before a request is sent, after the host's circuit and gate
(``host.py``): a request that waited for the gate (the host was slow) must not then go out with
a token it took long ago, which would let a whole queue out at once. Waiting here is our side's,
never the host's doing: a deadline that fires here counts for nothing.

A 429 answer with ``Retry-After`` pauses the bucket for every request to the host, not only the
one that got it: those waiting and those arriving wait until the pause ends (capped at
:data:`MAX_PAUSE`). A pause never shortens one already set.

aiolimiter was measured against no limiter where the rate is never reached (its fast path does
not yield to the loop): ``benchmarks/bench_http.py`` prints the ratio.
"""

from __future__ import annotations

import email.utils
import math
import time

import anyio

__all__ = ["MAX_PAUSE", "HostRate", "parse_retry_after"]

#: The longest pause a ``Retry-After`` can put on a host's bucket, in seconds.
MAX_PAUSE = 300.0


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """A ``Retry-After`` header value as seconds from now, or ``None`` when it is unreadable.

    Delta-seconds or an HTTP date (compared with ``now``, a POSIX timestamp defaulting to the
    current time). A date in the past is 0.
    """
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            date = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if date.tzinfo is None:  # RFC 9110 dates are GMT; be lenient with a missing zone
            return None
        # An HTTP date is wall-clock by definition; this is the one place we read that clock.
        seconds = date.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class HostRate:
    """One host's bucket and pause. Lives on the event loop thread; no locks needed.

    Args:
        rate: requests per second on average.
        burst: requests that may go at once after a quiet spell.
    """

    __slots__ = ("_limiter", "burst", "paused_until", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        # Imported here: only hosts with a rate need it (the ``rate`` extra).
        from aiolimiter import AsyncLimiter

        self.rate = rate
        self.burst = burst
        self._limiter = AsyncLimiter(burst, burst / rate)
        #: ``anyio.current_time()`` before which nothing is sent; 0.0 when not paused
        self.paused_until = 0.0

    async def acquire(self) -> None:
        """Wait for the pause to end and for a place in the bucket.

        Cancellation leaves the bucket as it was.
        """
        limiter = self._limiter
        while True:
            if self.paused_until:
                wait = self.paused_until - anyio.current_time()
                if wait > 0:
                    await anyio.sleep(wait)
                    continue
                self.paused_until = 0.0
            await limiter.acquire()  # returns without yielding while the bucket has room
            if not self.paused_until:
                return
            # Paused while this request waited in the bucket: its place is spent; wait again.

    def pause(self, seconds: float) -> None:
        """Send nothing to the host for ``seconds`` (at most :data:`MAX_PAUSE`) from now."""
        until = anyio.current_time() + min(max(seconds, 0.0), MAX_PAUSE)
        self.paused_until = max(self.paused_until, until)

    def paused_for(self) -> float:
        """Seconds until the pause ends; 0.0 when not paused."""
        return max(0.0, self.paused_until - anyio.current_time()) if self.paused_until else 0.0

    def idle(self) -> bool:
        """Empty and not paused: a new bucket for the host would be the same."""
        return self.paused_until <= anyio.current_time() and self._limiter.has_capacity(self.burst)
