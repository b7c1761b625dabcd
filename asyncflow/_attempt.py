"""One step attempt: the limits it holds, its Context, its timeout, its retries, its error.

The scheduler (``_scheduler``) decides when a step runs; :func:`attempt_step` runs it: it
takes a slot of the engine's limit and of the step's own, builds the step's :class:`Context`,
bounds each attempt by the step's timeout (within what the retry policy has left), retries
through :func:`~asyncflow._retry.call_with_retry`, and wraps what the step raised in a
:class:`StepError` naming it. Cancellation is never wrapped, never retried: it propagates.
"""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial
from typing import TYPE_CHECKING

import anyio

from ._context import Context
from ._errors import StepError, StepTimeoutError
from ._http import step_deadline
from ._retry import call_with_retry
from .events import StepRetrying, StepStarted

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._flow import Step
    from ._scheduler import Run
    from .events import RunHook

__all__ = ["Failed", "attempt_step", "step_error"]


class Failed:
    """What :func:`attempt_step` returns for a step that failed (``None`` is a valid output)."""

    __slots__ = ("error",)

    def __init__(self, error: StepError) -> None:
        self.error = error


async def attempt_step(run: Run, i: int, step: Step) -> object:
    """Run step ``i`` of ``run`` under its limits; its output, or :class:`Failed`.

    Records the step's start time and attempts on ``run``, and its cancellation, which
    propagates.
    """
    limiter = run.shared.limiter
    step_limiter = run.step_limiters[i]
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
        emit = run.emit
        kwargs = run.kwargs(i)
        now = run.shared.clock()
        run.started_at[i] = now
        if emit is not None:
            emit(StepStarted(run.run_id, step.name, now))
        try:
            return await _call_with_policies(run, i, step, kwargs)
        except Exception as exc:
            return Failed(step_error(step, run.attempts[i], exc))
        except anyio.get_cancelled_exc_class():
            run.cancelled(i)
            raise
        finally:
            if step_limiter is not None:
                step_limiter.release()
    finally:
        limiter.release()


async def _call_with_policies(run: Run, i: int, step: Step, kwargs: dict[str, object]) -> object:
    """Call the step with its Context, under its timeout and retry policy."""
    ctx_name = run.plan.context_param[i]
    http = run.shared.http
    hooks = run.shared.hooks
    if step.retry is None:
        run.attempts[i] = 1
        if ctx_name is not None:
            kwargs[ctx_name] = Context(
                run_id=run.run_id, step=step.name, http=http, resources=run.shared.resources
            )
        if hooks:
            call = partial(_attempt_once, step, kwargs, step.timeout, 1)
            return await _hooked(hooks, run.run_id, step.name, 1, call)
        if step.timeout is None:
            return await step.fn(**kwargs)
        return await _attempt_with_timeout(step, kwargs, step.timeout, 1)

    def on_retry(attempt: int, error: Exception, wait: float) -> None:
        if run.emit is not None:
            run.emit(StepRetrying(run.run_id, step.name, run.shared.clock(), attempt, wait, error))

    async def attempt(n: int, budget: float | None) -> object:
        run.attempts[i] = n
        if ctx_name is not None:
            kwargs[ctx_name] = Context(
                run_id=run.run_id,
                step=step.name,
                attempt=n,
                http=http,
                resources=run.shared.resources,
            )
        limit = step.timeout if budget is None else min(step.timeout or budget, budget)
        if hooks:
            call = partial(_attempt_once, step, kwargs, limit, n)
            return await _hooked(hooks, run.run_id, step.name, n, call)
        if limit is None:
            return await step.fn(**kwargs)
        return await _attempt_with_timeout(step, kwargs, limit, n)

    return await call_with_retry(
        step.retry, attempt, on_retry=on_retry, label=f"step {step.name!r}"
    )


async def _hooked(
    hooks: tuple[RunHook, ...],
    run_id: str,
    step: str,
    attempt: int,
    call: Callable[[], Awaitable[object]],
) -> object:
    """Await ``call()`` (one attempt) inside each hook's attempt context, in this task."""
    with ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook.attempt_context(run_id, step, attempt))
        return await call()


async def _attempt_once(
    step: Step, kwargs: dict[str, object], limit: float | None, attempt: int
) -> object:
    if limit is None:
        return await step.fn(**kwargs)
    return await _attempt_with_timeout(step, kwargs, limit, attempt)


async def _attempt_with_timeout(
    step: Step, kwargs: dict[str, object], limit: float, attempt: int
) -> object:
    # Built up front: a request the deadline cuts off counts against its host with it.
    timeout = StepTimeoutError(step=step.name, timeout=limit, attempt=attempt)
    with step_deadline(limit, timeout):
        return await step.fn(**kwargs)
    raise timeout


def step_error(step: Step, attempts: int, exc: Exception) -> StepError:
    """``exc`` as a :class:`StepError` naming the step (a StepError is returned as it is)."""
    if isinstance(exc, StepError):
        return exc
    err = StepError(
        f"Step {step.name!r} failed after {attempts} attempt(s): {type(exc).__name__}: {exc}",
        step=step.name,
        attempts=attempts,
    )
    err.__cause__ = exc
    return err
