"""Runs one Flow inside one anyio task group, launching each step the moment it is ready.

Run state lives in one :class:`Run` per run. Steps update it only between awaits, and
asyncflow runs on one event loop thread, so the bookkeeping needs no lock and no scheduler
task: a finishing step marks itself done and starts each dependent whose last dependency it
was, in the same synchronous stretch. That keeps the per-step cost near that of a bare task
group (see benchmarks/bench_scheduler.py). Each step runs through the attempt layer
(``_attempt``); a run with a store holds a :class:`~asyncflow._checkpointing.Checkpointing`
that restores steps from checkpoints and saves each success. A step with ``when=`` is decided
first (``_conditions``): one not taken counts as done for the dependents that can do without its
output and takes the others with it. A step with ``map_over=`` runs its items in ``_fanout``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from ._attempt import Failed, attempt_step, step_error
from ._checkpointing import MISSING, NOT_TAKEN
from ._conditions import decide
from ._context import NO_RESOURCES
from ._fanout import AllRestored, run_mapped
from ._hooks import run_contexts
from ._result import RunResult, StepResult
from ._status import RunStatus, StepStatus
from .events import (
    RunFinished,
    RunStarted,
    StepFailed,
    StepNotTaken,
    StepRestored,
    StepSkipped,
    StepSucceeded,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    import httpx
    from anyio.abc import TaskGroup

    from ._checkpointing import Checkpointing
    from ._context import Resources, SubflowRunner
    from ._emit import Emitter
    from ._flow import Step
    from ._plan import Plan
    from .events import RunHook

__all__ = ["Run", "Shared"]

_DONE = frozenset({StepStatus.SUCCEEDED, StepStatus.RESTORED, StepStatus.NOT_TAKEN})


class Shared:
    """What every run of an engine shares: limit, observers, HTTP client, clock, resources."""

    __slots__ = ("clock", "emit", "hooks", "http", "limiter", "resources", "subflows")

    def __init__(
        self,
        *,
        limiter: anyio.CapacityLimiter,
        emit: Emitter,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = anyio.current_time,
        resources: Resources = NO_RESOURCES,
        subflows: SubflowRunner | None = None,
    ) -> None:
        self.clock = clock
        self.limiter = limiter
        self.emit = emit
        self.http = http
        self.resources = resources
        #: the observers that also wrap runs and attempts (``RunHook``); empty: no cost
        self.hooks: tuple[RunHook, ...] = ()
        #: runs a sub-flow on the engine, for ``ctx.run``.
        self.subflows = subflows


class Run:
    """One run of a plan: outputs, statuses and the counters that decide what is ready."""

    __slots__ = (
        "attempts",
        "checkpointing",
        "emit",
        "errors",
        "fail_fast",
        "finished_at",
        "inputs",
        "outputs",
        "plan",
        "remaining",
        "run_id",
        "shared",
        "started_at",
        "statuses",
        "step_limiters",
        "tg",
        "traceparent",
    )

    def __init__(
        self,
        plan: Plan,
        inputs: Mapping[str, object],
        run_id: str,
        shared: Shared,
        *,
        step_limiters: Sequence[anyio.CapacityLimiter | None],
        fail_fast: bool = False,
    ) -> None:
        n = len(plan.steps)
        self.plan = plan
        self.inputs = inputs
        self.run_id = run_id
        self.shared = shared
        #: each step's own concurrency limit, by index (None: no per-step limit).
        self.step_limiters = step_limiters
        #: restores steps from and saves them to a store; None for a run without one.
        self.checkpointing: Checkpointing | None = None
        # Observers are read once per run: one added mid-run sees that run's events from the
        # next run on. None when nobody listens, so no event is built.
        self.emit: Emitter | None = shared.emit if shared.emit else None
        self.fail_fast = fail_fast
        self.outputs: dict[str, object] = {}
        self.remaining = list(plan.n_deps)
        self.statuses: list[StepStatus | None] = [None] * n
        self.attempts = [0] * n
        self.errors: list[BaseException | None] = [None] * n
        self.started_at: list[float | None] = [None] * n
        self.finished_at: list[float | None] = [None] * n
        self.tg: TaskGroup | None = None
        #: the W3C traceparent of the run's parent, given by its caller (a trigger)
        self.traceparent: str | None = None

    def execute(self) -> Awaitable[RunResult]:
        """Run every step; return when all have finished, failed or been skipped.

        With checkpointing, the run's checkpoints are loaded and its manifest written first,
        and its final manifest after.

        Cancelling the caller cancels every running step and propagates; cancellation is not
        recorded as a failure.

        Raises:
            CheckpointError: the run id belongs to another flow, or the store failed.
        """
        checkpointing = self.checkpointing
        if checkpointing is not None:
            return checkpointing.run(self._execute)
        if self.shared.hooks:
            return self._hooked()
        # The coroutine itself, not one more around it: this runs once per run.
        return self._execute()

    async def _hooked(self) -> RunResult:
        """Execute inside each hook's run context (a run without a store: nothing is kept)."""
        with run_contexts(self.shared.hooks, self.run_id, self.plan.flow, self.traceparent):
            return await self._execute()

    async def _execute(self) -> RunResult:
        emit = self.emit
        started = self.shared.clock()
        if emit is not None:
            emit(RunStarted(self.run_id, self.plan.flow, started))
        roots = list(self.plan.roots)
        if self.plan.is_chain:
            # At most one step is ever ready: run them all in this task, no task group needed.
            first = self._dispatch(roots)
            if first is not None:
                await self._run_step(first)
            return self._result(started)
        async with anyio.create_task_group() as tg:
            self.tg = tg
            # One ready step runs in this task, the others in tasks of their own.
            first = self._dispatch(roots)
            if first is not None:
                await self._run_step(first)
        self.tg = None
        return self._result(started)

    def _launch(self, i: int) -> None:
        assert self.tg is not None
        self.tg.start_soon(self._run_step, i, name=self.plan.steps[i].name)

    def _dispatch(self, ready: list[int]) -> int | None:
        """Start the steps in ``ready`` (all their dependencies are done).

        Steps restored from a checkpoint count as done at once, and so may make more
        steps ready (a worklist, not recursion: a long restored chain must not hit the
        recursion limit). Of the steps that must run, all but one are launched in tasks of
        their own; that one is returned for the caller to run in its own task.
        """
        inline: int | None = None
        remaining = self.remaining
        dependents = self.plan.dependents
        statuses = self.statuses
        checkpointing = self.checkpointing
        while ready:
            j = ready.pop()
            if statuses[j] is not None:
                continue
            if checkpointing is not None and (out := checkpointing.restore(j)) is not MISSING:
                if out is NOT_TAKEN:
                    ready.extend(self._not_taken(j, "its when= was false", restored=True))
                    continue
                self._restored(j, out)
                for k in dependents[j]:
                    remaining[k] -= 1
                    if remaining[k] == 0:
                        ready.append(k)
            elif inline is None:
                inline = j
            else:
                self._launch(j)
        return inline

    def _restored(self, i: int, output: object) -> None:
        """Record step ``i`` as restored from its checkpoint with ``output``."""
        name = self.plan.steps[i].name
        self.outputs[name] = output
        self.statuses[i] = StepStatus.RESTORED
        if self.emit is not None:
            self.emit(StepRestored(self.run_id, name, self.shared.clock(), self.plan.flow))

    def kwargs(self, i: int) -> dict[str, object]:
        """The arguments of step ``i``: its dependencies' outputs and the run inputs it takes."""
        plan = self.plan
        outputs = self.outputs
        try:
            kwargs: dict[str, object] = {
                name: outputs[plan.steps[j].name] for name, j in plan.data_deps[i]
            }
        except KeyError:
            # A dependency was not taken and this parameter has a default: leave it out.
            kwargs = {
                name: outputs[plan.steps[j].name]
                for name, j in plan.data_deps[i]
                if plan.steps[j].name in outputs
            }
        inputs = self.inputs
        for name in plan.step_inputs[i]:
            if name in inputs:
                kwargs[name] = inputs[name]
        return kwargs

    async def _run_step(self, i: int | None) -> None:
        """Run step ``i``, then go on in this task with a dependent it made ready, if any."""
        checkpointing = self.checkpointing
        while i is not None:
            step = self.plan.steps[i]
            if step.when is not None:
                taken = await decide(self, i, step)
                if taken is not True:
                    if type(taken) is Failed:
                        self._failed(i, step, taken.error)
                        return
                    i = self._dispatch(self._not_taken(i, "its when= was false"))
                    continue
            if step.map_over is None:
                output = await attempt_step(self, i, step)
            else:
                output = await run_mapped(self, i, step)
                if type(output) is AllRestored:
                    self._restored(i, output.output)
                    i = self._dispatch(self._ready_after(i))
                    continue
            if type(output) is Failed:
                self._failed(i, step, output.error)
                return
            # Saving happens outside the limits: it is our work, not the step's, and must not
            # hold a slot of an external service's limit. Dependents start after it. A mapped
            # step's items saved themselves.
            if checkpointing is not None and step.map_over is None:
                try:
                    await checkpointing.save(i, output)
                except Exception as exc:
                    self._failed(i, step, exc)
                    return
                except anyio.get_cancelled_exc_class():
                    self.cancelled(i)
                    raise
            i = self._succeeded(i, step, output)

    def cancelled(self, i: int) -> None:
        """Record that step ``i`` was cancelled while it ran (a step already done stays so)."""
        if self.statuses[i] is None:
            self.statuses[i] = StepStatus.CANCELLED
            self.finished_at[i] = self.shared.clock()

    def _succeeded(self, i: int, step: Step, output: object) -> int | None:
        """Record the output and start what it made ready; return one of those to run inline."""
        self.outputs[step.name] = output
        self.statuses[i] = StepStatus.SUCCEEDED
        now = self.finished_at[i] = self.shared.clock()
        emit = self.emit
        if emit is not None:
            emit(StepSucceeded(self.run_id, step.name, now, self.attempts[i], self.plan.flow))
        ready = self._ready_after(i)
        return self._dispatch(ready) if ready else None

    def _ready_after(self, i: int) -> list[int]:
        """Count step ``i`` as done for its dependents; those it made ready."""
        remaining = self.remaining
        ready = []
        for j in self.plan.dependents[i]:
            remaining[j] -= 1
            if remaining[j] == 0:
                ready.append(j)
        return ready

    def _not_taken(self, i: int, reason: str, *, restored: bool = False) -> list[int]:
        """Record step ``i`` as not taken, and every dependent that needs its output.

        A dependent that takes it through a parameter with a default, or only runs after it
        (``after=``), still runs once its other dependencies are done: those are returned
        when ready, for the caller to dispatch.
        """
        plan = self.plan
        steps = plan.steps
        emit = self.emit
        checkpointing = self.checkpointing
        remaining = self.remaining
        ready: list[int] = []
        stack = [(i, reason, restored)]
        while stack:
            j, why, from_checkpoint = stack.pop()
            if self.statuses[j] is not None:
                continue
            self.statuses[j] = StepStatus.NOT_TAKEN
            if checkpointing is not None:
                checkpointing.not_taken(j)
            if emit is not None:
                emit(
                    StepNotTaken(
                        self.run_id, steps[j].name, self.shared.clock(), why, from_checkpoint
                    )
                )
            for k in plan.dependents[j]:
                if self._needs(k, j):
                    stack.append((k, f"it needs the output of {steps[j].name!r}, not taken", False))
                else:
                    remaining[k] -= 1
                    if remaining[k] == 0:
                        ready.append(k)
        return ready

    def _needs(self, k: int, j: int) -> bool:
        """Whether step ``k`` cannot run without step ``j``'s output (no default for it).

        A step mapped over ``j``'s output always needs it.
        """
        step = self.plan.steps[k]
        params = {p.name: p for p in step.params}
        return any(
            source == j and (not params[name].has_default or name == step.map_over)
            for name, source in self.plan.data_deps[k]
        )

    def _failed(self, i: int, step: Step, exc: Exception) -> None:
        exc = step_error(step, self.attempts[i], exc)
        self.statuses[i] = StepStatus.FAILED
        self.errors[i] = exc
        now = self.finished_at[i] = self.shared.clock()
        emit = self.emit
        if emit is not None:
            emit(StepFailed(self.run_id, step.name, now, self.attempts[i], exc, self.plan.flow))
        self._skip_dependents(i, f"step {step.name!r} failed")
        if self.fail_fast and self.tg is not None:
            self.tg.cancel_scope.cancel()

    def _skip_dependents(self, i: int, reason: str) -> None:
        stack = list(self.plan.dependents[i])
        emit = self.emit
        steps = self.plan.steps
        flow = self.plan.flow
        while stack:
            j = stack.pop()
            if self.statuses[j] is not None:
                continue
            self.statuses[j] = StepStatus.SKIPPED
            if emit is not None:
                emit(StepSkipped(self.run_id, steps[j].name, self.shared.clock(), reason, flow))
            stack.extend(self.plan.dependents[j])

    def _result(self, started: float) -> RunResult:
        plan = self.plan
        finished = self.shared.clock()
        # One reading of each clock: the run's monotonic times as wall-clock ones, for people.
        offset = time.time() - finished
        steps: dict[str, StepResult] = {}
        failed = False
        for i, step in enumerate(plan.steps):
            status = self.statuses[i]
            if status is None:
                # Never launched: a fail-fast run stopped before its dependencies finished.
                status = self.statuses[i] = StepStatus.SKIPPED
            failed = failed or status not in _DONE
            steps[step.name] = StepResult(
                name=step.name,
                status=status,
                attempts=self.attempts[i],
                error=self.errors[i],
                started_at=self.started_at[i],
                finished_at=self.finished_at[i],
                wall_offset=offset,
            )
        run_status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
        if self.emit is not None:
            self.emit(RunFinished(self.run_id, plan.flow, run_status, finished))
        return RunResult(
            run_id=self.run_id,
            flow=plan.flow,
            status=run_status,
            outputs=self.outputs,
            steps=steps,
            started_at=started,
            finished_at=finished,
            inputs=dict(self.inputs),
            wall_offset=offset,
        )
