"""One step attempt: the limits it holds, its Context, its timeout, its retries, its error.

The scheduler (``_scheduler``) decides when a step runs; :func:`attempt_step` runs it: it
takes a slot of the engine's limit and of the step's own, builds the step's :class:`Context`,
bounds each attempt by the step's timeout (within what the retry policy has left), retries
through :func:`~asyncflow._retry.call_with_retry`, and wraps what the step raised in a
:class:`StepError` naming it. Cancellation is never wrapped, never retried: it propagates.
"""

from __future__ import annotations

from contextlib import ExitStack, asynccontextmanager
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Protocol

import anyio

from ._context import Context
from ._errors import StepError, StepTimeoutError
from ._http import step_deadline
from ._retry import call_with_retry
from .events import StepRetrying, StepStarted

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from ._flow import Step
    from ._scheduler import Run
    from .events import RunHook

__all__ = [
    "Failed",
    "Slots",
    "attempt_step",
    "current_run_id",
    "in_step",
    "leave_step",
    "slots_lent",
    "step_error",
]


class Item(Protocol):
    """One item of a mapped step, as :func:`_call_with_policies` sees it."""

    @property
    def name(self) -> str:
        """The item's name, ``"<step>[<index>]"``: its Context's ``step``."""

    def attempted(self) -> None:
        """Count one more attempt of the step's items."""


class Failed:
    """What :func:`attempt_step` returns for a step that failed (``None`` is a valid output)."""

    __slots__ = ("error",)

    def __init__(self, error: StepError) -> None:
        self.error = error


class Slots:
    """The slots of the engine's limit and of a step's own that one step attempt holds.

    They are borrowed on behalf of this object, not of a task, so a step that waits for other
    runs (a sub-flow, a batch) can lend its slot of the engine's limit out while it waits and
    take it back after, from whichever of its tasks waits: a waiting parent never holds an
    engine slot its children need. The step's own slot stays held (its ``concurrency=`` bounds
    its executions, waiting ones included), but a nested run of the same step (a flow that
    runs itself) shares the slot of the attempt it runs under rather than wait for it.
    """

    __slots__ = (
        "done",
        "held",
        "limiter",
        "parent",
        "rides",
        "run_id",
        "step_limiter",
        "waiting",
    )

    def __init__(
        self,
        run_id: str,
        limiter: anyio.CapacityLimiter,
        step_limiter: anyio.CapacityLimiter | None,
    ) -> None:
        #: the run the step belongs to.
        self.run_id = run_id
        self.limiter = limiter
        self.step_limiter = step_limiter
        #: the attempt this one runs under (a step that started this one's run), if any.
        self.parent = _CURRENT.get()
        #: how many of the step's waits for other runs are under way.
        self.waiting = 0
        #: which of the two slots are held: 1 the engine's, 2 the step's.
        self.held = 0
        #: the step's slot is an enclosing attempt's of the same step.
        self.rides = False
        #: the attempt is over: a task it started that still waits must not retake slots.
        self.done = False

    def acquire_nowait(self) -> bool:
        """Take both slots if both are free at once (the common case, no await); else False."""
        if self.parent is not None:
            return False  # nested: the step's slot may be an enclosing attempt's
        try:
            self.limiter.acquire_on_behalf_of_nowait(self)
        except anyio.WouldBlock:
            return False
        self.held = 1
        step_limiter = self.step_limiter
        if step_limiter is not None:
            try:
                step_limiter.acquire_on_behalf_of_nowait(self)
            except anyio.WouldBlock:
                return False
            self.held = 3
        return True

    async def acquire(self) -> None:
        """Take the slots this attempt is missing (the engine's first)."""
        await self.retake()
        step_limiter = self.step_limiter
        if step_limiter is None or self.held & 2 or self.rides:
            return
        outer = self.parent
        while outer is not None:
            if outer.step_limiter is step_limiter and (outer.held & 2 or outer.rides):
                self.rides = True
                return
            outer = outer.parent
        try:
            step_limiter.acquire_on_behalf_of_nowait(self)
        except anyio.WouldBlock:
            await step_limiter.acquire_on_behalf_of(self)
        self.held |= 2

    async def retake(self) -> None:
        """Take the engine's slot back (or for the first time)."""
        if not self.held & 1:
            try:
                self.limiter.acquire_on_behalf_of_nowait(self)
            except anyio.WouldBlock:
                await self.limiter.acquire_on_behalf_of(self)
            self.held |= 1

    def lend(self) -> None:
        """Give the engine's slot back while the step waits for other runs."""
        if self.held & 1:
            self.limiter.release_on_behalf_of(self)
            self.held &= ~1

    def finish(self) -> None:
        """The attempt is over: give back every slot for good."""
        self.done = True
        self.lend()
        if self.held & 2:
            assert self.step_limiter is not None
            self.step_limiter.release_on_behalf_of(self)
            self.held = 0


