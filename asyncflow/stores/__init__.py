"""Checkpoint stores: the :class:`CheckpointStore` protocol, its data types, and FileStore."""

from __future__ import annotations

from ._base import (
    CheckpointStore,
    Discarded,
    RunCheckpoints,
    RunInfo,
    RunManifest,
    StepCheckpoint,
)
from ._file import FileStore

__all__ = [
    "CheckpointStore",
    "Discarded",
    "FileStore",
    "RunCheckpoints",
    "RunInfo",
    "RunManifest",
    "StepCheckpoint",
]
