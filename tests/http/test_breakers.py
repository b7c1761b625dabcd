from __future__ import annotations

import contextlib
import os
import socket
import time
from functools import partial
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
from anyio.lowlevel import checkpoint

from asyncflow import (
    AsyncflowError,
    CircuitOpenError,
    CircuitState,
    CircuitStateChanged,
    Context,
    Engine,
    Event,
    Flow,
    HostPolicy,
    HostStatistics,
    OnOpen,
    Retry,
    StepStatus,
    StepTimeoutError,
)

# The transport and the host keys are internal; these tests drive the circuit's state machine
# below the engine, where a scripted host can time each request exactly.
from asyncflow._http import BreakerTransport, host_key
from asyncflow.testing import serve_flaky
from tests.helpers import fetch_flow, until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio

FAST = HostPolicy(fail_max=3, reset_timeout=0.05)


def transitions(events: list[Event], host: str | None = None) -> list[tuple[str, str]]:
    return [
        (e.old.value, e.new.value)
        for e in events
        if isinstance(e, CircuitStateChanged) and (host is None or e.host == host)
    ]


async def trip(engine: Engine, server: FlakyServer, fail_max: int) -> CircuitOpenError:
    """Open the server's circuit with fail_max 503s; return the error of the next request."""
    server.outage = True
    for _ in range(fail_max):
        response = await engine.http.get(server.url + "/trip")
        assert response.status_code == 503
    with pytest.raises(CircuitOpenError) as info:
        await engine.http.get(server.url + "/refused")
    return info.value


async def wait_for_trial(error: CircuitOpenError) -> None:
    """Sleep the time the breaker itself says until a trial (its monotonic deadline)."""
    await anyio.sleep(error.retry_after)


async def test_circuit_opens_after_fail_max_and_nothing_is_sent_while_open(
    host_a: FlakyServer,
) -> None:
    """fail_max consecutive 503s open the circuit; then requests fail at once, unsent."""
    events: list[Event] = []
    policy = HostPolicy(fail_max=3, reset_timeout=60.0)
    async with Engine(host_policy=policy, observers=[events.append]) as engine:
        error = await trip(engine, host_a, 3)
        for _ in range(20):
            with pytest.raises(CircuitOpenError):
                await engine.http.get(host_a.url + "/refused")
    assert host_a.requests == 3
    assert host_a.count("/refused") == 0
    assert error.host == host_key(host_a.url)
    assert 0 < error.retry_after <= 60.0
    assert "not sent" in str(error)
    assert transitions(events) == [("closed", "open")]


async def test_healthy_host_keeps_working_while_the_other_is_down(
    host_a: FlakyServer, host_b: FlakyServer
) -> None:
    """An open circuit on 127.0.0.2 does not slow or refuse calls to 127.0.0.3."""
    statuses: list[int] = []
    async with Engine(host_policy=FAST) as engine:
        host_a.hang = True  # also keep a request to the failing host in flight
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: engine.http.get(host_a.url + "/stuck"))
            await host_a.wait_for_requests(1)

            async def call_b() -> None:
                statuses.append((await engine.http.get(host_b.url + "/fine")).status_code)

            for _ in range(50):
                tg.start_soon(call_b)
            await host_b.wait_for_requests(50)
            host_a.reset()
        await trip(engine, host_a, 3)
        for _ in range(10):
            statuses.append((await engine.http.get(host_b.url + "/fine")).status_code)
    assert statuses == [200] * 60
    assert host_b.requests == 60


async def test_exactly_one_trial_with_200_concurrent_callers(host_a: FlakyServer) -> None:
    """In half-open only one request reaches the still-failing server; 199 are refused."""
    events: list[Event] = []
    async with Engine(host_policy=FAST, observers=[events.append]) as engine:
        await wait_for_trial(await trip(engine, host_a, 3))
        host_a.hang = True  # hold the trial so every caller arrives while it is in flight
        refused = 0
        answers: list[int] = []

        async def call() -> None:
            nonlocal refused
            try:
                answers.append((await engine.http.get(host_a.url + "/trial")).status_code)
            except CircuitOpenError:
                refused += 1

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(call)
            await host_a.wait_for_requests(4)
            await until(lambda: refused == 199)
            assert host_a.count("/trial") == 1
            host_a.release()  # the trial gets the outage's 503
    assert answers == [503]
    assert host_a.count("/trial") == 1
    assert transitions(events) == [("closed", "open"), ("open", "half-open"), ("half-open", "open")]


