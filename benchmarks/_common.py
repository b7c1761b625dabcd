"""What the benchmarks share."""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


async def best_of(repeat: int, fn: Callable[[], Awaitable[object]]) -> float:
    """The fastest of ``repeat`` timed calls, in seconds: this shared 2-core machine is noisy."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        await fn()
        best = min(best, time.perf_counter() - t0)
    return best
