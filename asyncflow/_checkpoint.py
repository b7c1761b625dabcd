"""Checkpoint stores: the CheckpointStore protocol and FileStore, a crash-safe directory.

FileStore keeps, directly in its directory::

    <dir>/<run_id>.json          one run: its manifest (flow name and fingerprint, inputs, status,
                                 times) and each succeeded step's fingerprint, digest and output
    <dir>/.journal/<segment>.log records not yet compacted into the run files

A run file is indented JSON with ``"format": "asyncflow.run"`` and ``"version"``
(:data:`~asyncflow._records.FORMAT_VERSION`); see :mod:`asyncflow._records`. One file per run, in
one directory, because creating files is far cheaper in an existing directory than in new ones.
Run ids are validated (:func:`~asyncflow._records.validate_run_id`), so ``<run_id>.json`` never
leaves the directory nor collides with the store's own names: ``.journal``, temp files
``<run_id>.json.<hex>.tmp``, and files moved aside, ``<run_id>.json.corrupt-<n>``.

Durability by group commit. A save appends its record to the engine's journal segment and
returns once a ``write`` + ``fsync`` covering it has finished; every save waiting at that moment
shares the one fsync, so throughput is bounded by records per fsync rather than fsyncs per
second. Each journal line is ``<crc32 hex> <record>`` and a newline: on recovery a line whose
checksum does not match, or a last line with no newline (a torn tail, from a crash mid-write),
is dropped.

Compaction turns a sealed segment (full, or the engine closing, or left by a dead process) into
run files: for each run with records in the segment, the run file (if any) is read, the records
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
import logging
import os
import secrets
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import aiofiles
import aiofiles.os
import anyio

from ._codec import Codec, JsonCodec
from ._diskio import (
    JOURNAL_DIR,
    Records,
    Sync,
    compact_and_remove,
    fsync_dir,
    read_runs,
    recover,
    try_lock,
)
from ._errors import CheckpointError
from ._records import (
    RunCheckpoints,
    RunManifest,
    StepCheckpoint,
    manifest_record,
    record_key,
    step_record,
    validate_run_id,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from aiofiles.threadpool.binary import AsyncFileIO
    from anyio.abc import ObjectReceiveStream, ObjectSendStream

T = TypeVar("T")

__all__ = ["CheckpointStore", "FileStore"]

logger = logging.getLogger("asyncflow")


class CheckpointStore(Protocol):
    """Where checkpoints live. The engine opens it once and calls the rest while it is open.

    Implementations must make ``save_*`` durable before returning (a crash after the return loses
    nothing) and may be shared by many runs at once. Times, ids and text are plain data, so a
    store on another machine (a database, an object store) fits the same shape.
    """

    @property
    def codec(self) -> Codec:
        """The codec that turns outputs and inputs into the text this store keeps."""

    def open(self) -> AbstractAsyncContextManager[object]:
        """Acquire what the store needs (threads, connections, background tasks) for a block."""

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        """Return what is kept for ``run_id``; a run with nothing kept gives empty checkpoints.

        Records that cannot be used are reported in ``discarded`` and left out, never raised.
        """

    async def save_manifest(self, manifest: RunManifest, /) -> None:
        """Durably record a run's manifest, replacing the previous one."""

    def save_manifest_nowait(self, manifest: RunManifest, /) -> None:
        """Record a run's manifest without waiting.

        It must be durable no later than the next save of the same run returns, so a step
        checkpoint is never durable without its run's manifest.
        """

    async def save_step(self, checkpoint: StepCheckpoint, /) -> None:
        """Durably record a step's output, replacing the step's previous checkpoint."""


class _Batch:
    __slots__ = ("done", "error", "lines", "records", "size")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.records: list[RunManifest | StepCheckpoint] = []
        self.size = 0
        self.done = asyncio.Event()
        self.error: BaseException | None = None


