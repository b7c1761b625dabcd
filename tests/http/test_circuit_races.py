"""Races between a host's circuit and requests in flight, against a real server on loopback.

Requests held at the server (``/held/<name>/<status>``) answer late, once the test lets them:
an answer to a request admitted before the circuit changed state is not counted for the new
state, and a request that waited at the host's gate while the circuit opened is not sent.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from asyncflow import (
    CircuitOpenError,
    CircuitState,
    Engine,
    HostPolicy,
    HostStatistics,
    OnOpen,
)
from asyncflow.testing import FlakyServer, serve_flaky
from tests.helpers import until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping

    from anyio.abc import TaskGroup

pytestmark = pytest.mark.anyio


class HoldingServer(FlakyServer):
    """A FlakyServer with ``/held/<name>/<status>``: held until :meth:`answer`, then that status.

    ``held`` names the requests held at the server now, ``arrived`` counts them by name.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()
        self.arrived: collections.Counter[str] = collections.Counter()
        self._answer: dict[str, anyio.Event] = {}

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        parts = str(scope.get("path", "")).strip("/").split("/")
        if scope["type"] == "http" and parts[0] == "held":
            _, name, status = parts
            self.held.add(name)
            self.arrived[name] += 1
            try:
                await self._answer.setdefault(name, anyio.Event()).wait()
            finally:
                self.held.discard(name)
            scope = {**scope, "path": f"/status/{status}"}
        await super().__call__(scope, receive, send)

    def answer(self, name: str) -> None:
        """Let the request held as ``name`` answer."""
        self._answer.setdefault(name, anyio.Event()).set()


@pytest.fixture
async def server() -> AsyncIterator[HoldingServer]:
    app = HoldingServer()
    async with serve_flaky(host="127.0.0.2", app=app):
        yield app
        for name in list(app.held):  # a failed test: no request held past its server
            app.answer(name)


async def call(engine: Engine, url: str, answers: list[int | str]) -> None:
    """GET ``url``; append its status, or "refused" for a CircuitOpenError, to ``answers``."""
    try:
        answers.append((await engine.http.get(url)).status_code)
    except CircuitOpenError:
        answers.append("refused")


def host_of(engine: Engine, server: FlakyServer) -> Callable[[], HostStatistics]:
    return lambda: engine.host_statistics()[server.url]


async def get_status(engine: Engine, url: str) -> int:
    return (await engine.http.get(url)).status_code


#: Two failures open the circuit; the trial is allowed soon after, and requests wait for it.
TRIPS_AT_TWO = HostPolicy(fail_max=2, reset_timeout=0.05, on_open=OnOpen.WAIT)


async def send_slow_then_trip(
    engine: Engine, server: HoldingServer, tg: TaskGroup, late: int, answers: list[int | str]
) -> None:
    """Send ``/held/slow/<late>`` (admitted while closed, held), then open the circuit."""
    tg.start_soon(call, engine, f"{server.url}/held/slow/{late}", answers)
    await until(lambda: "slow" in server.held)
    for _ in range(2):
        assert await get_status(engine, f"{server.url}/status/503") == 503
    assert engine.host_statistics()[server.url].state is CircuitState.OPEN


@pytest.mark.parametrize("late", [503, 200])
async def test_a_late_answer_sent_before_the_circuit_opened_is_not_counted(
    server: HoldingServer, late: int
) -> None:
    """Sent while closed, answered after a trip and a close: the late answer is not counted.

    A late 503 does not add a failure, a late 200 does not wipe one out.
    """
    answers: list[int | str] = []
    async with Engine(store=None, host_policy=TRIPS_AT_TWO) as engine:
        host = host_of(engine, server)
        async with anyio.create_task_group() as tg:
            await send_slow_then_trip(engine, server, tg, late, answers)
            assert await get_status(engine, f"{server.url}/trial") == 200  # waits, then closes
            assert await get_status(engine, f"{server.url}/status/503") == 503  # counted: 1
            assert (host().state, host().fail_counter) == (CircuitState.CLOSED, 1)
            server.answer("slow")
        assert answers == [late]
        assert (host().state, host().fail_counter) == (CircuitState.CLOSED, 1)


@pytest.mark.parametrize("late", [503, 200])
async def test_a_late_answer_during_the_trial_neither_closes_nor_reopens(
    server: HoldingServer, late: int
) -> None:
    """Sent while closed, answered while the trial is out: only the trial decides."""
    answers: list[int | str] = []
    async with Engine(store=None, host_policy=TRIPS_AT_TWO) as engine:
        host = host_of(engine, server)
        async with anyio.create_task_group() as tg:
            await send_slow_then_trip(engine, server, tg, late, answers)
            tg.start_soon(call, engine, f"{server.url}/held/trial/200", answers)
            await until(lambda: "trial" in server.held)  # admitted as the trial
            assert host().state is CircuitState.HALF_OPEN
            server.answer("slow")
            await until(lambda: len(answers) == 1)
            assert host().state is CircuitState.HALF_OPEN
            server.answer("trial")
        assert answers == [late, 200]
        assert (host().state, host().fail_counter) == (CircuitState.CLOSED, 0)


async def test_a_request_queued_at_the_gate_while_the_circuit_opened_is_not_sent(
    server: HoldingServer,
) -> None:
    """The circuit is checked again after the host's gate: the queued request fails fast."""
    policy = HostPolicy(fail_max=1, reset_timeout=60.0, concurrency=1)
    answers: list[int | str] = []
    async with Engine(store=None, host_policy=policy) as engine:
        host = host_of(engine, server)
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, engine, f"{server.url}/held/first/503", answers)  # the one slot
            await until(lambda: "first" in server.held)
            tg.start_soon(call, engine, f"{server.url}/second", answers)
            await until(lambda: host().waiting == 1)  # the circuit was closed: it queued
            server.answer("first")  # its 503 opens the circuit, then its body frees the slot
        assert answers == [503, "refused"]
        assert server.count("/second") == 0
        assert server.requests == 1
        assert host().state is CircuitState.OPEN


async def test_a_request_queued_at_the_gate_while_the_trial_was_taken_is_not_sent(
    server: HoldingServer,
) -> None:
    """Half-open: of two requests queued at the gate before a trial was out, one is the trial.

    The second gets its gate slot while the trial is in flight and is refused, not sent.
    """
    policy = HostPolicy(fail_max=1, reset_timeout=0.05, concurrency=2)
    answers: list[int | str] = []
    async with Engine(store=None, host_policy=policy) as engine:
        host = host_of(engine, server)
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, engine, f"{server.url}/held/stale/200", answers)  # gate slot 1
            await until(lambda: "stale" in server.held)
            async with engine.http.stream("GET", f"{server.url}/status/503"):  # opens; slot 2
                assert host().state is CircuitState.OPEN
                await until(lambda: host().retry_after == 0)  # a trial is allowed from now on
                for waiting in (1, 2):
                    tg.start_soon(call, engine, f"{server.url}/held/trial/200", answers)
                    await until(lambda: host().waiting == waiting)  # noqa: B023 - awaited here
            # The 503's body is closed: the first waiter gets its slot and is the trial.
            await until(lambda: "trial" in server.held)
            server.answer("stale")  # frees slot 1 for the second waiter, while the trial is out
            await until(lambda: "refused" in answers or server.arrived["trial"] > 1)
            assert server.arrived["trial"] == 1
            server.answer("trial")
        assert sorted(answers, key=str) == [200, 200, "refused"]
        assert host().state is CircuitState.CLOSED
