"""Checkpoint stores: the CheckpointStore protocol and FileStore, a crash-safe directory.

FileStore keeps, under its directory::

    <dir>/<run_id>/manifest.json        flow name and fingerprint, run inputs, status, times
    <dir>/<run_id>/steps/<step>.json    run id, step, fingerprint of inputs and code, output
    <dir>/.journal/<segment>.log        records not yet compacted into the files above

Every file is one JSON record with ``"format"`` (``"asyncflow.manifest"`` or
``"asyncflow.step"``) and ``"version"`` (:data:`FORMAT_VERSION`).

Durability by group commit. A save appends its record to the engine's journal segment and
returns once a ``write`` + ``fsync`` covering it has finished; every save waiting at that moment
shares the one fsync, so throughput is bounded by records per fsync rather than fsyncs per
second. Each journal line is ``<crc32 hex> <record>`` and a newline: on recovery a line whose checksum does
not match, or a last line with no newline (a torn tail, from a crash mid-write), is dropped.

Compaction turns a sealed segment (full, or the engine closing, or left by a dead process) into
the per-run files: each temp file is written beside its target, then one ``syncfs`` makes all
of them durable at once (standing in for one fsync per file), then each is moved by ``os.replace``
onto its target, then a second ``syncfs`` makes the renames durable (standing in for the
directory fsyncs), and only then is the segment deleted. A crash at any point leaves the segment
in place, so the next open compacts it again; temp files left behind are removed then. Readers
of the files see the old version or the new one, never half. Where ``syncfs`` is not available,
each file and directory is fsynced instead.

A segment is locked (``flock``) by the engine writing it; an engine opening the directory
compacts every segment whose lock it can take, which means its writer is gone. So several
engines, in one process or many, may share a directory; a run should be resumed by one engine at
a time, and records of a live engine reach the files when it compacts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import json
import logging
import os
import re
import secrets
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import quote

import aiofiles
import aiofiles.os
import anyio

from ._codec import Codec, JsonCodec
from ._errors import CheckpointError, InvalidRunIdError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from contextlib import AbstractAsyncContextManager

    from aiofiles.threadpool.binary import AsyncFileIO
    from anyio.abc import ObjectReceiveStream, ObjectSendStream

T = TypeVar("T")

__all__ = [
    "FORMAT_VERSION",
    "CheckpointStore",
    "Discarded",
    "FileStore",
    "RunCheckpoints",
    "RunManifest",
    "StepCheckpoint",
    "validate_run_id",
]

logger = logging.getLogger("asyncflow")

#: The version written in every record; records of another version are moved aside.
FORMAT_VERSION = 1
MANIFEST_FORMAT = "asyncflow.manifest"
STEP_FORMAT = "asyncflow.step"
#: The longest run id: a file name is at most 255 bytes, and ``.corrupt-<n>`` must fit after it.
MAX_RUN_ID = 200
_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+=,~-]*")
_TMP_MARK = ".tmp-"
_JOURNAL_DIR = ".journal"


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` when it is a safe, plain name usable as a directory name.

    Raises:
        InvalidRunIdError: empty, too long, a path (a slash or backslash, ``..``), a leading dot, NUL or
            other characters outside ``A-Z a-z 0-9 _ . @ + = , ~ -``.
    """
    if not isinstance(run_id, str):
        raise InvalidRunIdError(
            f"A run id is a string; got {type(run_id).__name__} {run_id!r}.", run_id=str(run_id)
        )
    if _RUN_ID.fullmatch(run_id) and len(run_id) <= MAX_RUN_ID:
        return run_id
    if not run_id:
        problem = "is empty"
    elif len(run_id) > MAX_RUN_ID:
        problem = f"is {len(run_id)} characters long, over the limit of {MAX_RUN_ID}"
    elif run_id.startswith("."):
        problem = "starts with a dot (hidden files, '.' and '..' are not run ids)"
    elif "/" in run_id or "\\" in run_id:
        problem = "contains a path separator"
    elif "\x00" in run_id:
        problem = "contains a NUL byte"
    else:
        bad = sorted({c for c in run_id if not _RUN_ID.fullmatch("a" + c)})
        problem = f"contains {', '.join(map(repr, bad))}"
    raise InvalidRunIdError(
        f"Run id {run_id[:80]!r} {problem}. A run id names a directory of checkpoints: use up to "
        f"{MAX_RUN_ID} of A-Z a-z 0-9 _ . @ + = , ~ - and do not start with a dot, "
        f"e.g. 'doc-42'.",
        run_id=run_id,
    )


