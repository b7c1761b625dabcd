from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
import stamina
from anyio.lowlevel import checkpoint

from asyncflow import (
    CircuitOpenError,
    Context,
    Engine,
    Event,
    Flow,
    Retry,
    StepRetrying,
    StepStatus,
    StepTimeoutError,
    is_transient,
)

# The retry loop and the Retry-After parser have no public name: these unit tests call them
# directly; the tests through steps below use public names only.
from asyncflow._retry import AttemptFailed, call_with_retry, retry_after
from tests.helpers import fetch_flow, stamina_line_back

if TYPE_CHECKING:
    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio


def status_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://127.0.0.2/x")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("server hung up"), True),
        (httpx.UnsupportedProtocol("ftp://"), False),
        (status_error(500), True),
        (status_error(503), True),
        (status_error(429), True),
        (status_error(400), False),
        (status_error(404), False),
        (StepTimeoutError(step="s", timeout=1.0), True),
        (CircuitOpenError("open", host="http://h:80", retry_after=1.0), False),
        (ValueError("bug"), False),
    ],
)
def test_default_retries_transient_errors_only(error: Exception, expected: bool) -> None:
    """Transport errors, timeouts, 5xx and 429 are retried; 4xx, open circuits and bugs not."""
    assert is_transient(error) is expected
    assert (Retry().decide(error, 1) is not None) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),  # 10 s after `now` below
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str, expected: float | None) -> None:
    """Retry-After is delta-seconds or an HTTP date; a past date is 0, garbage is ignored."""
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after(status_error(429, {"Retry-After": header}), now=now) == expected


def test_retry_after_is_clamped_to_wait_max() -> None:
    """A server asking for more than wait_max gets wait_max."""
    policy = Retry(wait_max=2.0)
    assert policy.decide(status_error(503, {"Retry-After": "600"}), 1) == 2.0
    assert policy.decide(status_error(503, {"Retry-After": "1.5"}), 1) == 1.5


def test_backoff_is_exponential_and_capped() -> None:
    """Without Retry-After the wait grows by wait_exp_base and stops at wait_max."""
    policy = Retry(wait_initial=1.0, wait_exp_base=2.0, wait_jitter=0.0, wait_max=5.0)
    waits = [policy.decide(httpx.ConnectError("x"), n) for n in range(1, 6)]
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"timeout": 0}, {"wait_max": -1.0}])
def test_retry_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Retry"):
        Retry(**bad)  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_waits")
async def test_call_with_retry_counts_attempts_and_reports_each_retry() -> None:
    """Attempts count from 1, on_retry fires once per retry, and the real error is raised."""
    seen: list[int] = []
    reports: list[tuple[int, str, float]] = []

    async def attempt(n: int, budget: float | None) -> None:
        seen.append(n)
        raise httpx.ConnectError(f"refused {n}")

    with pytest.raises(httpx.ConnectError, match="refused 3") as info:
        await call_with_retry(
            Retry(attempts=3),
            attempt,
            on_retry=lambda n, e, w: reports.append((n, str(e), w)),
        )
    assert seen == [1, 2, 3]
    assert reports == [(1, "refused 1", 0.0), (2, "refused 2", 0.0)]
    assert not isinstance(info.value.__context__, AttemptFailed)


async def test_no_retry_is_reported_when_stamina_testing_stops_early() -> None:
    """Stamina's testing mode may cap attempts below ours: no phantom retry event then."""
    reports: list[int] = []

    async def attempt(n: int, budget: float | None) -> None:
        raise httpx.ConnectError("refused")

    with stamina.set_testing(True, attempts=2), pytest.raises(httpx.ConnectError):
        await call_with_retry(
            Retry(attempts=5), attempt, on_retry=lambda n, e, w: reports.append(n)
        )
    assert reports == [1]


async def test_stamina_sleeps_the_wait_that_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    """The wait stamina sleeps is the one on_retry reports: stamina's own backoff is never used."""
    reports: list[float] = []

    async def attempt(n: int, budget: float | None) -> None:
        raise httpx.ConnectError("refused")

    caplog.set_level(logging.WARNING, logger="stamina")
    policy = Retry(attempts=3, wait_initial=0.0625, wait_jitter=0.0)
    with stamina_line_back(), pytest.raises(httpx.ConnectError):
        await call_with_retry(policy, attempt, on_retry=lambda n, e, w: reports.append(w))
    assert reports == [0.0625, 0.125]
    slept = [r.__dict__["stamina.wait_for"] for r in caplog.records if r.name == "stamina"]
    assert slept == [round(wait, 2) for wait in reports]


async def test_a_wait_past_the_deadline_stops_at_once_with_the_real_error() -> None:
    """Retry-After beyond the time left: no sleep into a certain timeout, the 429 is raised."""
    calls = 0

    async def attempt(n: int, budget: float | None) -> None:
        nonlocal calls
        calls += 1
        raise status_error(429, {"Retry-After": "30"})

    start = anyio.current_time()
    with pytest.raises(httpx.HTTPStatusError):
        await call_with_retry(Retry(attempts=5, timeout=2.0, wait_max=60.0), attempt)
    assert calls == 1
    assert anyio.current_time() - start < 1.0


async def test_cancellation_is_never_retried() -> None:
    """A cancelled attempt propagates at once, even with on=BaseException-like predicates."""
    calls = 0

    async def attempt(n: int, budget: float | None) -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep_forever()

    with anyio.move_on_after(0.05) as scope:
        await call_with_retry(Retry(attempts=5, on=lambda e: True), attempt)
    assert scope.cancelled_caught
    assert calls == 1