#: The slots of the step attempt running in this task, if any.
_CURRENT: ContextVar[Slots | None] = ContextVar("asyncflow_step_slots", default=None)


def in_step() -> bool:
    """Whether this task runs (inside) a step attempt."""
    return _CURRENT.get() is not None


def current_run_id() -> str | None:
    """The run of the step attempt running in this task, if any."""
    slots = _CURRENT.get()
    return None if slots is None else slots.run_id


def leave_step() -> None:
    """Make this task, started from inside a step, one that lends none of the step's slots."""
    _CURRENT.set(None)


@asynccontextmanager
async def slots_lent() -> AsyncIterator[None]:
    """Inside a step, give back its engine slot for the block (it waits for runs), then retake.

    Outside a step it does nothing. Retaking waits for a free slot like any step would.
    """
    slots = _CURRENT.get()
    if slots is None or slots.done:
        yield
        return
    slots.waiting += 1
    if slots.waiting == 1:
        slots.lend()
    try:
        yield
    finally:
        slots.waiting -= 1
        if slots.waiting == 0 and not slots.done:
            await slots.retake()
            if slots.waiting or slots.done:  # another wait began, or the attempt ended
                slots.lend()


async def attempt_step(run: Run, i: int, step: Step) -> object:
    """Run step ``i`` of ``run`` under its limits; its output, or :class:`Failed`.

    Records the step's start time and attempts on ``run``, and its cancellation, which
    propagates.
    """
    slots = Slots(run.run_id, run.shared.limiter, run.step_limiters[i])
    try:
        if not slots.acquire_nowait():
            await slots.acquire()
        token = _CURRENT.set(slots)
        emit = run.emit
        kwargs = run.kwargs(i)
        now = run.shared.clock()
        run.started_at[i] = now
        if emit is not None:
            emit(StepStarted(run.run_id, step.name, now, run.plan.flow))
        try:
            return await _call_with_policies(run, i, step, kwargs)
        except Exception as exc:
            return Failed(step_error(step, run.attempts[i], exc))
        except anyio.get_cancelled_exc_class():
            run.cancelled(i)
            raise
        finally:
            _CURRENT.reset(token)
    finally:
        slots.finish()


async def _call_with_policies(
    run: Run, i: int, step: Step, kwargs: dict[str, object], item: Item | None = None
) -> object:
    """Call the step with its Context, under its timeout and retry policy.

    For one ``item`` of a mapped step, the Context names the item and its attempts are
    counted into the step's total.
    """
    ctx_name = run.plan.context_param[i]
    http = run.shared.http
    ctx_step = step.name if item is None else item.name
    hooks = run.shared.hooks
    if step.retry is None:
        if item is None:
            run.attempts[i] = 1
        else:
            item.attempted()
        if ctx_name is not None:
            kwargs[ctx_name] = Context(
                run_id=run.run_id,
                step=ctx_step,
                http=http,
                resources=run.shared.resources,
                runner=run.shared.subflows,
            )
        if hooks:
            call = partial(_attempt_once, step, kwargs, step.timeout, 1)
            return await _hooked(hooks, run.run_id, ctx_step, 1, call)
        if step.timeout is None:
            return await step.fn(**kwargs)
        return await _attempt_with_timeout(step, kwargs, step.timeout, 1)

    def on_retry(attempt: int, error: Exception, wait: float) -> None:
        # Under the step's name for an item too: observers label by step, and 100,000 items
        # must not become 100,000 labels.
        if run.emit is not None:
            run.emit(
                StepRetrying(
                    run.run_id, step.name, run.shared.clock(), attempt, wait, error, run.plan.flow
                )
            )

    async def attempt(n: int, budget: float | None) -> object:
        if item is None:
            run.attempts[i] = n
        else:
            item.attempted()
        if ctx_name is not None:
            kwargs[ctx_name] = Context(
                run_id=run.run_id,
                step=ctx_step,
                attempt=n,
                http=http,
                resources=run.shared.resources,
                runner=run.shared.subflows,
            )
        limit = step.timeout if budget is None else min(step.timeout or budget, budget)
        if hooks:
            call = partial(_attempt_once, step, kwargs, limit, n)
            return await _hooked(hooks, run.run_id, ctx_step, n, call)
        if limit is None:
            return await step.fn(**kwargs)
        return await _attempt_with_timeout(step, kwargs, limit, n)

    return await call_with_retry(step.retry, attempt, on_retry=on_retry, label=f"step {ctx_step!r}")


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
