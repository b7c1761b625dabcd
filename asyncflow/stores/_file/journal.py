r"""Blocking file work of FileStore, run on the store's own executor, never on the event loop.

See :mod:`.store` for the layout and what is durable when.

Journal segments. A segment starts with :data:`SEGMENT_MAGIC`; each record is a frame::

    #<seq hex> <length hex> <crc32 hex>\n<body: length bytes>\n

The checksum covers ``<seq hex> <length hex>`` and the body, so framing never depends on the
codec's text (which may hold newlines), and a frame is used only when all of it is intact. After
a bad frame (a torn tail, flipped bits) reading resumes at the next frame that checks out.
Segments without the magic were written before frames (one ``<crc32> <record>`` line each) and
are read line by line, their records numbered 0.

Sequence numbers. Every record has one: the wall clock in nanoseconds, but always above the
engine's previous record and above :data:`SEQUENCE_FILE` (which compaction raises past every
number it writes into run files), so they grow in write order within an engine, across
restarts, and across engines on one folder whose writes are ordered in time. Run files keep
each entry's number, and a record replaces an entry only when it is not older: replay order
does not matter, and an old segment replayed after newer run files changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import re
import secrets
import stat
import threading
import time
import zlib
from typing import TYPE_CHECKING

from asyncflow._errors import InvalidRunIdError
from asyncflow._identity import validate_run_id
from asyncflow.stores._base import Discarded, RunCheckpoints, RunManifest, StepCheckpoint

from .records import (
    BadRecord,
    RunFile,
    parse_record,
    parse_run_file,
    record_key,
    run_file_text,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = [
    "JOURNAL_DIR",
    "BadEntry",
    "LockTimeout",
    "Records",
    "Sync",
    "append_durably",
    "compact_and_remove",
    "create_segment",
    "frame",
    "fsync_dir",
    "read_runs",
    "recover",
    "run_path",
    "truncate",
    "try_lock",
]

logger = logging.getLogger("asyncflow")

try:
    import fcntl

    flock: Callable[[int, int], None] | None = fcntl.flock
    LOCK_FLAGS = fcntl.LOCK_EX | fcntl.LOCK_NB
except ImportError:  # Windows: no flock; one engine per directory there
    flock, LOCK_FLAGS = None, 0

RUN_SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
#: ``<run_id>.json.<8 hex>.tmp``: ends in ``.tmp``, where every run file ends in ``.json``.
TEMP_NAME = re.compile(r".+\.json\.[0-9a-f]{8}\.tmp")
JOURNAL_DIR = ".journal"
SEGMENT_SUFFIX = ".log"
#: A segment being created: locked, then renamed to ``.log``, so no other engine's recovery can
#: see it unlocked. One left by a crash (its lock free) is removed by recovery.
NEW_SEGMENT_SUFFIX = ".log.new"
SEGMENT_MAGIC = b"asyncflow-journal 2\n"
#: In the journal directory: a number above every sequence number written into a run file.
SEQUENCE_FILE = "sequence"
SEQUENCE_TEMP = re.compile(r"sequence\.[0-9a-f]{8}\.tmp")
#: The largest run file or segment read; a larger one is moved aside, never read into memory.
MAX_FILE_BYTES = 1 << 30
_FRAME_HEADER = re.compile(rb"#([0-9a-f]{1,16}) ([0-9a-f]{1,8}) ([0-9a-f]{8})\n")
_OPEN_READ = (
    os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False when another holds it.

    The lock belongs to the open file, so it is released when the file is closed or its
    process dies (SIGKILL included). Without ``fcntl`` (Windows) there is no lock.
    """
    if flock is None:
        return True
    try:
        flock(fd, LOCK_FLAGS)
    except BlockingIOError:
        return False
    return True


class LockTimeout(OSError):
    """The directory's lock was not had in time, or the store closed while waiting for it."""


class BadEntry(Exception):
    """A name in the store that cannot be read as a file of ours (a directory, pipe, link, ...)."""


