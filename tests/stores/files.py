"""Reading and damaging a FileStore's files, for the tests of FileStore and of checkpoints."""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def names(directory: Path) -> list[str]:
    """The sorted names in a directory (tests read files after the engine has closed)."""
    return sorted(p.name for p in directory.iterdir())


def run_file(root: Path, run_id: str) -> Path:
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