async def test_successful_trial_closes_the_circuit(host_a: FlakyServer) -> None:
    """After reset_timeout one trial goes through; its success closes the circuit."""
    events: list[Event] = []
    async with Engine(host_policy=FAST, observers=[events.append]) as engine:
        await wait_for_trial(await trip(engine, host_a, 3))
        host_a.reset()
        for _ in range(5):
            assert (await engine.http.get(host_a.url + "/ok")).status_code == 200
    assert host_a.count("/ok") == 5
    assert transitions(events)[-2:] == [("open", "half-open"), ("half-open", "closed")]


async def test_on_open_wait_holds_200_callers_for_one_trial_then_lets_all_through(
    host_a: FlakyServer,
) -> None:
    """With on_open="wait", callers wait for the circuit; one trial, then everyone proceeds."""
    policy = HostPolicy(fail_max=3, reset_timeout=0.05, on_open="wait")
    statuses: list[int] = []
    async with Engine(host_policy=policy) as engine:
        host_a.outage = True
        for _ in range(3):
            await engine.http.get(host_a.url + "/trip")
        host_a.reset()
        host_a.hang = True  # hold the trial

        async def call() -> None:
            statuses.append((await engine.http.get(host_a.url + "/work")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(call)
            await host_a.wait_for_requests(4)
            await until(lambda: engine.host_statistics()[host_key(host_a.url)].waiting == 199)
            assert host_a.count("/work") == 1  # only the trial; 199 wait, none refused
            host_a.reset()  # the trial succeeds and closes the circuit
    assert statuses == [200] * 200
    assert host_a.count("/work") == 200


async def test_other_4xx_neither_trip_nor_close(host_a: FlakyServer) -> None:
    """A 404 is not a failure, and as a trial's answer it does not close the circuit."""
    events: list[Event] = []
    policy = HostPolicy(fail_max=2, reset_timeout=0.05)
    async with Engine(host_policy=policy, observers=[events.append]) as engine:
        for _ in range(5):
            assert (await engine.http.get(host_a.url + "/status/404")).status_code == 404
        assert transitions(events) == []
        error = await trip(engine, host_a, 2)
        await wait_for_trial(error)
        host_a.reset()
        assert (await engine.http.get(host_a.url + "/status/404")).status_code == 404
        assert transitions(events)[-1] == ("open", "half-open")
        assert (await engine.http.get(host_a.url + "/ok")).status_code == 200  # the next trial
    assert transitions(events)[-1] == ("half-open", "closed")


async def test_cancelled_trial_frees_the_slot_and_is_not_a_failure(host_a: FlakyServer) -> None:
    """Cancelling the trial leaves the circuit half-open with the slot free for the next call."""
    events: list[Event] = []
    async with Engine(host_policy=FAST, observers=[events.append]) as engine:
        await wait_for_trial(await trip(engine, host_a, 3))
        host_a.reset()
        host_a.hang = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: engine.http.get(host_a.url + "/cancelled"))
            await host_a.wait_for_requests(4)
            with pytest.raises(CircuitOpenError, match="trial request is in flight"):
                await engine.http.get(host_a.url + "/refused")
            tg.cancel_scope.cancel()
        host_a.reset()
        assert (await engine.http.get(host_a.url + "/ok")).status_code == 200
    assert transitions(events)[-2:] == [("open", "half-open"), ("half-open", "closed")]


async def test_cancellation_never_counts_as_a_failure(host_a: FlakyServer) -> None:
    """fail_max=1: a cancelled request leaves the circuit closed."""
    async with Engine(host_policy=HostPolicy(fail_max=1, reset_timeout=60.0)) as engine:
        host_a.hang = True
        with anyio.move_on_after(0.1):
            await engine.http.get(host_a.url + "/slow")
        host_a.reset()
        assert (await engine.http.get(host_a.url + "/ok")).status_code == 200


API = "http://api.test"


class StreamedBody(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"body"


class ScriptedHost:
    """A host behind a MockTransport whose answers a test releases one by one.

    ``/{code}`` answers that status at once; ``/held/{name}/{code}`` once :meth:`release` is
    called with its name. ``seen`` lists the paths that reached the host. Bodies are streamed,
    as from a network: a request holds its gate slot until its body is closed.
    """

    def __init__(self, policy: HostPolicy) -> None:
        self.seen: list[str] = []
        self.answers: list[int | str] = []
        self._held: dict[str, anyio.Event] = {}
        self.transport = BreakerTransport(httpx.MockTransport(self._handle), default=policy)
        self.client = httpx.AsyncClient(transport=self.transport, base_url=API)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.seen.append(path)
        parts = path.strip("/").split("/")
        if parts[0] == "held":
            await self._held.setdefault(parts[1], anyio.Event()).wait()
        return httpx.Response(int(parts[-1]), stream=StreamedBody())

    def release(self, name: str) -> None:
        self._held.setdefault(name, anyio.Event()).set()

    async def call(self, path: str) -> None:
        """GET ``path``; append its status, or "refused" for a CircuitOpenError, to answers."""
        try:
            self.answers.append((await self.client.get(path)).status_code)
        except CircuitOpenError:
            self.answers.append("refused")

    def stats(self) -> HostStatistics:
        return self.transport.statistics()[host_key(API)]


async def test_a_request_queued_at_the_gate_while_the_circuit_opened_is_not_sent() -> None:
    """A request that queued at the gate while the circuit opened is refused, not sent."""
    api = ScriptedHost(HostPolicy(fail_max=1, reset_timeout=60.0, concurrency=1))
    async with api.client, anyio.create_task_group() as tg:
        tg.start_soon(api.call, "/held/first/503")  # takes the only gate slot
        await until(lambda: len(api.seen) == 1)
        tg.start_soon(api.call, "/200")
        await until(lambda: api.stats().waiting == 1)  # admissible then: queued at the gate
        api.release("first")  # its 503 opens the circuit, then its closed body frees the slot
    assert sorted(api.answers, key=str) == [503, "refused"]
    assert api.seen == ["/held/first/503"]


async def test_a_request_queued_at_the_gate_while_the_trial_was_taken_is_not_sent() -> None:
    """Half-open: of two requests queued at the gate before a trial was out, one is the trial.

    The second gets its gate slot while the trial is in flight and is refused, not sent.
    """
    api = ScriptedHost(HostPolicy(fail_max=1, reset_timeout=0.05, concurrency=2))
    async with api.client, anyio.create_task_group() as tg:
        tg.start_soon(api.call, "/held/stale/200")  # gate slot 1, admitted while closed
        await until(lambda: len(api.seen) == 1)
        async with api.client.stream("GET", "/503"):  # opens the circuit; holds slot 2
            await anyio.sleep(api.stats().retry_after)  # a trial is allowed from now on
            for waiting in (1, 2):
                tg.start_soon(api.call, "/held/trial/200")
                await until(lambda: api.stats().waiting == waiting)  # noqa: B023 - awaited here
        # The 503's body is closed: the first waiter gets its slot and is the trial.
        await until(lambda: api.seen.count("/held/trial/200") == 1)
        api.release("stale")  # frees slot 1 for the second waiter, while the trial is out
        await until(lambda: "refused" in api.answers or api.seen.count("/held/trial/200") > 1)
        assert api.seen.count("/held/trial/200") == 1
        api.release("trial")
    assert sorted(api.answers, key=str) == [200, 200, "refused"]
    assert api.stats().state is CircuitState.CLOSED


@pytest.mark.parametrize("stale", [503, 200])
async def test_an_outcome_admitted_before_a_trip_is_not_counted(stale: int) -> None:
    """An answer to a request sent before the circuit opened and closed again is not counted.

    A late 503 does not add a failure, a late 200 does not wipe one out.
    """
    api = ScriptedHost(HostPolicy(fail_max=2, reset_timeout=0.05))
    async with api.client, anyio.create_task_group() as tg:
        tg.start_soon(api.call, f"/held/slow/{stale}")  # admitted while closed
        await until(lambda: len(api.seen) == 1)
        for _ in range(2):
            await api.call("/503")
        assert api.stats().state is CircuitState.OPEN
        await anyio.sleep(api.stats().retry_after)
        await api.call("/200")  # the trial closes the circuit
        await api.call("/503")  # one failure counted since
        assert (api.stats().state, api.stats().fail_counter) == (CircuitState.CLOSED, 1)
        api.release("slow")
    assert api.answers[-1] == stale
    assert (api.stats().state, api.stats().fail_counter) == (CircuitState.CLOSED, 1)


async def test_transport_errors_trip_and_the_real_error_is_the_cause() -> None:
    """Connection refused counts; the CircuitOpenError chains the ConnectError that tripped it."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.3", 0))
        url = f"http://127.0.0.3:{s.getsockname()[1]}"
    async with Engine(host_policy=HostPolicy(fail_max=2, reset_timeout=60.0)) as engine:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                await engine.http.get(url)
        with pytest.raises(CircuitOpenError) as info:
            await engine.http.get(url)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "ConnectError" in str(info.value)


async def test_gate_bounds_requests_in_flight_per_host(host_a: FlakyServer) -> None:
    """HostPolicy(concurrency=3): ten callers, three requests at the server at a time."""
    async with Engine(hosts={"127.0.0.2": HostPolicy(concurrency=3)}) as engine:
        host_a.hang = True
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(lambda: engine.http.get(host_a.url + "/gated"))
            await host_a.wait_for_requests(3)
            stats = engine.host_statistics
            await until(lambda: stats()[host_key(host_a.url)].waiting == 7)
            assert host_a.requests == 3
            assert stats()[host_key(host_a.url)].in_flight == 3
            host_a.reset()
    assert host_a.requests == 10


@pytest.mark.parametrize("on_open", [OnOpen.FAIL, OnOpen.WAIT])
async def test_open_circuit_does_not_spend_attempts(host_a: FlakyServer, on_open: OnOpen) -> None:
    """fail: the step fails at once, unsent; wait: it waits for the trial and succeeds."""
    reset = 60.0 if on_open is OnOpen.FAIL else 0.1
    policy = HostPolicy(fail_max=3, reset_timeout=reset, on_open=on_open)
    async with Engine(host_policy=policy) as engine:
        host_a.outage = True
        for _ in range(3):
            await engine.http.get(host_a.url + "/trip")
        host_a.reset()
        result = await engine.run(
            fetch_flow("/step", Retry(attempts=5, timeout=10.0)), url=host_a.url
        )
    step = result.steps["fetch"]
    assert step.attempts == 1
    if on_open is OnOpen.FAIL:
        assert step.status is StepStatus.FAILED
        assert isinstance(step.error and step.error.__cause__, CircuitOpenError)
        assert host_a.count("/step") == 0
    else:
        assert step.status is StepStatus.SUCCEEDED
        assert host_a.count("/step") == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.2:8000/x", 1),  # bare host, any port
        ("https://127.0.0.2/x", 1),
        ("http://127.0.0.3:9000/x", 2),  # exact origin
        ("http://127.0.0.3:9001/x", 5),  # other port: the default
        ("http://api.example.com/x", 3),  # exact origin with its default port written out
        ("https://api.example.com/x", 5),
    ],
)
def test_host_policy_matching(url: str, expected: int) -> None:
    """Exact origins win over bare hosts, which win over the default."""
    transport = BreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)),
        hosts={
            "127.0.0.2": HostPolicy(fail_max=1),
            "http://127.0.0.3:9000": HostPolicy(fail_max=2),
            "http://api.example.com:80": HostPolicy(fail_max=3),
        },
    )
    assert transport.policy_for(url).fail_max == expected


@pytest.mark.parametrize("key", ["http://h/path", "h:80", "a/b", ""])
def test_malformed_host_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="hosts key"):
        Engine(hosts={key: HostPolicy()})


def test_host_policy_validates() -> None:
    with pytest.raises(ValueError, match="on_open"):
        HostPolicy(on_open="later")  # type: ignore[arg-type]
    assert HostPolicy(on_open="wait").on_open is OnOpen.WAIT
    assert str(CircuitState.HALF_OPEN) == "half-open"


async def test_engine_owns_and_closes_its_client() -> None:
    """ctx.http is the engine's client, open inside the engine and closed after it."""
    async with Engine() as engine:
        client = engine.http
        open_inside = not client.is_closed
    assert open_inside
    assert client.is_closed
    with pytest.raises(AsyncflowError, match="not open"):
        _ = engine.http


async def test_mock_transport_passes_through_the_breakers() -> None:
    """A user-supplied transport is wrapped: 5xx from a MockTransport trips the circuit."""
    transport = httpx.MockTransport(lambda r: httpx.Response(503))
    async with Engine(http_transport=transport, host_policy=HostPolicy(fail_max=2)) as engine:
        for _ in range(2):
            await engine.http.get("http://mock.test/")
        with pytest.raises(CircuitOpenError, match=r"http://mock\.test:80"):
            await engine.http.get("http://mock.test/")
    await checkpoint()


async def test_a_response_read_in_full_by_the_transport_frees_its_slot_at_once() -> None:
    """An answer read in full before it is returned (MockTransport) frees its gate slot.

    No body close will come for it: so more requests than slots go through, and a trial
    answered that way closes the circuit.
    """
    answers = iter([503, 503, 200, 200, 200])
    transport = httpx.MockTransport(lambda r: httpx.Response(next(answers), text="read"))
    policy = HostPolicy(fail_max=2, reset_timeout=0.05)
    async with Engine(http_transport=transport, host_policy=policy, max_connections=1) as engine:
        with anyio.fail_after(5):
            for _ in range(2):
                await engine.http.get("http://mock.test/")  # two 503s open the circuit
            with pytest.raises(CircuitOpenError) as info:
                await engine.http.get("http://mock.test/")
            await wait_for_trial(info.value)
            for _ in range(3):
                assert (await engine.http.get("http://mock.test/")).text == "read"
        stats = engine.host_statistics()[host_key("http://mock.test/")]
    assert (stats.state, stats.in_flight) == (CircuitState.CLOSED, 0)


async def test_a_host_failing_mid_body_trips_the_circuit(host_a: FlakyServer) -> None:
    """200 headers then a stalled body: each read timeout counts, as a failed connect would."""
    read_fast = httpx.Timeout(10.0, read=1.0)
    policy = HostPolicy(fail_max=2, reset_timeout=60.0)
    async with Engine(host_policy=policy, http_timeout=read_fast) as engine:
        assert (await engine.http.get(host_a.url + "/fine")).status_code == 200
        host_a.stall_body = True
        for _ in range(2):
            with pytest.raises(httpx.ReadTimeout):
                await engine.http.get(host_a.url + "/stalls")
        with pytest.raises(CircuitOpenError, match="ReadTimeout in the body") as info:
            await engine.http.get(host_a.url + "/refused")
        assert isinstance(info.value.__cause__, httpx.ReadTimeout)
        assert engine.host_statistics()[host_key(host_a.url)].in_flight == 0
    assert host_a.requests == 3


async def test_a_trial_is_judged_by_its_whole_body(host_a: FlakyServer) -> None:
    """A trial whose body stalls reopens the circuit; a 200 closed unread still closes it."""
    events: list[Event] = []
    read_fast = httpx.Timeout(10.0, read=1.0)
    policy = HostPolicy(fail_max=3, reset_timeout=0.5)
    async with Engine(
        host_policy=policy, http_timeout=read_fast, observers=[events.append]
    ) as engine:
        await wait_for_trial(await trip(engine, host_a, 3))
        host_a.reset()
        host_a.stall_body = True
        with pytest.raises(httpx.ReadTimeout):
            await engine.http.get(host_a.url + "/trial-stalls")
        assert transitions(events)[-2:] == [("open", "half-open"), ("half-open", "open")]
        host_a.reset()
        await anyio.sleep(engine.host_statistics()[host_key(host_a.url)].retry_after)
        async with engine.http.stream("GET", host_a.url + "/unread"):
            pass  # the host answered 200; the caller did not want the body
    assert transitions(events)[-1] == ("half-open", "closed")


async def test_unread_successes_still_break_a_run_of_failures(host_a: FlakyServer) -> None:
    """fail_max=3: 503, 200 closed unread, 503, 200, 503: never three in a row, never open."""
    async with Engine(host_policy=HostPolicy(fail_max=3, reset_timeout=60.0)) as engine:
        for _ in range(3):
            host_a.fail_next(1)
            assert (await engine.http.get(host_a.url + "/fails")).status_code == 503
            async with engine.http.stream("GET", host_a.url + "/unread") as response:
                assert response.status_code == 200
        stats = engine.host_statistics()[host_key(host_a.url)]
        assert (stats.state, stats.fail_counter) == (CircuitState.CLOSED, 0)


async def test_healthy_idle_hosts_are_forgotten_and_troubled_ones_kept() -> None:
    """max_hosts=3 over six hosts: the open circuit survives every sweep and still refuses."""
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(serve_flaky()) for _ in range(6)]
        down = servers[0]
        down.outage = True
        transport = BreakerTransport(
            httpx.AsyncHTTPTransport(), default=HostPolicy(fail_max=2), max_hosts=3
        )
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(2):
                await client.get(down.url + "/down")
            for server in servers[1:]:
                assert (await client.get(server.url + "/ok")).status_code == 200
                assert len(transport.statistics()) <= 4  # a sweep keeps it near max_hosts
            kept = transport.statistics()
            assert kept[host_key(down.url)].state is CircuitState.OPEN
            assert host_key(servers[-1].url) in kept
            assert host_key(servers[1].url) not in kept  # healthy and idle: forgotten
            with pytest.raises(CircuitOpenError):
                await client.get(down.url + "/still-refused")
            assert (await client.get(servers[1].url + "/again")).status_code == 200
    assert down.requests == 2


def flow_timing_out(timeout: float, attempts: int) -> Flow:
    """A step that GETs url/slow with a deadline of ``timeout`` per attempt."""
    flow = Flow("timed")

    @flow.step(timeout=timeout, retry=Retry(attempts=attempts, timeout=10.0))
    async def call(url: str, ctx: Context) -> bytes:
        return (await ctx.http.get(url + "/slow")).content

    return flow


async def test_step_timeouts_open_the_circuit_of_a_host_that_never_answers(
    host_a: FlakyServer, host_b: FlakyServer, no_waits: None
) -> None:
    """Attempts cut off by the step's deadline count: the next run fails at once, unsent."""
    async with Engine(host_policy=HostPolicy(fail_max=2, reset_timeout=60.0)) as engine:
        host_a.hang = True  # connections are accepted, no answer ever comes
        first = await engine.run(flow_timing_out(0.2, attempts=2), url=host_a.url)
        timeout = first.steps["call"].error
        assert isinstance(timeout, StepTimeoutError)
        assert timeout.attempts == 2
        stats = engine.host_statistics()
        assert stats[host_key(host_a.url)].state is CircuitState.OPEN
        again = await engine.run(flow_timing_out(0.2, attempts=2), url=host_a.url, run_id="again")
        step = again.steps["call"]
        refused = step.error and step.error.__cause__
        assert isinstance(refused, CircuitOpenError)
        assert "StepTimeoutError" in str(refused)
        assert isinstance(refused.__cause__, StepTimeoutError)
        assert step.attempts == 1
        assert host_a.requests == 2
        fine = await engine.run(flow_timing_out(0.2, attempts=2), url=host_b.url)
        assert fine.steps["call"].status is StepStatus.SUCCEEDED
        b = engine.host_statistics()[host_key(host_b.url)]
        assert (b.state, b.fail_counter) == (CircuitState.CLOSED, 0)


async def test_a_body_trickling_past_the_step_deadline_counts(
    host_a: FlakyServer, no_waits: None
) -> None:
    """200, then a byte every 50 ms: no read timeout fires, the step's deadline does, and counts."""
    async with Engine(host_policy=HostPolicy(fail_max=2, reset_timeout=60.0)) as engine:
        host_a.trickle = 0.05
        result = await engine.run(flow_timing_out(0.2, attempts=2), url=host_a.url)
        assert isinstance(result.steps["call"].error, StepTimeoutError)
        with pytest.raises(CircuitOpenError, match="StepTimeoutError in the body"):
            await engine.http.get(host_a.url + "/refused")
        assert engine.host_statistics()[host_key(host_a.url)].in_flight == 0
    assert host_a.requests == 2


def flow_with_failing_sibling(server: FlakyServer) -> Flow:
    """``call`` GETs url/cancelled (deadline 30 s); ``boom`` fails once that request is out."""
    flow = Flow("sibling")

    @flow.step(timeout=30.0)
    async def call(url: str, ctx: Context) -> int:
        return (await ctx.http.get(url + "/cancelled")).status_code

    @flow.step
    async def boom() -> None:
        await until(lambda: server.count("/cancelled") == 1)
        raise RuntimeError("boom")

    return flow


async def test_only_the_steps_own_deadline_counts(host_a: FlakyServer, no_waits: None) -> None:
    """A timed-out attempt counts; a cancelled run and a fail-fast cancellation do not."""
    async with Engine(host_policy=HostPolicy(fail_max=2, reset_timeout=60.0)) as engine:

        def counted() -> tuple[CircuitState, int]:
            stats = engine.host_statistics()[host_key(host_a.url)]
            return stats.state, stats.fail_counter

        host_a.hang = True
        await engine.run(flow_timing_out(0.2, attempts=1), url=host_a.url)
        assert counted() == (CircuitState.CLOSED, 1)
        # The caller cancels a run while its request is in flight, its deadline still far off.
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(engine.run, flow_timing_out(30.0, attempts=1), url=host_a.url))
            await host_a.wait_for_requests(2)
            tg.cancel_scope.cancel()
        assert counted() == (CircuitState.CLOSED, 1)
        # A failing sibling cancels the step whose request is in flight.
        result = await engine.run(flow_with_failing_sibling(host_a), url=host_a.url, fail_fast=True)
        assert result.steps["call"].status is StepStatus.CANCELLED
        assert counted() == (CircuitState.CLOSED, 1)
    assert host_a.requests == 3


