"""The store contract: the CheckpointStore protocol and the data its methods take and return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping
    from contextlib import AbstractAsyncContextManager

    from asyncflow._codec import Codec

__all__ = ["CheckpointStore", "Discarded", "RunCheckpoints", "RunManifest", "StepCheckpoint"]


@dataclass(frozen=True, slots=True)
class RunManifest:
    """What a store keeps about a run as a whole.

    Attributes:
        run_id: the run's id.
        flow: the flow's name.
        flow_fingerprint: the flow's structure and code at the time of the run.
        inputs: the run inputs, as codec text (a JSON object).
        status: ``"running"``, ``"succeeded"`` or ``"failed"``.
        created_at: when the run first started, ISO 8601 UTC.
        updated_at: when this manifest was written, ISO 8601 UTC.
    """

    run_id: str
    flow: str
    flow_fingerprint: str
    inputs: str
    status: str
    created_at: str
    updated_at: str


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
    """A checkpoint that could not be used and was moved aside (or dropped, for a journal line)."""

    step: str | None
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunCheckpoints:
    """Everything a store holds for one run."""

    manifest: RunManifest | None = None
    steps: Mapping[str, StepCheckpoint] = field(default_factory=dict)
    discarded: tuple[Discarded, ...] = ()


class CheckpointStore(Protocol):
    """Where checkpoints live. The engine opens it once and calls the rest while it is open.

    Implementations must make ``save_*`` durable before returning (a crash after the return loses
    nothing) and may be shared by many runs at once. Times, ids and text are plain data, so a
    store on another machine (a database, an object store) fits the same shape.
    """

    @property
    def codec(self) -> Codec:
        """The codec that turns outputs and inputs into the text this store keeps."""

    def open(self) -> AbstractAsyncContextManager[object]:
        """Acquire what the store needs (threads, connections, background tasks) for a block."""

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        """Return what is kept for ``run_id``; a run with nothing kept gives empty checkpoints.

        Records that cannot be used are reported in ``discarded`` and left out, never raised.
        """

    async def save_manifest(self, manifest: RunManifest, /) -> None:
        """Durably record a run's manifest, replacing the previous one."""

    def save_manifest_nowait(self, manifest: RunManifest, /) -> None:
        """Record a run's manifest without waiting.

        It must be durable no later than the next save of the same run returns, so a step
        checkpoint is never durable without its run's manifest.
        """

    async def save_step(self, checkpoint: StepCheckpoint, /) -> None:
        """Durably record a step's output, replacing the step's previous checkpoint."""
