"""Blocking file work of FileStore, run on the store's own executor, never on the event loop.

See :mod:`asyncflow._checkpoint` for the layout and what is durable when.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import secrets
import threading
import zlib
from typing import TYPE_CHECKING

from ._errors import InvalidRunIdError
from ._records import (
    BadRecord,
    Discarded,
    RunCheckpoints,
    RunFile,
    RunManifest,
    StepCheckpoint,
    parse_record,
    parse_run_file,
    record_key,
    run_file_text,
    validate_run_id,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = [
    "JOURNAL_DIR",
    "Records",
    "Sync",
    "compact_and_remove",
    "fsync_dir",
    "read_runs",
    "recover",
    "run_path",
    "try_lock",
]

logger = logging.getLogger("asyncflow")

try:
    import fcntl

    flock: Callable[[int, int], None] | None = fcntl.flock
    LOCK_FLAGS = fcntl.LOCK_EX | fcntl.LOCK_NB
    LOCK_WAIT = fcntl.LOCK_EX
except ImportError:  # Windows: no flock; one engine per directory there
    flock, LOCK_FLAGS, LOCK_WAIT = None, 0, 0

RUN_SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
#: ``<run_id>.json.<8 hex>.tmp``: ends in ``.tmp``, where every run file ends in ``.json``.
TEMP_NAME = re.compile(r".+\.json\.[0-9a-f]{8}\.tmp")


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


JOURNAL_DIR = ".journal"


class Sync:
    """Makes a batch of written files durable: one ``syncfs`` where available, else fsyncs.

    It also holds the directory's lock, which every writer of run files takes (see :meth:`lock`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
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
        and processes (a lock that a dead process releases). Blocks: call it on the executor.
        """
        with self._threads:
            if flock is None:
                yield
                return
            fd = os.open(self.root / JOURNAL_DIR, os.O_RDONLY)
            try:
                flock(fd, LOCK_WAIT)
                yield
            finally:
                os.close(fd)

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
        if not target.exists():
            return target
        n += 1


def move_aside(path: Path) -> Path:
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
            os.write(fd, data)
        finally:
            os.close(fd)
        return target


def decode(data: bytes, run_id: str) -> RunFile:
    """Parse a run file's bytes; raise :class:`BadRecord` when it cannot be used as a whole."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord("not UTF-8 text") from None
    return parse_run_file(text, run_id)


def read_run(sync: Sync, root: Path, run_id: str) -> RunCheckpoints:
    """Read a run's file; a bad file is moved aside, a bad entry kept aside and dropped.

    Temp files are never read: they belong to a compaction, running or dead. A dead one's
    segment is still in the journal, and the recovery that compacts it removes them.
    """
    path = run_path(root, run_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return RunCheckpoints()
    try:
        run = decode(data, run_id)
    except BadRecord:
        pass
    else:
        if not run.bad:
            return RunCheckpoints(run.manifest, run.steps)
    # Repairs write the file, so they wait for compactions (which rewrite it too) to finish.
    with sync.lock():
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return RunCheckpoints()
        try:
            run = decode(data, run_id)
        except BadRecord as exc:
            moved = move_aside(path)
            sync.dirs({root})
            logger.warning("checkpoint %s is unusable (%s); moved to %s", path, exc, moved.name)
            return RunCheckpoints(discarded=(Discarded(None, str(moved), str(exc)),))
        if not run.bad:
            return RunCheckpoints(run.manifest, run.steps)
        # Keep the sound entries in place: the run restores them and does not save them again.
        kept = copy_aside(path, data)
        write_atomically(path, run_file_text(run_id, run.manifest, run.steps), kept)
        discarded = tuple(Discarded(step, str(kept), reason) for step, reason in run.bad)
        for d in discarded:
            logger.warning(
                "checkpoint %s: %s; dropped, the file is kept in %s", path, d.reason, kept
            )
        return RunCheckpoints(run.manifest, run.steps, discarded)


def write_atomically(path: Path, text: str, also_sync: Path) -> None:
    """Replace ``path`` by ``text`` durably; ``also_sync`` is fsynced with it."""
    tmp = temp_path(path, secrets.token_hex(4))
    try:
        with open(tmp, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
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


#: records to compact: run id -> (a step's name, or None for the manifest) -> the latest record.
Records = dict[str, dict[str | None, RunManifest | StepCheckpoint]]


def compact(sync: Sync, root: Path, records: Records) -> None:
    """Merge each run's records into its run file, atomically; durable on return.

    The caller holds ``sync.lock()``: the run files are read, merged and replaced.
    """
    tmps: list[tuple[Path, Path]] = []
    kept: list[Path] = []
    token = secrets.token_hex(4)
    try:
        for run_id, recs in records.items():
            target = run_path(root, run_id)
            manifest: RunManifest | None = None
            steps: dict[str, StepCheckpoint] = {}
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                pass
            else:
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
                manifest, steps = run.manifest, run.steps
            for rec in recs.values():
                if isinstance(rec, StepCheckpoint):
                    steps[rec.step] = rec
                else:
                    manifest = rec
            tmp = temp_path(target, token)
            with open(tmp, "wb") as f:
                f.write(run_file_text(run_id, manifest, steps).encode("utf-8"))
            tmps.append((tmp, target))
        sync.files([t for t, _ in tmps] + kept)
        for tmp, target in tmps:
            os.replace(tmp, target)
        tmps = []
        sync.dirs({root})
    finally:
        for tmp, _ in tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def read_segment(path: Path) -> tuple[list[str], int]:
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


def recover(sync: Sync, root: Path) -> None:
    """Remove dead temp files; compact the journal segments of engines that are gone.

    A segment whose lock is free belongs to an engine that is gone.
    """
    jdir = root / JOURNAL_DIR
    jdir.mkdir(parents=True, exist_ok=True)
    with sync.lock():
        # Every temp file is written under this lock: any seen now belongs to a dead compaction.
        remove_temps(root)
    for name in sorted(os.listdir(jdir)):
        path = jdir / name
        if not name.endswith(".log"):
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            if not try_lock(fd):
                continue  # a live engine is writing it
            lines, dropped = read_segment(path)
            if dropped:
                logger.warning(
                    "journal %s: dropped %d line(s) with a bad checksum or a torn tail (a crash "
                    "mid-write: those records had not been acknowledged)",
                    path,
                    dropped,
                )
            records: Records = {}
            for text in lines:
                try:
                    rec = parse_record(text)
                    validate_run_id(rec.run_id)
                except (BadRecord, InvalidRunIdError) as exc:
                    logger.warning("journal %s: dropped a record: %s", path, exc)
                    continue
                records.setdefault(rec.run_id, {})[record_key(rec)] = rec
            compact_and_remove(sync, root, records, path)
        finally:
            os.close(fd)


def read_runs(sync: Sync, root: Path, run_ids: list[str]) -> list[RunCheckpoints | OSError]:
    results: list[RunCheckpoints | OSError] = []
    for run_id in run_ids:
        try:
            results.append(read_run(sync, root, run_id))
        except OSError as exc:
            results.append(exc)
    return results
