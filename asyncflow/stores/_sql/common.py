"""What the SQL stores share: rows to records, the group writer, and the lease rules.

A save does not write by itself: it joins the writer's current group, and the store's one writer
task commits the whole group in one transaction (one fsync for SQLite, one WAL flush for
Postgres), then wakes every saver in it. The same idea as FileStore's journal: throughput is
bounded by saves per commit, not commits per second.

Fencing happens inside that transaction: for each save that carries a lease, the run's current
epoch is read under the transaction's lock and a save whose lease is older is refused with
:class:`~asyncflow.LeaseLostError`, writing nothing for it; the rest of the group commits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from asyncflow._errors import CheckpointError, LeaseLostError
from asyncflow.stores._base import (
    Discarded,
    Lease,
    RunCheckpoints,
    RunInfo,
    RunManifest,
    StepCheckpoint,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

__all__ = [
    "Batch",
    "GroupWriter",
    "Save",
    "lease_lost",
    "manifest_from_row",
    "manifest_row",
    "step_from_row",
]

#: The columns of a run row, in the order the stores select and insert them.
RUN_COLUMNS = (
    "run_id",
    "flow",
    "flow_fingerprint",
    "inputs",
    "status",
    "created_at",
    "updated_at",
    "failed_steps",
    "details",
)
INFO_COLUMNS = ("run_id", "flow", "status", "created_at", "updated_at", "failed_steps")
STEP_COLUMNS = ("run_id", "step", "fingerprint", "digest", "output")

ManifestRow = tuple[str, str, str, str, str, str, str, str, str]
StepRow = tuple[str, str, str, str, str]


def manifest_row(m: RunManifest) -> ManifestRow:
    """The row a manifest is kept as: failed steps as a JSON array, the rest as they are."""
    failed = json.dumps(list(m.failed_steps), ensure_ascii=False)
    return (
        m.run_id,
        m.flow,
        m.flow_fingerprint,
        m.inputs,
        m.status,
        m.created_at,
        m.updated_at,
        failed,
        m.details,
    )


def step_row(c: StepCheckpoint) -> StepRow:
    return (c.run_id, c.step, c.fingerprint, c.digest, c.output)


def _failed_steps(text: str) -> tuple[str, ...]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError("failed_steps is not a JSON array of step names")
    return tuple(value)


def manifest_from_row(row: Sequence[object]) -> RunManifest | Discarded:
    """A manifest from its row, or why the row cannot be used (its inputs are not JSON, ...)."""
    run_id, flow, fp, inputs, status, created, updated, failed, details = (str(v) for v in row)
    try:
        json.loads(inputs)
        steps = _failed_steps(failed)
    except ValueError as exc:
        return Discarded(None, "", f"the manifest row of run {run_id!r} is malformed: {exc}")
    return RunManifest(run_id, flow, fp, inputs, status, created, updated, steps, details)


def info_from_row(row: Sequence[object]) -> RunInfo | None:
    run_id, flow, status, created, updated, failed = (str(v) for v in row)
    try:
        steps = _failed_steps(failed)
    except ValueError:
        return None  # left out of listings, as a store's unusable manifest is
    return RunInfo(run_id, flow, status, created, updated, steps)


def step_from_row(row: Sequence[object]) -> StepCheckpoint | Discarded:
    """A step checkpoint from its row, or why it cannot be used (its output is not JSON)."""
    run_id, step, fingerprint, digest, output = (str(v) for v in row)
    try:
        json.loads(output)
    except ValueError as exc:
        return Discarded(step, "", f"the output of step {step!r} is not JSON text: {exc}")
    return StepCheckpoint(run_id, step, fingerprint, digest, output)


class Fencing:
    """The fencing decisions of one group's transaction, save by save in order."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        #: runs whose manifest saved without waiting was refused, not yet told to a saver.
        self._pending: dict[str, LeaseLostError] = {}

    def refused(self, save: Save, current: Callable[[str], int]) -> bool:
        """Whether ``save`` is refused (``save.error`` says why); ``current(run_id)``: the epoch.

        A save is refused when its lease is older than the run's epoch, and an awaited save is
        also refused when a manifest of its run saved without waiting was, earlier in the group.
        """
        record = save.record
        assert record is not None
        if not save.nowait and (lost := self._pending.pop(record.run_id, None)) is not None:
            save.error = lost
            return True
        if save.lease is not None and (epoch := current(record.run_id)) > save.lease.epoch:
            save.error = lease_lost(save.lease, epoch)
            if save.nowait:
                self._pending[record.run_id] = save.error
            return True
        return False