# -- through the engine, against the real loopback server ------------------------------------


@pytest.mark.usefixtures("no_waits")
async def test_step_retries_5xx_until_it_succeeds(host_a: FlakyServer) -> None:
    """Two 503s then 200: three attempts, two retry events, three requests on the server."""
    host_a.fail_next(2, status=503)
    events: list[Event] = []
    async with Engine(observers=[events.append]) as engine:
        result = await engine.run(fetch_flow("/ok", Retry(attempts=5)), url=host_a.url)
    assert result.ok
    assert result.steps["fetch"].attempts == 3
    assert host_a.requests == 3
    retries = [e for e in events if isinstance(e, StepRetrying)]
    assert [(e.attempt, e.wait) for e in retries] == [(1, 0.0), (2, 0.0)]
    assert all(isinstance(e.error, httpx.HTTPStatusError) for e in retries)


@pytest.mark.usefixtures("no_waits")
async def test_4xx_is_not_retried(host_a: FlakyServer) -> None:
    """A 404 fails the step after one attempt and one request."""
    async with Engine() as engine:
        result = await engine.run(fetch_flow("/status/404", Retry(attempts=5)), url=host_a.url)
    step = result.steps["fetch"]
    assert step.status is StepStatus.FAILED
    assert step.attempts == 1
    assert isinstance(step.error and step.error.__cause__, httpx.HTTPStatusError)
    assert host_a.requests == 1


@pytest.mark.parametrize(
    ("header", "wait_max", "expected"),
    [
        ("0.15", 5.0, 0.15),  # the server's wait, not the 3 s exponential backoff
        ("30", 0.1, 0.1),  # clamped to wait_max
        ("Wed, 21 Oct 2015 07:28:00 GMT", 5.0, 0.0),  # an HTTP date in the past
    ],
)
async def test_429_retry_after_sets_the_wait(
    host_a: FlakyServer, header: str, wait_max: float, expected: float
) -> None:
    """A 429's Retry-After is the wait taken (within wait_max), as the retry event reports."""
    host_a.fail_next(1, status=429, retry_after=header)
    events: list[Event] = []
    policy = Retry(attempts=3, wait_initial=3.0, wait_jitter=0.0, wait_max=wait_max)
    async with Engine(observers=[events.append]) as engine:
        result = await engine.run(fetch_flow("/ok", policy), url=host_a.url)
    assert result.ok
    assert [e.wait for e in events if isinstance(e, StepRetrying)] == [expected]
    assert host_a.requests == 2


@pytest.mark.usefixtures("no_waits")
async def test_hung_attempt_times_out_and_is_retried(host_a: FlakyServer) -> None:
    """The step's timeout= cuts off each attempt inside the retried call; the next one runs."""
    host_a.hang = True

    def heal(event: Event) -> None:
        if isinstance(event, StepRetrying):
            host_a.reset()

    async with Engine(observers=[heal]) as engine:
        result = await engine.run(fetch_flow("/ok", Retry(attempts=3), timeout=0.2), url=host_a.url)
    assert result.ok, result.errors
    assert result.steps["fetch"].attempts == 2
    assert host_a.requests == 2


@pytest.mark.usefixtures("no_waits")
async def test_cancelled_step_is_not_retried(host_a: FlakyServer) -> None:
    """Cancelling a run while its step waits on the server: one request, no retry."""
    host_a.hang = True
    events: list[Event] = []
    flow = fetch_flow("/slow", Retry(attempts=5, on=Exception))
    async with Engine(observers=[events.append]) as engine, anyio.create_task_group() as tg:
        tg.start_soon(lambda: engine.run(flow, url=host_a.url))
        await host_a.wait_for_requests(1)
        tg.cancel_scope.cancel()
    await checkpoint()
    assert host_a.requests == 1
    assert not [e for e in events if isinstance(e, StepRetrying)]


async def test_secrets_never_reach_stamina_logging(
    host_a: FlakyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Stamina says nothing of our retries; with its line back, it sees no argument or URL."""
    secret = "sk-live-0123456789"
    flow = Flow("secret")

    @flow.step(retry=Retry(attempts=3, wait_initial=0.0, wait_jitter=0.0))
    async def call(api_key: str, url: str, ctx: Context) -> int:
        response = await ctx.http.get(f"{url}/x", params={"key": api_key})
        response.raise_for_status()
        return response.status_code

    host_a.fail_next(2, status=503)
    events: list[Event] = []
    caplog.set_level(logging.DEBUG)
    async with Engine(observers=[events.append]) as engine:
        result = await engine.run(flow, api_key=secret, url=host_a.url)
        assert result.ok
        assert not [r for r in caplog.records if r.name == "stamina"]  # quiet by default
        host_a.fail_next(2, status=503)
        with stamina_line_back():
            result = await engine.run(flow, run_id="again", api_key=secret, url=host_a.url)
    assert result.ok
    retries = [e for e in events if isinstance(e, StepRetrying)]
    # The real error, with the secret in its URL, goes to our own event...
    assert len(retries) == 4
    assert secret in str(retries[0].error)
    # ...while stamina's logging hook did run, but saw only the redacted carrier.
    stamina_records = [r for r in caplog.records if r.name == "stamina"]
    assert len(stamina_records) == 2
    for record in caplog.records:
        if record.name.startswith(("stamina", "asyncflow")):
            assert secret not in repr(record.__dict__)
    # (httpx's own INFO line "HTTP Request: GET <url>" does print query strings: an httpx
    # behaviour, outside what asyncflow logs; keep secrets in headers, not URLs.)
