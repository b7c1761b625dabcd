"""Batches: one flow over many inputs, concurrently, streaming, resumable, in bounded memory.

A :class:`Batch` pulls an input only when a run slot is free, so a generator of a million
inputs is never materialised: what is held at once is at most ``concurrency`` runs in flight
plus ``concurrency`` finished results the consumer has not taken yet. A batch runs its runs
through a :class:`Runner` (an open engine, today; a service or an executor later). Its runs live
in the engine's task group, which outlives any one ``async for``; leaving the loop early without
closing the batch (``async with`` or :meth:`Batch.aclose`) leaves them running until the engine
closes.
"""

from __future__ import annotations

import secrets
import sys
from collections import deque
from collections.abc import AsyncIterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

import anyio

from ._attempt import in_step, leave_step, slots_lent
from ._errors import AsyncflowError
from ._plan import compile_plan
from ._progress import ProgressBar
from ._result import RunResult, StepResult
from ._status import RunStatus, StepStatus
from .events import BatchProgress

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterable
    from types import TracebackType

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._flow import Flow
    from ._plan import Plan
    from .events import Event

__all__ = ["Batch", "BatchInput", "BatchStatistics", "BatchSummary", "Runner"]

#: One item of a batch: the run inputs, or a ``(run_id, inputs)`` pair.
BatchInput = Mapping[str, object] | tuple[str, Mapping[str, object]]

#: Finished runs the failure rate is measured over (the most recent ones).
RATE_WINDOW = 100
#: The failure rate is not judged before this many runs have finished.
RATE_MIN_RUNS = 20
#: Seconds between two BatchProgress events while a batch runs (one more comes at its end).
PROGRESS_INTERVAL = 0.1
#: Failed results a summary keeps, so that its memory stays bounded too.
SUMMARY_FAILURES_KEPT = 100


class Runner(Protocol):
    """What a :class:`Batch` needs from whoever runs its runs: an open engine, today."""

    def start_soon(self, fn: Callable[[], Coroutine[object, object, None]], /) -> None:
        """Run ``fn`` in a task that outlives the caller, until the runner closes.

        Raises:
            AsyncflowError: the runner is not open.
        """

    @property
    def emit(self) -> Callable[[Event], None] | None:
        """Where the batch's events go; ``None`` when nobody listens."""

    def run(
        self,
        flow: Flow,
        /,
        *,
        run_id: str | None,
        fail_fast: bool | None,
        inputs: Mapping[str, object],
    ) -> Awaitable[RunResult]:
        """Run ``flow`` once, as :meth:`Engine.run <asyncflow.Engine.run>` does."""


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """What a batch did, counted.

    Attributes:
        total: runs launched plus ``not_started`` (``None`` when the input count is unknown).
        succeeded: runs that ended SUCCEEDED, restored ones included.
        restored: runs whose every step came from a checkpoint.
        failed: runs that ended FAILED.
        not_started: inputs never launched because the failure budget was spent
            (``None`` when the inputs have no length and some were left).
        stopped: why launching stopped early, or ``None``.
        failures: the first failed results (at most 100).
        elapsed: seconds from the first launch to the last result.
    """

    total: int | None
    succeeded: int
    restored: int
    failed: int
    not_started: int | None
    stopped: str | None
    failures: tuple[RunResult, ...]
    elapsed: float

    @property
    def ok(self) -> bool:
        """True when every input ran and none failed."""
        return self.failed == 0 and self.stopped is None


@dataclass(frozen=True, slots=True)
class BatchStatistics:
    """Where a batch stands: what :meth:`Batch.statistics` returns.

    Attributes:
        done: runs finished, failed ones included.
        succeeded: runs that ended SUCCEEDED, restored ones included.
        failed: runs that ended FAILED.
        restored: runs whose every step came from a checkpoint.
        in_flight: runs started and not finished.
        total: the number of inputs, ``None`` when they have no length.
        rate: finished runs per second since the batch started.
        eta: seconds left at that rate, when ``total`` is known and the rate is not 0.
        finished: True once the batch has ended.
    """

    done: int
    succeeded: int
    failed: int
    restored: int
    in_flight: int
    total: int | None
    rate: float
    eta: float | None
    finished: bool


