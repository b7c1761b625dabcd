r"""FileStore's journal: segments of framed records, their recovery, and their compaction.

Blocking work, run on the store's own executor, never on the event loop. See :mod:`.store` for
the layout and what is durable when, :mod:`.runfiles` for the files records are compacted into.

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
import errno
import logging
import os
import re
import secrets
import stat
import time
import zlib
from typing import TYPE_CHECKING

from asyncflow._errors import InvalidRunIdError
from asyncflow._identity import MAX_RUN_ID, validate_run_id

from .disk import (
    JOURNAL_DIR,
    OPEN_READ,
    BadEntry,
    Sync,
    fsync_dir,
    move_aside,
    read_entry,
    try_lock,
    write_all,
)
from .records import BadRecord, js, parse_record, record_key
from .runfiles import Record, Records, compact, merge, read_sequence, remove_temps, run_path

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = [
    "SEGMENT_MAGIC",
    "Entry",
    "Index",
    "Recovered",
    "Ref",
    "RunInJournal",
    "append_durably",
    "compact_and_remove",
    "compact_chunk",
    "create_segment",
    "delete_run",
    "frame",
    "index_segment",
    "read_segment",
    "recover",
    "remove_segments",
    "resolve",
    "resolve_run",
    "truncate",
]

logger = logging.getLogger("asyncflow")

SEGMENT_SUFFIX = ".log"
#: A segment being created: locked, then renamed to ``.log``, so no other engine's recovery can
#: see it unlocked. One left by a crash (its lock free) is removed by recovery.
NEW_SEGMENT_SUFFIX = ".log.new"
SEGMENT_MAGIC = b"asyncflow-journal 2\n"
_FRAME_HEADER = re.compile(rb"#([0-9a-f]{1,16}) ([0-9a-f]{1,8}) ([0-9a-f]{8})\n")


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
    _log_dropped(path, dropped)
    for seq, body in frames:
        rec = _parse_body(path, body)
        if rec is not None:
            merge(records, seq, rec)


def _log_dropped(path: Path, dropped: int) -> None:
    if dropped:
        logger.warning(
            "journal %s: dropped %d record(s) with a bad checksum or cut short (a crash or a "
            "failed write mid-record: such records were never acknowledged)",
            path,
            dropped,
        )


def _parse_body(path: Path | str, body: bytes) -> Record | None:
    """A record's body parsed and its run id checked; ``None`` (logged) when it is unusable."""
    try:
        rec = parse_record(body.decode("utf-8"))
        validate_run_id(rec.run_id)
    except UnicodeDecodeError:
        logger.warning("journal %s: dropped a record that is not UTF-8 text", path)
        return None
    except (BadRecord, InvalidRunIdError) as exc:
        logger.warning("journal %s: dropped a record: %s", path, exc)
        return None
    return rec


#: A journal record not parsed yet: its segment's path, and its body's offset and length there.
#: Recovery notes where each record is rather than parsing it (see :func:`index_segment`); it
#: is read back, and parsed, when a load, a listing or the compaction needs it.
Ref = tuple[str, int, int]
#: A record, or where to read it.
Entry = Record | Ref
#: Records of journal segments not compacted yet, as the store holds them: run id -> step name
#: (None: the manifest) -> (the store's number for the segment, sequence number, entry).
Index = dict[str, dict[str | None, tuple[int, int, Entry]]]

#: A frame whose body starts as :func:`~.records.step_record` and
#: :func:`~.records.manifest_record` write it: the run id (a valid one, so its JSON text is its
#: value) and the step's name (when it holds nothing escaped) are read from the head, without
#: parsing the record.
_INDEXED_FRAME = re.compile(
    rb"#([0-9a-f]{1,16}) ([0-9a-f]{1,8}) ([0-9a-f]{8})\n"
    rb'\{"format":"asyncflow\.(step|manifest)","version":1,'
    rb'"run_id":"([A-Za-z0-9_][A-Za-z0-9_.@+=,~-]{0,%d})",'
    rb'(?:"step":"([^"\\\x00-\x1f]*)",)?' % (MAX_RUN_ID - 1)
)


