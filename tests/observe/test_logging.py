"""The logging exporter: LogObserver's lines and fields, URL redaction, stamina kept quiet."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import pytest

from asyncflow import Context, Engine, Flow, HostPolicy, Retry
from asyncflow.observe import LogObserver, quiet_stamina, redact_urls
from tests.helpers import stamina_line_back

if TYPE_CHECKING:
    from pathlib import Path

    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio

SECRET = "sk-live-0123456789"
NO_WAIT = Retry(attempts=3, wait_initial=0.0, wait_jitter=0.0)


def records(caplog: pytest.LogCaptureFixture, name: str = "asyncflow") -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name]


def call_flow(retry: Retry = NO_WAIT) -> Flow:
    flow = Flow("secret")

    @flow.step(retry=retry)
    async def call(api_key: str, url: str, ctx: Context) -> int:
        response = await ctx.http.get(f"{url}/x", params={"key": api_key})
        response.raise_for_status()
        return response.status_code

    return flow


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "503 for url 'https://user:pw@api.example.com:8443/v1/x?key=sk-1#frag'",
            "503 for url 'https://api.example.com:8443/v1/x'",
        ),
        ("GET http://127.0.0.1:9/a?token=t b", "GET http://127.0.0.1:9/a b"),
        (
            '"https://a.example/p?x=1" and https://b.example/?y=2',
            '"https://a.example/p" and https://b.example/',
        ),
        ("redis://:hunter2@cache:6379/0", "redis://cache:6379/0"),
        ("no url here: key=sk-1", "no url here: key=sk-1"),
        ("https://plain.example/path", "https://plain.example/path"),
    ],
)
def test_redact_urls_drops_credentials_queries_and_fragments(text: str, expected: str) -> None:
    """URLs keep scheme, host, port and path; text without a URL is unchanged."""
    assert redact_urls(text) == expected


async def test_retries_are_logged_at_info_with_fields_and_no_secret(
    host_a: FlakyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each retry is one INFO line naming step, attempt, error and wait; successes stay quiet."""
    host_a.fail_next(2, status=503)
    caplog.set_level(logging.INFO, logger="asyncflow")
    async with Engine(observers=[LogObserver()], store=None) as engine:
        result = await engine.run(call_flow(), api_key=SECRET, url=host_a.url)
    assert result.ok
    lines = records(caplog)
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO]
    assert [r.__dict__["attempt"] for r in lines] == [1, 2]
    first = lines[0]
    assert first.__dict__["step"] == "call"
    assert first.__dict__["flow"] == "secret"
    assert first.__dict__["run_id"] == result.run_id
    assert first.__dict__["error_type"] == "HTTPStatusError"
    assert first.__dict__["wait"] == 0.0
    message = first.getMessage()
    assert "step call of run" in message
    assert "attempt 1 failed with HTTPStatusError: Server error '503" in message
    assert f"{host_a.url}/x'" in message  # the URL stays, its query string goes
    assert "retrying in 0.00s" in message
    for record in caplog.records:
        if record.name.startswith(("stamina", "asyncflow")):
            assert SECRET not in repr(record.__dict__)
            assert SECRET not in record.getMessage()


