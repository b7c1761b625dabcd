"""The store contract: the CheckpointStore protocol and the data its methods take and return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from asyncflow._codec import Codec

__all__ = [
    "CheckpointStore",
    "Discarded",
    "Lease",
    "RunCheckpoints",
    "RunInfo",
    "RunManifest",
    "StepCheckpoint",
]


@dataclass(frozen=True, slots=True)
class RunManifest:
    """What a store keeps about a run as a whole.

    Attributes:
        run_id: the run's id.
        flow: the flow's name.
        flow_fingerprint: the flow's structure and code at the time of the run.
        inputs: the run inputs, as codec text (a JSON object).
        status: ``"pending"`` (admitted, by :meth:`CheckpointStore.create_run_if_absent`, not
            started yet), ``"running"`` (started, not finished: still running, or its process
            died), ``"succeeded"`` or ``"failed"``.
        created_at: when the run first started, ISO 8601 UTC.
        updated_at: when this manifest was written, ISO 8601 UTC.
        failed_steps: the names of the steps that failed, in the flow's order (set in the
            manifest written when the run ends; empty while it runs).
        details: JSON text (an object) the engine keeps about the run, or ``""`` for none: the
            trace context while it runs, each step's status and times once it ends. Stores
            keep it as they keep ``inputs``: opaque, read back as the same JSON value.
    """

    run_id: str
    flow: str
    flow_fingerprint: str
    inputs: str
    status: str
    created_at: str
    updated_at: str
    failed_steps: tuple[str, ...] = ()
    details: str = ""


@dataclass(frozen=True, slots=True)
class Lease:
    """One owner's claim on a run (:meth:`CheckpointStore.claim_run`).

    Attributes:
        run_id: the run's id.
        owner: who holds it: unique per :class:`~asyncflow.Engine` instance.
        epoch: the fencing token: it grows by at least 1 at every change of the run's owner,
            and never goes down (also after :meth:`CheckpointStore.delete_run`). A save carrying
            a lease whose epoch is below the run's current one is refused.
        expires_at: when it lapses unless renewed, in ``time.time()`` seconds by the store's
            clock; ``math.inf`` when it lasts as long as its holder lives (FileStore's, a lock
            of this machine that the kernel drops when the process dies).
    """

    run_id: str
    owner: str
    epoch: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class StepCheckpoint:
    """A succeeded step's output and its identity.

    Attributes:
        run_id: the run's id.
        step: the step's name.
        fingerprint: digest of the step's code and what it received (dependency outputs, the run
            inputs it takes); a checkpoint is used only when it matches.
        digest: digest of ``output``; dependents' fingerprints are built from it.
        output: the output as codec text.
    """

    run_id: str
    step: str
    fingerprint: str
    digest: str
    output: str


@dataclass(frozen=True, slots=True)
class Discarded:
    """A kept entry that could not be used: left out of what was loaded, and reported.

    Attributes:
        step: the step whose checkpoint it was; ``None`` for the manifest or the whole run.
        path: where the unusable data was kept for people to look at (a file for FileStore);
            empty when it was not kept.
        reason: what is wrong with it.
    """

    step: str | None
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunCheckpoints:
    """Everything a store holds for one run."""

    manifest: RunManifest | None = None
    steps: Mapping[str, StepCheckpoint] = field(default_factory=dict)
    discarded: tuple[Discarded, ...] = ()


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run in a listing (:meth:`CheckpointStore.list_runs`): its manifest without inputs.

    Attributes:
        run_id: the run's id.
        flow: the flow's name.
        status: ``"running"``, ``"succeeded"`` or ``"failed"``, as in :class:`RunManifest`.
        created_at: when the run first started, ISO 8601 UTC.
        updated_at: when its manifest was last written, ISO 8601 UTC.
        failed_steps: the steps that failed when it last ended.
    """

    run_id: str
    flow: str
    status: str
    created_at: str
    updated_at: str
    failed_steps: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, manifest: RunManifest, /) -> RunInfo:
        """The listing entry of the run ``manifest`` describes."""
        return cls(
            run_id=manifest.run_id,
            flow=manifest.flow,
            status=manifest.status,
            created_at=manifest.created_at,
            updated_at=manifest.updated_at,
            failed_steps=manifest.failed_steps,
        )


