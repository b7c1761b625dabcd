"""Waiting on state in tests that share their event loop with a real server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (a state check, not a timing assertion).

    Not ``anyio.wait_all_tasks_blocked``: it re-checks every 0.1 s, as often as uvicorn's
    server loop ticks in the same event loop, and once the two timers fire in the same loop
    iteration (ours first) it sees the server task awake on every check and never returns.
    The conditions polled here (a circuit's waiters, a pool's queue) have no event to wait on.
    """
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - polled state has no event
            await anyio.sleep(0.002)
