"""Checkpoint stores: the :class:`CheckpointStore` protocol, its data types, and two stores.

:class:`FileStore` keeps checkpoints in a directory, crash-safe; :class:`MemoryStore` keeps them
in memory, for tests and notebooks. A store of your own implements :class:`CheckpointStore` with
the data types here, and :func:`asyncflow.testing.check_checkpoint_store` checks it.
"""

from __future__ import annotations

import typing

from ._base import (
    CheckpointStore,
    Discarded,
    Lease,
    RunCheckpoints,
    RunInfo,
    RunManifest,
    StepCheckpoint,
)
from ._file import FileStore
from ._retention import Pruned, prune_runs
from ._sql.sqlite import SqliteStore

__all__ = [
    "CheckpointStore",
    "Discarded",
    "FileStore",
    "Lease",
    "MemoryStore",
    "Pruned",
    "RunCheckpoints",
    "RunInfo",
    "RunManifest",
    "SqliteStore",
    "StepCheckpoint",
    "prune_runs",
]

for _name in __all__:
    if _name in globals():
        globals()[_name].__module__ = __name__  # they print as asyncflow.stores.X
del _name

if typing.TYPE_CHECKING:
    from ._memory import MemoryStore
else:

    def __getattr__(name: str) -> object:
        # MemoryStore imports only public names (asyncflow, asyncflow.stores), as a user's
        # store would; loading it on first use keeps that from being an import cycle.
        if name == "MemoryStore":
            from ._memory import MemoryStore

            MemoryStore.__module__ = __name__
            globals()["MemoryStore"] = MemoryStore
            return MemoryStore
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