class Sync:
    """Makes a batch of written files durable: one ``syncfs`` where available, else fsyncs.

    It also holds the directory's lock, which every writer of run files takes (see :meth:`lock`).

    Args:
        root: the store's directory.
        lock_timeout: the longest wait for the directory's lock, in seconds.
    """

    def __init__(self, root: Path, *, lock_timeout: float = 60.0) -> None:
        self.root = root
        self.lock_timeout = lock_timeout
        #: set when the store closes: waits for the lock end at once.
        self.abort = threading.Event()
        self._threads = threading.Lock()
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

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's lock: writers of run files read, merge and replace them under it.

        A thread lock within this store, and a ``flock`` on the journal directory across stores
        and processes (a lock that a dead process releases). Blocks, at most ``lock_timeout``
        seconds, and ends early once :attr:`abort` is set: call it on the executor.

        Raises:
            LockTimeout: the lock was not had in time (another engine holds it: compacting, or
                stopped) or the store is closing.
        """
        deadline = time.monotonic() + self.lock_timeout
        while not self._threads.acquire(timeout=0.05):
            self._check_wait(deadline)
        try:
            if flock is None:
                yield
                return
            fd = os.open(self.root / JOURNAL_DIR, os.O_RDONLY)
            try:
                pause = 0.001
                while True:
                    try:
                        flock(fd, LOCK_FLAGS)
                        break
                    except BlockingIOError:
                        self._check_wait(deadline)
                        self.abort.wait(pause)
                        pause = min(pause * 2, 0.05)
                yield
            finally:
                os.close(fd)
        finally:
            self._threads.release()

    def _check_wait(self, deadline: float) -> None:
        if self.abort.is_set():
            raise LockTimeout(
                errno.EINTR, f"the store closed while waiting for the lock of {self.root}"
            )
        if time.monotonic() >= deadline:
            raise LockTimeout(
                errno.ETIMEDOUT,
                f"another engine has held the lock of {self.root} for over {self.lock_timeout:g} s "
                f"(a compaction, or a process that is stopped: find it with "
                f"'fuser {self.root / JOURNAL_DIR}'); let it finish or end it, or raise "
                f"FileStore(lock_timeout=...)",
            )

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


def run_path(root: Path, run_id: str) -> Path:
    """The run file of a (validated) run id."""
    return root / f"{run_id}{RUN_SUFFIX}"


def is_temp(name: str) -> bool:
    """Whether ``name`` is a temp file of this store; no run file's name is one."""
    return TEMP_NAME.fullmatch(name) is not None


def temp_path(target: Path, token: str) -> Path:
    return target.with_name(f"{target.name}.{token}{TMP_SUFFIX}")


def aside_path(path: Path) -> Path:
    n = 1
    while True:
        target = path.with_name(f"{path.name}.corrupt-{n}")
        if not os.path.lexists(target):
            return target
        n += 1


def move_aside(path: Path) -> Path:
    """Rename ``path`` (a file, directory, pipe or link: never followed) to ``.corrupt-<n>``."""
    target = aside_path(path)
    os.replace(path, target)
    return target


def copy_aside(path: Path, data: bytes) -> Path:
    """Keep ``data`` (a run file's bad bytes) in a new ``.corrupt-<n>`` file beside ``path``."""
    while True:
        target = aside_path(path)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        return target