def index_segment(path: Path, data: bytes, index: Index, segment: int) -> None:
    """Note where each of a segment's sound records is in ``index``, newest per entry.

    A framed segment's records are checked (length, checksum) but not parsed: each becomes a
    :data:`Ref`, read back when needed (:func:`resolve_run`). That keeps an open of a large
    journal to one pass of a regular expression and a checksum per frame. Frames of another
    shape (names with escapes, records of other writers) and segments written before frames
    are parsed at once, as before. A bad frame is dropped (logged), the scan resuming at the
    next frame that checks out, as :func:`read_frames` does.
    """
    if not data.startswith(SEGMENT_MAGIC):
        records: Records = {}
        read_segment(path, data, records)
        for run_id, recs in records.items():
            for key, (seq, rec) in recs.items():
                _note(index, run_id, key, segment, seq, rec)
        return
    name = str(path)
    view = memoryview(data)
    crc32 = zlib.crc32
    indexed = _INDEXED_FRAME.match
    header = _FRAME_HEADER.match
    #: step names, one str each however many runs have the step (they are the index's keys)
    names: dict[bytes, str | None] = {}
    pos, end, dropped = len(SEGMENT_MAGIC), len(data), 0
    while pos < end:
        m = indexed(data, pos) or header(data, pos)
        if m is not None:
            seq, length = int(m[1], 16), int(m[2], 16)
            crc_at = m.start(3)
            start = crc_at + 9
            stop = start + length
            if (
                stop < end
                and data[stop] == 0x0A
                and crc32(view[start:stop], crc32(view[pos + 1 : crc_at - 1])) == int(m[3], 16)
            ):
                pos = stop + 1
                if m.re is _INDEXED_FRAME and (m[4] == b"manifest" or m[6] is not None):
                    step = m[6]
                    try:
                        if step is None:
                            key = None
                        elif (key := names.get(step)) is None:
                            key = names[step] = step.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                    else:
                        # _note, inlined: this is the loop an open spends its time in.
                        run_id = m[5].decode("ascii")
                        if (keys := index.get(run_id)) is None:
                            keys = index[run_id] = {}
                        if (held := keys.get(key)) is None or seq >= held[1]:
                            keys[key] = (segment, seq, (name, start, length))
                        continue
                parsed = _parse_body(path, data[start:stop])
                if parsed is not None:
                    _note(index, parsed.run_id, record_key(parsed), segment, seq, parsed)
                continue
        dropped += 1
        nxt = data.find(b"\n#", pos + 1)
        if nxt < 0:
            break
        pos = nxt + 1
    _log_dropped(path, dropped)


def _note(index: Index, run_id: str, key: str | None, segment: int, seq: int, e: Entry) -> None:
    keys = index.get(run_id)
    if keys is None:
        keys = index[run_id] = {}
    held = keys.get(key)
    if held is None or seq >= held[1]:
        keys[key] = (segment, seq, e)


def resolve_run(
    run_id: str, entries: Mapping[str | None, tuple[int, Entry]]
) -> dict[str | None, tuple[int, Record]]:
    """A run's entries with every :data:`Ref` read back and parsed.

    A record that cannot be read back is left out: its segment is gone (compacted, so its
    records are in the run files, which are read after this), or the record is unusable
    (logged; it passed its checksum, so only a writer other than asyncflow's makes one).

    Raises:
        OSError: a segment could not be read.
    """
    return resolve({run_id: entries})[run_id]


def resolve(records: Mapping[str, Mapping[str | None, tuple[int, Entry]]]) -> Records:
    """Runs' entries, every :data:`Ref` among them read back (see :func:`resolve_run`).

    Raises:
        OSError: a segment could not be read.
    """
    out: Records = {}
    files: dict[str, int | None] = {}
    try:
        for run_id, entries in records.items():
            recs = out[run_id] = {}
            for key, (seq, e) in entries.items():
                if not isinstance(e, tuple):
                    recs[key] = (seq, e)
                    continue
                path, offset, length = e
                if path not in files:
                    try:
                        files[path] = os.open(path, OPEN_READ)
                    except FileNotFoundError:
                        files[path] = None
                fd = files[path]
                if fd is None:
                    continue
                rec = _parse_body(path, os.pread(fd, length, offset))
                if rec is None:
                    continue
                if rec.run_id != run_id or record_key(rec) != key:
                    logger.warning("journal %s: dropped a record not of the entry it is in", path)
                    continue
                recs[key] = (seq, rec)
    finally:
        for fd in files.values():
            if fd is not None:
                os.close(fd)
    return out


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
    compact_chunk(sync, root, records)
    remove_segments([segment])


