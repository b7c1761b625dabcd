"""Prometheus metrics from the event stream: an observer writing into a registry you expose.

Needs the ``prometheus`` extra (``pip install 'asyncflow-engine[prometheus]'``); this is the only
module that imports ``prometheus_client``.

Every name starts with ``asyncflow_``, is in base units (seconds, counts; counters end in
``_total``) and is labelled only by things that are few: flow, step, status, state, host. A run
id or batch name is never a label.

Per-run state (the flow of a run, when it and its steps started) lives only while the run is
running and is dropped when it finishes. A run whose finish is never seen (its task was
cancelled, its engine closed) is dropped too once ``max_runs`` newer runs are tracked: the
oldest is forgotten first and counted by ``asyncflow_runs_forgotten_total``, so memory stays
bounded and ``asyncflow_runs_running`` stops counting it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from asyncflow import _status, events

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from prometheus_client.core import Metric

    from asyncflow.events import Event

__all__ = ["DEFAULT_BUCKETS", "STORE_BUCKETS", "PrometheusObserver"]

#: Histogram buckets in seconds, from a fast step (5 ms) to an hour-long run.
DEFAULT_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

#: Buckets of store write latency in seconds: a write is usually an fsync (0.1 ms to 1 s).
STORE_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

_M = TypeVar("_M", bound=MetricWrapperBase)

#: The flow label of a step event whose run was never seen starting (or was forgotten).
_UNKNOWN_FLOW: Final = "unknown"


@dataclass(slots=True)
class _Run:
    flow: str
    started: float  # the event's clock: durations are measured on it
    wall: float  # time.monotonic(): the age gauge reads it at collection time, off the loop
    steps: dict[str, float] = field(default_factory=dict)  # step -> first attempt's start


class PrometheusObserver:
    """Turns engine events into Prometheus metrics.

    Args:
        registry: where the metrics are registered; a new ``CollectorRegistry`` by default, so
            the process-wide default registry is left alone. Expose it with
            ``prometheus_client.make_asgi_app(observer.registry)`` or
            ``generate_latest(observer.registry)``. Two observers cannot share one registry
            (their names would clash).
        buckets: histogram bucket bounds in seconds, for run and step durations.
        max_runs: the most running runs tracked at once; beyond it the oldest is forgotten
            (see the module docstring).
        store_buckets: histogram bucket bounds in seconds, for store write latency.

    Attach it like any observer: ``Engine(observers=[observer])`` or
    ``engine.add_observer(observer)``. One observer can serve several engines.

    Metrics (labels in brackets):

    - ``asyncflow_runs_started_total`` [flow], ``asyncflow_runs_finished_total`` [flow, status]
    - ``asyncflow_run_duration_seconds`` histogram [flow, status]
    - ``asyncflow_runs_running`` [flow] and ``asyncflow_oldest_running_run_age_seconds``
      [flow], both computed when scraped
    - ``asyncflow_runs_forgotten_total``: runs dropped unfinished because of ``max_runs``
    - ``asyncflow_steps_finished_total`` [flow, step, status]: succeeded, failed, skipped,
      not-taken, restored
    - ``asyncflow_step_duration_seconds`` histogram [flow, step, status]: from the first
      attempt's start to the step's success or final failure, retries included
    - ``asyncflow_step_retries_total`` [flow, step], ``asyncflow_steps_restored_total`` [flow]
    - ``asyncflow_checkpoints_discarded_total`` [flow]
    - ``asyncflow_circuit_state`` [host, state]: 1 for the host's current state, else 0
    - ``asyncflow_circuit_transitions_total`` [host, state]: ``state`` is the new state
    - ``asyncflow_batch_items_total`` [state]: batch runs finished as succeeded (restored
      ones included), failed, or restored; ``asyncflow_batch_items_in_flight``
    - ``asyncflow_http_requests_total`` [host, status_class]: ``2xx`` ... ``5xx``, ``error`` (no
      response: a connection error, a timeout), ``refused`` (the host's circuit was open)
    - ``asyncflow_store_write_duration_seconds`` histogram [kind] and
      ``asyncflow_store_write_errors_total`` [kind]: ``kind`` is ``step`` (a step's
      checkpoint) or ``manifest`` (a run's final manifest)

    - ``asyncflow_trigger_events_total`` [trigger, flow, outcome]: ``admitted``,
      ``duplicate`` (seen before), ``rejected`` (not now: full, stopping), ``invalid``
    - ``asyncflow_admission_backlog`` [trigger]: runs admitted and not seen finishing, read
      when scraped (bounded by ``max_runs`` like the running runs)
    - ``asyncflow_schedule_lag_seconds`` histogram [trigger]: a cron tick's admission delay

    Batch counters are advanced from each batch's progress events, keyed by the batch's id.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_runs: int = 10_000,
        store_buckets: Sequence[float] = STORE_BUCKETS,
    ) -> None:
        if not isinstance(max_runs, int) or max_runs < 1:
            raise ValueError(f"max_runs={max_runs!r}: give a whole number of at least 1.")
        self.registry = registry if registry is not None else CollectorRegistry()
        self._max_runs = max_runs
        self._runs: dict[str, _Run] = {}
        # Batch id -> (succeeded, failed, restored, in_flight) at its last progress event.
        self._batches: dict[str, tuple[int, int, int, int]] = {}
        r = self.registry
        self._runs_started = Counter(
            "asyncflow_runs_started", "Runs started.", ["flow"], registry=r
        )
        self._runs_finished = Counter(
            "asyncflow_runs_finished", "Runs finished, by status.", ["flow", "status"], registry=r
        )
        self._run_duration = Histogram(
            "asyncflow_run_duration_seconds",
            "Run duration, start to finish.",
            ["flow", "status"],
            buckets=buckets,
            registry=r,
        )
        self._forgotten = Counter(
            "asyncflow_runs_forgotten",
            "Runs dropped from tracking unfinished because more than max_runs were running.",
            registry=r,
        )
        self._steps_finished = Counter(
            "asyncflow_steps_finished",
            "Steps finished, by status.",
            ["flow", "step", "status"],
            registry=r,
        )
        self._step_duration = Histogram(
            "asyncflow_step_duration_seconds",
            "Step duration, first attempt's start to success or final failure.",
            ["flow", "step", "status"],
            buckets=buckets,
            registry=r,
        )
        self._retries = Counter(
            "asyncflow_step_retries", "Step attempts retried.", ["flow", "step"], registry=r
        )
        self._restored = Counter(
            "asyncflow_steps_restored", "Steps loaded from a checkpoint.", ["flow"], registry=r
        )
        self._discarded = Counter(
            "asyncflow_checkpoints_discarded",
            "Checkpoint files that could not be used and were moved aside.",
            ["flow"],
            registry=r,
        )
        self._circuit_state = Gauge(
            "asyncflow_circuit_state",
            "A host's circuit state: 1 for the current state, 0 for the others.",
            ["host", "state"],
            registry=r,
        )
        self._circuit_transitions = Counter(
            "asyncflow_circuit_transitions",
            "Circuit state changes, by host and new state.",
            ["host", "state"],
            registry=r,
        )
        self._batch_items = Counter(
            "asyncflow_batch_items",
            "Batch runs finished: succeeded (restored included), failed, restored.",
            ["state"],
            registry=r,
        )
        self._http_requests = Counter(
            "asyncflow_http_requests",
            "HTTP requests through the engine's client, by host and status class (2xx..5xx, "
            "error: no response, refused: the circuit was open).",
            ["host", "status_class"],
            registry=r,
        )
        self._store_write = Histogram(
            "asyncflow_store_write_duration_seconds",
            "Checkpoint store writes (a step's checkpoint, a run's final manifest), by kind.",
            ["kind"],
            buckets=store_buckets,
            registry=r,
        )
        self._store_errors = Counter(
            "asyncflow_store_write_errors",
            "Checkpoint store writes that failed, by kind.",
            ["kind"],
            registry=r,
        )
        self._trigger_events = Counter(
            "asyncflow_trigger_events",
            "Trigger events by outcome: admitted, duplicate, rejected (try later), invalid.",
            ["trigger", "flow", "outcome"],
            registry=r,
        )
        self._schedule_lag = Histogram(
            "asyncflow_schedule_lag_seconds",
            "Seconds from a cron tick's instant to its admission.",
            ["trigger"],
            buckets=buckets,
            registry=r,
        )
        # Run id -> trigger, for runs admitted by a trigger and not seen finishing (bounded).
        self._admitted: dict[str, str] = {}
        r.register(_RunningCollector(self))
        # labels() takes a lock and builds a key each call; the hot path caches its children.
        self._children: dict[tuple[object, ...], MetricWrapperBase] = {}
        # The hottest pair, a step's finish and its duration, from one lookup.
        self._step_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            events.StepStarted: self._step_started,
            events.StepSucceeded: self._step_succeeded,
            events.RunStarted: self._run_started,
            events.RunFinished: self._run_finished,
            events.StepFailed: self._step_failed,
            events.StepRetrying: self._step_retrying,
            events.StepSkipped: self._step_skipped,
            events.StepNotTaken: self._step_not_taken,
            events.StepRestored: self._step_restored,
            events.CircuitStateChanged: self._circuit,
            events.BatchProgress: self._batch,
            events.CheckpointDiscarded: self._checkpoint_discarded,
            events.HttpRequestFinished: self._http_request,
            events.StoreWrite: self._store_written,
            events.TriggerAdmitted: self._trigger_admitted,
            events.TriggerDuplicate: partial(self._trigger, "duplicate"),
            events.TriggerRejected: partial(self._trigger, "rejected"),
            events.TriggerInvalid: partial(self._trigger, "invalid"),
            events.ScheduleLag: self._lag,
        }

    def __call__(self, event: Event, /) -> None:
        """Update the metrics for one event. Called by the engine; never blocks."""
        # One dict lookup by exact type: events are final dataclasses, never subclassed.
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _step_started(self, event: events.StepStarted) -> None:
        run = self._runs.get(event.run_id)
        if run is not None:
            run.steps.setdefault(event.step, event.time)

    def _step_succeeded(self, event: events.StepSucceeded) -> None:
        self._step_done(event.run_id, event.step, event.time, "succeeded", event.flow)

    def _step_failed(self, event: events.StepFailed) -> None:
        self._step_done(event.run_id, event.step, event.time, "failed", event.flow)

    def _step_retrying(self, event: events.StepRetrying) -> None:
        self._child(self._retries, event.flow or self._flow(event.run_id), event.step).inc()

    def _step_skipped(self, event: events.StepSkipped) -> None:
        flow = event.flow or self._flow(event.run_id)
        self._child(self._steps_finished, flow, event.step, "skipped").inc()

    def _step_not_taken(self, event: events.StepNotTaken) -> None:
        flow = self._flow(event.run_id)
        self._child(self._steps_finished, flow, event.step, "not-taken").inc()

    def _step_restored(self, event: events.StepRestored) -> None:
        flow = event.flow or self._flow(event.run_id)
        self._child(self._steps_finished, flow, event.step, "restored").inc()
        self._child(self._restored, flow).inc()

    def _checkpoint_discarded(self, event: events.CheckpointDiscarded) -> None:
        self._child(self._discarded, self._flow(event.run_id)).inc()

    def _http_request(self, event: events.HttpRequestFinished) -> None:
        self._child(self._http_requests, event.host, event.status_class).inc()

    def _store_written(self, event: events.StoreWrite) -> None:
        self._child(self._store_write, event.kind).observe(event.duration)
        if event.error is not None:
            self._child(self._store_errors, event.kind).inc()

    def _trigger(
        self,
        outcome: str,
        event: events.TriggerAdmitted
        | events.TriggerDuplicate
        | events.TriggerRejected
        | events.TriggerInvalid,
    ) -> None:
        self._child(self._trigger_events, event.trigger, event.flow, outcome).inc()

    def _trigger_admitted(self, event: events.TriggerAdmitted) -> None:
        self._trigger("admitted", event)
        admitted = self._admitted
        admitted.pop(event.run_id, None)
        while len(admitted) >= self._max_runs:
            del admitted[next(iter(admitted))]
            self._forgotten.inc()
        admitted[event.run_id] = event.trigger

    def _lag(self, event: events.ScheduleLag) -> None:
        self._child(self._schedule_lag, event.trigger).observe(max(event.lag, 0.0))

    def _child(self, metric: _M, *labels: str) -> _M:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return cast("_M", child)

    def _flow(self, run_id: str) -> str:
        run = self._runs.get(run_id)
        return run.flow if run is not None else _UNKNOWN_FLOW

    def _run_started(self, event: events.RunStarted) -> None:
        runs = self._runs
        runs.pop(event.run_id, None)  # a resumed run id starts afresh, at the end of the order
        while len(runs) >= self._max_runs:
            del runs[next(iter(runs))]  # the oldest: dicts keep insertion order
            self._forgotten.inc()
        runs[event.run_id] = _Run(event.flow, event.time, time.monotonic())
        self._child(self._runs_started, event.flow).inc()

    def _run_finished(self, event: events.RunFinished) -> None:
        status = str(event.status)
        if self._admitted:
            self._admitted.pop(event.run_id, None)
        self._child(self._runs_finished, event.flow, status).inc()
        run = self._runs.pop(event.run_id, None)
        if run is not None:
            self._child(self._run_duration, event.flow, status).observe(event.time - run.started)

    def _step_done(self, run_id: str, step: str, now: float, status: str, flow: str) -> None:
        run = self._runs.get(run_id)
        if not flow:
            flow = run.flow if run is not None else _UNKNOWN_FLOW
        pair = self._step_children.get((flow, step, status))
        if pair is None:
            pair = self._step_children[flow, step, status] = (
                self._steps_finished.labels(flow, step, status),
                self._step_duration.labels(flow, step, status),
            )
        pair[0].inc()
        if run is not None and (started := run.steps.pop(step, None)) is not None:
            pair[1].observe(now - started)

    def _circuit(self, event: events.CircuitStateChanged) -> None:
        for state in _status.CircuitState:
            self._child(self._circuit_state, event.host, str(state)).set(
                1.0 if state == event.new else 0.0
            )
        self._child(self._circuit_transitions, event.host, str(event.new)).inc()

    def _batch(self, event: events.BatchProgress) -> None:
        key = event.batch_id or event.batch
        last = self._batches.pop(key, (0, 0, 0, 0))
        if event.succeeded < last[0] or event.failed < last[1]:
            last = (0, 0, 0, 0)  # counts went back: a new batch of the same name
        for state, new, old in (
            ("succeeded", event.succeeded, last[0]),
            ("failed", event.failed, last[1]),
            ("restored", event.restored, last[2]),
        ):
            if new > old:
                self._child(self._batch_items, state).inc(new - old)
        if not event.finished:
            while len(self._batches) >= self._max_runs:
                del self._batches[next(iter(self._batches))]
            self._batches[key] = (
                event.succeeded,
                event.failed,
                event.restored,
                event.in_flight,
            )