class CheckpointStore(Protocol):
    """Where checkpoints live. The engine opens it once and calls the rest while it is open.

    Implementations must make ``save_*`` durable before returning (a crash after the return loses
    nothing), may be shared by many runs at once, and raise :class:`~asyncflow.CheckpointError`
    when they cannot do what is asked (the store is not open, a disk or a database failed).
    Times, ids and text are plain data, so a store on another machine (a database, an object
    store) fits the same shape: run ids are valid names (at most 200 of ``A-Z a-z 0-9 _ . @ + =
    , ~ -``, checked by the engine before a store sees them), outputs and inputs are the codec's
    JSON text (a store may keep it re-spaced, as long as it reads back as the same JSON value).

    :func:`asyncflow.testing.check_checkpoint_store` checks an implementation against this
    contract; :class:`~asyncflow.stores.MemoryStore` is one written from public names alone.
    """

    @property
    def codec(self) -> Codec:
        """The codec that turns outputs and inputs into the text this store keeps."""

    def open(self) -> AbstractAsyncContextManager[object]:
        """Acquire what the store needs (threads, connections, background tasks) for a block.

        A store can be opened again after the block ends; a persistent one still holds what
        was saved.
        """

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        """Return what is kept for ``run_id``; a run with nothing kept gives empty checkpoints.

        Records that cannot be used are reported in ``discarded`` and left out, never raised.
        """

    async def save_manifest(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        """Durably record a run's manifest, replacing the previous one.

        With ``lease``, the save is fenced: refused with :class:`~asyncflow.LeaseLostError`,
        writing nothing, when the run's current epoch is above ``lease.epoch`` (another owner
        took the run over). Without one it is written unfenced (tests, tools).
        """

    def save_manifest_nowait(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        """Record a run's manifest without waiting.

        It must be durable no later than the next save of the same run returns, so a step
        checkpoint is never durable without its run's manifest, and a later save of the manifest
        replaces it. Fenced as :meth:`save_manifest`; a lost lease is reported (as
        :class:`~asyncflow.LeaseLostError`) by the next awaited save of the run.
        """

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        """Durably record a step's output, replacing the step's previous checkpoint.

        Fenced by ``lease`` as :meth:`save_manifest`.
        """

    async def claim_run(self, run_id: str, /, *, owner: str, ttl: float) -> Lease | None:
        """Take the run for ``ttl`` seconds; ``None`` when another owner holds it unexpired.

        The same owner claiming again renews its lease (same epoch). A run with no lease, or
        an expired one, is taken with an epoch above every earlier one of the run.

        Raises:
            ValueError: ``ttl`` is not a number of seconds above 0.
            CheckpointError: the store is not open, or it failed.
        """

    async def renew_leases(self, leases: Sequence[Lease], /, *, ttl: float) -> list[Lease | None]:
        """Extend many leases by ``ttl`` seconds from now, in one round trip.

        Returns the renewed lease in the place of each one, or ``None`` where it was lost
        (another owner took the run, or it was released).
        """

    async def release_run(self, lease: Lease, /) -> None:
        """Give the run up at once, so another owner can take it.

        Idempotent: a lease already released or lost is no error.
        """

    async def create_run_if_absent(self, manifest: RunManifest, /) -> bool:
        """Durably record ``manifest`` only if the run has no manifest yet; atomic.

        The admission of a run (a trigger's delivery): ``True`` when this call created it,
        ``False`` when a manifest existed (a duplicate delivery). Exactly one of concurrent
        calls for one run id returns ``True``, also across processes sharing the store.
        """

    def list_runs(
        self, *, flow: str | None = None, status: str | None = None, since: str | None = None
    ) -> AsyncIterator[RunInfo]:
        """Yield a :class:`RunInfo` for every run whose manifest is kept, each once.

        Filters, all optional: ``flow`` (the flow's name), ``status`` (the manifest's), and
        ``since``: runs whose ``updated_at`` is at or after it (ISO 8601 UTC text, compared
        as the engine writes it).

        Written as an async generator (``async def`` with ``yield``), used as
        ``async for info in store.list_runs():``. The order is the store's own: sort the
        entries if you need one. It sees every save that returned before it started; saves made
        while it runs may or may not be seen. A store with many runs should read them a batch at
        a time, never all at once. Runs whose manifest cannot be used are left out, never
        raised.
        """

    async def delete_run(self, run_id: str, /) -> bool:
        """Delete everything kept for ``run_id`` (its manifest and step checkpoints), durably.

        Returns whether anything was kept. Afterwards the run loads as empty and is not listed;
        a run saved again starts anew. Delete runs that no engine is running: a store may refuse
        to delete one it may still be writing.

        Raises:
            CheckpointError: the store is not open, it failed, or it refuses because the run
                may still be written (the message says when it can be deleted).
        """
