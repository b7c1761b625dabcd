"""Reading and damaging a FileStore's files, for the tests of FileStore and of checkpoints."""

from __future__ import annotations

import json
import os
import zlib
from typing import TYPE_CHECKING, Any

from asyncflow.stores._file.disk import JOURNAL_DIR, Sync
from asyncflow.stores._file.journal import compact_chunk, recover, remove_segments

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def settle(root: Path) -> None:
    """Compact what closed engines left in a FileStore's journal, as the next open does.

    A closing FileStore leaves its last segment to the next open, which compacts it in the
    background; tests that read run files of closed stores compact it first, here, at once.
    """
    if not (root / JOURNAL_DIR).is_dir():
        return
    sync = Sync(root)
    index, dead = recover(sync, root)
    try:
        if index:
            records = {
                r: {k: (seq, e) for k, (_, seq, e) in keys.items()} for r, keys in index.items()
            }
            compact_chunk(sync, root, records)
        remove_segments([path for path, _ in dead])
    finally:
        for _, fd in dead:
            os.close(fd)


def names(directory: Path) -> list[str]:
    """The sorted names in a closed store's directory, its journal compacted first."""
    settle(directory)
    return sorted(p.name for p in directory.iterdir())


def run_file(root: Path, run_id: str) -> Path:
    """The run file of a closed store, its journal compacted first (see :func:`settle`)."""
    settle(root)
    return root / f"{run_id}.json"


def run_file_json(root: Path, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run_file(root, run_id).read_text())
    return data


def damage_entry(data: bytes, step: str, change: Callable[[dict[str, Any]], object]) -> bytes:
    """A run file whose entry for ``step`` is replaced by ``change(entry)``; the rest is sound."""
    raw = json.loads(data)
    raw["steps"][step] = change(raw["steps"][step])
    return json.dumps(raw, indent=2).encode()


def journal_line(record: dict[str, object]) -> bytes:
    """A journal record as asyncflow wrote them before frames: a checksum and the JSON, a line."""
    body = json.dumps(record).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)