class _RunningCollector(Collector):
    """The gauges read at scrape time from the observer's running runs and batches."""

    def __init__(self, observer: PrometheusObserver) -> None:
        self._observer = observer

    def collect(self) -> Iterator[Metric]:
        # A scrape may come from another thread (prometheus_client's HTTP server): copy first.
        # dict.copy() and tuple() run in C without releasing the GIL, so they see one state.
        runs = tuple(self._observer._runs.copy().values())
        batches = tuple(self._observer._batches.copy().values())
        now = time.monotonic()
        running: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for run in runs:
            running[run.flow] = running.get(run.flow, 0) + 1
            oldest[run.flow] = min(oldest.get(run.flow, run.wall), run.wall)
        g = GaugeMetricFamily("asyncflow_runs_running", "Runs running now.", labels=["flow"])
        for flow, n in running.items():
            g.add_metric([flow], n)
        yield g
        g = GaugeMetricFamily(
            "asyncflow_oldest_running_run_age_seconds",
            "Seconds since the oldest running run started.",
            labels=["flow"],
        )
        for flow, wall in oldest.items():
            g.add_metric([flow], now - wall)
        yield g
        backlog: dict[str, int] = {}
        for trigger in tuple(self._observer._admitted.copy().values()):
            backlog[trigger] = backlog.get(trigger, 0) + 1
        g = GaugeMetricFamily(
            "asyncflow_admission_backlog",
            "Runs a trigger admitted that have not finished (waiting or running).",
            labels=["trigger"],
        )
        for trigger, n in backlog.items():
            g.add_metric([trigger], n)
        yield g
        yield GaugeMetricFamily(
            "asyncflow_batch_items_in_flight",
            "Batch runs started and not finished, all batches together.",
            value=sum(b[3] for b in batches),
        )
