"""Runs one Flow inside one anyio task group, launching each step the moment it is ready.

Run state lives in one :class:`RunState` per run. Steps update it only between awaits, and
asyncflow runs on one event loop thread, so the bookkeeping needs no lock and no scheduler
task: a finishing step marks itself done and starts each dependent whose last dependency it
was, in the same synchronous stretch. That keeps the per-step cost near that of a bare task
group (see benchmarks/bench_scheduler.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from ._errors import StepError, StepTimeoutError
from ._graph import Context
from ._http import step_deadline
from ._result import RunResult, StepResult
from ._retry import call_with_retry
from ._status import RunStatus, StepStatus
from .events import (
    RunFinished,
    RunStarted,
    StepFailed,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from anyio.abc import TaskGroup

    from ._emit import Emitter
    from ._graph import Plan, Step

__all__ = ["RunState", "StepRuntime"]

_DONE = frozenset({StepStatus.SUCCEEDED, StepStatus.RESTORED})
#: What _run_acquired returns for a step that failed (None is a valid output).
_FAILED: Any = object()


class StepRuntime:
    """What the scheduler needs from the engine: limits, observers, the HTTP client."""

    __slots__ = ("clock", "emit", "http", "limiter", "step_limiters")

    def __init__(
        self,
        *,
        limiter: anyio.CapacityLimiter,
        step_limiters: Callable[[Plan, int], anyio.CapacityLimiter | None],
        emit: Emitter,
        http: Any = None,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.clock = clock
        self.limiter = limiter
        self.step_limiters = step_limiters
        self.emit = emit
        self.http = http


class RunState:
    """One run of a plan: outputs, statuses and the counters that decide what is ready."""

    __slots__ = (
        "attempts",
        "emit",
        "errors",
        "fail_fast",
        "finished_at",
        "inputs",
        "outputs",
        "plan",
        "remaining",
        "rt",
        "run_id",
        "started_at",
        "statuses",
        "tg",
    )

    #: Subclasses that persist outputs set this: each success then awaits :meth:`_save`.
    saves = False

    def __init__(
        self,
        plan: Plan,
        inputs: Mapping[str, object],
        run_id: str,
        rt: StepRuntime,
        *,
        fail_fast: bool = False,
    ) -> None:
        n = len(plan.steps)
        self.plan = plan
        self.inputs = inputs
        self.run_id = run_id
        self.rt = rt
        # Observers are read once per run: one added mid-run sees that run's events from the
        # next run on. None when nobody listens, so no event is built.
        self.emit: Emitter | None = rt.emit if rt.emit else None
        self.fail_fast = fail_fast
        self.outputs: dict[str, object] = {}
        self.remaining = list(plan.n_deps)
        self.statuses: list[StepStatus | None] = [None] * n
        self.attempts = [0] * n
        self.errors: list[BaseException | None] = [None] * n
        self.started_at: list[float | None] = [None] * n
        self.finished_at: list[float | None] = [None] * n
        self.tg: TaskGroup | None = None

    async def execute(self) -> RunResult:
        """Run every step; return when all have finished, failed or been skipped.

        Cancelling the caller cancels every running step and propagates; cancellation is not
        recorded as a failure.
        """
        emit = self.emit
        started = self.rt.clock()
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

        Steps that :meth:`_restore` restores count as done at once, and so may make more
        steps ready (a worklist, not recursion: a long restored chain must not hit the
        recursion limit). Of the steps that must run, all but one are launched in tasks of
        their own; that one is returned for the caller to run in its own task.
        """
        inline: int | None = None
        remaining = self.remaining
        dependents = self.plan.dependents
        statuses = self.statuses
        while ready:
            j = ready.pop()
            if statuses[j] is not None:
                continue
            if self._restore(j):
                for k in dependents[j]:
                    remaining[k] -= 1
                    if remaining[k] == 0:
                        ready.append(k)
            elif inline is None:
                inline = j
            else:
                self._launch(j)
        return inline

    def _restore(self, i: int) -> bool:
        """Mark step ``i`` done from a saved output instead of running it; see CheckpointedRun."""
        return False

    async def _save(self, i: int, step: Step, output: object) -> bool:
        """Persist a step's output before it counts as done (when ``saves`` is set).

        Returns False when the step failed to save (and was marked failed).
        """
        return True

    def _kwargs(self, i: int) -> dict[str, object]:
        plan = self.plan
        outputs = self.outputs
        kwargs: dict[str, object] = {
            name: outputs[plan.steps[j].name] for name, j in plan.data_deps[i]
        }
        inputs = self.inputs
        for name in plan.step_inputs[i]:
            if name in inputs:
                kwargs[name] = inputs[name]
        return kwargs

    async def _run_step(self, i: int | None) -> None:
        """Run step ``i``, then go on in this task with a dependent it made ready, if any."""
        limiter = self.rt.limiter
        saves = self.saves
        while i is not None:
            step = self.plan.steps[i]
            step_limiter = self.rt.step_limiters(self.plan, i)
            # Fast path: take a free token without yielding to the loop.
            try:
                limiter.acquire_nowait()
            except anyio.WouldBlock:
                await limiter.acquire()
            try:
                if step_limiter is not None:
                    try:
                        step_limiter.acquire_nowait()
                    except anyio.WouldBlock:
                        await step_limiter.acquire()
                try:
                    output = await self._run_acquired(i, step)
                finally:
                    if step_limiter is not None:
                        step_limiter.release()
            finally:
                limiter.release()
            # Saving happens outside the limits: it is our work, not the step's, and must not
            # hold a slot of an external service's limit. Dependents start after it.
            if output is _FAILED or (saves and not await self._save(i, step, output)):
                return
            i = self._succeeded(i, step, output)

    async def _run_acquired(self, i: int, step: Step) -> object:
        """Run one step under its limits; its output, or ``_FAILED`` (recorded as failed)."""
        emit = self.emit
        kwargs = self._kwargs(i)
        now = self.rt.clock()
        self.started_at[i] = now
        if emit is not None:
            emit(StepStarted(self.run_id, step.name, now))
        try:
            output = await self._call(i, step, kwargs)
        except Exception as exc:
            self._failed(i, step, exc)
            return _FAILED
        except anyio.get_cancelled_exc_class():
            if self.statuses[i] is None:
                self.statuses[i] = StepStatus.CANCELLED
                self.finished_at[i] = self.rt.clock()
            raise
        return output

    async def _call(self, i: int, step: Step, kwargs: dict[str, object]) -> object:
        ctx_name = self.plan.context_param[i]
        if step.retry is None:
            self.attempts[i] = 1
            if ctx_name is not None:
                kwargs[ctx_name] = Context(run_id=self.run_id, step=step.name, http=self.rt.http)
            if step.timeout is None:
                return await step.fn(**kwargs)
            return await self._attempt_with_timeout(step, kwargs, step.timeout, 1)

        def on_retry(attempt: int, error: Exception, wait: float) -> None:
            if self.emit is not None:
                self.emit(
                    StepRetrying(self.run_id, step.name, self.rt.clock(), attempt, wait, error)
                )

        async def attempt(n: int, budget: float | None) -> object:
            self.attempts[i] = n
            if ctx_name is not None:
                kwargs[ctx_name] = Context(
                    run_id=self.run_id, step=step.name, attempt=n, http=self.rt.http
                )
            limit = step.timeout if budget is None else min(step.timeout or budget, budget)
            if limit is None:
                return await step.fn(**kwargs)
            return await self._attempt_with_timeout(step, kwargs, limit, n)

        return await call_with_retry(
            step.retry, attempt, on_retry=on_retry, label=f"step {step.name!r}"
        )

    @staticmethod
    async def _attempt_with_timeout(
        step: Step, kwargs: dict[str, object], limit: float, attempt: int
    ) -> object:
        # Built up front: a request the deadline cuts off counts against its host with it.
        timeout = StepTimeoutError(step=step.name, timeout=limit, attempt=attempt)
        with step_deadline(limit, timeout):
            return await step.fn(**kwargs)
        raise timeout

    def _succeeded(self, i: int, step: Step, output: object) -> int | None:
        """Record the output and start what it made ready; return one of those to run inline."""
        self.outputs[step.name] = output
        self.statuses[i] = StepStatus.SUCCEEDED
        now = self.finished_at[i] = self.rt.clock()
        emit = self.emit
        if emit is not None:
            emit(StepSucceeded(self.run_id, step.name, now, self.attempts[i]))
        remaining = self.remaining
        ready = []
        for j in self.plan.dependents[i]:
            remaining[j] -= 1
            if remaining[j] == 0:
                ready.append(j)
        return self._dispatch(ready) if ready else None

    def _failed(self, i: int, step: Step, exc: Exception) -> None:
        if not isinstance(exc, StepError):
            err: StepError = StepError(
                f"Step {step.name!r} failed after {self.attempts[i]} attempt(s): "
                f"{type(exc).__name__}: {exc}",
                step=step.name,
                attempts=self.attempts[i],
            )
            err.__cause__ = exc
            exc = err
        self.statuses[i] = StepStatus.FAILED
        self.errors[i] = exc
        now = self.finished_at[i] = self.rt.clock()
        emit = self.emit
        if emit is not None:
            emit(StepFailed(self.run_id, step.name, now, self.attempts[i], exc))
        self._skip_dependents(i, f"step {step.name!r} failed")
        if self.fail_fast and self.tg is not None:
            self.tg.cancel_scope.cancel()

    def _skip_dependents(self, i: int, reason: str) -> None:
        stack = list(self.plan.dependents[i])
        emit = self.emit
        steps = self.plan.steps
        while stack:
            j = stack.pop()
            if self.statuses[j] is not None:
                continue
            self.statuses[j] = StepStatus.SKIPPED
            if emit is not None:
                emit(StepSkipped(self.run_id, steps[j].name, self.rt.clock(), reason))
            stack.extend(self.plan.dependents[j])

    def _result(self, started: float) -> RunResult:
        plan = self.plan
        finished = self.rt.clock()
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
        )
