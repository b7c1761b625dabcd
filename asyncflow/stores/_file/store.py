"""FileStore: checkpoints in a directory, crash-safe, with group commit.

FileStore keeps, directly in its directory::

    <dir>/<run_id>.json          one run: its manifest (flow name and fingerprint, inputs, status,
                                 times, failed steps) and each succeeded step's fingerprint,
                                 digest and output
    <dir>/.journal/<segment>.log records not yet compacted into the run files
    <dir>/.journal/leases/<nn>   empty files whose byte-range locks are the runs' leases
                                 (one owner per run on this machine: see :mod:`.leases`)

A run file is indented JSON with ``"format": "asyncflow.run"`` and ``"version"``
(:data:`~.records.FORMAT_VERSION`); see :mod:`.records`. One file per run, in
one directory, because creating files is far cheaper in an existing directory than in new ones.
Run ids are validated (:func:`~asyncflow._identity.validate_run_id`), so ``<run_id>.json`` never
leaves the directory nor collides with the store's own names: ``.journal``, temp files
``<run_id>.json.<hex>.tmp``, and files moved aside, ``<run_id>.json.corrupt-<n>``.

Durability by group commit. A save appends its record to the engine's journal segment and
returns once a ``write`` + ``fsync`` covering it has finished; every save waiting at that moment
shares the one fsync, so throughput is bounded by records per fsync rather than fsyncs per
second. Each record is a frame with its sequence number, length and checksum (see
:mod:`.journal`): on recovery a frame whose checksum does not match, or one cut short (a torn
tail, from a crash mid-write), is dropped.

Compaction turns a sealed segment into run files, in the background, in steps of
:data:`COMPACT_BATCH` runs. A segment is sealed when full (or by :meth:`FileStore.compact`);
closing neither seals nor compacts: the engine's last segment, durable already, is left to the
next open, which takes every segment whose engine is gone (closed or dead), notes where each of
their records is (checking each frame, parsing none: see :func:`~.journal.index_segment`; loads
and listings see them, read back from the segment) and compacts them in the background; a close
stops after the compaction step in progress. The store's own records are noted the same way as
they are committed, so its memory holds about 1 KB a run in segments not compacted yet, never
the records themselves. In each step, for each run, the run file (if any) is read, the records
merged in (a manifest replaces the manifest, a step's checkpoint replaces that step's), and the
result written to a temp file beside it; then one ``syncfs`` makes all of them durable at once
(standing in for one fsync per file), then each is moved by ``os.replace`` onto its target, then
a second ``syncfs`` makes the renames durable (standing in for the directory fsync), and only
then is the segment deleted. A crash at any point leaves the segment in place, so the next open
compacts it again (merging is idempotent); temp files left behind are removed then. Readers of a
run file see the old version or the new one, never half. Where ``syncfs`` is not available, each
file and the directory are fsynced instead.

Bad run files. A file that cannot be used as a whole (not UTF-8 or JSON, another format, version
or run) is moved aside to ``<run_id>.json.corrupt-<n>`` and the run has no checkpoints. A sound
file with a malformed manifest or step entry loses just that entry: the file's bytes are first
kept in ``<run_id>.json.corrupt-<n>``, then the file is rewritten without it. Either way it is
reported in :attr:`RunCheckpoints.discarded`, never raised, never deleted.

Read, merge and replace must not interleave, so every writer of run files (compaction, the
repairs above, temp file cleanup) holds the directory's lock: a ``flock`` on ``.journal``.
A segment is locked (``flock``) by the engine writing it; an engine opening the directory
compacts every segment whose lock it can take, which means its writer is gone. So several
engines, in one process or many, may share a directory; a run should be resumed by one engine at
a time, and records of a live engine reach the files when it compacts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import aiofiles
import aiofiles.os
import anyio

from asyncflow._codec import Codec, JsonCodec
from asyncflow._errors import CheckpointError
from asyncflow._identity import validate_run_id
from asyncflow.stores._base import Lease, RunCheckpoints, RunInfo, RunManifest, StepCheckpoint

from .disk import JOURNAL_DIR, Sync
from .foreign import ForeignJournals, RunRecords
from .journal import (
    SEGMENT_MAGIC,
    Entry,
    Index,
    Recovered,
    RunInJournal,
    append_durably,
    compact_chunk,
    create_segment,
    delete_run,
    frame,
    recover,
    remove_segments,
    resolve,
    resolve_run,
    truncate,
)
from .leases import LEASES_DIR, MachineLeases, lock, unlock
from .records import manifest_record, record_key, step_record
from .runfiles import Listed, OnDisk, Records, list_run_ids, read_manifests, read_runs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

    from anyio.abc import ObjectReceiveStream, ObjectSendStream

T = TypeVar("T")

#: How many run files :meth:`FileStore.list_runs` reads per trip to the store's executor.
LIST_BATCH = 256
#: How many runs one step of a compaction merges into their files (one trip to the executor,
#: one hold of the directory's lock, one pair of syncfs): a closing store waits for one step.
COMPACT_BATCH = 256

__all__ = ["FileStore"]

logger = logging.getLogger("asyncflow")


class _CommitGroup:
    """The saves that one write and fsync of the journal will make durable together."""

    __slots__ = ("bodies", "done", "error", "records")

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.records: list[RunManifest | StepCheckpoint] = []
        self.done = asyncio.Event()
        self.error: BaseException | None = None


#: a segment to compact: its number in this store, and each of its files' path and descriptor
#: (one file for a segment this store wrote; every dead engine's, for the ones it recovered).
_Sealed = tuple[int, list[tuple[Path, int]]]


class FileStore:
    """Checkpoints in a directory, crash-safe, with group commit (see the module docstring).

    Args:
        directory: where checkpoints live; created on first open. Relative paths are resolved
            when the store opens. ``Engine()`` uses ``FileStore(".asyncflow")``.
        codec: turns outputs and inputs into JSON text; :class:`JsonCodec` by default.
        max_workers: threads of the store's own executor (file work never uses asyncio's
            default executor, which DNS lookups share).
        max_pending: the most saves waiting for a commit at once; more wait for room.
        segment_bytes: a journal segment this large is sealed and compacted in the background.
            Where each record of a segment not yet compacted is (for loads) is also held in
            memory, so at most two sealed segments wait for compaction: past that, saves wait
            for it. That bounds the store's memory, whatever the number of runs: about 1 KB a
            run a segment holds (8 MiB: some 4,000 runs of a 3-step flow). Larger segments
            leave more of a batch's compaction to the next open; smaller ones use less memory.
        lock_timeout: the longest wait, in seconds, for the directory's lock, which another
            engine holds while it compacts; past it, :class:`CheckpointError`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        max_workers: int = 4,
        max_pending: int = 16_384,
        segment_bytes: int = 8 * 1024 * 1024,
        lock_timeout: float = 60.0,
    ) -> None:
        if not lock_timeout > 0:
            raise ValueError(f"lock_timeout={lock_timeout!r}: give a number of seconds above 0.")
        self._directory = Path(directory)
        self._codec: Codec = codec if codec is not None else JsonCodec()
        self._max_workers = max_workers
        self._max_pending = max_pending
        self._lock_timeout = lock_timeout
        self._pending = 0
        self._room = asyncio.Event()
        self._loads: list[tuple[str, _Load, tuple[int, int] | None]] = []
        #: what a claim read for the load that follows it: run id -> (lease epoch, compactions
        #: then, the journal's records then, the read).
        self._prefetched: dict[str, tuple[int, int, RunRecords, _Load]] = {}
        #: how many compaction steps have moved records from the journal to run files.
        self._compactions = 0
        self._load_wake = asyncio.Event()
        #: set by the loader's next trip, which drops the locks released until then.
        self._unlocked = asyncio.Event()
        #: whether the loader runs (or is about to): claims, loads and releases go through it.
        self._loading = False
        self._segment_bytes = segment_bytes
        self._root: Path | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._sync: Sync | None = None
        # Events bind to the loop that first uses them: open() makes them again. They are
        # asyncio's own (the store is asyncio-only, like aiofiles): every save waits on one, and
        # anyio's wrapper would add a layer to each wait.
        self._group = _CommitGroup()
        self._wake = asyncio.Event()
        self._closing = False
        #: the segment being written: its descriptor (None: a new one is made at the next
        #: commit), path and size, the last sequence number used, and its number in this store.
        self._journal: int | None = None
        self._journal_path: Path | None = None
        self._journal_size = 0
        self._seq = 0
        self._segment_no = 0
        #: every segment still open (the current one, sealed ones awaiting compaction).
        self._journals: set[int] = set()
        #: records in segments not yet compacted: run id -> step name (None: the manifest) ->
        #: (segment, seq, record); those recovered at open are where to read them (a Ref).
        self._index: Index = {}
        #: "running" manifests queued without waiting whose commit failed: the next save of the
        #: run writes them first, so no step checkpoint is ever durable without its manifest.
        self._unsaved: dict[str, RunManifest] = {}
        self._compact_send: ObjectSendStream[_Sealed] | None = None
        #: segments sealed (or recovered) whose compaction has not ended yet.
        self._sealed: set[int] = set()
        #: set (and replaced) each time a compaction ends.
        self._compacted = asyncio.Event()
        #: segments whose compaction failed: kept on disk for the next open.
        self._failed: set[int] = set()
        #: :meth:`compact` asks the committer to seal the segment being written.
        self._seal_asked: asyncio.Event | None = None
        self._leases: MachineLeases | None = None
        #: the other engines' live segments in the directory, and this store's own segments.
        self._foreign: ForeignJournals | None = None
        self._own_segments: set[str] = set()

    def __repr__(self) -> str:
        return f"FileStore({str(self._directory)!r})"

    @property
    def codec(self) -> Codec:
        """The codec for outputs and inputs."""
        return self._codec

    @property
    def directory(self) -> Path:
        """The directory, absolute once the store is open."""
        return self._root or self._directory

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """Run blocking file work on the store's own executor, through aiofiles.

        Every blocking call of the store goes this one way. Not through aiofiles' file objects:
        they make one executor trip per call, and a commit does its write, fsync and check in
        one. The wrapper costs nothing over ``run_in_executor`` (measured: about 100 us a trip
        either way on this 2-core machine, the thread hop itself).
        """
        assert self._executor is not None
        result: T = await _blocking(fn)(*args, executor=self._executor)
        return result

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[FileStore]:
        """Take the journals of closed and dead engines, start the committer and the compactor.

        Where each of their records is is noted in memory (loads and listings see them, read
        back from the segment) and they are compacted in the background. On exit, pending records are committed (where possible, also when the block
        raised) and the compactor stops after the step it is in: what is not compacted yet is
        durable in the journal, for the next open to compact.

        Raises:
            CheckpointError: the directory cannot be created, locked in time or its journal
                recovered.
        """
        if self._executor is not None:
            raise RuntimeError(f"{self!r} is already open; a FileStore is opened by one engine.")
        self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="asyncflow-ckpt")
        self._closing = False
        self._group, self._wake = _CommitGroup(), asyncio.Event()
        self._room, self._load_wake = asyncio.Event(), asyncio.Event()
        self._unlocked = asyncio.Event()
        self._prefetched.clear()
        self._unsaved.clear()
        self._sealed.clear()
        self._failed.clear()
        self._compacted, self._seal_asked = asyncio.Event(), None
        sync: Sync | None = None
        recovered: _Sealed | None = None
        try:
            try:
                self._root = root = await self._run(self._directory.resolve)
                self._sync = sync = Sync(root, lock_timeout=self._lock_timeout)
                recovered = self._adopt(await self._run(recover, sync, root, self._segment_no + 1))
                await self._new_segment()
                self._leases = MachineLeases(root / JOURNAL_DIR / LEASES_DIR)
                self._foreign = ForeignJournals(root / JOURNAL_DIR, self._own_segments)
            except OSError as exc:
                raise CheckpointError(
                    f"Cannot use checkpoint directory {str(self._directory)!r}: {exc}. Check "
                    f"that it is writable, or run without checkpoints: Engine(store=None)."
                ) from exc
            send, receive = anyio.create_memory_object_stream[_Sealed](1)
            self._compact_send = send
            if recovered is not None:
                send.send_nowait(recovered)
            # Closed here too for a block that raised: its tasks are cancelled before they can.
            with send, receive:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._committer)
                    tg.start_soon(self._compactor, receive)
                    self._loading = True
                    tg.start_soon(self._loader)
                    try:
                        yield self
                    finally:
                        # The committer commits what is pending and stops; the compactor ends
                        # the step it is in and stops. What is not compacted yet is durable
                        # in the journal, which the next open compacts (in the background).
                        self._closing = True
                        self._wake.set()
                        self._load_wake.set()
        finally:
            if sync is not None:
                sync.abort.set()  # a thread still waiting for the directory's lock gives up
            with anyio.move_on_after(10, shield=True):
                for fd in list(self._journals):
                    await self._close_segment(fd)
            self._journals.clear()
            self._journal = None
            if self._leases is not None:
                self._leases.close()
                self._leases = None
            if self._foreign is not None:
                self._foreign.close()
                self._foreign = None
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            self._index.clear()

    def _adopt(self, recovered: Recovered) -> _Sealed | None:
        """Hold the records of dead engines' segments as this store's own, to compact later.

        Recovery numbered them as the store's next segment; the index is empty at open.
        """
        index, files = recovered
        if not files:
            return None
        self._segment_no += 1
        segment = self._segment_no
        assert not self._index
        self._index = index
        self._journals.update(fd for _, fd in files)
        # Held (locked) and read here: not other engines' live segments, to read again per load.
        self._own_segments.update(path.name for path, _ in files)
        self._sealed.add(segment)
        return segment, files

    async def _new_segment(self) -> None:
        root = self._root
        assert root is not None
        fd, path, floor = await self._run(create_segment, root)
        self._own_segments.add(path.name)
        self._segment_no += 1
        self._journals.add(fd)
        self._journal, self._journal_path = fd, path
        self._journal_size = len(SEGMENT_MAGIC)
        self._seq = max(self._seq, floor)

    async def _close_segment(self, fd: int) -> None:
        """Close a segment (releasing its lock) once it is compacted or the store closes."""
        self._journals.discard(fd)
        try:
            await self._run(os.close, fd)
        except OSError:
            logger.warning("closing a journal segment failed", exc_info=True)

    async def _committer(self) -> None:
        """Group commit: write and fsync every pending record together, then wake their savers.

        A commit that fails (a full disk, a failed fsync, the directory gone) fails exactly the
        saves of its group: the segment is cut back to what was acknowledged and sealed, and
        the next commit starts a new segment.
        """
        while True:
            await self._wake.wait()
            self._wake = asyncio.Event()
            group, self._group = self._group, _CommitGroup()
            if group.bodies:
                try:
                    await self._commit(group)
                except OSError as exc:
                    group.error = exc
                    self._requeue_manifests(group)
                    await self._abandon_segment()
                group.done.set()
            if self._closing and not self._group.bodies:
                # The segment stays as it is: durable, compacted at the next open. One with no
                # record goes (it is ours, locked: no other engine reads it meanwhile).
                if self._journal is not None and self._journal_size == len(SEGMENT_MAGIC):
                    assert self._journal_path is not None
                    with contextlib.suppress(OSError):
                        await self._run(os.unlink, self._journal_path)
                if self._seal_asked is not None:
                    self._seal_asked.set()
                assert self._compact_send is not None
                await self._compact_send.aclose()
                return
            asked, self._seal_asked = self._seal_asked, None
            if self._journal is not None and (
                self._journal_size >= self._segment_bytes
                or (asked is not None and self._journal_size > len(SEGMENT_MAGIC))
            ):
                await self._seal()
            if asked is not None:
                asked.set()

    def _requeue_manifests(self, failed: _CommitGroup) -> None:
        """Keep the "running" manifests of a failed commit ahead of their runs' next steps.

        A step of the same run already waiting for the next commit gets its manifest written
        just before it, in that commit; other runs' manifests wait for their next step save.
        """
        pending = {rec.run_id for rec in self._group.records}
        ahead: list[RunManifest] = []
        for rec in failed.records:
            if isinstance(rec, RunManifest) and rec.status == "running":
                if rec.run_id in pending:
                    ahead.append(rec)
                else:
                    self._unsaved.setdefault(rec.run_id, rec)
        if ahead:
            group = self._group
            group.bodies[:0] = [manifest_record(m).encode("utf-8") for m in ahead]
            group.records[:0] = ahead

    async def _commit(self, group: _CommitGroup) -> None:
        if self._journal is None:
            await self._new_segment()
        fd = self._journal
        assert fd is not None
        first = max(time.time_ns(), self._seq + 1)
        # Taken before the write: a number is used once, even by a commit that fails (frames of
        # it may survive a failed cut-back, and must not tie with a later record).
        self._seq = first + len(group.bodies) - 1
        frames = [frame(n, body) for n, body in enumerate(group.bodies, first)]
        data = b"".join(frames)
        # Write all, fsync, check the segment is still linked: one trip to the executor.
        await self._run(append_durably, fd, data)
        at = self._journal_size
        self._journal_size += len(data)
        segment = self._segment_no
        index = self._index
        # The index notes where each record is (a Ref), not the record: memory stays flat in
        # the runs a segment holds; loads, listings and the compaction read them back.
        path = str(self._journal_path)
        for n, rec, body, framed in zip(
            range(first, first + len(frames)), group.records, group.bodies, frames, strict=True
        ):
            keys = index.get(rec.run_id)
            if keys is None:
                keys = index[rec.run_id] = {}
            keys[record_key(rec)] = (
                segment,
                n,
                (path, at + len(framed) - len(body) - 1, len(body)),
            )
            at += len(framed)

    async def _abandon_segment(self) -> None:
        """After a failed commit: cut the segment back to its acknowledged frames and seal it."""
        fd = self._journal
        if fd is None:
            return
        try:
            await self._run(truncate, fd, self._journal_size)
        except OSError:
            # Recovery drops the torn frames by their checksums.
            logger.warning("journal %s: cutting off a failed write failed", self._journal_path)
        await self._seal()

    async def _seal(self) -> None:
        assert self._compact_send is not None
        fd, path = self._journal, self._journal_path
        assert fd is not None
        assert path is not None
        self._journal = None
        self._sealed.add(self._segment_no)
        await self._compact_send.send((self._segment_no, [(path, fd)]))

    async def _compactor(self, receive: ObjectReceiveStream[_Sealed]) -> None:
        """Compact sealed segments into run files, one at a time, in steps, until closing.

        A closing store stops after the step in progress: the segment stays, durable, and the
        next open compacts it (its records cannot replace newer ones: they are merged by
        sequence number, and runs already compacted are not written again).
        """
        async with receive:
            async for segment, files in receive:
                try:
                    if not self._closing:
                        await self._compact(segment, [path for path, _ in files])
                except OSError:
                    self._failed.add(segment)
                    logger.exception(
                        "compacting journal %s failed; it is kept for recovery",
                        ", ".join(str(path) for path, _ in files),
                    )
                finally:
                    self._sealed.discard(segment)
                    for _, fd in files:
                        await self._close_segment(fd)
                    self._compacted.set()
                    self._compacted = asyncio.Event()

    async def _compact(self, segment: int, paths: list[Path]) -> None:
        sync, root, index = self._sync, self._root, self._index
        assert sync is not None
        assert root is not None
        run_ids = [r for r, keys in index.items() if any(v[0] == segment for v in keys.values())]
        for start in range(0, len(run_ids), COMPACT_BATCH):
            if self._closing:
                return
            records: dict[str, dict[str | None, tuple[int, Entry]]] = {}
            for run_id in run_ids[start : start + COMPACT_BATCH]:
                keys = index.get(run_id, {})
                recs = {key: (n, rec) for key, (seg, n, rec) in keys.items() if seg == segment}
                if recs:
                    records[run_id] = recs
            await self._run(compact_chunk, sync, root, records)
            self._compactions += 1
            # Durable in the run files: loads read them there from now on.
            for run_id, recs in records.items():
                keys = index[run_id]
                for key in recs:
                    if keys[key][0] == segment:
                        del keys[key]
                if not keys:
                    del index[run_id]
        if not self._closing:
            await self._run(remove_segments, paths)

    async def compact(self) -> None:
        """Compact every record saved so far into the run files; return once that is durable.

        Not needed for durability (a save is durable when it returns) nor for reading (loads
        and listings see the journal): the store compacts in the background, and what a closing
        engine leaves is compacted after the next open. For tools that read the run files
        themselves, or that want the journal empty.

        Raises:
            CheckpointError: the store is not open, closed meanwhile, or a compaction failed
                (its segment is kept, and compacted at the next open).
        """
        self._check_usable()
        asked = self._seal_asked = self._seal_asked or asyncio.Event()
        self._wake.set()
        await asked.wait()
        target = self._segment_no
        while any(s <= target for s in self._sealed):
            await self._compacted.wait()
        self._check_usable()
        if self._failed:
            raise CheckpointError(
                f"Compacting the journal of {str(self.directory)!r} failed (see the log); its "
                f"records are durable in the journal and compacted at the next open."
            )

    def _check_usable(self) -> None:
        if self._executor is None or self._closing:
            raise CheckpointError(
                f"{self!r} is not open: checkpoints are saved while the engine is open."
            )

    def _enqueue(self, rec: RunManifest | StepCheckpoint, text: str) -> _CommitGroup:
        try:
            body = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CheckpointError(
                f"The codec {type(self._codec).__name__} gave text that is not valid Unicode for "
                f"run {rec.run_id!r} ({exc}); a codec must return encodable JSON text."
            ) from exc
        group = self._group
        if self._unsaved and isinstance(rec, StepCheckpoint):
            manifest = self._unsaved.pop(rec.run_id, None)
            if manifest is not None:
                group.bodies.append(manifest_record(manifest).encode("utf-8"))
                group.records.append(manifest)
        group.bodies.append(body)
        group.records.append(rec)
        self._wake.set()
        return group

    async def _append(
        self, rec: RunManifest | StepCheckpoint, text: str, lease: Lease | None
    ) -> None:
        self._check_usable()
        if lease is not None:
            assert self._leases is not None
            self._leases.fence(rec.run_id, lease)
        while self._pending >= self._max_pending:
            if self._room.is_set():
                self._room = asyncio.Event()
            await self._room.wait()
        self._pending += 1
        try:
            group = self._enqueue(rec, text)
            await group.done.wait()
        finally:
            self._pending -= 1
            if self._pending < self._max_pending and not self._room.is_set():
                self._room.set()
        if group.error is not None:
            what = f"step {rec.step!r}" if isinstance(rec, StepCheckpoint) else "manifest"
            raise CheckpointError(
                f"Could not save the checkpoint of run {rec.run_id!r} ({what}) in "
                f"{str(self.directory)!r}: {group.error}. Nothing of it was acknowledged; free "
                f"disk space or fix permissions, then resume the run."
            ) from group.error

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        """Durably record a step's output; returns once its journal record is fsynced.

        Raises:
            CheckpointError: the journal cannot be written (this save only: later saves try
                again, in a new segment).
            LeaseLostError: ``lease`` is not held by this store any more; nothing was written.
        """
        await self._append(checkpoint, step_record(checkpoint), lease)

    async def save_manifest(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        """Durably record a run's manifest; returns once its journal record is fsynced.

        Raises:
            CheckpointError: the journal cannot be written.
            LeaseLostError: ``lease`` is not held by this store any more; nothing was written.
        """
        self._unsaved.pop(manifest.run_id, None)
        await self._append(manifest, manifest_record(manifest), lease)

    def save_manifest_nowait(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        """Queue a run's manifest for the next commit.

        The journal is written in order, so any later save's commit covers it; if its commit
        fails, the run's next step save writes it again first. With a lease no longer held,
        nothing is queued and the run's next fenced save raises :class:`LeaseLostError`.

        Raises:
            CheckpointError: the store is not open.
        """
        self._check_usable()
        if lease is not None:
            assert self._leases is not None
            if not self._leases.fence_later(manifest.run_id, lease):
                return
        self._unsaved.pop(manifest.run_id, None)
        self._enqueue(manifest, manifest_record(manifest))

    async def claim_run(self, run_id: str, /, *, owner: str, ttl: float) -> Lease | None:
        """Take the run's lock in ``.journal/leases/`` for ``owner``; ``None`` while another holds it.

        The lease lasts while this store is open and its process lives (``expires_at`` is
        ``math.inf``; ``ttl`` is checked, not used): the kernel drops it when the process dies.
        It excludes owners on this machine only (see :mod:`.leases`).

        The lock is tried on the loader thread, in the trip that also reads the run's files for
        the :meth:`load_run` that follows a claim (claims and loads waiting at the same moment
        share it), so a claim costs no trip of its own.

        Raises:
            InvalidRunIdError: ``run_id`` is not a safe name.
            ValueError: ``ttl`` is not above 0.
            CheckpointError: the store is not open, or the lock file cannot be used.
        """
        validate_run_id(run_id)
        _check_ttl(ttl)
        leases = self._usable_leases()
        # The journal's records of the run, read back (a trip, only if it has some) before the
        # claim is decided: from the answer to the loader's trip nothing else may interleave.
        compactions = self._compactions  # before the snapshot: one during it counts too
        live = await self._live(run_id)
        answered, lease = leases.answer(run_id, owner)
        if answered:
            return lease
        try:
            place = leases.place(run_id, owner)
        except OSError as exc:
            raise CheckpointError(
                f"Cannot lock run {run_id!r} in {str(self.directory)!r}: {exc}."
            ) from exc
        load = await self._load(run_id, place)
        if isinstance(load.result, OSError) and load.claimed is None:
            raise CheckpointError(
                f"Cannot lock run {run_id!r} in {str(self.directory)!r}: {load.result}."
            ) from load.result
        if not load.claimed:
            return None
        self._check_usable()
        lease = leases.granted(run_id, owner)
        # Read after the lock was taken: what the previous owner saved is in it.
        self._prefetched[run_id] = (lease.epoch, compactions, live, load)
        return lease

    async def renew_leases(self, leases: Sequence[Lease], /, *, ttl: float) -> list[Lease | None]:
        """Each lease still held by this store (they do not expire); ``None`` for the others.

        Raises:
            ValueError: ``ttl`` is not above 0.
            CheckpointError: the store is not open.
        """
        _check_ttl(ttl)
        held = self._usable_leases()
        return [held.renew(lease) for lease in leases]

    async def release_run(self, lease: Lease, /) -> None:
        """Unlock the run, if this store holds ``lease``.

        Saves under ``lease`` are refused from the moment this is called; the lock itself is
        dropped by the loader's next trip (woken for it: releases waiting at the same moment
        share it, with any claims and loads), not on the event loop. Returns once it is.

        Raises:
            CheckpointError: the store is not open.
        """
        self._prefetched.pop(lease.run_id, None)
        leases = self._usable_leases()
        if not self._loading:  # its tasks were cancelled: nothing would drop the lock later
            leases.release(lease)
        elif leases.release_later(lease):
            dropped = self._unlocked
            self._load_wake.set()
            await dropped.wait()

    async def create_run_if_absent(self, manifest: RunManifest, /) -> bool:
        """Save ``manifest`` durably unless the run has one; whether it did.

        The check and the save hold the run's admission lock in ``.journal/leases/``, so engines of this
        machine sharing the directory admit a run once.

        Raises:
            InvalidRunIdError: the run id is not a safe name.
            CheckpointError: the store is not open, or it cannot be read or written.
        """
        run_id = manifest.run_id
        validate_run_id(run_id)
        leases = self._usable_leases()
        delay = 0.001
        while (fd := leases.try_admission(run_id)) is None:
            await anyio.sleep(delay)  # another engine admits it now: its answer is ours
            delay = min(delay * 2, 0.05)
        try:
            if (await self.load_run(run_id)).manifest is not None:
                return False
            await self.save_manifest(manifest)
            return True
        finally:
            os.close(fd)

    def _usable_leases(self) -> MachineLeases:
        self._check_usable()
        assert self._leases is not None
        return self._leases

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        """Return a run's manifest and step checkpoints: its run file, overlaid by journal records.

        Loads waiting at the same moment share one trip to the store's thread pool. A bad file
        is moved aside to ``<run_id>.json.corrupt-<n>``, a bad entry dropped from it after the
        file is kept there (see the module docstring); both are reported in ``discarded``.

        Raises:
            InvalidRunIdError: ``run_id`` is not a safe name.
            CheckpointError: the store is not open or the directory cannot be read.
        """
        validate_run_id(run_id)
        self._check_usable()
        # Snapshot the journal's records first: a compaction finishing during the read below
        # removes them from the index only after they are in the files.
        live = await self._live(run_id)
        fetched = self._prefetched.pop(run_id, None)
        holder = self._leases.held(run_id) if self._leases is not None else None
        if (
            fetched is not None
            and holder is not None
            and holder.epoch == fetched[0]
            and fetched[1] == self._compactions
        ):
            # Read by the claim, after its lock was taken, and no compaction has moved records
            # since: the claim's snapshot of the journal with this one (newer records win).
            load = fetched[3]
            for key, kept in fetched[2].items():
                now = live.get(key)
                if now is None or kept[0] > now[0]:
                    live[key] = kept
        else:
            load = await self._load(run_id, None)
        if isinstance(load.result, BaseException):
            raise CheckpointError(
                f"Cannot read the checkpoints of run {run_id!r} in {str(self.directory)!r}: "
                f"{load.result}."
            ) from load.result
        assert load.result is not None
        on_disk, seqs = load.result
        if load.foreign:
            # Records of other live engines; this store's own win a tie (the same record).
            for key, held in live.items():
                other = load.foreign.get(key)
                if other is None or held[0] >= other[0]:
                    load.foreign[key] = held
            live = load.foreign
        if not live:
            return on_disk
        manifest = on_disk.manifest
        steps = dict(on_disk.steps)
        for key, (seq, rec) in live.items():
            if seq < seqs.get(key, -1):
                continue  # the run file holds a newer record (another engine wrote the run)
            if isinstance(rec, RunManifest):
                manifest = rec
            else:
                steps[rec.step] = rec
        return RunCheckpoints(manifest, steps, on_disk.discarded)

    async def _live(self, run_id: str) -> RunRecords:
        """A run's records in segments not compacted yet, read back from their segments.

        The index notes where they are (a Ref); reading them takes a trip to the executor, only
        for a run that has some. Read before the run file is: a segment gone meanwhile was
        compacted into it.
        """
        keys = self._index.get(run_id, {})
        if any(isinstance(e, tuple) for _, _, e in keys.values()):
            entries = {key: (seq, e) for key, (_, seq, e) in keys.items()}
            return await self._run(resolve_run, run_id, entries)
        return {key: (seq, e) for key, (_, seq, e) in keys.items() if not isinstance(e, tuple)}

    async def _load(self, run_id: str, claim: tuple[int, int] | None) -> _Load:
        """Read the run's files in the loader's next trip; first take its lock, with ``claim``."""
        load = _Load()
        entry = (run_id, load, claim)
        if self._loading:
            self._loads.append(entry)
            self._load_wake.set()
        else:
            self._fail_loads([entry])
        await load.done.wait()
        return load

    async def _loader(self) -> None:
        """Group load: drop released locks, take claimed ones, read every waiting run: one trip.

        However it ends (closing, or cancelled with the store's tasks), nothing is left waiting
        for it: released locks are dropped here and then, claims and loads not answered fail.
        """
        loads: list[tuple[str, _Load, tuple[int, int] | None]] = []
        dropped = self._unlocked
        try:
            while True:
                await self._load_wake.wait()
                self._load_wake = asyncio.Event()
                loads, self._loads = self._loads, []
                assert self._leases is not None
                unlocks = self._leases.take_unlocks()
                dropped, self._unlocked = self._unlocked, asyncio.Event()
                if loads or unlocks:
                    ids = [r for r, _, _ in loads]
                    claims = [c for _, _, c in loads]
                    answers = await self._run(self._read_shared, ids, claims, unlocks)
                    for (_, load, _), got, result, recs in zip(loads, *answers, strict=True):
                        load.claimed, load.result, load.foreign = got, result, recs
                        load.done.set()
                    loads = []
                dropped.set()
                if self._closing and not self._loads:
                    return
        finally:
            self._loading = False
            if self._leases is not None:
                for fd, offset in self._leases.take_unlocks():
                    unlock(fd, offset)
            dropped.set()  # a trip cancelled on its way: its unlocks are the worker's now
            self._unlocked.set()
            self._fail_loads(loads + self._loads)
            self._loads = []

    def _fail_loads(self, loads: list[tuple[str, _Load, tuple[int, int] | None]]) -> None:
        for _, load, _ in loads:
            if not load.done.is_set():
                load.result = OSError("the store closed before the run was read")
                load.done.set()

    def _read_shared(
        self,
        run_ids: list[str],
        claims: list[tuple[int, int] | None],
        unlocks: list[tuple[int, int]],
    ) -> tuple[list[bool | None], list[OnDisk | OSError | None], list[RunRecords]]:
        """Drop ``unlocks``, take ``claims``, read the runs (those whose lock another holds: not).

        A run is read as its files and the records other live engines hold of it. Each claim's
        answer is True (taken), False (another holds it) or None (no claim, or the lock could
        not be tried: its result is the OSError).
        """
        assert self._foreign is not None
        assert self._sync is not None
        assert self._root is not None
        for fd, offset in unlocks:
            unlock(fd, offset)
        claimed: list[bool | None] = []
        errors: dict[int, OSError] = {}
        for i, claim in enumerate(claims):
            if claim is None:
                claimed.append(None)
                continue
            try:
                claimed.append(lock(*claim))
            except OSError as exc:
                claimed.append(None)
                errors[i] = exc
        wanted = [r for i, r in enumerate(run_ids) if claimed[i] is not False and i not in errors]
        results: list[OnDisk | OSError | None] = []
        foreign: list[RunRecords] = []
        try:
            # Other engines' records first: one they compact meanwhile is in the files then.
            others = iter(self._foreign.runs(wanted))
            read: Iterator[OnDisk | OSError] = iter(read_runs(self._sync, self._root, wanted))
        except OSError as exc:
            others = iter([{} for _ in wanted])
            read = iter([exc] * len(wanted))
        for i in range(len(run_ids)):
            if i in errors:
                results.append(errors[i])
                foreign.append({})
            elif claimed[i] is False:
                results.append(None)
                foreign.append({})
            else:
                foreign.append(next(others))
                results.append(next(read))
        return claimed, results, foreign

    async def list_runs(
        self, *, flow: str | None = None, status: str | None = None, since: str | None = None
    ) -> AsyncIterator[RunInfo]:
        """Yield every run with a manifest, by run id: run files, overlaid by journal records.

        Only those of ``flow``, with ``status``, updated at or after ``since``, when given.

        The directory's names are listed once, at the start; the run files are then read
        :data:`LIST_BATCH` at a time on the store's executor, so memory holds the run ids and
        one batch of manifests, never every run. A manifest still in the journal replaces the
        file's where it is newer; runs kept only in the journal are listed too. A file that
        cannot be used is logged and left out, and left in place (loading the run sets it aside
        and reports it).

        Raises:
            CheckpointError: the store is not open (or closed during the listing), or the
                directory cannot be read.
        """
        self._check_usable()
        root = self._root
        assert root is not None
        # Snapshot the journal's manifests first: a compaction finishing during the reads below
        # removes them from the index only after they are in the files.
        live: dict[str, tuple[int, Entry]] = {
            run_id: (keys[None][1], keys[None][2])
            for run_id, keys in self._index.items()
            if None in keys
        }
        assert self._foreign is not None
        try:
            for run_id, other in (await self._run(self._foreign.manifests)).items():
                if run_id not in live or other[0] > live[run_id][0]:
                    live[run_id] = other
            ids = await self._run(list_run_ids, root)
            if live:
                ids = sorted({*ids, *live})
            for start in range(0, len(ids), LIST_BATCH):
                batch = ids[start : start + LIST_BATCH]
                self._check_usable()
                # Manifests recovered at open are read back (first: see _read_listing).
                refs = {r: {None: held} for r in batch if (held := live.get(r)) and _is_ref(held)}
                found, read = await self._run(_read_listing, root, batch, refs)
                for run_id, recs in read.items():
                    if None in recs:
                        live[run_id] = recs[None]
                    else:
                        del live[run_id]  # compacted meanwhile: its file holds it
                for run_id, on_disk in zip(batch, found, strict=True):
                    manifest = on_disk[0] if on_disk is not None else None
                    if (
                        (held := live.get(run_id)) is not None
                        and isinstance(held[1], RunManifest)
                        and (on_disk is None or held[0] >= on_disk[1])
                    ):
                        manifest = held[1]
                    if (
                        manifest is not None
                        and (flow is None or manifest.flow == flow)
                        and (status is None or manifest.status == status)
                        and (since is None or manifest.updated_at >= since)
                    ):
                        yield RunInfo.from_manifest(manifest)
        except OSError as exc:
            raise CheckpointError(
                f"Cannot list the runs in {str(self.directory)!r}: {exc}."
            ) from exc

    async def delete_run(self, run_id: str, /) -> bool:
        """Delete a run's file (and bad copies kept beside it); return whether there were any.

        Refused while a journal segment still holds a record of the run, this store's own or
        another engine's: compacting it would bring the run back. Segments this store is
        compacting (its sealed ones, and those of closed or dead engines it took at open) are
        waited for; the one it is writing, or another open engine's, reach the run files once
        compacted (after that engine closes, at the next open); delete the run after that.

        Raises:
            InvalidRunIdError: ``run_id`` is not a safe name.
            CheckpointError: the store is not open, the run is still in a journal, or the
                directory cannot be changed.
        """
        validate_run_id(run_id)
        self._check_usable()
        # Records of the run in a segment being compacted (a dead engine's, recovered at open,
        # or a sealed one of this store) are in the run file once that ends.
        while (keys := self._index.get(run_id)) and any(
            v[0] in self._sealed for v in keys.values()
        ):
            await self._compacted.wait()
            self._check_usable()
        assert self._sync is not None
        assert self._root is not None
        try:
            return await self._run(delete_run, self._sync, self._root, run_id)
        except RunInJournal as exc:
            raise CheckpointError(
                f"Run {run_id!r} still has records in the journal segment {exc.args[0]} of "
                f"{str(self.directory)!r}, written by an engine that is open (or died before "
                f"compacting it); delete the run once that engine has closed."
            ) from None
        except OSError as exc:
            raise CheckpointError(
                f"Cannot delete run {run_id!r} in {str(self.directory)!r}: {exc}."
            ) from exc


def _read_listing(
    root: Path, run_ids: list[str], refs: dict[str, dict[str | None, tuple[int, Entry]]]
) -> tuple[list[Listed | None], Records]:
    """Journal manifests recovered at open (read back first), then the runs' files' manifests."""
    read = resolve(refs)
    return read_manifests(root, run_ids), read


def _is_ref(held: tuple[int, Entry]) -> bool:
    return isinstance(held[1], tuple)


class _Load:
    __slots__ = ("claimed", "done", "foreign", "result")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.claimed: bool | None = None
        self.result: OnDisk | OSError | None = None
        self.foreign: RunRecords = {}


@functools.cache
def _blocking(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """``fn`` as a coroutine function that runs it on an executor (aiofiles' wrapper), once."""
    return aiofiles.os.wrap(fn)


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"ttl={ttl!r}: give a lease's time to live in seconds, above 0.")