async def test_a_failed_step_and_run_are_warnings(
    host_a: FlakyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A step failing for good logs a WARNING with its attempts; the run's end is one too."""
    host_a.outage = True
    caplog.set_level(logging.WARNING, logger="asyncflow")
    async with Engine(observers=[LogObserver()], store=None) as engine:
        result = await engine.run(call_flow(), api_key=SECRET, url=host_a.url)
    assert not result.ok
    failed, finished = records(caplog)
    assert failed.levelno == finished.levelno == logging.WARNING
    assert failed.__dict__["attempt"] == 3
    assert failed.__dict__["error_type"] == "HTTPStatusError"
    assert "step call of run" in failed.getMessage()
    assert "failed after 3 attempts: HTTPStatusError" in failed.getMessage()
    assert SECRET not in failed.getMessage()
    assert finished.__dict__["status"] == "failed"
    assert finished.getMessage() == f"run {result.run_id} of secret failed"


async def test_run_start_and_success_are_debug_lines(caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG a successful run has a start and an end line; at INFO it has none."""
    flow = Flow("quiet")

    @flow.step
    async def one(x: int) -> int:
        return x

    caplog.set_level(logging.DEBUG, logger="asyncflow")
    async with Engine(observers=[LogObserver()], store=None) as engine:
        result = await engine.run(flow, x=1)
    assert [(r.levelno, r.getMessage()) for r in records(caplog)] == [
        (logging.DEBUG, f"run {result.run_id} of quiet started"),
        (logging.DEBUG, f"run {result.run_id} of quiet succeeded"),
    ]


async def test_restored_steps_are_summed_in_one_line_per_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run that restores steps from checkpoints logs how many, once, at INFO."""
    flow = Flow("twice")

    @flow.step
    async def a(x: int) -> int:
        return x + 1

    @flow.step
    async def b(a: int) -> int:
        return a + 1

    caplog.set_level(logging.INFO, logger="asyncflow")
    async with Engine(observers=[LogObserver()], store=tmp_path / "store") as engine:
        await engine.run(flow, x=1)
        assert records(caplog) == []
        result = await engine.run(flow, x=1)
    (line,) = records(caplog)
    assert line.__dict__["restored"] == 2
    assert line.getMessage() == f"run {result.run_id} of twice: 2 steps restored from checkpoints"


async def test_circuit_changes_are_logged_with_the_host(
    host_a: FlakyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening a circuit is a WARNING naming the host and both states."""
    caplog.set_level(logging.INFO, logger="asyncflow")
    policy = HostPolicy(fail_max=2, reset_timeout=60.0)
    host_a.outage = True
    async with Engine(observers=[LogObserver()], host_policy=policy, store=None) as engine:
        for _ in range(2):
            await engine.http.get(f"{host_a.url}/x?key={SECRET}")
    (line,) = records(caplog)
    assert line.levelno == logging.WARNING
    assert line.__dict__["host"] == host_a.url
    assert line.getMessage() == f"circuit of {host_a.url}: closed -> open"


async def test_lines_go_to_the_logger_given(caplog: pytest.LogCaptureFixture) -> None:
    """LogObserver(logger=...) writes there, and retry_level sets the retries' level."""
    observer = LogObserver("app.flows", retry_level=logging.DEBUG)
    assert observer.logger is logging.getLogger("app.flows")
    flow = Flow("f")

    @flow.step
    async def boom() -> None:
        raise ValueError("no")

    caplog.set_level(logging.WARNING)
    async with Engine(observers=[observer], store=None) as engine:
        await engine.run(flow)
    assert {r.name for r in caplog.records} == {"app.flows"}


@pytest.mark.parametrize("line_back", [False, True], ids=["default", "filter-removed"])
async def test_stamina_is_quiet_about_our_retries_until_its_line_is_asked_back(
    host_a: FlakyServer, caplog: pytest.LogCaptureFixture, line_back: bool
) -> None:
    """No stamina line reaches a handler by default; without the filter, redacted ones do."""
    host_a.fail_next(2, status=503)
    caplog.set_level(logging.DEBUG)
    async with Engine(store=None) as engine:
        with stamina_line_back() if line_back else contextlib.nullcontext():
            result = await engine.run(call_flow(), api_key=SECRET, url=host_a.url)
    assert result.steps["call"].attempts == 3
    lines = records(caplog, "stamina")
    assert [r.getMessage() for r in lines] == ["stamina.retry_scheduled"] * (2 if line_back else 0)
    for record in lines:
        assert SECRET not in repr(record.__dict__)


def test_quiet_stamina_lets_other_stamina_users_through() -> None:
    """Only records about asyncflow's attempts are dropped; another library's retries pass."""
    logger = logging.getLogger("stamina")

    def record(caused_by: str) -> logging.LogRecord:
        return logger.makeRecord(
            "stamina",
            logging.WARNING,
            __file__,
            1,
            "stamina.retry_scheduled",
            (),
            None,
            extra={"stamina.caused_by": caused_by},
        )

    assert quiet_stamina in logger.filters
    assert not quiet_stamina.filter(record("AttemptFailed('call: attempt 1 failed with X')"))
    assert quiet_stamina.filter(record("ConnectError('refused')"))


async def test_a_failing_observer_is_reported_without_the_urls_secret(
    host_a: FlakyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning about an observer that raised shows the event with its URLs redacted."""

    def broken(event: object) -> None:
        raise RuntimeError("observer bug")

    host_a.fail_next(1, status=503)
    caplog.set_level(logging.WARNING, logger="asyncflow")
    async with Engine(observers=[broken], store=None) as engine:
        assert (await engine.run(call_flow(), api_key=SECRET, url=host_a.url)).ok
    retrying = [r for r in records(caplog) if "failed on StepRetrying(" in r.getMessage()]
    assert len(retrying) == 1
    assert f"{host_a.url}/x'" in retrying[0].getMessage()
    assert SECRET not in retrying[0].getMessage()