def compact_chunk(
    sync: Sync, root: Path, records: Mapping[str, Mapping[str | None, tuple[int, Entry]]]
) -> None:
    """Compact some runs' records into their run files under the directory's lock; durable.

    Records noted by recovery (:data:`Ref`) are read back first.
    """
    resolved = resolve(records)
    with sync.lock():
        compact(sync, root, resolved)


def remove_segments(segments: list[Path]) -> None:
    """Delete compacted segments, durably."""
    for path in segments:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if segments:
        fsync_dir(segments[0].parent)


#: Segments of engines that are gone, taken (locked) by this one: their records, newest per
#: entry (most of them as :data:`Ref`), and each segment's path and open, locked descriptor.
Recovered = tuple[Index, list[tuple["Path", int]]]


def recover(sync: Sync, root: Path, segment: int = 0) -> Recovered:
    """Remove dead temp files; take the journal segments of engines that are gone.

    A segment whose lock is free belongs to an engine that is gone. It is locked (so no other
    engine takes it too) and indexed (:func:`index_segment`), every record under the number
    ``segment``; the newest record of each entry wins, by sequence number (so the order
    segments are read in does not matter). Compacting them is the caller's: the store holds the
    index meanwhile and compacts them in the background, and a crash before that finishes
    leaves the segments for the next open. A name in the journal that is not a regular file is
    moved aside and reported.
    """
    jdir = root / JOURNAL_DIR
    jdir.mkdir(parents=True, exist_ok=True)
    dead: list[tuple[Path, int]] = []
    index: Index = {}
    with sync.lock():
        # Every temp file is written under this lock: any seen now belongs to a dead compaction.
        remove_temps(root)
        try:
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
                try:
                    data = read_entry(path)
                except BadEntry as exc:
                    os.close(fd)
                    moved = move_aside(path)
                    logger.warning("journal %s is %s; moved to %s", path, exc, moved.name)
                    continue
                dead.append((path, fd))
                index_segment(path, data or b"", index, segment)
        except BaseException:
            for _, fd in dead:
                os.close(fd)
            raise
    return index, dead


def _open_segment(path: Path) -> int | None:
    """Open a segment to lock it; a name that is not a regular file is moved aside."""
    try:
        fd = os.open(path, OPEN_READ)
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


class RunInJournal(Exception):
    """A run to delete still has records in a journal segment (the segment's name is the arg)."""


def delete_run(sync: Sync, root: Path, run_id: str) -> bool:
    """Delete a run's file and the bad copies kept beside it; return whether there were any.

    Refused while any journal segment holds a record of the run: compacting that segment later
    (its engine closing, or the next open recovering it) would bring the run back. A segment is
    read whole (no lock is taken on it), so this sees every record acknowledged before it
    started. Runs under the directory's lock, so no compaction interleaves.

    Raises:
        RunInJournal: a segment holds a record of the run.
        OSError: the directory cannot be read or a file removed.
    """
    jdir = root / JOURNAL_DIR
    needle = js(run_id).encode("utf-8")  # a cheap look before parsing a segment's records
    with sync.lock():
        for name in sorted(os.listdir(jdir)):
            if not name.endswith(SEGMENT_SUFFIX):
                continue
            try:
                with open(jdir / name, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue  # compacted and removed meanwhile
            if needle in data and _holds(data, run_id):
                raise RunInJournal(name)
        path = run_path(root, run_id)
        aside = f"{path.name}.corrupt-"
        doomed = [path] if path.exists() else []
        doomed += [root / n for n in os.listdir(root) if n.startswith(aside)]
        for victim in doomed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(victim)
        if doomed:
            fsync_dir(root)
        return bool(doomed)


def _holds(data: bytes, run_id: str) -> bool:
    """Whether a segment's sound records include one of ``run_id``."""
    frames, _ = read_frames(data) if data.startswith(SEGMENT_MAGIC) else read_lines(data)
    for _, body in frames:
        try:
            if parse_record(body.decode("utf-8")).run_id == run_id:
                return True
        except (UnicodeDecodeError, BadRecord):
            continue
    return False