class Batch:
    """Runs of one flow over many inputs; iterate it for each :class:`RunResult` as it finishes.

    Made by :meth:`Engine.map`; the first ``async for`` (or :meth:`summary`) starts it.
    """

    def __init__(
        self,
        runner: Runner,
        flow: Flow,
        inputs: Iterable[BatchInput] | AsyncIterable[BatchInput],
        *,
        concurrency: int,
        max_failures: int | None,
        max_failure_rate: float | None,
        fail_fast: bool | None,
        name: str | None,
        progress: bool | None = None,
        total: int | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r}: give a whole number of at least 1.")
        if max_failures is not None and max_failures < 0:
            raise ValueError(f"max_failures={max_failures!r}: give 0 or more, or None.")
        if max_failure_rate is not None and not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(
                f"max_failure_rate={max_failure_rate!r}: give a fraction from 0.0 to 1.0, or None."
            )
        self._runner = runner
        self._flow = flow
        self._plan: Plan = compile_plan(flow)
        self._inputs = inputs
        if total is not None and (not isinstance(total, int) or total < 0):
            raise ValueError(f"total={total!r}: give the number of inputs (0 or more), or None.")
        self._total: int | None = total
        if total is None:
            try:
                self._total = len(inputs)  # type: ignore[arg-type]
            except TypeError:
                pass
        self._concurrency = concurrency
        self._max_failures = max_failures
        self._max_failure_rate = max_failure_rate
        self._fail_fast = fail_fast
        self.name = name or flow.name
        #: unique to this batch: its progress events carry it (names may repeat).
        self.id = f"{self.name}-{secrets.token_hex(4)}"
        # Made when the batch starts, so that a batch never iterated holds nothing open.
        self._send: MemoryObjectSendStream[RunResult] | None = None
        self._receive: MemoryObjectReceiveStream[RunResult] | None = None
        self._scope: anyio.CancelScope | None = None
        self._error: BaseException | None = None
        self._completed = False
        self._launched = 0
        self._in_flight = 0
        self._succeeded = 0
        self._restored = 0
        self._failed = 0
        self._recent: deque[bool] = deque(maxlen=RATE_WINDOW)
        self._stopped: str | None = None
        self._t0 = 0.0
        self._t1: float | None = None
        self._last_progress = -PROGRESS_INTERVAL
        if progress is None:
            progress = sys.stderr.isatty()
        self._bar = ProgressBar() if progress else None

    # -- consuming --------------------------------------------------------------------------

    def __aiter__(self) -> Batch:
        return self

    async def __anext__(self) -> RunResult:
        receive = self._start()
        try:
            if not in_step():
                return await receive.receive()
            # A step iterating over a batch gives back its engine slot while it waits.
            async with slots_lent():
                return await receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            receive.close()
            if self._error is not None:
                raise self._error from None
            if not self._completed:
                raise AsyncflowError(
                    f"Batch {self.name!r} was stopped before it finished (its engine closed or it "
                    f"was closed). Run it again with the same inputs to resume."
                ) from None
            raise StopAsyncIteration from None

    async def summary(self) -> BatchSummary:
        """Run the batch to the end (or consume the rest of it) and count what happened."""
        failures: list[RunResult] = []
        async for result in self:
            if result.status is RunStatus.FAILED and len(failures) < SUMMARY_FAILURES_KEPT:
                failures.append(result)
        return BatchSummary(
            total=self._total,
            succeeded=self._succeeded,
            restored=self._restored,
            failed=self._failed,
            not_started=self._not_started(),
            stopped=self._stopped,
            failures=tuple(failures),
            elapsed=(self._t1 or anyio.current_time()) - self._t0,
        )

    async def __aenter__(self) -> Batch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the runs still in flight and launch no more. Finished checkpoints stay."""
        if self._scope is not None:
            self._scope.cancel()
        if self._receive is not None:
            self._receive.close()
        await anyio.lowlevel.checkpoint()

    def statistics(self) -> BatchStatistics:
        """Where the batch stands now."""
        done = self._succeeded + self._failed
        elapsed = anyio.current_time() - self._t0 if self._receive is not None else 0.0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta: float | None = None
        if self._total is not None and rate > 0:
            eta = max(0, self._total - done - (self._not_started() or 0)) / rate
        return BatchStatistics(
            done=done,
            succeeded=self._succeeded,
            failed=self._failed,
            restored=self._restored,
            in_flight=self._in_flight,
            total=self._total,
            rate=rate,
            eta=eta,
            finished=self._t1 is not None,
        )

    # -- running ----------------------------------------------------------------------------

    def _not_started(self) -> int | None:
        if self._stopped is None:
            return 0 if self._t1 is not None else None
        return None if self._total is None else self._total - self._launched

    def _start(self) -> MemoryObjectReceiveStream[RunResult]:
        if self._receive is not None:
            return self._receive
        self._send, self._receive = anyio.create_memory_object_stream[RunResult](self._concurrency)
        self._t0 = anyio.current_time()
        self._runner.start_soon(self._drive)
        return self._receive

    async def _drive(self) -> None:
        # Started from inside a step, this task would inherit the step's slots; its runs are
        # the engine's own, not the step's (the step lends its slot while it waits for them).
        leave_step()
        slots = anyio.Semaphore(self._concurrency)
        send = self._send
        assert send is not None
        try:
            with send, anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as tg:
                    try:
                        if isinstance(self._inputs, AsyncIterable):
                            async for item in self._inputs:
                                if not await self._launch(tg, slots, item):
                                    break
                        else:
                            for item in self._inputs:
                                if not await self._launch(tg, slots, item):
                                    break
                    except Exception as exc:
                        # The inputs themselves failed: stop launching, let the runs in flight
                        # finish and deliver, then raise to the consumer.
                        self._error = exc
                self._completed = self._error is None
        finally:
            self._t1 = anyio.current_time()
            self._progress()

    async def _launch(self, tg: TaskGroup, slots: anyio.Semaphore, item: BatchInput) -> bool:
        run_id, inputs = self._parse(item)
        if self._over_budget():
            return False
        await slots.acquire()
        if self._over_budget():
            slots.release()
            return False
        tg.start_soon(self._one, slots, self._launched, run_id, inputs)
        self._launched += 1
        self._in_flight += 1
        return True

    def _parse(self, item: BatchInput) -> tuple[str | None, Mapping[str, object]]:
        if isinstance(item, Mapping):
            return None, item
        if (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], Mapping)
        ):
            return item[0], item[1]
        raise TypeError(
            f"Batch {self.name!r}: item {self._launched} is {type(item).__name__} {item!r:.80}; "
            f"give a mapping of run inputs or a (run_id, inputs) pair."
        )

    async def _one(
        self, slots: anyio.Semaphore, index: int, run_id: str | None, inputs: Mapping[str, object]
    ) -> None:
        try:
            try:
                result = await self._runner.run(
                    self._flow, run_id=run_id, fail_fast=self._fail_fast, inputs=inputs
                )
            except Exception as exc:
                # Bad inputs, a hostile run id, a run id of another flow, a failed store: this
                # item did not run. It is reported as such; the batch and the engine go on.
                result = self._not_run(run_id or f"{self.name}-item-{index}", inputs, exc)
            self._account(result)
            assert self._send is not None
            try:
                await self._send.send(result)
            except anyio.BrokenResourceError:
                pass  # the consumer closed the batch: nobody wants this result
        finally:
            slots.release()

    def _not_run(self, run_id: str, inputs: Mapping[str, object], exc: BaseException) -> RunResult:
        now = anyio.current_time()
        return RunResult(
            run_id=run_id,
            flow=self._plan.flow,
            status=RunStatus.FAILED,
            outputs={},
            steps={s.name: StepResult(s.name, StepStatus.SKIPPED) for s in self._plan.steps},
            started_at=now,
            finished_at=now,
            inputs=dict(inputs),
            error=exc,
        )

    def _account(self, result: RunResult) -> None:
        self._in_flight -= 1
        ok = result.status is RunStatus.SUCCEEDED
        if ok:
            self._succeeded += 1
            if result.restored:
                self._restored += 1
        else:
            self._failed += 1
        self._recent.append(ok)
        self._progress()

    def _over_budget(self) -> bool:
        if self._stopped is not None:
            return True
        if self._max_failures is not None and self._failed > self._max_failures:
            self._stopped = (
                f"{self._failed} runs failed, more than max_failures={self._max_failures}"
            )
        elif (
            self._max_failure_rate is not None
            and len(self._recent) >= RATE_MIN_RUNS
            and (rate := self._recent.count(False) / len(self._recent)) > self._max_failure_rate
        ):
            self._stopped = (
                f"{rate:.0%} of the last {len(self._recent)} runs failed, more than "
                f"max_failure_rate={self._max_failure_rate:g}"
            )
        return self._stopped is not None

    def _progress(self) -> None:
        emit = self._runner.emit
        if emit is None and self._bar is None:
            return
        now = anyio.current_time()
        if self._t1 is None and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        stats = self.statistics()
        # The event is the statistics with the batch's name and the time (rare: rate-limited).
        event = BatchProgress(batch=self.name, time=now, batch_id=self.id, **asdict(stats))
        if emit is not None:
            emit(event)
        if self._bar is not None:
            self._bar(event)
