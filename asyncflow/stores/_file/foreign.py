"""Other engines' journal segments, read as they grow, so their saves are seen before compaction.

Engines sharing a directory each append to a segment of their own, compacted into run files in
the background (a closed engine's, by the next engine that opens the directory). Until then
another engine would not see those records, and would run again a
step that was already saved, or admit a run twice. So loads, listings and admissions first read
what the other live segments (each ``.log`` in ``.journal`` that is not this store's) gained
since the last look: only the new bytes (``pread`` from where the last read stopped), parsed
frame by frame. A frame not complete yet (its writer is mid-write) ends the read; it is read
again next time. A segment that is gone was compacted, which wrote its records into run files
before removing it, so its records are dropped; a segment of an engine that closed or died
stays, and its records are used until an engine opening the directory takes and compacts it
(that engine counts it as its own from then on).

With no other engine, a look costs one ``listdir`` of ``.journal`` per group of loads.
Blocking work: called on the store's executor. One lock serialises the looks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import zlib
from typing import TYPE_CHECKING

from asyncflow._errors import InvalidRunIdError
from asyncflow._identity import validate_run_id
from asyncflow.stores._base import RunManifest

from .disk import OPEN_READ
from .journal import _FRAME_HEADER, SEGMENT_MAGIC, SEGMENT_SUFFIX
from .records import BadRecord, parse_record
from .runfiles import Records, merge

if TYPE_CHECKING:
    from pathlib import Path

    from asyncflow.stores._base import StepCheckpoint

__all__ = ["ForeignJournals", "tail_frames"]

logger = logging.getLogger("asyncflow")

#: A run's records from other segments: step name (None: the manifest) -> (seq, record).
RunRecords = dict["str | None", "tuple[int, RunManifest | StepCheckpoint]"]


def tail_frames(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The intact frames at the start of ``data``, and how many bytes they take.

    The first frame that is not complete, or does not check out, ends the read.
    """
    frames: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    while (m := _FRAME_HEADER.match(data, pos)) is not None:
        start = m.end()
        stop = start + int(m[2], 16)
        if stop >= end or data[stop] != 0x0A:
            break
        body = data[start:stop]
        if zlib.crc32(body, zlib.crc32(data[pos + 1 : m.start(3) - 1])) != int(m[3], 16):
            break
        frames.append((int(m[1], 16), body))
        pos = stop + 1
    return frames, pos


class _Tail:
    __slots__ = ("fd", "offset", "records")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = -1  # the magic is not checked yet
        self.records: Records = {}


class ForeignJournals:
    """The records of the other engines' segments in one journal directory."""

    def __init__(self, journal_dir: Path, own: set[str]) -> None:
        self._dir = journal_dir
        #: this store's own segments (names): never read here.
        self._own = own
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            tails, self._tails = self._tails, {}
            for tail in tails.values():
                os.close(tail.fd)

    def runs(self, run_ids: list[str]) -> list[RunRecords]:
        """Read what the other segments gained; then each run's records in them.

        Raises:
            OSError: the journal directory cannot be listed.
        """
        with self._lock:
            self._refresh()
            found: list[RunRecords] = []
            for run_id in run_ids:
                recs: RunRecords = {}
                for tail in self._tails.values():
                    held = tail.records.get(run_id)
                    if held:
                        _newest(recs, held)
                found.append(recs)
            return found

    def manifests(self) -> dict[str, tuple[int, RunManifest]]:
        """Read what the other segments gained; then the newest manifest of each run in them.

        Raises:
            OSError: the journal directory cannot be listed.
        """
        with self._lock:
            self._refresh()
            found: dict[str, tuple[int, RunManifest]] = {}
            for tail in self._tails.values():
                for run_id, recs in tail.records.items():
                    held = recs.get(None)
                    if held is not None and (run_id not in found or held[0] >= found[run_id][0]):
                        assert isinstance(held[1], RunManifest)
                        found[run_id] = (held[0], held[1])
            return found

    def _refresh(self) -> None:
        try:
            listed = os.listdir(self._dir)
        except FileNotFoundError:
            listed = []  # the directory was removed: its saves fail, and say so, on their own
        names = {name for name in listed if name.endswith(SEGMENT_SUFFIX) and name not in self._own}
        for name in self._tails.keys() - names:
            os.close(self._tails.pop(name).fd)  # compacted: its records are in run files
        for name in names - self._tails.keys():
            with contextlib.suppress(FileNotFoundError):
                self._tails[name] = _Tail(os.open(self._dir / name, OPEN_READ))
        for name, tail in self._tails.items():
            self._read(name, tail)

    def _read(self, name: str, tail: _Tail) -> None:
        size = os.fstat(tail.fd).st_size
        if tail.offset < 0:
            if size < len(SEGMENT_MAGIC):
                return
            if os.pread(tail.fd, len(SEGMENT_MAGIC), 0) != SEGMENT_MAGIC:
                tail.offset = size  # a segment of before frames: compacted at the next open
                return
            tail.offset = len(SEGMENT_MAGIC)
        if size <= tail.offset:
            return
        frames, used = tail_frames(os.pread(tail.fd, size - tail.offset, tail.offset))
        tail.offset += used
        for seq, body in frames:
            try:
                rec = parse_record(body.decode("utf-8"))
                validate_run_id(rec.run_id)
            except (UnicodeDecodeError, BadRecord, InvalidRunIdError) as exc:
                logger.warning("journal %s: left out a record of another engine: %s", name, exc)
                continue
            merge(tail.records, seq, rec)


def _newest(into: RunRecords, recs: RunRecords) -> None:
    for key, held in recs.items():
        have = into.get(key)
        if have is None or held[0] >= have[0]:
            into[key] = held