def lease_lost(lease: Lease, current: int | None) -> LeaseLostError:
    now = f"at epoch {current}" if current is not None else "at a newer epoch"
    return LeaseLostError(
        f"Run {lease.run_id!r} was taken over: its lease is now {now}, this owner's "
        f"({lease.owner!r}) at {lease.epoch}. Nothing was written; the run continues in the "
        f"process that holds it.",
        run_id=lease.run_id,
        epoch=lease.epoch,
    )


@dataclass(slots=True)
class Save:
    """One record in a group: what to write, under which lease, and how it went."""

    record: RunManifest | StepCheckpoint | None
    lease: Lease | None = None
    nowait: bool = False
    error: BaseException | None = None
    #: instead of a record: work done in the group's transaction (a claim, a delete), given the
    #: store's connection; what it returns is ``result``.
    job: Callable[[Any], object] | None = None
    result: object = None


@dataclass(slots=True)
class Batch:
    """The saves that one transaction commits together."""

    saves: list[Save] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None


class GroupWriter:
    """Collects saves into groups and commits each group with ``commit`` in the writer task.

    ``commit(saves)`` writes them in one transaction, in order, setting ``save.error`` for a
    save it refuses (a lost lease) and raising for a failed transaction (every save of the
    group fails). A manifest saved without waiting whose group failed is written again ahead of
    the next save of its run, and one refused for a lost lease is reported by the next awaited
    save of its run: so no step is acknowledged without its run's manifest.
    """

    def __init__(
        self,
        commit: Callable[[list[Save]], Awaitable[None]],
        *,
        name: str,
        max_batch: int = 2000,
    ) -> None:
        self._commit = commit
        self._name = name
        self._max_batch = max_batch
        self._batch = Batch()
        self._inflight: Batch | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._running = False
        self._unsaved: dict[str, Save] = {}
        self._lost: dict[str, LeaseLostError] = {}

    def reset(self) -> None:
        """Fresh events for a new open (asyncio events bind to the loop that first waits)."""
        self._batch, self._wake = Batch(), asyncio.Event()
        self._closing = False
        self._unsaved.clear()
        self._lost.clear()

    def _check(self) -> None:
        if not self._running or self._closing:
            raise CheckpointError(
                f"{self._name} is not open: checkpoints are saved while the engine is open."
            )

    def submit(self, save: Save) -> Batch:
        """Add ``save`` to the current group; the batch to wait on."""
        self._check()
        batch = self._batch
        if save.record is None:
            batch.saves.append(save)
            self._wake.set()
            return batch
        run_id = save.record.run_id
        if not save.nowait and (lost := self._lost.pop(run_id, None)) is not None:
            if save.lease is None or save.lease.epoch <= lost.epoch:
                raise lost  # else: saved under a newer lease, which the old loss is not about
        if (ahead := self._unsaved.pop(run_id, None)) is not None:
            if not (isinstance(save.record, RunManifest) and save.nowait):
                batch.saves.append(ahead)
        batch.saves.append(save)
        self._wake.set()
        return batch

    async def save(self, record: RunManifest | StepCheckpoint, lease: Lease | None) -> None:
        """Write ``record`` in the next group and return once it is committed."""
        save = Save(record, lease)
        batch = self.submit(save)
        await batch.done.wait()
        if batch.error is not None:
            raise CheckpointError(
                f"{self._name} could not save {_what(record)}: {batch.error}"
            ) from batch.error
        if save.error is not None:
            raise save.error

    async def do(self, job: Callable[[Any], object]) -> object:
        """Run ``job`` in the next group's transaction and return its result."""
        save = Save(None, job=job)
        batch = self.submit(save)
        await batch.done.wait()
        if batch.error is not None:
            raise CheckpointError(f"{self._name} failed: {batch.error}") from batch.error
        if save.error is not None:
            raise save.error
        return save.result

    async def flush(self) -> None:
        """Wait until every save submitted so far is committed (or failed)."""
        if self._batch.saves:
            self._wake.set()
            await self._batch.done.wait()
        elif self._inflight is not None:
            await self._inflight.done.wait()

    async def run(self) -> None:
        """The writer task: commit group after group until closed, then commit what is left."""
        self._running = True
        try:
            while True:
                await self._wake.wait()
                self._wake = asyncio.Event()
                batch, self._batch = self._batch, Batch()
                if len(batch.saves) > self._max_batch:
                    self._batch.saves = batch.saves[self._max_batch :]
                    batch.saves = batch.saves[: self._max_batch]
                    self._wake.set()
                if batch.saves:
                    await self._write(batch)
                if self._closing and not self._batch.saves:
                    return
        finally:
            self._running = False
            # Savers of a group never committed (the block was cancelled) are told, not hung.
            if not self._batch.done.is_set():
                self._batch.error = CheckpointError(f"{self._name} closed before the save")
                self._batch.done.set()

    async def _write(self, batch: Batch) -> None:
        self._inflight = batch
        try:
            await self._commit(batch.saves)
        except Exception as exc:
            batch.error = exc
            for save in batch.saves:
                if save.nowait and isinstance(save.record, RunManifest):
                    self._unsaved.setdefault(save.record.run_id, save)
        else:
            # A lost lease of a manifest saved without waiting goes to the next awaited save of
            # its run: one in this group was told already (Fencing), a later one will be.
            for save in batch.saves:
                if isinstance(save.error, LeaseLostError):
                    if save.nowait:
                        self._lost[save.error.run_id] = save.error
                    else:  # an awaited save of the run, later in the group, was told
                        self._lost.pop(save.error.run_id, None)
        finally:
            self._inflight = None
            batch.done.set()

    def close(self) -> None:
        """Ask the writer to commit what is pending and stop."""
        self._closing = True
        self._wake.set()


