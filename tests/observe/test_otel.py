"""OpenTelemetryObserver against the real SDK: spans collected by an in-memory exporter."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from asyncflow import Context, Engine, FileStore, Flow, HostPolicy, Retry, RunHook
from asyncflow.observe import LogObserver
from asyncflow.observe.otel import OpenTelemetryObserver

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio

QUICK = Retry(attempts=3, wait_initial=0.0, wait_max=0.0)


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def fetch_twice_flow() -> Flow:
    flow = Flow("traced")

    @flow.step(retry=QUICK)
    async def fetch(url: str, ctx: Context) -> int:
        response = await ctx.http.get(url)
        response.raise_for_status()
        return response.status_code

    @flow.step
    async def report(fetch: int) -> str:
        return f"got {fetch}"

    return flow


async def test_a_run_span_with_a_child_span_per_attempt_and_retries_as_events(
    host_a: FlakyServer, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, provider = spans
    host_a.fail_next(1, status=503)
    observer = OpenTelemetryObserver(tracer_provider=provider)
    async with Engine(store=None, observers=[observer]) as engine:
        result = await engine.run(fetch_twice_flow(), url=f"{host_a.url}/x?key=s3cret")
    assert result.ok
    (run,) = named(exporter, "run traced")
    assert run.attributes is not None
    assert run.attributes["asyncflow.run_id"] == result.run_id
    assert run.attributes["asyncflow.flow"] == "traced"
    assert run.attributes["asyncflow.status"] == "succeeded"
    first, second = sorted(named(exporter, "step fetch"), key=lambda s: s.start_time or 0)
    (report,) = named(exporter, "step report")
    for attempt in (first, second, report):
        assert parent_of(attempt) == run.context.span_id
        assert attempt.context.trace_id == run.context.trace_id
    assert first.attributes is not None
    assert second.attributes is not None
    assert (first.attributes["asyncflow.attempt"], second.attributes["asyncflow.attempt"]) == (1, 2)
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET
    (exception,) = [e for e in first.events if e.name == "exception"]
    assert exception.attributes is not None
    assert exception.attributes["exception.type"] == "HTTPStatusError"
    assert "s3cret" not in str(exception.attributes["exception.message"])  # redacted
    (retry,) = [e for e in run.events if e.name == "retry"]
    assert retry.attributes is not None
    assert retry.attributes["asyncflow.step"] == "fetch"
    assert retry.attributes["asyncflow.attempt"] == 1
    assert retry.attributes["error.type"] == "HTTPStatusError"


async def test_http_requests_of_a_step_nest_under_its_attempt(
    host_a: FlakyServer, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    """The attempt's span is current while it runs: httpx's own instrumentation nests under it."""
    exporter, provider = spans
    observer = OpenTelemetryObserver(tracer_provider=provider)
    async with Engine(store=None, observers=[observer]) as engine:
        HTTPXClientInstrumentor.instrument_client(engine.http, tracer_provider=provider)
        try:
            result = await engine.run(fetch_twice_flow(), url=f"{host_a.url}/nested")
        finally:
            HTTPXClientInstrumentor.uninstrument_client(engine.http)
    assert result.ok
    (attempt,) = named(exporter, "step fetch")
    (request,) = [s for s in exporter.get_finished_spans() if s.name.startswith("GET")]
    assert parent_of(request) == attempt.context.span_id


async def test_circuit_transitions_are_events_of_the_attempt_that_caused_them(
    host_a: FlakyServer, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, provider = spans
    host_a.outage = True
    flow = Flow("tripping")

    @flow.step
    async def hammer(url: str, ctx: Context) -> None:
        for _ in range(2):
            await ctx.http.get(url)

    observer = OpenTelemetryObserver(tracer_provider=provider)
    hosts = {"127.0.0.2": HostPolicy(fail_max=2, reset_timeout=60)}
    async with Engine(store=None, observers=[observer], hosts=hosts) as engine:
        await engine.run(flow, url=f"{host_a.url}/down")
    (attempt,) = named(exporter, "step hammer")
    (circuit,) = [e for e in attempt.events if e.name == "circuit"]
    assert circuit.attributes is not None
    assert circuit.attributes["asyncflow.host"] == host_a.url
    assert (circuit.attributes["old"], circuit.attributes["new"]) == ("closed", "open")


async def test_a_resumed_run_continues_the_trace_kept_in_its_manifest(
    tmp_path: Path, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, provider = spans
    flow = Flow("resumable")
    broken = [True]

    @flow.step
    async def first() -> int:
        return 1

    @flow.step
    async def second(first: int) -> int:
        if broken[0]:
            raise ValueError("not yet")
        return first + 1

    observer = OpenTelemetryObserver(tracer_provider=provider)
    async with Engine(store=tmp_path / "store", observers=[observer]) as engine:
        failed = await engine.run(flow, run_id="r1")
    broken[0] = False
    store = FileStore(tmp_path / "store")
    # Another engine and observer, as in the process that resumes after a restart.
    async with Engine(
        store=store, observers=[OpenTelemetryObserver(tracer_provider=provider)]
    ) as engine:
        resumed = await engine.resume(flow, "r1")
        loaded = await store.load_run("r1")
    assert not failed.ok
    assert resumed.ok
    one, two = sorted(named(exporter, "run resumable"), key=lambda s: s.start_time or 0)
    assert one.status.status_code is StatusCode.ERROR
    assert one.attributes is not None
    assert one.attributes["asyncflow.status"] == "failed"
    assert two.context.trace_id == one.context.trace_id
    assert parent_of(two) == one.context.span_id
    assert [e.attributes for e in two.events if e.name == "restored"] == [
        {"asyncflow.step": "first"}
    ]
    assert loaded.manifest is not None
    kept = json.loads(loaded.manifest.details)["trace"]["traceparent"]
    assert kept.startswith(f"00-{one.context.trace_id:032x}-{one.context.span_id:016x}-")


async def test_a_given_traceparent_becomes_the_runs_parent(
    spans: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    exporter, provider = spans
    flow = Flow("child")

    @flow.step
    async def only() -> int:
        return 1

    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    observer = OpenTelemetryObserver(tracer_provider=provider)
    async with Engine(store=None, observers=[observer]) as engine:
        await engine.run(flow, traceparent=incoming)
        with pytest.raises(ValueError, match="not a W3C traceparent"):
            await engine.run(flow, traceparent="nonsense")
    (run,) = named(exporter, "run child")
    assert run.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert parent_of(run) == 0x00F067AA0BA902B7


async def test_a_cancelled_attempt_is_not_an_error(
    spans: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    """A fail-fast sibling's failure cancels the slow step: its span ends, not in ERROR."""
    exporter, provider = spans
    flow = Flow("cancelling")
    started = anyio.Event()

    @flow.step
    async def slow() -> None:
        started.set()
        await anyio.sleep_forever()

    @flow.step
    async def boom() -> None:
        await started.wait()
        raise RuntimeError("boom")

    observer = OpenTelemetryObserver(tracer_provider=provider)
    async with Engine(store=None, observers=[observer], fail_fast=True) as engine:
        result = await engine.run(flow)
    assert not result.ok
    (slow_span,) = named(exporter, "step slow")
    (boom_span,) = named(exporter, "step boom")
    assert slow_span.status.status_code is StatusCode.UNSET
    assert slow_span.attributes is not None
    assert slow_span.attributes["asyncflow.cancelled"] is True
    assert boom_span.status.status_code is StatusCode.ERROR
    (run,) = named(exporter, "run cancelling")
    (failed,) = [e.attributes for e in run.events if e.name == "step failed"]
    assert failed is not None
    assert (failed["asyncflow.step"], failed["error.type"]) == ("boom", "StepError")