def read_entry(path: Path, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """Read a file of the store; ``None`` when there is none.

    Never follows a symbolic link, never blocks on a pipe, never reads more than ``limit``.

    Raises:
        BadEntry: the name is not a regular file of at most ``limit`` bytes.
    """
    try:
        fd = os.open(path, _OPEN_READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise BadEntry("a symbolic link, which the store never follows") from None
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):
            raise BadEntry("a socket or device, not a file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a pipe, socket or device"
            raise BadEntry(f"{kind}, not a regular file")
        if st.st_size > limit:
            raise BadEntry(f"{st.st_size} bytes, over the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(limit + 1 - size, 1 << 24) or 1):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise BadEntry(f"over {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; a short write is continued, and one that cannot be is an error."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, "short write: no space left on device")
        view = view[n:]


def decode(data: bytes, run_id: str) -> RunFile:
    """Parse a run file's bytes; raise :class:`BadRecord` when it cannot be used as a whole."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord("not UTF-8 text") from None
    return parse_run_file(text, run_id)


#: What a run file holds, and each entry's sequence number.
OnDisk = tuple[RunCheckpoints, dict[str | None, int]]


def read_run(sync: Sync, root: Path, run_id: str) -> OnDisk:
    """Read a run's file; a bad file is moved aside, a bad entry kept aside and dropped.

    Temp files are never read: they belong to a compaction, running or dead. A dead one's
    segment is still in the journal, and the recovery that compacts it removes them.
    """
    path = run_path(root, run_id)
    try:
        data = read_entry(path)
    except BadEntry:
        pass
    else:
        if data is None:
            return RunCheckpoints(), {}
        try:
            run = decode(data, run_id)
        except BadRecord:
            pass
        else:
            if not run.bad:
                return RunCheckpoints(run.manifest, run.steps), run.seqs
    # Repairs write the file, so they wait for compactions (which rewrite it too) to finish.
    with sync.lock():
        try:
            data = read_entry(path)
            if data is None:
                return RunCheckpoints(), {}
            run = decode(data, run_id)
        except (BadEntry, BadRecord) as exc:
            moved = move_aside(path)
            sync.dirs({root})
            logger.warning("checkpoint %s is unusable (%s); moved to %s", path, exc, moved.name)
            return RunCheckpoints(discarded=(Discarded(None, str(moved), str(exc)),)), {}
        if not run.bad:
            return RunCheckpoints(run.manifest, run.steps), run.seqs
        # Keep the sound entries in place: the run restores them and does not save them again.
        kept = copy_aside(path, data)
        write_atomically(path, run_file_text(run_id, run.manifest, run.steps, run.seqs), kept)
        discarded = tuple(Discarded(step, str(kept), reason) for step, reason in run.bad)
        for d in discarded:
            logger.warning(
                "checkpoint %s: %s; dropped, the file is kept in %s", path, d.reason, kept
            )
        return RunCheckpoints(run.manifest, run.steps, discarded), run.seqs


def write_atomically(path: Path, text: str, also_sync: Path) -> None:
    """Replace ``path`` by ``text`` durably; ``also_sync`` is fsynced with it."""
    tmp = temp_path(path, secrets.token_hex(4))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(also_sync, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


Record = RunManifest | StepCheckpoint
#: records to compact: run id -> (a step's name, or None for the manifest) -> (seq, the latest
#: record).
Records = dict[str, dict[str | None, tuple[int, Record]]]


def merge(records: Records, seq: int, rec: Record) -> None:
    """Keep ``rec`` in ``records`` unless a newer record of the same entry is there."""
    recs = records.get(rec.run_id)
    if recs is None:
        recs = records[rec.run_id] = {}
    key = record_key(rec)
    held = recs.get(key)
    if held is None or seq >= held[0]:
        recs[key] = (seq, rec)


def read_sequence(jdir: Path) -> int:
    """The number every new sequence number must exceed; 0 when there is none (or it is bad)."""
    try:
        data = read_entry(jdir / SEQUENCE_FILE, limit=64)
        return int(data) if data is not None else 0
    except (BadEntry, ValueError) as exc:
        logger.warning("journal %s: ignored a bad %s file (%s)", jdir, SEQUENCE_FILE, exc)
        return 0


def compact(sync: Sync, root: Path, records: Records) -> None:
    """Merge each run's records into its run file, atomically; durable on return.

    A record replaces a run file's entry only when it is not older (by sequence number). The
    sequence file is raised past every number written, in the same atomic step. The caller
    holds ``sync.lock()``: the run files are read, merged and replaced.
    """
    tmps: list[tuple[Path, Path]] = []
    kept: list[Path] = []
    token = secrets.token_hex(4)
    top = 0
    try:
        for run_id, recs in records.items():
            target = run_path(root, run_id)
            manifest: RunManifest | None = None
            steps: dict[str, StepCheckpoint] = {}
            seqs: dict[str | None, int] = {}
            try:
                data = read_entry(target)
            except BadEntry as exc:
                moved = move_aside(target)
                logger.warning("checkpoint %s is %s; moved to %s", target, exc, moved.name)
                data = None
            if data is not None:
                try:
                    run = decode(data, run_id)
                except BadRecord as exc:
                    run = RunFile(None, {}, [(None, str(exc))])
                if run.bad:
                    # Never lost: the bytes are kept aside before the file is replaced.
                    aside = copy_aside(target, data)
                    kept.append(aside)
                    logger.warning(
                        "checkpoint %s: %s; kept in %s", target, run.bad[0][1], aside.name
                    )
                manifest, steps, seqs = run.manifest, run.steps, run.seqs
            changed = data is None or bool(run.bad)
            for key, (seq, rec) in recs.items():
                top = max(top, seq)
                if seq < seqs.get(key, -1):
                    continue  # the run file holds a newer record of this entry
                changed = True
                seqs[key] = seq
                if isinstance(rec, StepCheckpoint):
                    steps[rec.step] = rec
                else:
                    manifest = rec
            if not changed:
                continue
            tmp = temp_path(target, token)
            write_new(tmp, run_file_text(run_id, manifest, steps, seqs).encode("utf-8"))
            tmps.append((tmp, target))
        jdir = root / JOURNAL_DIR
        if top >= read_sequence(jdir):
            # First in the list, so it is in place before any run file that needs it.
            tmp = jdir / f"{SEQUENCE_FILE}.{token}{TMP_SUFFIX}"
            write_new(tmp, b"%d" % (top + 1))
            tmps.insert(0, (tmp, jdir / SEQUENCE_FILE))
        sync.files([t for t, _ in tmps] + kept)
        for tmp, target in tmps:
            os.replace(tmp, target)
        tmps = []
        sync.dirs({root, jdir})
    finally:
        for tmp, _ in tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def frame(seq: int, body: bytes) -> bytes:
    """One journal record: a header with its sequence number, length and checksum, the body."""
    head = b"%x %x" % (seq, len(body))
    return b"#%s %08x\n%s\n" % (head, zlib.crc32(body, zlib.crc32(head)), body)


def read_frames(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Return a segment's intact records (sequence number, body), and how many were dropped."""
    records: list[tuple[int, bytes]] = []
    dropped = 0
    pos = len(SEGMENT_MAGIC)
    end = len(data)
    while pos < end:
        m = _FRAME_HEADER.match(data, pos)
        if m is not None:
            seq, length = int(m[1], 16), int(m[2], 16)
            start = m.end()
            stop = start + length
            body = data[start:stop]
            head = data[pos + 1 : m.start(3) - 1]
            if (
                stop < end
                and data[stop] == 0x0A
                and zlib.crc32(body, zlib.crc32(head)) == int(m[3], 16)
            ):
                records.append((seq, body))
                pos = stop + 1
                continue
        dropped += 1
        nxt = data.find(b"\n#", pos + 1)
        if nxt < 0:
            break
        pos = nxt + 1
    return records, dropped


def read_lines(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Records of a segment written before frames: ``<crc32 hex> <record>`` lines, numbered 0."""
    records: list[tuple[int, bytes]] = []
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
        records.append((0, body))
    return records, dropped


def read_segment(path: Path, data: bytes, records: Records) -> None:
    """Merge a segment's sound records into ``records``; log what is dropped, never raise."""
    if data.startswith(SEGMENT_MAGIC):
        frames, dropped = read_frames(data)
    else:
        frames, dropped = read_lines(data)
    if dropped:
        logger.warning(
            "journal %s: dropped %d record(s) with a bad checksum or cut short (a crash or a "
            "failed write mid-record: such records were never acknowledged)",
            path,
            dropped,
        )
    for seq, body in frames:
        try:
            rec = parse_record(body.decode("utf-8"))
            validate_run_id(rec.run_id)
        except UnicodeDecodeError:
            logger.warning("journal %s: dropped a record that is not UTF-8 text", path)
            continue
        except (BadRecord, InvalidRunIdError) as exc:
            logger.warning("journal %s: dropped a record: %s", path, exc)
            continue
        merge(records, seq, rec)


def create_segment(root: Path) -> tuple[int, Path, int]:
    """Create, lock and name a new journal segment; return its descriptor, path and floor.

    The floor is the number the segment's sequence numbers must exceed. The segment is created
    under a name recovery ignores and renamed once locked, so another engine's recovery never
    sees it unlocked (and never takes it for a dead one).

    Raises:
        OSError: it cannot be created, locked or made durable.
    """
    jdir = root / JOURNAL_DIR
    floor = max(read_sequence(jdir), time.time_ns())
    name = f"{floor:020d}-{os.getpid()}-{secrets.token_hex(4)}"
    new = jdir / f"{name}{NEW_SEGMENT_SUFFIX}"
    path = jdir / f"{name}{SEGMENT_SUFFIX}"
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        if not try_lock(fd):
            raise OSError(errno.EAGAIN, f"cannot lock the new journal segment {new}")
        write_all(fd, SEGMENT_MAGIC)
        os.fsync(fd)
        os.rename(new, path)
        fsync_dir(jdir)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(new)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return fd, path, floor


def append_durably(fd: int, data: bytes) -> None:
    """Append ``data`` to a segment and fsync it; return only once all of it is durable.

    Raises:
        OSError: a write failed or fell short (a full disk), the fsync failed, or the segment
            was deleted (its directory removed under the store).
    """
    write_all(fd, data)
    os.fsync(fd)
    if os.fstat(fd).st_nlink == 0:
        raise OSError(
            errno.ENOENT, "the journal segment was deleted (was the store's directory removed?)"
        )


def truncate(fd: int, size: int) -> None:
    """Cut a segment back to ``size`` bytes, durably: the frames of a failed write go."""
    os.ftruncate(fd, size)
    os.fsync(fd)


def compact_and_remove(sync: Sync, root: Path, records: Records, segment: Path) -> None:
    """Compact a segment's records into run files, then delete the segment."""
    with sync.lock():
        compact(sync, root, records)
    os.unlink(segment)
    fsync_dir(segment.parent)


def remove_temps(root: Path) -> None:
    """Remove temp files of compactions that died. The caller holds ``sync.lock()``."""
    with os.scandir(root) as it:
        for e in it:
            if is_temp(e.name):
                os.unlink(e.path)
    with os.scandir(root / JOURNAL_DIR) as it:
        for e in it:
            if SEQUENCE_TEMP.fullmatch(e.name):
                os.unlink(e.path)


def recover(sync: Sync, root: Path) -> None:
    """Remove dead temp files; compact the journal segments of engines that are gone.

    A segment whose lock is free belongs to an engine that is gone. Their records are merged by
    sequence number (so the order segments are read in does not matter) and compacted together.
    A name in the journal that is not a regular file is moved aside and reported.
    """
    jdir = root / JOURNAL_DIR
    jdir.mkdir(parents=True, exist_ok=True)
    with sync.lock():
        # Every temp file is written under this lock: any seen now belongs to a dead compaction.
        remove_temps(root)
        dead: list[tuple[Path, int]] = []
        try:
            records: Records = {}
            for name in sorted(os.listdir(jdir)):
                path = jdir / name
                if name.endswith(NEW_SEGMENT_SUFFIX):
                    _remove_if_dead(path)
                    continue
                if not name.endswith(SEGMENT_SUFFIX):
                    continue
                fd = _open_segment(path)
                if fd is None:
                    continue
                if not try_lock(fd):
                    os.close(fd)  # a live engine is writing it
                    continue
                dead.append((path, fd))
                try:
                    data = read_entry(path)
                except BadEntry as exc:
                    moved = move_aside(path)
                    logger.warning("journal %s is %s; moved to %s", path, exc, moved.name)
                    continue
                read_segment(path, data or b"", records)
            if records:
                compact(sync, root, records)
            for path, _ in dead:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            if dead:
                fsync_dir(jdir)
        finally:
            for _, fd in dead:
                os.close(fd)


def _open_segment(path: Path) -> int | None:
    """Open a segment to lock it; a name that is not a regular file is moved aside."""
    try:
        fd = os.open(path, _OPEN_READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EOPNOTSUPP):
            raise
        reason = "a symbolic link or a special file"
    else:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
        reason = "not a regular file"
    moved = move_aside(path)
    logger.warning("journal %s is %s; moved to %s", path, reason, moved.name)
    return None


def _remove_if_dead(path: Path) -> None:
    """Remove a segment whose creation died before it was named.

    Its creator is gone when the process named in it is (``<floor>-<pid>-<hex>.log.new``) and
    its lock is free: a live creator holds the file unlocked for an instant after creating it.
    """
    try:
        pid = int(path.name.split("-")[1])
    except (IndexError, ValueError):
        pid = 0
    if pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pass
        except OSError:
            return  # alive, another user's
        else:
            return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if try_lock(fd):
            os.unlink(path)
    finally:
        os.close(fd)


def read_runs(sync: Sync, root: Path, run_ids: list[str]) -> list[OnDisk | OSError]:
    results: list[OnDisk | OSError] = []
    for run_id in run_ids:
        try:
            results.append(read_run(sync, root, run_id))
        except OSError as exc:
            results.append(exc)
    return results
