"""Fan-out: a step with ``map_over=`` runs once per item of a dependency's output.

:func:`run_mapped` runs the items of one mapped step of one run. A fixed set of workers
(``concurrency=`` of the step, :data:`DEFAULT_MAP_CONCURRENCY` by default, never more than there
are items) pulls items from one iterator over the source's output, so 100,000 items never make
100,000 coroutines. Each item is one call of the step function with the parameter named after
the source bound to the item: it takes a slot of the engine's limit and of the step's own (the
mapped step itself holds none while its items run), has the step's timeout and retry policy, and
with a store is checkpointed on its own as ``"<step>[<index>]"``, identified by the step's code,
its other inputs and the item's own content. A resumed run restores those and runs only the
missing items. The output is the list of the items' outputs in input order; items that fail
after their retries fail the step with a :class:`~asyncflow.FanOutError` naming their indices,
once the other items are done (with ``fail_fast``, at the first one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from typing import TYPE_CHECKING

import anyio

from ._attempt import _CURRENT, Failed, Slots, _call_with_policies
from ._checkpointing import MISSING
from ._errors import FanOutError, StepError
from .events import StepStarted

if TYPE_CHECKING:
    from ._flow import Step
    from ._scheduler import Run

__all__ = ["DEFAULT_MAP_CONCURRENCY", "AllRestored", "run_mapped"]

#: Items of one mapped step in flight at once in one run, when the step sets no concurrency=.
DEFAULT_MAP_CONCURRENCY = 100
#: Failed items named in a FanOutError's message; all of them are in ``err.failed``.
_SHOWN = 5


class AllRestored:
    """What :func:`run_mapped` returns when every item came from its checkpoint."""

    __slots__ = ("output",)

    def __init__(self, output: list[object]) -> None:
        self.output = output


def _not_iterable(step: Step, source: object) -> str | None:
    """Why ``source`` cannot be mapped over, or ``None`` when it can."""
    kind = type(source).__qualname__
    if isinstance(source, str | bytes | bytearray):
        return f"a {kind}, which would be mapped character by character"
    if isinstance(source, Mapping):
        return f"a {kind}, a mapping: map over list(d.items()) or list(d.values())"
    if not isinstance(source, Iterable):
        return f"a {kind}, which is not iterable"
    return None


async def run_mapped(run: Run, i: int, step: Step) -> object:
    """Run every item of mapped step ``i``; the list of outputs, :class:`AllRestored` or Failed.

    Cancelling the caller cancels the items in flight; items already saved stay saved.
    """
    source_name = step.map_over
    assert source_name is not None
    kwargs = run.kwargs(i)
    source = kwargs[source_name]
    why = _not_iterable(step, source)
    if why is not None:
        return Failed(
            StepError(
                f"Step {step.name!r} maps over the output of {source_name!r}, {why}. Return a "
                f"list (or another iterable) of items from {source_name!r}.",
                step=step.name,
                attempts=0,
            )
        )
    assert isinstance(source, Iterable)
    n = len(source) if isinstance(source, Sized) else None
    mapper = _Mapper(run, i, step, kwargs, n)
    now = run.shared.clock()
    run.started_at[i] = now
    if run.emit is not None:
        run.emit(StepStarted(run.run_id, step.name, now, run.plan.flow))
    width = step.concurrency or DEFAULT_MAP_CONCURRENCY
    if n is not None:
        width = min(width, n)
    items = enumerate(source)
    try:
        async with anyio.create_task_group() as tg:
            mapper.tg = tg
            for _ in range(width - 1):
                tg.start_soon(mapper.work, items)
            await mapper.work(items)
    except anyio.get_cancelled_exc_class():
        run.cancelled(i)
        raise
    return mapper.outcome()


def _why(error: BaseException) -> str:
    """One failed item's error, for the step's message: what the item itself raised."""
    shown = error.__cause__ if type(error) is StepError and error.__cause__ else error
    return f"{type(shown).__name__}: {str(shown).rstrip('.')}"


class _Item:
    """One item of a mapped step, for the attempt layer: its name, and where attempts count."""

    __slots__ = ("mapper", "name")

    def __init__(self, name: str, mapper: _Mapper) -> None:
        self.name = name
        self.mapper = mapper

    def attempted(self) -> None:
        self.mapper.attempted()


class _Mapper:
    """The state of one mapped step of one run while its items run."""

    __slots__ = (
        "attempts",
        "digests",
        "error",
        "failed",
        "i",
        "kwargs",
        "n",
        "ran",
        "results",
        "run",
        "step",
        "tg",
    )

    def __init__(
        self, run: Run, i: int, step: Step, kwargs: dict[str, object], n: int | None
    ) -> None:
        self.run = run
        self.i = i
        self.step = step
        self.kwargs = kwargs
        self.n = n
        self.results: list[object] = [MISSING] * n if n is not None else []
        self.digests: list[str] = [""] * n if n is not None else []
        self.failed: dict[int, BaseException] = {}
        #: an error of the source's iterator itself: the step fails with it.
        self.error: Exception | None = None
        #: how many items ran (were not restored).
        self.ran = 0
        self.attempts = 0
        self.tg: anyio.abc.TaskGroup | None = None

    async def work(self, items: enumerate[object]) -> None:
        """Take items one at a time until none are left (or the step stops).

        The workers share one iterator: ``next()`` runs between awaits, on the loop thread.
        """
        step = self.step
        checkpointing = self.run.checkpointing
        tg = self.tg
        while tg is None or not tg.cancel_scope.cancel_called:
            try:
                k, item = next(items)
            except StopIteration:
                return
            except Exception as exc:  # the source's own iterator failed
                self._stop(exc)
                return
            self._grow(k)
            name = f"{step.name}[{k}]"
            fingerprint = ""
            if checkpointing is not None:
                try:
                    fingerprint = checkpointing.item_fingerprint(self.i, item)
                except Exception as exc:
                    self._fail(k, exc)
                    continue
                restored = checkpointing.restore_item(name, fingerprint)
                if restored is not None:
                    self.results[k], self.digests[k] = restored
                    continue
            self.ran += 1
            output = await self._attempt(k, name, item)
            if type(output) is Failed:
                self._fail(k, output.error)
                continue
            if checkpointing is not None:
                # Outside the limits, as the scheduler saves a step: it is our work.
                try:
                    self.digests[k] = await checkpointing.save_item(
                        self.i, name, fingerprint, output
                    )
                except Exception as exc:
                    self._fail(k, exc)
                    continue
            self.results[k] = output

    def _grow(self, k: int) -> None:
        if self.n is None and k >= len(self.results):
            self.results.append(MISSING)
            self.digests.append("")

    def _fail(self, k: int, exc: BaseException) -> None:
        self.failed[k] = exc
        if self.run.fail_fast and self.tg is not None:
            self.tg.cancel_scope.cancel()

    def _stop(self, exc: Exception) -> None:
        self.error = exc
        if self.tg is not None:
            self.tg.cancel_scope.cancel()

    async def _attempt(self, k: int, name: str, item: object) -> object:
        """One item under the step's limits, timeout and retries: its output, or Failed."""
        run, step = self.run, self.step
        slots = Slots(run.run_id, run.shared.limiter, run.step_limiters[self.i])
        try:
            await slots.acquire()
            token = _CURRENT.set(slots)
            kwargs = dict(self.kwargs)
            assert step.map_over is not None
            kwargs[step.map_over] = item
            try:
                return await _call_with_policies(run, self.i, step, kwargs, _Item(name, self))
            except Exception as exc:
                err = StepError(
                    f"Item {k} of step {step.name!r} failed: {type(exc).__name__}: {exc}",
                    step=name,
                )
                err.__cause__ = exc
                return Failed(err)
            finally:
                _CURRENT.reset(token)
        finally:
            slots.finish()

    def attempted(self) -> None:
        """One more attempt of one of the items: the step's attempts are their total."""
        self.attempts += 1
        self.run.attempts[self.i] = self.attempts

    def outcome(self) -> object:
        """The joined output, :class:`AllRestored`, or Failed."""
        run, step = self.run, self.step
        if self.error is not None:
            err = StepError(
                f"Step {step.name!r} could not read the items of {step.map_over!r}: "
                f"{type(self.error).__name__}: {self.error}",
                step=step.name,
                attempts=self.attempts,
            )
            err.__cause__ = self.error
            return Failed(err)
        if self.failed:
            return Failed(self._fan_out_error())
        if run.checkpointing is not None:
            run.checkpointing.mapped(self.i, self.digests)
        if self.ran == 0 and self.results:
            return AllRestored(self.results)
        return self.results

    def _fan_out_error(self) -> FanOutError:
        step, failed = self.step, dict(sorted(self.failed.items()))
        total = len(self.results)
        shown = "; ".join(f"[{k}] {_why(e)}" for k, e in list(failed.items())[:_SHOWN])
        more = f"; and {len(failed) - _SHOWN} more" if len(failed) > _SHOWN else ""
        indices = ", ".join(map(str, list(failed)[:20])) + (", ..." if len(failed) > 20 else "")
        saved = (
            " are checkpointed: running it again runs only the failed ones"
            if (self.run.checkpointing is not None)
            else " are not kept (no store): running it again runs every item"
        )
        err = FanOutError(
            f"Step {step.name!r} failed for {len(failed)} of {total} items (indices "
            f"{indices}): {shown}{more}. The items that succeeded{saved}.",
            step=step.name,
            attempts=self.attempts,
            failed=failed,
        )
        err.__cause__ = next(iter(failed.values()))
        return err
