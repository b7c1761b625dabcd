"""MemoryStore: checkpoints in memory, for tests and notebooks.

It is written as a store of your own would be, from public names only (``asyncflow`` and
``asyncflow.stores``), and it passes :func:`asyncflow.testing.check_checkpoint_store`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio.lowlevel

from asyncflow import CheckpointError, JsonCodec
from asyncflow.stores import RunCheckpoints, RunInfo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from asyncflow import Codec
    from asyncflow.stores import RunManifest, StepCheckpoint

__all__ = ["MemoryStore"]


class MemoryStore:
    """Checkpoints in a dictionary: kept as long as the object lives, across engines.

    Give the same store to two engines, one after the other, and the second resumes the runs
    of the first, as with a :class:`~asyncflow.stores.FileStore`, without touching the disk.
    Nothing survives the process: use it for tests and notebooks, not to survive a crash.

    Args:
        codec: turns outputs and inputs into JSON text; :class:`~asyncflow.JsonCodec` by
            default. Values are encoded even in memory, so what works here works in a file.
    """

    def __init__(self, *, codec: Codec | None = None) -> None:
        self._codec: Codec = codec if codec is not None else JsonCodec()
        self._manifests: dict[str, RunManifest] = {}
        self._steps: dict[str, dict[str, StepCheckpoint]] = {}
        self._open = False

    def __repr__(self) -> str:
        return "MemoryStore()"

    @property
    def codec(self) -> Codec:
        """The codec for outputs and inputs."""
        return self._codec

    @asynccontextmanager
    async def open(self) -> AsyncIterator[MemoryStore]:
        """Use the store for a block; what it holds stays for the next block.

        Raises:
            RuntimeError: it is open already (a store is opened by one engine at a time).
        """
        if self._open:
            raise RuntimeError(f"{self!r} is already open; a store is opened by one engine.")
        self._open = True
        try:
            yield self
        finally:
            self._open = False

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        """Return a run's manifest and step checkpoints (nothing is ever discarded here).

        Raises:
            CheckpointError: the store is not open.
        """
        await self._ready()
        return RunCheckpoints(self._manifests.get(run_id), dict(self._steps.get(run_id, {})))

    async def save_manifest(self, manifest: RunManifest, /) -> None:
        """Keep a run's manifest, replacing the previous one.

        Raises:
            CheckpointError: the store is not open.
        """
        await self._ready()
        self._manifests[manifest.run_id] = manifest

    def save_manifest_nowait(self, manifest: RunManifest, /) -> None:
        """Keep a run's manifest at once.

        Raises:
            CheckpointError: the store is not open.
        """
        self._check_open()
        self._manifests[manifest.run_id] = manifest

    async def save_step(self, checkpoint: StepCheckpoint, /) -> None:
        """Keep a step's checkpoint, replacing the step's previous one.

        Raises:
            CheckpointError: the store is not open.
        """
        await self._ready()
        self._steps.setdefault(checkpoint.run_id, {})[checkpoint.step] = checkpoint

    async def list_runs(self) -> AsyncIterator[RunInfo]:
        """Yield every run with a manifest, by run id, as it was when the listing started.

        Raises:
            CheckpointError: the store is not open.
        """
        await self._ready()
        for _, manifest in sorted(self._manifests.items()):
            yield RunInfo.from_manifest(manifest)

    async def delete_run(self, run_id: str, /) -> bool:
        """Forget a run's manifest and step checkpoints; return whether any were kept.

        Raises:
            CheckpointError: the store is not open.
        """
        await self._ready()
        had = self._manifests.pop(run_id, None) is not None
        return self._steps.pop(run_id, None) is not None or had

    async def _ready(self) -> None:
        # Every call is a point where the caller can be cancelled, as with a store doing I/O,
        # so tests on this store see the interleavings a real one gives.
        await anyio.lowlevel.checkpoint()
        self._check_open()

    def _check_open(self) -> None:
        if not self._open:
            raise CheckpointError(
                f"{self!r} is not open: checkpoints are saved while the engine is open."
            )