def _what(record: RunManifest | StepCheckpoint) -> str:
    if isinstance(record, RunManifest):
        return f"the manifest of run {record.run_id!r}"
    return f"step {record.step!r} of run {record.run_id!r}"


def claimed(
    held: tuple[str, int, float] | None, run_id: str, owner: str, ttl: float, now: float
) -> Lease | None:
    """The lease ``owner`` gets on ``run_id`` given the lease row ``held`` (owner, epoch, expiry).

    None while another owner's lease is unexpired; the same owner renews at the same epoch;
    otherwise (no lease, expired, released) the epoch grows by one.
    """
    if held is None:
        return Lease(run_id, owner, 1, now + ttl)
    holder, epoch, expires_at = held
    if holder == owner:
        return Lease(run_id, owner, epoch, now + ttl)
    if holder and expires_at > now:
        return None
    return Lease(run_id, owner, epoch + 1, now + ttl)


def check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"ttl={ttl!r}: give the lease's length in seconds, above 0.")


#: Runs per page of list_runs().
LIST_BATCH = 256


async def listing(
    page: Callable[[str, tuple[str, ...]], Awaitable[Sequence[Sequence[Any]]]],
    mark: str,
    flow: str | None,
    status: str | None,
    since: str | None,
) -> AsyncIterator[RunInfo]:
    """list_runs() over SQL: pages in run id order, ``page(sql, params)`` fetching each.

    ``mark`` is the driver's placeholder; runs whose row cannot be used are left out.
    """
    where, args = filters(flow, status, since, mark)
    sql = (
        f"SELECT {', '.join(INFO_COLUMNS)} FROM asyncflow_runs WHERE run_id > {mark}{where} "
        f"ORDER BY run_id LIMIT {LIST_BATCH}"
    )
    after = ""
    while True:
        rows = await page(sql, (after, *args))
        for row in rows:
            if (info := info_from_row(row)) is not None:
                yield info
        if len(rows) < LIST_BATCH:
            return
        after = str(rows[-1][0])