async def test_a_deadline_while_queued_for_a_connection_is_not_the_hosts(
    host_a: FlakyServer, host_b: FlakyServer, no_waits: None
) -> None:
    """Cut off waiting for our own pool, a request to B does not count; cut off at B, it does."""
    policy = HostPolicy(fail_max=1, reset_timeout=60.0)
    async with Engine(max_connections=1, host_policy=policy) as engine:
        stats = engine.host_statistics
        host_a.hang = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.http.get, host_a.url + "/holds-the-one-connection")
            await host_a.wait_for_requests(1)
            queued = await engine.run(flow_timing_out(0.2, attempts=1), url=host_b.url)
            assert isinstance(queued.steps["call"].error, StepTimeoutError)
            assert host_b.requests == 0
            assert stats()[host_key(host_b.url)].fail_counter == 0
            tg.cancel_scope.cancel()
        host_b.hang = True
        await engine.run(flow_timing_out(0.2, attempts=1), url=host_b.url, run_id="at-b")
        assert stats()[host_key(host_b.url)].state is CircuitState.OPEN
    assert host_b.requests == 1


def test_timezone_is_the_one_requested() -> None:
    """Run by test_breakers_env.py with TZ set: proves the subprocess really had that zone."""
    expected = os.environ.get("ASYNCFLOW_EXPECT_UTC_OFFSET")
    if expected is None:
        pytest.skip("only meaningful when test_breakers_env.py runs this module under a TZ")
    assert time.localtime().tm_gmtoff == int(expected)