_Sealed = tuple[int, Path, "AsyncFileIO"]


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
            Records of segments not yet compacted are also held in memory (for loads), so at
            most two sealed segments wait for compaction: past that, saves wait for it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        max_workers: int = 4,
        max_pending: int = 16_384,
        segment_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._directory = Path(directory)
        self._codec: Codec = codec if codec is not None else JsonCodec()
        self._max_workers = max_workers
        self._max_pending = max_pending
        self._pending = 0
        self._room = asyncio.Event()
        self._failed: BaseException | None = None
        self._loads: list[tuple[str, _Load]] = []
        self._load_wake = asyncio.Event()
        self._segment_bytes = segment_bytes
        self._root: Path | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._sync: Sync | None = None
        # Events bind to the loop that first uses them: open() makes them again. They are
        # asyncio's own (the store is asyncio-only, like aiofiles): every save waits on one, and
        # anyio's wrapper would add a layer to each wait.
        self._batch = _Batch()
        self._wake = asyncio.Event()
        self._closing = False
        self._journal: AsyncFileIO | None = None
        self._journal_path: Path | None = None
        self._journal_size = 0
        self._segment_no = 0
        #: every journal file still open (the current one, sealed ones awaiting compaction).
        self._journals: set[AsyncFileIO] = set()
        #: records in segments not yet compacted: run id -> step name (None: the manifest) ->
        #: (segment, record).
        self._index: dict[str, dict[str | None, tuple[int, RunManifest | StepCheckpoint]]] = {}
        self._compact_send: ObjectSendStream[_Sealed] | None = None

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
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[FileStore]:
        """Start the executor and the committer; on exit, commit and compact everything.

        If the block ends with an exception, pending records are still committed where possible
        and the journal is left for the next open to compact.

        Raises:
            CheckpointError: the directory cannot be created or its journal recovered.
        """
        if self._executor is not None:
            raise RuntimeError(f"{self!r} is already open; a FileStore is opened by one engine.")
        self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="asyncflow-ckpt")
        self._closing = False
        self._failed = None
        self._batch, self._wake = _Batch(), asyncio.Event()
        self._room, self._load_wake = asyncio.Event(), asyncio.Event()
        try:
            try:
                self._root = root = await self._run(self._directory.resolve)
                self._sync = Sync(root)
                await self._run(recover, self._sync, root)
                await self._new_segment()
            except OSError as exc:
                raise CheckpointError(
                    f"Cannot use checkpoint directory {str(self._directory)!r}: {exc}. Check "
                    f"that it is writable, or run without checkpoints: Engine(store=None)."
                ) from exc
            send, receive = anyio.create_memory_object_stream[_Sealed](1)
            self._compact_send = send
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._committer)
                tg.start_soon(self._compactor, receive)
                tg.start_soon(self._loader)
                try:
                    yield self
                finally:
                    # The committer commits what is pending, seals the segment and stops; the
                    # compactor then compacts it and stops.
                    self._closing = True
                    self._wake.set()
                    self._load_wake.set()
        finally:
            with anyio.move_on_after(10, shield=True):
                for journal in list(self._journals):
                    try:
                        await journal.close()
                    except OSError:
                        logger.warning("closing journal %s failed", journal.name, exc_info=True)
            self._journals.clear()
            self._journal = None
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            self._index.clear()

    async def _new_segment(self) -> None:
        root = self._root
        assert root is not None
        self._segment_no += 1
        path = root / JOURNAL_DIR / f"{os.getpid()}-{secrets.token_hex(6)}.log"
        f = await aiofiles.open(path, "ab", buffering=0, executor=self._executor)
        self._journals.add(f)
        # Never blocks: the file is new. Held until the segment is compacted.
        try_lock(f.fileno())
        await _fsync_dir(path.parent, executor=self._executor)
        self._journal, self._journal_path, self._journal_size = f, path, 0

    async def _committer(self) -> None:
        """Group commit: write and fsync every pending record together, then wake their savers."""
        while True:
            await self._wake.wait()
            self._wake = asyncio.Event()
            batch, self._batch = self._batch, _Batch()
            if batch.lines:
                journal = self._journal
                assert journal is not None
                try:
                    await journal.write(b"".join(batch.lines))
                    await _fsync(journal.fileno(), executor=self._executor)
                except OSError as exc:
                    batch.error = self._failed = exc
                else:
                    self._journal_size += batch.size
                    segment = self._segment_no
                    index = self._index
                    for rec in batch.records:
                        keys = index.get(rec.run_id)
                        if keys is None:
                            keys = index[rec.run_id] = {}
                        keys[record_key(rec)] = (segment, rec)
                batch.done.set()
            if self._closing and not self._batch.lines:
                await self._seal()
                assert self._compact_send is not None
                await self._compact_send.aclose()
                return
            if self._journal_size >= self._segment_bytes:
                await self._seal()
                await self._new_segment()

    async def _seal(self) -> None:
        assert self._compact_send is not None
        journal, path = self._journal, self._journal_path
        assert journal is not None
        assert path is not None
        self._journal = None
        await self._compact_send.send((self._segment_no, path, journal))

    async def _compactor(self, receive: ObjectReceiveStream[_Sealed]) -> None:
        async with receive:
            async for segment, path, journal in receive:
                records: Records = {}
                for run_id, keys in self._index.items():
                    recs = {key: rec for key, (seg, rec) in keys.items() if seg == segment}
                    if recs:
                        records[run_id] = recs
                try:
                    assert self._sync is not None
                    assert self._root is not None
                    await self._run(compact_and_remove, self._sync, self._root, records, path)
                except OSError:
                    # The segment stays; the next open compacts it.
                    logger.exception("compacting journal %s failed; it is kept for recovery", path)
                else:
                    for run_id, recs in records.items():
                        keys = self._index[run_id]
                        for key in recs:
                            if keys[key][0] == segment:
                                del keys[key]
                        if not keys:
                            del self._index[run_id]
                # Closing releases the segment's lock.
                self._journals.discard(journal)
                try:
                    await journal.close()
                except OSError:
                    logger.warning("closing journal %s failed", path, exc_info=True)

    def _check_usable(self) -> None:
        if self._executor is None or self._closing:
            raise CheckpointError(
                f"{self!r} is not open: checkpoints are saved while the engine is open."
            )
        if self._failed is not None:
            raise CheckpointError(
                f"{self!r} stopped saving checkpoints after a write to its journal failed "
                f"({self._failed}); after a failed fsync what reached the disk is unknown. Fix "
                f"the disk (space, permissions), then open a new engine and resume the runs."
            ) from self._failed

    def _enqueue(self, rec: RunManifest | StepCheckpoint, text: str) -> _Batch:
        body = text.encode("utf-8")
        line = b"%08x %s\n" % (zlib.crc32(body), body)
        batch = self._batch
        batch.lines.append(line)
        batch.size += len(line)
        batch.records.append(rec)
        self._wake.set()
        return batch

    async def _append(self, rec: RunManifest | StepCheckpoint, text: str) -> None:
        self._check_usable()
        while self._pending >= self._max_pending:
            if self._room.is_set():
                self._room = asyncio.Event()
            await self._room.wait()
        self._pending += 1
        try:
            batch = self._enqueue(rec, text)
            await batch.done.wait()
        finally:
            self._pending -= 1
            if self._pending < self._max_pending and not self._room.is_set():
                self._room.set()
        if batch.error is not None:
            what = f"step {rec.step!r}" if isinstance(rec, StepCheckpoint) else "manifest"
            raise CheckpointError(
                f"Could not save the checkpoint of run {rec.run_id!r} ({what}) in "
                f"{str(self.directory)!r}: {batch.error}. Free disk space or fix permissions, "
                f"then resume the run."
            ) from batch.error

    async def save_step(self, checkpoint: StepCheckpoint, /) -> None:
        """Durably record a step's output; returns once its journal record is fsynced.

        Raises:
            CheckpointError: the journal cannot be written.
        """
        await self._append(checkpoint, step_record(checkpoint))

    async def save_manifest(self, manifest: RunManifest, /) -> None:
        """Durably record a run's manifest; returns once its journal record is fsynced.

        Raises:
            CheckpointError: the journal cannot be written.
        """
        await self._append(manifest, manifest_record(manifest))

    def save_manifest_nowait(self, manifest: RunManifest, /) -> None:
        """Queue a run's manifest for the next commit.

        The journal is written in order, so any later save's commit covers it.

        Raises:
            CheckpointError: the store is not open or has failed.
        """
        self._check_usable()
        self._enqueue(manifest, manifest_record(manifest))

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
        live = dict(self._index.get(run_id, {}))
        load = _Load()
        self._loads.append((run_id, load))
        self._load_wake.set()
        await load.done.wait()
        if isinstance(load.result, BaseException):
            raise CheckpointError(
                f"Cannot read the checkpoints of run {run_id!r} in {str(self.directory)!r}: "
                f"{load.result}."
            ) from load.result
        on_disk = load.result
        assert on_disk is not None
        if not live:
            return on_disk
        manifest = on_disk.manifest
        steps = dict(on_disk.steps)
        for _, rec in live.values():
            if isinstance(rec, RunManifest):
                manifest = rec
            else:
                steps[rec.step] = rec
        return RunCheckpoints(manifest, steps, on_disk.discarded)

    async def _loader(self) -> None:
        """Group load: read every waiting run in one call on the executor."""
        while True:
            await self._load_wake.wait()
            self._load_wake = asyncio.Event()
            loads, self._loads = self._loads, []
            if loads:
                assert self._sync is not None
                assert self._root is not None
                ids = [r for r, _ in loads]
                results = await self._run(read_runs, self._sync, self._root, ids)
                for (_, load), result in zip(loads, results, strict=True):
                    load.result = result
                    load.done.set()
            if self._closing and not self._loads:
                return


class _Load:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.result: RunCheckpoints | OSError | None = None


_fsync = aiofiles.os.wrap(os.fsync)
_fsync_dir = aiofiles.os.wrap(fsync_dir)
