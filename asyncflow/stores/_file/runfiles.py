"""Run files of FileStore: reading (and repairing) them, and compacting records into them.

One file per run, ``<run_id>.json`` (its text is :mod:`.records`'); see :mod:`.store` for the
layout and :mod:`.journal` for the sequence numbers that decide which record of an entry wins.
Run on the store's own executor, never on the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from typing import TYPE_CHECKING

from asyncflow._identity import is_run_id
from asyncflow.stores._base import Discarded, RunCheckpoints, RunManifest, StepCheckpoint

from .disk import (
    JOURNAL_DIR,
    BadEntry,
    Sync,
    copy_aside,
    fsync_dir,
    move_aside,
    read_entry,
    write_all,
    write_new,
)
from .records import (
    BadRecord,
    RunFile,
    parse_run_file,
    parse_run_manifest,
    record_key,
    run_file_text,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "SEQUENCE_FILE",
    "Listed",
    "OnDisk",
    "Records",
    "compact",
    "list_run_ids",
    "merge",
    "read_manifests",
    "read_runs",
    "read_sequence",
    "remove_temps",
    "run_path",
]

logger = logging.getLogger("asyncflow")

RUN_SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
#: ``<run_id>.json.<8 hex>.tmp``: ends in ``.tmp``, where every run file ends in ``.json``.
TEMP_NAME = re.compile(r".+\.json\.[0-9a-f]{8}\.tmp")
#: In the journal directory: a number above every sequence number written into a run file.
SEQUENCE_FILE = "sequence"
SEQUENCE_TEMP = re.compile(r"sequence\.[0-9a-f]{8}\.tmp")


def run_path(root: Path, run_id: str) -> Path:
    """The run file of a (validated) run id."""
    return root / f"{run_id}{RUN_SUFFIX}"


def is_temp(name: str) -> bool:
    """Whether ``name`` is a temp file of this store; no run file's name is one."""
    return TEMP_NAME.fullmatch(name) is not None


def temp_path(target: Path, token: str) -> Path:
    return target.with_name(f"{target.name}.{token}{TMP_SUFFIX}")


def text_of(data: bytes) -> str:
    """A run file's text; raise :class:`BadRecord` when it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord("not UTF-8 text") from None


def decode(data: bytes, run_id: str) -> RunFile:
    """Parse a run file's bytes; raise :class:`BadRecord` when it cannot be used as a whole."""
    return parse_run_file(text_of(data), run_id)


#: What a run file holds, and each entry's sequence number.
OnDisk = tuple[RunCheckpoints, dict[str | None, int]]


def read_run(sync: Sync, root: Path, run_id: str) -> OnDisk:
    """Read a run's file; a bad file is moved aside, a bad entry kept aside and dropped.

    Temp files are never read: they belong to a compaction, running or dead. A dead one's
    segment is still in the journal, and the recovery that compacts it removes them.
    """
    name = f"{root}{os.sep}{run_id}{RUN_SUFFIX}"
    # Most runs loaded have no file yet (a new run): asked without an exception (a failed
    # open raises one, ~6 us) nor a Path (~4 us). A file made just after this is one made
    # after the read, as it would be had the open failed.
    if not os.access(name, os.F_OK, follow_symlinks=False):
        return RunCheckpoints(), {}
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


def remove_temps(root: Path) -> None:
    """Remove temp files of compactions that died. The caller holds ``sync.lock()``."""
    with os.scandir(root) as it:
        for e in it:
            if e.name.endswith(TMP_SUFFIX) and is_temp(e.name):
                os.unlink(e.path)
    with os.scandir(root / JOURNAL_DIR) as it:
        for e in it:
            if SEQUENCE_TEMP.fullmatch(e.name):
                os.unlink(e.path)


def read_runs(sync: Sync, root: Path, run_ids: list[str]) -> list[OnDisk | OSError]:
    results: list[OnDisk | OSError] = []
    for run_id in run_ids:
        try:
            results.append(read_run(sync, root, run_id))
        except OSError as exc:
            results.append(exc)
    return results


def list_run_ids(root: Path) -> list[str]:
    """The ids of the runs with a file in ``root``, sorted: names only, no file is read."""
    ids = [name[: -len(RUN_SUFFIX)] for name in os.listdir(root) if name.endswith(RUN_SUFFIX)]
    ids = [run_id for run_id in ids if is_run_id(run_id)]
    ids.sort()
    return ids


#: A run file's manifest and its sequence number.
Listed = tuple[RunManifest, int]


def read_manifests(root: Path, run_ids: list[str]) -> list[Listed | None]:
    """Each run's manifest from its file, with its sequence number; ``None`` where there is none.

    Only reads: run files are replaced whole, so no lock is needed. A file that cannot be used
    is logged and left as it is (loading the run moves it aside and reports it).

    Raises:
        OSError: a file could not be read.
    """
    found: list[Listed | None] = []
    for run_id in run_ids:
        path = run_path(root, run_id)
        try:
            data = read_entry(path)
            manifest, seq = (None, 0) if data is None else parse_run_manifest(text_of(data), run_id)
        except (BadEntry, BadRecord) as exc:
            logger.warning("checkpoint %s is unusable (%s); left out of the listing", path, exc)
            manifest = None
        found.append(None if manifest is None else (manifest, seq))
    return found