def test_only_observers_with_both_contexts_are_hooks() -> None:
    assert isinstance(OpenTelemetryObserver(), RunHook)
    assert not isinstance(LogObserver(), RunHook)
    assert not isinstance(print, RunHook)


async def test_without_an_exporter_nothing_is_traced_and_http_is_unchanged(
    host_a: FlakyServer,
) -> None:
    """The global no-op provider: runs work, nothing breaks."""
    async with Engine(store=None, observers=[OpenTelemetryObserver()]) as engine:
        result = await engine.run(fetch_twice_flow(), url=f"{host_a.url}/plain")
        assert (await engine.http.get(f"{host_a.url}/direct")).status_code == httpx.codes.OK
    assert result.ok


async def test_an_admitted_runs_trace_is_the_deliverys(
    tmp_path: Path, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    """engine.admit(traceparent=) keeps the delivery's trace; the run resumed later is its child."""
    exporter, provider = spans
    flow = Flow("admitted")

    @flow.step
    async def work(n: int) -> int:
        return n + 1

    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    observer = OpenTelemetryObserver(tracer_provider=provider)
    async with Engine(store=FileStore(tmp_path / "store"), observers=[observer]) as engine:
        assert await engine.admit(flow, run_id="delivery-1", traceparent=incoming, n=1)
        result = await engine.resume(flow, "delivery-1")
    assert result.outputs["work"] == 2
    (run,) = named(exporter, "run admitted")
    assert run.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert parent_of(run) == 0xB7AD6B7169203331


async def test_a_trace_the_sampler_drops_records_nothing_and_a_sampled_parent_still_traces(
    host_a: FlakyServer,
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=ParentBased(ALWAYS_OFF)
    )  # roots dropped, sampled parents kept
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = OpenTelemetryObserver(tracer_provider=provider)
    try:
        async with Engine(store=None, observers=[observer]) as engine:
            host_a.fail_next(1, status=503)
            dropped = await engine.run(fetch_twice_flow(), url=f"{host_a.url}/x")
            assert dropped.ok
            assert exporter.get_finished_spans() == ()
            sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            traced = await engine.run(
                fetch_twice_flow(), url=f"{host_a.url}/y", traceparent=sampled
            )
        assert traced.ok
        (run,) = named(exporter, "run traced")
        assert run.context is not None
        assert f"{run.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
        assert {parent_of(s) for s in named(exporter, "step fetch")} == {run.context.span_id}
        assert len(named(exporter, "step report")) == 1
    finally:
        provider.shutdown()
