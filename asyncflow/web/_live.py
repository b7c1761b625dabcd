"""LiveView: an observer keeping what the runs page shows live, in memory and bounded.

What the store cannot tell: each host's circuit state and its recent transitions, where each
running batch stands, and which steps of a running run are running now. Attach it to the
engine that runs the work (``Engine(observers=[view])``) and give it to
:func:`~asyncflow.web.runs_app`. Times are wall-clock seconds (``time.time()``) taken when an
event arrives; events' own times are the engine's clock, which is not a date.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from asyncflow import events

if TYPE_CHECKING:
    from asyncflow._status import CircuitState
    from asyncflow.events import Event

__all__ = ["BatchView", "HostView", "LiveView", "RunView", "StepView"]


@dataclass(slots=True)
class HostView:
    """A host's circuit: its state, and its last transitions as ``(when, old, new)``."""

    state: CircuitState
    since: float
    transitions: deque[tuple[float, CircuitState, CircuitState]]


@dataclass(slots=True)
class BatchView:
    """A batch's latest progress, and when it came."""

    progress: events.BatchProgress
    seen: float


@dataclass(slots=True)
class StepView:
    """A step of a running run as the events told it."""

    status: str
    started: float | None = None
    finished: float | None = None
    attempts: int = 0


@dataclass(slots=True)
class RunView:
    """A running run: its flow, when it started, its steps so far (in the order they began)."""

    flow: str
    started: float
    steps: dict[str, StepView] = field(default_factory=dict)


class LiveView:
    """Receives an engine's events and keeps the live part of the runs page.

    Args:
        transitions: how many recent circuit transitions are kept per host.
        max_hosts: hosts kept; beyond it the one whose circuit changed least recently goes.
        max_batches: batches kept (finished ones stay until newer ones push them out).
        max_runs: running runs tracked; beyond it the oldest is forgotten (a run whose finish
            is never seen must not hold memory for ever).

    Like every observer it is called on the event loop's thread and never blocks; the page reads
    it from the same loop.
    """

    def __init__(
        self,
        *,
        transitions: int = 20,
        max_hosts: int = 1000,
        max_batches: int = 100,
        max_runs: int = 1000,
    ) -> None:
        for name, n in (
            ("transitions", transitions),
            ("max_hosts", max_hosts),
            ("max_batches", max_batches),
            ("max_runs", max_runs),
        ):
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"{name}={n!r}: give a whole number of at least 1.")
        self._transitions = transitions
        self._max_hosts = max_hosts
        self._max_batches = max_batches
        self._max_runs = max_runs
        self.hosts: dict[str, HostView] = {}
        self.batches: dict[str, BatchView] = {}
        self.runs: dict[str, RunView] = {}

    def __call__(self, event: Event, /) -> None:
        """Take one event into the view."""
        now = time.time()
        if isinstance(event, events.CircuitStateChanged):
            self._circuit(event, now)
        elif isinstance(event, events.BatchProgress):
            key = event.batch_id or event.batch
            self.batches.pop(key, None)
            while len(self.batches) >= self._max_batches:
                del self.batches[next(iter(self.batches))]
            self.batches[key] = BatchView(event, now)
        elif isinstance(event, events.RunStarted):
            self.runs.pop(event.run_id, None)
            while len(self.runs) >= self._max_runs:
                del self.runs[next(iter(self.runs))]
            self.runs[event.run_id] = RunView(event.flow, now)
        elif isinstance(event, events.RunFinished):
            self.runs.pop(event.run_id, None)  # the store has its final manifest now
        elif isinstance(event, events.StepStarted | events.StepRestored):
            run = self.runs.get(event.run_id)
            if run is not None:
                running = isinstance(event, events.StepStarted)
                run.steps[event.step] = StepView(
                    "running" if running else "restored", now, None if running else now
                )
        elif isinstance(event, events.StepRetrying):
            step = self._step(event.run_id, event.step)
            if step is not None:
                step.attempts = event.attempt
        elif isinstance(event, events.StepSucceeded | events.StepFailed):
            step = self._step(event.run_id, event.step)
            if step is not None:
                step.status = "succeeded" if isinstance(event, events.StepSucceeded) else "failed"
                step.finished = now
                step.attempts = event.attempts
        elif isinstance(event, events.StepSkipped):
            run = self.runs.get(event.run_id)
            if run is not None:
                run.steps[event.step] = StepView("skipped")

    def _step(self, run_id: str, step: str) -> StepView | None:
        run = self.runs.get(run_id)
        return run.steps.get(step) if run is not None else None

    def _circuit(self, event: events.CircuitStateChanged, now: float) -> None:
        host = self.hosts.pop(event.host, None)
        if host is None:
            while len(self.hosts) >= self._max_hosts:
                del self.hosts[next(iter(self.hosts))]
            host = HostView(event.new, now, deque(maxlen=self._transitions))
        host.state = event.new
        host.since = now
        host.transitions.append((now, event.old, event.new))
        self.hosts[event.host] = host  # re-inserted: the dict is ordered by last change
