"""PrometheusObserver against the real prometheus-client: real flows, the registry's text parsed."""

from __future__ import annotations

import socket
import subprocess
import sys
from functools import partial
from typing import TYPE_CHECKING

import anyio
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from asyncflow import CheckpointError, Engine, FileStore, Flow, HostPolicy, Retry
from asyncflow.events import (
    ScheduleLag,
    StepRetrying,
    StepSucceeded,
    TriggerAdmitted,
    TriggerDuplicate,
    TriggerInvalid,
    TriggerRejected,
)
from asyncflow.observe.prometheus import PrometheusObserver
from asyncflow.stores import MemoryStore
from tests.helpers import fetch_flow, until

if TYPE_CHECKING:
    from pathlib import Path

    from asyncflow.stores import Lease, StepCheckpoint
    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio


def samples(observer: PrometheusObserver) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the registry's exposition text, keyed by name and labels."""
    text = generate_latest(observer.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(observer: PrometheusObserver, name: str, **labels: str) -> float | None:
    return samples(observer).get((name, frozenset(labels.items())))


def label_values(observer: PrometheusObserver) -> set[str]:
    return {v for name, labels in samples(observer) for _, v in labels}


def pipeline(flaky: list[int]) -> Flow:
    """Fetch (fails while ``flaky`` holds tokens, retried), parse, then publish, which fails."""
    flow = Flow("pipeline")

    @flow.step(retry=Retry(attempts=5, on=RuntimeError))
    async def fetch(doc: int) -> int:
        if flaky:
            flaky.pop()
            raise RuntimeError("flaky")
        return doc

    @flow.step
    async def parse(fetch: int) -> int:
        return fetch + 1

    @flow.step
    async def publish(parse: int) -> int:
        raise ValueError("publisher down")

    @flow.step
    async def notify(publish: int) -> int:
        return publish

    return flow


@pytest.mark.usefixtures("no_waits")
async def test_runs_steps_and_retries_are_counted() -> None:
    """Two runs: runs by status, steps by status, two retries, durations; no run id label."""
    observer = PrometheusObserver()
    flow = pipeline(flaky=[1, 1])
    async with Engine(store=None, observers=[observer]) as engine:
        one = await engine.run(flow, run_id="run-one-7f3a", doc=1)
        two = await engine.run(flow, run_id="run-two-9c1b", doc=2)
    assert not one.ok
    assert not two.ok
    f = {"flow": "pipeline"}
    assert value(observer, "asyncflow_runs_started_total", **f) == 2
    assert value(observer, "asyncflow_runs_finished_total", **f, status="failed") == 2
    assert value(observer, "asyncflow_runs_finished_total", **f, status="succeeded") is None
    assert value(observer, "asyncflow_run_duration_seconds_count", **f, status="failed") == 2
    assert value(observer, "asyncflow_step_retries_total", **f, step="fetch") == 2
    for step, status in [
        ("fetch", "succeeded"),
        ("parse", "succeeded"),
        ("publish", "failed"),
        ("notify", "skipped"),
    ]:
        assert value(observer, "asyncflow_steps_finished_total", **f, step=step, status=status) == 2
    assert (
        value(
            observer, "asyncflow_step_duration_seconds_count", **f, step="fetch", status="succeeded"
        )
        == 2
    )
    assert (
        value(
            observer, "asyncflow_step_duration_seconds_count", **f, step="publish", status="failed"
        )
        == 2
    )
    # Finished runs leave nothing behind: no series for running runs, no per-run state.
    names = {name for name, _ in samples(observer)}
    assert "asyncflow_runs_running" not in names
    assert "asyncflow_oldest_running_run_age_seconds" not in names
    assert observer._runs == {}
    assert not any("run-" in v for v in label_values(observer))


async def test_restored_steps_are_counted(tmp_path: Path) -> None:
    """A second run of the same run id on a FileStore restores every step, counted as restored."""
    flow = Flow("docs")

    @flow.step
    async def load(path: str) -> str:
        return path.upper()

    @flow.step
    async def count(load: str) -> int:
        return len(load)

    async with Engine(store=FileStore(tmp_path)) as engine:
        assert (await engine.run(flow, run_id="doc-1", path="a.txt")).ok
    observer = PrometheusObserver()
    async with Engine(store=FileStore(tmp_path), observers=[observer]) as engine:
        assert (await engine.run(flow, run_id="doc-1", path="a.txt")).ok
    assert value(observer, "asyncflow_steps_restored_total", flow="docs") == 2
    for step in ("load", "count"):
        assert (
            value(
                observer,
                "asyncflow_steps_finished_total",
                flow="docs",
                step=step,
                status="restored",
            )
            == 1
        )
    assert value(observer, "asyncflow_runs_finished_total", flow="docs", status="succeeded") == 1
    assert "doc-1" not in label_values(observer)


@pytest.mark.usefixtures("no_waits")
async def test_circuit_state_and_transitions_per_host(host_a: FlakyServer) -> None:
    """Three 503s open host_a's circuit: state open is 1, closed 0, one transition to open."""
    observer = PrometheusObserver()
    host_a.outage = True
    policy = HostPolicy(fail_max=3, reset_timeout=60.0)
    async with Engine(store=None, host_policy=policy, observers=[observer]) as engine:
        result = await engine.run(fetch_flow("/x", Retry(attempts=3)), url=host_a.url)
    assert not result.ok
    host = "http://127.0.0.2:" + host_a.url.rsplit(":", 1)[1]
    assert value(observer, "asyncflow_circuit_state", host=host, state="open") == 1
    assert value(observer, "asyncflow_circuit_state", host=host, state="closed") == 0
    assert value(observer, "asyncflow_circuit_transitions_total", host=host, state="open") == 1


async def test_running_runs_and_oldest_age_are_read_at_scrape_time() -> None:
    """While a run waits: running 1 and an age; once it finishes, neither series is left."""
    observer = PrometheusObserver()
    release = anyio.Event()
    started = anyio.Event()
    flow = Flow("slow")

    @flow.step
    async def wait(doc: int) -> int:
        started.set()
        await release.wait()
        return doc

    async with Engine(store=None, observers=[observer]) as engine, anyio.create_task_group() as tg:
        tg.start_soon(lambda: engine.run(flow, run_id="slow-1", doc=1))
        await started.wait()
        assert value(observer, "asyncflow_runs_running", flow="slow") == 1
        age = value(observer, "asyncflow_oldest_running_run_age_seconds", flow="slow")
        assert age is not None
        assert age >= 0
        release.set()
    assert value(observer, "asyncflow_runs_running", flow="slow") is None
    assert value(observer, "asyncflow_runs_finished_total", flow="slow", status="succeeded") == 1


async def test_unfinished_runs_are_forgotten_beyond_max_runs() -> None:
    """Runs cancelled before finishing are dropped oldest first once max_runs are tracked."""
    observer = PrometheusObserver(max_runs=2)
    flow = Flow("stuck")
    entered = 0

    @flow.step
    async def hang(doc: int) -> int:
        nonlocal entered
        entered += 1
        await anyio.sleep_forever()
        return doc

    async with Engine(store=None, observers=[observer]) as engine, anyio.create_task_group() as tg:
        for doc in range(3):
            tg.start_soon(partial(engine.run, flow, run_id=f"stuck-{doc}", doc=doc))
        await until(lambda: entered == 3)
        tg.cancel_scope.cancel()  # the runs never finish: no RunFinished event
    assert len(observer._runs) == 2
    assert value(observer, "asyncflow_runs_forgotten_total") == 1
    assert value(observer, "asyncflow_runs_running", flow="stuck") == 2
    assert value(observer, "asyncflow_runs_started_total", flow="stuck") == 3


async def test_batch_items_by_state() -> None:
    """A batch of 10 with 3 failing inputs: 7 succeeded, 3 failed, nothing left in flight."""
    observer = PrometheusObserver()
    flow = Flow("batch")

    @flow.step
    async def check(doc: int) -> int:
        if doc % 4 == 0:
            raise ValueError(f"bad {doc}")
        return doc

    async with Engine(store=None, observers=[observer]) as engine:
        summary = await engine.map(flow, ({"doc": d} for d in range(10))).summary()
    assert summary.failed == 3
    assert value(observer, "asyncflow_batch_items_total", state="succeeded") == 7
    assert value(observer, "asyncflow_batch_items_total", state="failed") == 3
    assert value(observer, "asyncflow_batch_items_total", state="restored") is None
    assert value(observer, "asyncflow_batch_items_in_flight") == 0
    assert observer._batches == {}


def test_registry_is_private_and_max_runs_is_checked() -> None:
    """Each observer gets its own registry; max_runs below 1 is refused."""
    assert PrometheusObserver().registry is not PrometheusObserver().registry
    with pytest.raises(ValueError, match="max_runs=0"):
        PrometheusObserver(max_runs=0)


def test_prometheus_client_is_imported_only_by_its_module() -> None:
    """Importing asyncflow and asyncflow.observe leaves prometheus_client unimported."""
    code = (
        "import sys, asyncflow, asyncflow.observe; "
        "assert 'prometheus_client' not in sys.modules, 'imported'; "
        "import asyncflow.observe.prometheus; "
        "assert 'prometheus_client' in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.usefixtures("no_waits")
async def test_http_requests_by_host_and_status_class(
    host_a: FlakyServer, host_b: FlakyServer
) -> None:
    """Requests are counted per host by status class: 2xx, 5xx then refused, error (no answer).

    host_b's outage opens its circuit after two 503s (fail_max=2); the third attempt is refused
    without a request, which the server's own count confirms.
    """
    observer = PrometheusObserver()
    host_b.outage = True
    policy = HostPolicy(fail_max=2, reset_timeout=60.0, on_open="fail")
    with socket.socket() as probe:  # a port that was free a moment ago, bound by nobody now
        probe.bind(("127.0.0.4", 0))
        closed = probe.getsockname()[1]
    async with Engine(store=None, host_policy=policy, observers=[observer]) as engine:
        ok = await engine.run(fetch_flow("/x", Retry(attempts=3)), url=host_a.url)
        bad = await engine.run(fetch_flow("/y", Retry(attempts=3)), url=host_b.url)
        # Nobody listens there: the connection is refused, no response at all.
        gone = await engine.run(
            fetch_flow("/z", Retry(attempts=1)), url=f"http://127.0.0.4:{closed}"
        )
    assert ok.ok
    assert not bad.ok
    assert not gone.ok
    a = "http://127.0.0.2:" + host_a.url.rsplit(":", 1)[1]
    b = "http://127.0.0.3:" + host_b.url.rsplit(":", 1)[1]
    name = "asyncflow_http_requests_total"
    assert value(observer, name, host=a, status_class="2xx") == host_a.count("/x") == 1
    assert value(observer, name, host=b, status_class="5xx") == host_b.count("/y") == 2
    assert value(observer, name, host=b, status_class="refused") == 1
    assert value(observer, name, host=f"http://127.0.0.4:{closed}", status_class="error") == 1


class FailingWrites(MemoryStore):
    """A MemoryStore whose step writes fail once ``broken`` is set."""

    broken = False

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        if self.broken:
            raise CheckpointError("disk full")
        await super().save_step(checkpoint, lease=lease)


async def test_store_write_latency_and_errors() -> None:
    """Each step checkpoint and final manifest is timed by kind; failed writes are counted."""
    observer = PrometheusObserver()
    store = FailingWrites()
    flow = pipeline(flaky=[])
    async with Engine(store=store, observers=[observer]) as engine:
        await engine.run(flow, run_id="ok-1", doc=1)
        store.broken = True
        broken = await engine.run(flow, run_id="broken-1", doc=2)
    assert broken.steps["fetch"].status == "failed"
    # First run: fetch and parse saved, then its final manifest; second: fetch's save failed.
    assert value(observer, "asyncflow_store_write_duration_seconds_count", kind="step") == 3
    assert value(observer, "asyncflow_store_write_duration_seconds_count", kind="manifest") == 2
    assert value(observer, "asyncflow_store_write_errors_total", kind="step") == 1
    assert value(observer, "asyncflow_store_write_errors_total", kind="manifest") is None


async def test_trigger_events_backlog_and_schedule_lag() -> None:
    """Trigger outcomes are counted; admitted runs are backlog until they finish; lag observed.

    The events are what a Service emits; here they are given straight to the observer, with a
    real run finishing one of the admitted runs.
    """
    observer = PrometheusObserver()
    observer(TriggerAdmitted("hook", "pipeline", "hook-1", 0.0))
    observer(TriggerAdmitted("hook", "pipeline", "hook-2", 0.0))
    observer(TriggerDuplicate("hook", "pipeline", "hook-1", 0.0))
    observer(TriggerRejected("hook", "pipeline", "hook-3", 0.0, "too many runs in flight"))
    observer(TriggerInvalid("hook", "pipeline", "hook-4", 0.0, "missing input doc"))
    observer(ScheduleLag("nightly", "pipeline", "nightly-1", 0.0, 1_700_000_000.0, 2.5))
    assert value(observer, "asyncflow_admission_backlog", trigger="hook") == 2
    async with Engine(store=None, observers=[observer]) as engine:
        await engine.run(pipeline(flaky=[]), run_id="hook-1", doc=1)
    t = {"trigger": "hook", "flow": "pipeline"}
    for outcome, n in [("admitted", 2), ("duplicate", 1), ("rejected", 1), ("invalid", 1)]:
        assert value(observer, "asyncflow_trigger_events_total", **t, outcome=outcome) == n
    assert value(observer, "asyncflow_admission_backlog", trigger="hook") == 1
    assert value(observer, "asyncflow_schedule_lag_seconds_sum", trigger="nightly") == 2.5
    assert value(observer, "asyncflow_schedule_lag_seconds_count", trigger="nightly") == 1


def test_step_metrics_take_the_flow_from_the_event() -> None:
    """A step event of a run never seen starting (forgotten, or observed late) keeps its flow."""
    observer = PrometheusObserver()
    observer(StepSucceeded("late-1", "parse", 0.0, 1, "docs"))
    observer(StepRetrying("late-1", "fetch", 0.0, 1, 0.0, RuntimeError("x"), "docs"))
    f = {"flow": "docs"}
    assert value(observer, "asyncflow_steps_finished_total", **f, step="parse", status="succeeded")
    assert value(observer, "asyncflow_step_retries_total", **f, step="fetch") == 1
    assert "unknown" not in label_values(observer)


async def test_not_taken_steps_and_fan_out_items_keep_labels_few() -> None:
    """A step not taken is counted as not-taken; a mapped step's items add no label values."""
    flow = Flow("branches")

    @flow.step
    async def words(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over=words, concurrency=4)
    async def each(words: int) -> int:
        return words

    @flow.step(when=lambda each: len(each) > 100)
    async def big(each: list[int]) -> int:
        return len(each)

    observer = PrometheusObserver()
    async with Engine(store=None, observers=[observer]) as engine:
        assert (await engine.run(flow, n=50)).ok
    status = {"flow": "branches", "status": "not-taken", "step": "big"}
    assert value(observer, "asyncflow_steps_finished_total", **status) == 1
    mapped = {"flow": "branches", "status": "succeeded", "step": "each"}
    assert value(observer, "asyncflow_steps_finished_total", **mapped) == 1
    assert not any("[" in v for v in label_values(observer))
