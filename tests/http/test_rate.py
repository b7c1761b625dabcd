"""HostPolicy(rate=, burst=): requests per second per host, counted and timed by real servers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncflow import CircuitState, Context, Engine, Flow, HostPolicy, StepStatus, StepTimeoutError
from tests.helpers import until

if TYPE_CHECKING:
    from collections.abc import Sequence

    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio

flow = Flow("rated")


@flow.step
async def fetch(url: str, ctx: Context) -> int:
    response = await ctx.http.get(url)
    return response.status_code


def busiest_second(arrivals: Sequence[float]) -> int:
    """The most arrivals in any window of 1 s (each window starting at an arrival)."""
    times = sorted(arrivals)
    most, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] <= start + 1.0:
            j += 1
        most = max(most, j - i)
    return most


async def test_no_second_holds_more_than_rate_plus_burst(
    host_a: FlakyServer, host_b: FlakyServer
) -> None:
    """Runs of a batch share the host's rate: the server never sees more than rate + burst in 1 s.

    Another host, without a rate, is not held back meanwhile.
    """
    rate, burst, n = 10, 3, 33
    hosts = {"127.0.0.2": HostPolicy(rate=rate, burst=burst)}
    async with Engine(store=None, hosts=hosts) as engine:
        urls = [{"url": f"{host_a.url}/item/{k}"} for k in range(n)]
        async with anyio.create_task_group() as tg:

            async def limited() -> None:
                summary = await engine.map(flow, urls, concurrency=n, progress=False).summary()
                assert summary.succeeded == n

            tg.start_soon(limited)
            await host_a.wait_for_requests(1)
            for k in range(20):
                assert (await engine.http.get(f"{host_b.url}/free/{k}")).status_code == 200
            assert host_a.requests < n  # the other host's 20 went while this one was held
    assert host_a.requests == n
    assert busiest_second(host_a.arrivals) <= rate + burst


async def test_retry_after_of_a_429_pauses_the_host_for_every_caller(host_a: FlakyServer) -> None:
    """A 429 with Retry-After holds back the other callers' requests too, not only a retry."""
    host_a.fail_next(1, status=429, retry_after=2)
    # One request at a time: the others are queued when the 429 comes back.
    policy = HostPolicy(rate=100, burst=10, concurrency=1)
    async with Engine(store=None, hosts={"127.0.0.2": policy}) as engine:
        statuses: list[int] = []

        async def get(k: int) -> None:
            statuses.append((await engine.http.get(f"{host_a.url}/caller/{k}")).status_code)

        async with anyio.create_task_group() as tg:
            for k in range(5):
                tg.start_soon(get, k)
            await until(lambda: statuses == [429])
            (paused,) = engine.host_statistics().values()
    assert sorted(statuses) == [200, 200, 200, 200, 429]
    first, second = host_a.arrivals[0], host_a.arrivals[1]
    assert second - first >= 2.0  # nobody was sent during the pause the server asked for
    assert 0 < paused.paused_for <= 2.0  # what host_statistics() showed meanwhile
    assert paused.waiting == 4


async def test_a_deadline_while_waiting_for_the_rate_is_not_a_failure_of_the_host(
    host_a: FlakyServer,
) -> None:
    """A step cut off while its request waits for the bucket: StepTimeoutError, circuit untouched."""
    slow = Flow("slow")

    @slow.step(timeout=0.3)
    async def fetch(url: str, ctx: Context) -> int:
        return (await ctx.http.get(url)).status_code

    policy = HostPolicy(rate=0.2, burst=1, fail_max=1)  # one request, then the next in 5 s
    async with Engine(store=None, hosts={"127.0.0.2": policy}) as engine:
        first = await engine.run(slow, url=f"{host_a.url}/first")
        second = await engine.run(slow, url=f"{host_a.url}/second")
        stats = engine.host_statistics()
    assert first.ok
    assert second.steps["fetch"].status is StepStatus.FAILED
    assert isinstance(second.steps["fetch"].error, StepTimeoutError)
    assert host_a.requests == 1
    (host,) = stats.values()
    assert host.state is CircuitState.CLOSED
    assert host.fail_counter == 0


@pytest.mark.parametrize("rate", [0, -1, 0.0, math.nan, math.inf, True, "10"])
def test_a_rate_that_is_not_positive_is_refused(rate: object) -> None:
    with pytest.raises(ValueError, match=r"HostPolicy\(rate=.*above 0"):
        HostPolicy(rate=rate)  # type: ignore[arg-type]  # bad input on purpose


@pytest.mark.parametrize("burst", [0, -3, 1.5, True])
def test_a_burst_that_is_not_a_whole_number_of_at_least_one_is_refused(burst: object) -> None:
    with pytest.raises(ValueError, match=r"HostPolicy\(burst=.*whole number >= 1"):
        HostPolicy(rate=5, burst=burst)  # type: ignore[arg-type]  # bad input on purpose
