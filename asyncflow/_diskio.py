"""Blocking file work of FileStore, run on the store's own executor, never on the event loop.

See :mod:`asyncflow._checkpoint` for the layout and what is durable when.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import secrets
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import InvalidRunIdError
from ._records import (
    BadRecord,
    Discarded,
    RunCheckpoints,
    RunManifest,
    StepCheckpoint,
    parse_record,
    record_key,
    step_file_name,
    validate_run_id,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "JOURNAL_DIR",
    "Sync",
    "compact_and_remove",
    "fsync_dir",
    "read_runs",
    "recover",
    "try_lock",
]

logger = logging.getLogger("asyncflow")

try:
    import fcntl

    flock: Callable[[int, int], None] | None = fcntl.flock
    LOCK_FLAGS = fcntl.LOCK_EX | fcntl.LOCK_NB
except ImportError:  # Windows: no flock; one engine per directory there
    flock, LOCK_FLAGS = None, 0

TMP_MARK = ".tmp-"


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


def move_aside(path: Path) -> Path:
    n = 1
    while True:
        target = path.with_name(f"{path.name}.corrupt-{n}")
        if not target.exists():
            os.replace(path, target)
            return target
        n += 1


def read_run(root: Path, run_id: str) -> RunCheckpoints:
    """Read a run's files, moving bad ones aside."""
    run_dir = root / run_id
    manifest: RunManifest | None = None
    steps: dict[str, StepCheckpoint] = {}
    discarded: list[Discarded] = []
    if not run_dir.is_dir():
        return RunCheckpoints()

    def bad(path: Path, step: str | None, reason: str) -> None:
        moved = move_aside(path)
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
            rec = parse_record(text)
        except BadRecord as exc:
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


def compact(sync: Sync, root: Path, records: dict[tuple[str, str], str]) -> None:
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
            tmp = parent / f"{target.name}{TMP_MARK}{token}"
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


def compact_and_remove(
    sync: Sync, root: Path, records: dict[tuple[str, str], str], segment: Path
) -> None:
    """Compact a segment's records into files, then delete the segment."""
    # Temp files of an earlier compaction that died sit beside these targets.
    for run_id in {r for r, _ in records}:
        for d in (root / run_id, root / run_id / "steps"):
            if d.is_dir():
                with os.scandir(d) as it:
                    for e in it:
                        if TMP_MARK in e.name:
                            os.unlink(e.path)
    compact(sync, root, records)
    os.unlink(segment)
    fsync_dir(segment.parent)


def recover(sync: Sync, root: Path) -> None:
    """Compact the journal segments of engines that are gone: those whose lock is free."""
    jdir = root / JOURNAL_DIR
    jdir.mkdir(parents=True, exist_ok=True)
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
            records: dict[tuple[str, str], str] = {}
            for text in lines:
                try:
                    rec = parse_record(text)
                    validate_run_id(rec.run_id)
                except (BadRecord, InvalidRunIdError) as exc:
                    logger.warning("journal %s: dropped a record: %s", path, exc)
                    continue
                records[record_key(rec)] = text
            compact_and_remove(sync, root, records, path)
        finally:
            os.close(fd)


def read_runs(root: Path, run_ids: list[str]) -> list[RunCheckpoints | OSError]:
    results: list[RunCheckpoints | OSError] = []
    for run_id in run_ids:
        try:
            results.append(read_run(root, run_id))
        except OSError as exc:
            results.append(exc)
    return results
