"""FileStore: checkpoints in a directory, crash-safe (see :mod:`.store`)."""

from __future__ import annotations

from .store import FileStore

__all__ = ["FileStore"]
