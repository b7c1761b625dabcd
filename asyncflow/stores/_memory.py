"""MemoryStore: checkpoints in memory, for tests and notebooks.

It is written as a store of your own would be, from public names only (``asyncflow`` and
``asyncflow.stores``), and it passes :func:`asyncflow.testing.check_checkpoint_store`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio.lowlevel

from asyncflow import CheckpointError, JsonCodec, LeaseLostError
from asyncflow.stores import Lease, RunCheckpoints, RunInfo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from asyncflow import Codec
    from asyncflow.stores import RunManifest, StepCheckpoint

__all__ = ["MemoryStore"]


class MemoryStore:
    """Checkpoints in a dictionary: kept as long as the object lives, across engines.

    Give the same store to two engines, one after the other, and the second resumes the runs
    of the first, as with a :class:`~asyncflow.stores.FileStore`, without touching the disk.
    Nothing survives the process: use it for tests and notebooks, not to survive a crash.

    Leases expire by ``clock`` after their ttl, as a database's would: engines sharing one
    MemoryStore (in one process) each get one owner per run, and an engine that stops renewing
    (paused) loses its runs to the next claimant, whose epoch fences the first one's writes.

    Args:
        codec: turns outputs and inputs into JSON text; :class:`~asyncflow.JsonCodec` by
            default. Values are encoded even in memory, so what works here works in a file.
        clock: the time leases expire by, in seconds (``time.time`` by default); a test can
            pass its own to expire a lease without waiting.
    """

    def __init__(
        self, *, codec: Codec | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._codec: Codec = codec if codec is not None else JsonCodec()
        self._clock = clock
        self._manifests: dict[str, RunManifest] = {}
        self._steps: dict[str, dict[str, StepCheckpoint]] = {}
        #: the current lease of each run claimed and not released.
        self._leases: dict[str, Lease] = {}
        #: each run's highest epoch so far: kept after release and delete_run.
        self._epochs: dict[str, int] = {}
        #: runs whose manifest saved without waiting was refused: the next save raises.
        self._lost: dict[str, LeaseLostError] = {}
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

    async def save_manifest(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        """Keep a run's manifest, replacing the previous one.

        Raises:
            CheckpointError: the store is not open.
            LeaseLostError: ``lease`` is stale (another owner took the run); nothing was kept.
        """
        await self._ready()
        self._fence(manifest.run_id, lease)
        self._manifests[manifest.run_id] = manifest

    def save_manifest_nowait(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        """Keep a run's manifest at once; a stale ``lease`` is raised by the run's next save.

        Raises:
            CheckpointError: the store is not open.
        """
        self._check_open()
        try:
            self._fence(manifest.run_id, lease)
        except LeaseLostError as exc:
            self._lost[manifest.run_id] = exc
        else:
            self._manifests[manifest.run_id] = manifest

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        """Keep a step's checkpoint, replacing the step's previous one.

        Raises:
            CheckpointError: the store is not open.
            LeaseLostError: ``lease`` is stale (another owner took the run); nothing was kept.
        """
        await self._ready()
        self._fence(checkpoint.run_id, lease)
        self._steps.setdefault(checkpoint.run_id, {})[checkpoint.step] = checkpoint

    def _fence(self, run_id: str, lease: Lease | None) -> None:
        if lease is None:
            return
        lost = self._lost.pop(run_id, None)
        if lost is not None and lost.epoch == lease.epoch:
            raise lost
        if self._epochs.get(run_id, 0) > lease.epoch:
            raise LeaseLostError(
                f"Run {run_id!r} was taken over by another owner (epoch "
                f"{self._epochs[run_id]}) after {lease.owner!r} lost its lease (epoch "
                f"{lease.epoch}); nothing was written. It goes on there; this owner stops.",
                run_id=run_id,
                epoch=lease.epoch,
            )

    async def claim_run(self, run_id: str, /, *, owner: str, ttl: float) -> Lease | None:
        """Take the run for ``ttl`` seconds, or renew ``owner``'s lease; ``None`` if held.

        Raises:
            ValueError: ``ttl`` is not above 0.
            CheckpointError: the store is not open.
        """
        _check_ttl(ttl)
        await self._ready()
        now = self._clock()
        held = self._leases.get(run_id)
        if held is not None and held.owner == owner:
            lease = dataclasses.replace(held, expires_at=now + ttl)
        elif held is not None and held.expires_at > now:
            return None
        else:
            epoch = self._epochs.get(run_id, 0) + 1
            self._epochs[run_id] = epoch
            lease = Lease(run_id, owner, epoch, now + ttl)
        self._leases[run_id] = lease
        return lease

    async def renew_leases(self, leases: Sequence[Lease], /, *, ttl: float) -> list[Lease | None]:
        """Extend each lease still current by ``ttl`` seconds; ``None`` for each one lost.

        Raises:
            ValueError: ``ttl`` is not above 0.
            CheckpointError: the store is not open.
        """
        _check_ttl(ttl)
        await self._ready()
        expires = self._clock() + ttl
        renewed: list[Lease | None] = []
        for lease in leases:
            held = self._leases.get(lease.run_id)
            if held is None or (held.owner, held.epoch) != (lease.owner, lease.epoch):
                renewed.append(None)
                continue
            held = self._leases[lease.run_id] = dataclasses.replace(held, expires_at=expires)
            renewed.append(held)
        return renewed

    async def release_run(self, lease: Lease, /) -> None:
        """Give the run up now, if ``lease`` is still its current one.

        Raises:
            CheckpointError: the store is not open.
        """
        await self._ready()
        held = self._leases.get(lease.run_id)
        if held is not None and (held.owner, held.epoch) == (lease.owner, lease.epoch):
            del self._leases[lease.run_id]

    async def create_run_if_absent(self, manifest: RunManifest, /) -> bool:
        """Keep ``manifest`` if the run has none; return whether it was kept.

        Raises:
            CheckpointError: the store is not open.
        """
        await self._ready()
        if manifest.run_id in self._manifests:
            return False
        self._manifests[manifest.run_id] = manifest
        return True

    async def list_runs(
        self, *, flow: str | None = None, status: str | None = None, since: str | None = None
    ) -> AsyncIterator[RunInfo]:
        """Yield the runs with a manifest that pass the filters, by run id, as at the start.

        Raises:
            CheckpointError: the store is not open.
        """
        await self._ready()
        for _, manifest in sorted(self._manifests.items()):
            if (
                (flow is None or manifest.flow == flow)
                and (status is None or manifest.status == status)
                and (since is None or manifest.updated_at >= since)
            ):
                yield RunInfo.from_manifest(manifest)

    async def delete_run(self, run_id: str, /) -> bool:
        """Forget a run's manifest and step checkpoints; return whether any were kept.

        Raises:
            CheckpointError: the store is not open.
        """
        await self._ready()
        self._lost.pop(run_id, None)
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


def _check_ttl(ttl: float) -> None:
    if not (ttl > 0 and ttl < math.inf):
        raise ValueError(f"ttl={ttl!r}: give a lease's time to live in seconds, above 0.")