@dataclass(frozen=True, slots=True)
class RunManifest:
    """What a store keeps about a run as a whole.

    Attributes:
        run_id: the run's id.
        flow: the flow's name.
        flow_fingerprint: the flow's structure and code at the time of the run.
        inputs: the run inputs, as codec text (a JSON object).
        status: ``"running"``, ``"succeeded"`` or ``"failed"``.
        created_at: when the run first started, ISO 8601 UTC.
        updated_at: when this manifest was written, ISO 8601 UTC.
    """

    run_id: str
    flow: str
    flow_fingerprint: str
    inputs: str
    status: str
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class StepCheckpoint:
    """A succeeded step's output and its identity.

    Attributes:
        run_id: the run's id.
        step: the step's name.
        fingerprint: digest of the step's code and what it received (dependency outputs, the run
            inputs it takes); a checkpoint is used only when it matches.
        digest: digest of ``output``; dependents' fingerprints are built from it.
        output: the output as codec text.
    """

    run_id: str
    step: str
    fingerprint: str
    digest: str
    output: str


@dataclass(frozen=True, slots=True)
class Discarded:
    """A checkpoint that could not be used and was moved aside (or dropped, for a journal line)."""

    step: str | None
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunCheckpoints:
    """Everything a store holds for one run."""

    manifest: RunManifest | None = None
    steps: Mapping[str, StepCheckpoint] = field(default_factory=dict)
    discarded: tuple[Discarded, ...] = ()


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


# --- records -------------------------------------------------------------------------------------

_js = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _step_record(c: StepCheckpoint) -> str:
    # The output is codec text already: splice it in rather than parse and encode it again.
    return (
        f'{{"format":"{STEP_FORMAT}","version":{FORMAT_VERSION},"run_id":{_js(c.run_id)},'
        f'"step":{_js(c.step)},"fingerprint":{_js(c.fingerprint)},"digest":{_js(c.digest)},'
        f'"output":{c.output}}}'
    )


def _manifest_record(m: RunManifest) -> str:
    return (
        f'{{"format":"{MANIFEST_FORMAT}","version":{FORMAT_VERSION},"run_id":{_js(m.run_id)},'
        f'"flow":{_js(m.flow)},"flow_fingerprint":{_js(m.flow_fingerprint)},'
        f'"status":{_js(m.status)},"created_at":{_js(m.created_at)},'
        f'"updated_at":{_js(m.updated_at)},"inputs":{m.inputs}}}'
    )


class _BadRecord(ValueError):
    pass