class GroupSaving:
    """The save methods of a store whose saves go through a :class:`GroupWriter`."""

    _writer: GroupWriter

    async def save_manifest(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        """Durably record a run's manifest, replacing the previous one.

        Raises:
            LeaseLostError: ``lease`` is no longer the run's (nothing was written).
            CheckpointError: the store is not open, or the database failed.
        """
        await self._writer.save(manifest, lease)

    def save_manifest_nowait(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        """Record a run's manifest in the next commit, without waiting for it.

        A failure, or a lost lease, is raised by the next awaited save of the same run.

        Raises:
            CheckpointError: the store is not open.
        """
        self._writer.submit(Save(manifest, lease, nowait=True))

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        """Durably record a step's output, replacing the step's previous checkpoint.

        Raises:
            LeaseLostError: ``lease`` is no longer the run's (nothing was written).
            CheckpointError: the store is not open, or the database failed.
        """
        await self._writer.save(checkpoint, lease)


def filters(
    flow: str | None, status: str | None, since: str | None, mark: str
) -> tuple[str, tuple[str, ...]]:
    """The WHERE clauses of list_runs' filters (``mark`` is the placeholder) and their values."""
    where, args = "", []
    for column, op, value in (
        ("flow", "=", flow),
        ("status", "=", status),
        ("updated_at", ">=", since),
    ):
        if value is not None:
            where += f" AND {column} {op} {mark}"
            args.append(value)
    return where, tuple(args)


def loaded(run: Sequence[object] | None, rows: Sequence[Sequence[object]]) -> RunCheckpoints:
    """Checkpoints from a run row and its step rows; unusable ones go to ``discarded``."""
    discarded: list[Discarded] = []
    manifest = None
    if run is not None:
        got = manifest_from_row(run)
        if isinstance(got, RunManifest):
            manifest = got
        else:
            discarded.append(got)
    steps: dict[str, StepCheckpoint] = {}
    for row in rows:
        step = step_from_row(row)
        if isinstance(step, StepCheckpoint):
            steps[step.step] = step
        else:
            discarded.append(step)
    return RunCheckpoints(manifest, steps, tuple(discarded))


K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class Coalescer(Generic[K, R]):
    """Calls made at the same moment answered together: ``fetch(keys)`` once for all of them.

    ``await coalescer(key)`` waits for the next round of its :meth:`run` task, which calls
    ``fetch`` with every key asked for since the last round (each once) and hands each caller
    its key's result, or the exception ``fetch`` raised. The cost of a round trip is then paid
    per round, not per call: loads, claims and releases of many runs in one statement.
    """

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Mapping[K, R]]], *, name: str) -> None:
        self._fetch = fetch
        self._name = name
        self._waiting: dict[K, list[asyncio.Future[R]]] = {}
        self._wake = asyncio.Event()
        self._running = False

    async def __call__(self, key: K) -> R:
        if not self._running:
            raise CheckpointError(
                f"{self._name} is not open: checkpoints are saved while the engine is open."
            )
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(waiter)
        self._wake.set()
        return await waiter

    async def run(self) -> None:
        """Answer rounds of calls until cancelled; then fail the calls left waiting."""
        self._wake, self._running = asyncio.Event(), True
        try:
            while True:
                await self._wake.wait()
                self._wake = asyncio.Event()
                asked, self._waiting = self._waiting, {}
                try:
                    got = await self._fetch(list(asked))
                except Exception as exc:
                    for waiters in asked.values():
                        for w in waiters:
                            if not w.done():
                                w.set_exception(exc)
                    continue
                for key, waiters in asked.items():
                    for w in waiters:
                        if not w.done():  # its caller may have been cancelled
                            w.set_result(got[key])
        finally:
            self._running = False
            closed = CheckpointError(f"{self._name} closed before answering")
            for waiters in self._waiting.values():
                for w in waiters:
                    if not w.done():
                        w.set_exception(closed)
            self._waiting.clear()