def _parse_record(text: str) -> RunManifest | StepCheckpoint:
    """Parse one record; raise :class:`_BadRecord` saying what is wrong with it."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise _BadRecord(f"not valid JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") not in (MANIFEST_FORMAT, STEP_FORMAT):
        raise _BadRecord("not an asyncflow checkpoint (no asyncflow 'format' field)")
    if raw.get("version") != FORMAT_VERSION:
        raise _BadRecord(
            f"format version {raw.get('version')!r}; this asyncflow reads version {FORMAT_VERSION}"
        )
    try:
        if raw["format"] == STEP_FORMAT:
            return StepCheckpoint(
                run_id=_str(raw, "run_id"),
                step=_str(raw, "step"),
                fingerprint=_str(raw, "fingerprint"),
                digest=_str(raw, "digest"),
                output=_js(raw["output"]) if "output" in raw else _missing("output"),
            )
        inputs = raw.get("inputs")
        if not isinstance(inputs, dict):
            raise _BadRecord("field 'inputs' is missing or not an object")
        return RunManifest(
            run_id=_str(raw, "run_id"),
            flow=_str(raw, "flow"),
            flow_fingerprint=_str(raw, "flow_fingerprint"),
            inputs=_js(inputs),
            status=_str(raw, "status"),
            created_at=_str(raw, "created_at"),
            updated_at=_str(raw, "updated_at"),
        )
    except KeyError as exc:
        raise _BadRecord(f"field {exc} is missing") from exc


def _str(raw: dict[str, object], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise _BadRecord(f"field {key!r} is not a string")
    return value


def _missing(key: str) -> str:
    raise _BadRecord(f"field {key!r} is missing")


@functools.lru_cache(maxsize=4096)
def step_file_name(step: str) -> str:
    """The file name of a step's checkpoint: the name, percent-encoded where unsafe."""
    name = quote(step, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return f"{name}.json"


# --- blocking file work, run on the store's executor ---------------------------------------------


class _Sync:
    """Makes a batch of written files durable: one ``syncfs`` where available, else fsyncs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._syncfs: Callable[[int], int] | None = None
        name = ctypes.util.find_library("c")
        if name is not None and hasattr(os, "O_DIRECTORY"):
            fn = getattr(ctypes.CDLL(name, use_errno=True), "syncfs", None)
            if fn is not None:
                self._syncfs = fn

    def files(self, paths: list[Path]) -> None:
        if self._syncfs is not None:
            self._fs()
            return
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def dirs(self, dirs: set[Path]) -> None:
        if self._syncfs is not None:
            self._fs()
            return
        for d in dirs:
            fsync_dir(d)

    def _fs(self) -> None:
        assert self._syncfs is not None
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if self._syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs: {os.strerror(err)}")
        finally:
            os.close(fd)


def fsync_dir(path: Path) -> None:
    """Fsync a directory so the entries created or renamed in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_aside(path: Path) -> Path:
    n = 1
    while True:
        target = path.with_name(f"{path.name}.corrupt-{n}")
        if not target.exists():
            os.replace(path, target)
            return target
        n += 1


def _read_run(root: Path, run_id: str) -> RunCheckpoints:
    """Read a run's files, moving bad ones aside."""
    run_dir = root / run_id
    manifest: RunManifest | None = None
    steps: dict[str, StepCheckpoint] = {}
    discarded: list[Discarded] = []
    if not run_dir.is_dir():
        return RunCheckpoints()

    def bad(path: Path, step: str | None, reason: str) -> None:
        moved = _move_aside(path)
        discarded.append(Discarded(step, str(moved), reason))
        logger.warning("checkpoint %s is unusable (%s); moved to %s", path, reason, moved.name)

    mpath = run_dir / "manifest.json"
    files: list[tuple[Path, str | None]] = []
    # Temp files are skipped: they belong to a compaction, running or dead. A dead one's
    # segment is still in the journal, and the recovery that compacts it removes them.
    if mpath.is_file():
        files.append((mpath, None))
    steps_dir = run_dir / "steps"
    if steps_dir.is_dir():
        with os.scandir(steps_dir) as it:
            for e in it:
                if e.name.endswith(".json"):
                    files.append((Path(e.path), e.name))
    for path, fname in files:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            bad(path, None, "not UTF-8 text")
            continue
        try:
            rec = _parse_record(text)
        except _BadRecord as exc:
            bad(path, None, str(exc))
            continue
        if rec.run_id != run_id:
            bad(path, None, f"belongs to run {rec.run_id!r}, not {run_id!r}")
        elif fname is None:
            if isinstance(rec, RunManifest):
                manifest = rec
            else:
                bad(path, None, "a step checkpoint where the manifest should be")
        elif not isinstance(rec, StepCheckpoint):
            bad(path, None, "a manifest where a step checkpoint should be")
        elif step_file_name(rec.step) != fname:
            bad(path, rec.step, f"holds step {rec.step!r}, which is not what its name says")
        else:
            steps[rec.step] = rec
    return RunCheckpoints(manifest, steps, tuple(discarded))


def _compact(sync: _Sync, root: Path, records: dict[tuple[str, str], str]) -> None:
    """Write each (run id, file) record atomically under root; durable on return."""
    tmps: list[tuple[Path, Path]] = []
    dirs: set[Path] = set()
    token = secrets.token_hex(4)
    try:
        for (run_id, rel), text in records.items():
            target = root / run_id / rel
            parent = target.parent
            if parent not in dirs:
                parent.mkdir(parents=True, exist_ok=True)
                dirs.add(parent)
            tmp = parent / f"{target.name}{_TMP_MARK}{token}"
            with open(tmp, "wb") as f:
                f.write(text.encode("utf-8"))
                f.write(b"\n")
            tmps.append((tmp, target))
        sync.files([t for t, _ in tmps])
        for tmp, target in tmps:
            os.replace(tmp, target)
        tmps = []
        # Parents of new run directories hold new entries too.
        sync.dirs(dirs | {d.parent for d in dirs} | {root})
    finally:
        for tmp, _ in tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _read_segment(path: Path) -> tuple[list[str], int]:
    """Return a segment's valid records, and how many lines were dropped."""
    data = path.read_bytes()
    records: list[str] = []
    dropped = 0
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline, else a torn tail
    if torn:
        dropped += 1
    for line in lines:
        crc, _, body = line.partition(b" ")
        try:
            ok = int(crc, 16) == zlib.crc32(body) and len(crc) == 8
        except ValueError:
            ok = False
        if not ok:
            dropped += 1
            continue
        records.append(body.decode("utf-8"))
    return records, dropped


def _compact_and_remove(
    sync: _Sync, root: Path, records: dict[tuple[str, str], str], segment: Path
) -> None:
    """Compact a segment's records into files, then delete the segment."""
    # Temp files of an earlier compaction that died sit beside these targets.
    for run_id in {r for r, _ in records}:
        for d in (root / run_id, root / run_id / "steps"):
            if d.is_dir():
                with os.scandir(d) as it:
                    for e in it:
                        if _TMP_MARK in e.name:
                            os.unlink(e.path)
    _compact(sync, root, records)
    os.unlink(segment)
    fsync_dir(segment.parent)


def _recover(sync: _Sync, root: Path) -> None:
    """Compact the journal segments of engines that are gone: those whose lock is free."""
    jdir = root / _JOURNAL_DIR
    jdir.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(jdir)):
        path = jdir / name
        if not name.endswith(".log"):
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live engine is writing it
            lines, dropped = _read_segment(path)
            if dropped:
                logger.warning(
                    "journal %s: dropped %d line(s) with a bad checksum or a torn tail (a crash "
                    "mid-write: those records had not been acknowledged)",
                    path,
                    dropped,
                )
            records: dict[tuple[str, str], str] = {}
            for text in lines:
                try:
                    rec = _parse_record(text)
                    validate_run_id(rec.run_id)
                except (_BadRecord, InvalidRunIdError) as exc:
                    logger.warning("journal %s: dropped a record: %s", path, exc)
                    continue
                records[_record_key(rec)] = text
            _compact_and_remove(sync, root, records, path)
        finally:
            os.close(fd)


def _record_key(rec: RunManifest | StepCheckpoint) -> tuple[str, str]:
    if isinstance(rec, StepCheckpoint):
        return (rec.run_id, f"steps/{step_file_name(rec.step)}")
    return (rec.run_id, "manifest.json")


# --- the store -----------------------------------------------------------------------------------


class _Batch:
    __slots__ = ("done", "error", "lines", "records", "size")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.records: list[tuple[str, str, str]] = []
        self.size = 0
        self.done = anyio.Event()
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
        self._room = anyio.Event()
        self._failed: BaseException | None = None
        self._loads: list[tuple[str, _Load]] = []
        self._load_wake = anyio.Event()
        self._segment_bytes = segment_bytes
        self._root: Path | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._sync: _Sync | None = None
        # Events bind to the loop that first uses them: open() makes them again.
        self._batch = _Batch()
        self._wake = anyio.Event()
        self._closing = False
        self._journal: AsyncFileIO | None = None
        self._journal_path: Path | None = None
        self._journal_size = 0
        self._segment_no = 0
        #: every journal file still open (the current one, sealed ones awaiting compaction).
        self._journals: set[AsyncFileIO] = set()
        #: records in segments not yet compacted: run id -> file -> (segment, record text).
        self._index: dict[str, dict[str, tuple[int, str]]] = {}
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
        self._batch, self._wake = _Batch(), anyio.Event()
        self._room, self._load_wake = anyio.Event(), anyio.Event()
        try:
            try:
                self._root = root = await self._run(self._directory.resolve)
                self._sync = _Sync(root)
                await self._run(_recover, self._sync, root)
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
        path = root / _JOURNAL_DIR / f"{os.getpid()}-{secrets.token_hex(6)}.log"
        f = await aiofiles.open(path, "ab", buffering=0, executor=self._executor)
        self._journals.add(f)
        # Never blocks: the file is new. Held until the segment is compacted.
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        await _fsync_dir(path.parent, executor=self._executor)
        self._journal, self._journal_path, self._journal_size = f, path, 0

    async def _committer(self) -> None:
        """Group commit: write and fsync every pending record together, then wake their savers."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
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
                    for run_id, rel, text in batch.records:
                        files = index.get(run_id)
                        if files is None:
                            files = index[run_id] = {}
                        files[rel] = (segment, text)
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
                records = {
                    (run_id, rel): text
                    for run_id, files in self._index.items()
                    for rel, (seg, text) in files.items()
                    if seg == segment
                }
                try:
                    assert self._sync is not None
                    assert self._root is not None
                    await self._run(_compact_and_remove, self._sync, self._root, records, path)
                except OSError:
                    # The segment stays; the next open compacts it.
                    logger.exception("compacting journal %s failed; it is kept for recovery", path)
                else:
                    for run_id, rel in records:
                        files = self._index[run_id]
                        if files.get(rel, (0, ""))[0] == segment:
                            del files[rel]
                            if not files:
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

    def _enqueue(self, run_id: str, rel: str, text: str) -> _Batch:
        body = text.encode("utf-8")
        line = b"%08x %s\n" % (zlib.crc32(body), body)
        batch = self._batch
        batch.lines.append(line)
        batch.size += len(line)
        batch.records.append((run_id, rel, text))
        self._wake.set()
        return batch

    async def _append(self, run_id: str, rel: str, text: str) -> None:
        self._check_usable()
        while self._pending >= self._max_pending:
            if self._room.is_set():
                self._room = anyio.Event()
            await self._room.wait()
        self._pending += 1
        try:
            batch = self._enqueue(run_id, rel, text)
            await batch.done.wait()
        finally:
            self._pending -= 1
            if self._pending < self._max_pending:
                self._room.set()
        if batch.error is not None:
            raise CheckpointError(
                f"Could not save the checkpoint of run {run_id!r} ({rel}) in "
                f"{str(self.directory)!r}: {batch.error}. Free disk space or fix permissions, "
                f"then resume the run."
            ) from batch.error

    async def save_step(self, checkpoint: StepCheckpoint, /) -> None:
        """Durably record a step's output; returns once its journal record is fsynced.

        Raises:
            CheckpointError: the journal cannot be written.
        """
        await self._append(
            checkpoint.run_id, f"steps/{step_file_name(checkpoint.step)}", _step_record(checkpoint)
        )

    async def save_manifest(self, manifest: RunManifest, /) -> None:
        """Durably record a run's manifest; returns once its journal record is fsynced.

        Raises:
            CheckpointError: the journal cannot be written.
        """
        await self._append(manifest.run_id, "manifest.json", _manifest_record(manifest))

    def save_manifest_nowait(self, manifest: RunManifest, /) -> None:
        """Queue a run's manifest for the next commit.

        The journal is written in order, so any later save's commit covers it.

        Raises:
            CheckpointError: the store is not open or has failed.
        """
        self._check_usable()
        self._enqueue(manifest.run_id, "manifest.json", _manifest_record(manifest))

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        """Return a run's manifest and step checkpoints: files, overlaid by journal records.

        Loads waiting at the same moment share one trip to the store's thread pool. Bad files
        are moved aside to ``<name>.corrupt-<n>`` and reported in ``discarded``.

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
        for _, text in live.values():
            rec = _parse_record(text)
            if isinstance(rec, RunManifest):
                manifest = rec
            else:
                steps[rec.step] = rec
        return RunCheckpoints(manifest, steps, on_disk.discarded)

    async def _loader(self) -> None:
        """Group load: read every waiting run in one call on the executor."""
        while True:
            await self._load_wake.wait()
            self._load_wake = anyio.Event()
            loads, self._loads = self._loads, []
            if loads:
                assert self._root is not None
                results = await self._run(_read_runs, self._root, [r for r, _ in loads])
                for (_, load), result in zip(loads, results, strict=True):
                    load.result = result
                    load.done.set()
            if self._closing and not self._loads:
                return


class _Load:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: RunCheckpoints | OSError | None = None


def _read_runs(root: Path, run_ids: list[str]) -> list[RunCheckpoints | OSError]:
    results: list[RunCheckpoints | OSError] = []
    for run_id in run_ids:
        try:
            results.append(_read_run(root, run_id))
        except OSError as exc:
            results.append(exc)
    return results


_fsync = aiofiles.os.wrap(os.fsync)
_fsync_dir = aiofiles.os.wrap(fsync_dir)
