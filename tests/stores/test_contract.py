"""The store contract: FileStore and MemoryStore keep it, stores that break it fail its checks."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import itertools
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import asyncflow
import asyncflow.stores
from asyncflow import CheckpointError
from asyncflow.stores import (
    Discarded,
    FileStore,
    MemoryStore,
    RunCheckpoints,
    RunInfo,
    RunManifest,
    StepCheckpoint,
    _conformance,
)
from asyncflow.testing import check_checkpoint_store
from tests.stores.files import damage_entry, run_file

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from asyncflow import Codec
    from asyncflow.stores import CheckpointStore, Lease

pytestmark = pytest.mark.anyio

STORES = Path(asyncflow.stores.__file__).parent


async def damage_step_entry(store: FileStore, run_id: str, step: str) -> None:
    """Replace a step's entry in its run file by something that is not a checkpoint."""
    async with store.open():  # a closed store leaves its journal to the next open: compact it
        await store.compact()
    path = run_file(store.directory, run_id)
    path.write_bytes(damage_entry(path.read_bytes(), step, lambda entry: "garbage"))


@pytest.mark.parametrize(
    "segment_bytes", [16 * 1024 * 1024, 1], ids=["one segment", "a segment per commit"]
)
async def test_file_store_keeps_the_contract(tmp_path: Path, segment_bytes: int) -> None:
    """With records in the journal, and with every commit compacted into run files at once."""
    dirs = itertools.count()
    await check_checkpoint_store(
        lambda: FileStore(tmp_path / f"store-{next(dirs)}", segment_bytes=segment_bytes),
        damage=damage_step_entry,
        leases_expire=False,
    )


async def test_memory_store_keeps_the_contract() -> None:
    await check_checkpoint_store(MemoryStore)


class Respacing(MemoryStore):
    """Keeps outputs indented: the same JSON values in other text, which the contract allows."""

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        indented = json.dumps(json.loads(checkpoint.output), indent=1, ensure_ascii=True)
        await super().save_step(dataclasses.replace(checkpoint, output=indented), lease=lease)


class ForgetsNowait(MemoryStore):
    def save_manifest_nowait(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        pass


class KeepsTheFirstStep(MemoryStore):
    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        if checkpoint.step not in (await self.load_run(checkpoint.run_id)).steps:
            await super().save_step(checkpoint, lease=lease)


class ListsWhatWasThereAtOpen(MemoryStore):
    """Lists from a snapshot taken when it opened, as a file store ignoring its journal would."""

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[MemoryStore]:
        async with super().open():
            self.at_open = [info async for info in super().list_runs()]
            yield self

    async def list_runs(
        self, *, flow: str | None = None, status: str | None = None, since: str | None = None
    ) -> AsyncIterator[RunInfo]:
        await self.load_run("-")  # raises when not open
        for info in self.at_open:
            if flow in (None, info.flow) and status in (None, info.status):
                if since is None or info.updated_at >= since:
                    yield info


class WorksWhenClosed(MemoryStore):
    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        try:
            return await super().load_run(run_id)
        except CheckpointError:
            return RunCheckpoints()


class ForgetsAtClose:
    """A store that starts empty at each open: a new MemoryStore inside, each time."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    @property
    def codec(self) -> Codec:
        return self.inner.codec

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[ForgetsAtClose]:
        self.inner = MemoryStore()
        async with self.inner.open():
            yield self

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        return await self.inner.load_run(run_id)

    async def save_manifest(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        await self.inner.save_manifest(manifest, lease=lease)

    def save_manifest_nowait(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        self.inner.save_manifest_nowait(manifest, lease=lease)

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        await self.inner.save_step(checkpoint, lease=lease)

    async def claim_run(self, run_id: str, /, *, owner: str, ttl: float) -> Lease | None:
        return await self.inner.claim_run(run_id, owner=owner, ttl=ttl)

    async def renew_leases(self, leases: Sequence[Lease], /, *, ttl: float) -> list[Lease | None]:
        return await self.inner.renew_leases(leases, ttl=ttl)

    async def release_run(self, lease: Lease, /) -> None:
        await self.inner.release_run(lease)

    async def create_run_if_absent(self, manifest: RunManifest, /) -> bool:
        return await self.inner.create_run_if_absent(manifest)

    def list_runs(
        self, *, flow: str | None = None, status: str | None = None, since: str | None = None
    ) -> AsyncIterator[RunInfo]:
        return self.inner.list_runs(flow=flow, status=status, since=since)

    async def delete_run(self, run_id: str, /) -> bool:
        return await self.inner.delete_run(run_id)


class DeletesOnlyTheManifest(MemoryStore):
    """Deletes a run's manifest but keeps its step checkpoints."""

    async def delete_run(self, run_id: str, /) -> bool:
        manifest = (await self.load_run(run_id)).manifest
        steps = dict((await self.load_run(run_id)).steps)
        await super().delete_run(run_id)
        for checkpoint in steps.values():
            await self.save_step(checkpoint)
        return manifest is not None or bool(steps)


class Damageable(MemoryStore):
    """A test marks entries damaged; loading reports them until saved again, as FileStore does."""

    def __init__(self) -> None:
        super().__init__()
        self.damaged: set[tuple[str, str]] = set()

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        loaded = await super().load_run(run_id)
        bad = sorted(s for r, s in self.damaged if r == run_id and s in loaded.steps)
        if not bad:
            return loaded
        steps = {name: c for name, c in loaded.steps.items() if name not in bad}
        return RunCheckpoints(loaded.manifest, steps, tuple(Discarded(s, "", "bad") for s in bad))

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        await super().save_step(checkpoint, lease=lease)
        self.damaged.discard((checkpoint.run_id, checkpoint.step))


class RaisesOnDamage(Damageable):
    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        loaded = await super().load_run(run_id)
        if loaded.discarded:
            raise CheckpointError(f"run {run_id!r} has a damaged entry")
        return loaded


class IgnoresLeases(MemoryStore):
    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        await super().save_step(checkpoint)


class AdmitsTwice(MemoryStore):
    """Checks, then writes, with an await between: not atomic."""

    async def create_run_if_absent(self, manifest: RunManifest, /) -> bool:
        if (await self.load_run(manifest.run_id)).manifest is not None:
            return False
        await self.save_manifest(manifest)
        return True


class IgnoresFilters(MemoryStore):
    def list_runs(
        self, *, flow: str | None = None, status: str | None = None, since: str | None = None
    ) -> AsyncIterator[RunInfo]:
        return super().list_runs()


class DropsDetails(MemoryStore):
    async def save_manifest(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        await super().save_manifest(dataclasses.replace(manifest, details=""), lease=lease)


class ForgetsEpochsOnDelete(MemoryStore):
    async def delete_run(self, run_id: str, /) -> bool:
        self._epochs.pop(run_id, None)
        return await super().delete_run(run_id)


class NeverExpires(MemoryStore):
    def __init__(self) -> None:
        super().__init__(clock=lambda: 0.0)


def mark_damaged(store: Damageable, run_id: str, step: str) -> None:
    store.damaged.add((run_id, step))


async def test_a_store_may_keep_json_text_re_spaced() -> None:
    await check_checkpoint_store(Respacing)


async def test_a_store_without_persistence_passes_when_it_says_so() -> None:
    await check_checkpoint_store(ForgetsAtClose, persistent=False)


async def test_a_store_reporting_damaged_entries_passes() -> None:
    await check_checkpoint_store(Damageable, damage=mark_damaged)


BROKEN = {
    "drops manifests saved without waiting": (ForgetsNowait, None, "manifest before steps"),
    "keeps a step's first checkpoint": (KeepsTheFirstStep, None, "overwrite"),
    "lists what was there at open": (ListsWhatWasThereAtOpen, None, "list_runs"),
    "forgets everything at close": (ForgetsAtClose, None, "round trip"),
    "works when not open": (WorksWhenClosed, None, "outside open()"),
    "keeps a deleted run's steps": (DeletesOnlyTheManifest, None, "delete_run"),
    "raises on a damaged entry": (RaisesOnDamage, mark_damaged, "a damaged entry"),
    "ignores leases": (IgnoresLeases, None, "fencing"),
    "admits a run twice": (AdmitsTwice, None, "admission"),
    "ignores filters": (IgnoresFilters, None, "list_runs filters"),
    "drops details": (DropsDetails, None, "details"),
    "forgets epochs on delete": (ForgetsEpochsOnDelete, None, "leases"),
    "leases never expire": (NeverExpires, None, "lease expiry"),
}


@pytest.mark.parametrize(("store", "damage", "check"), BROKEN.values(), ids=BROKEN.keys())
async def test_a_store_breaking_the_contract_fails_the_check_it_breaks(
    store: Callable[[], CheckpointStore],
    damage: Callable[[Any, str, str], None] | None,
    check: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each defect is caught by the check named for it (a check that cannot fail checks nothing)."""
    monkeypatch.setattr(_conformance, "EXPIRY_WAIT", 1.0)
    with pytest.raises(AssertionError, match=rf"^check_checkpoint_store: {re.escape(check)}: "):
        await check_checkpoint_store(store, damage=damage)


def test_the_public_names_of_asyncflow_stores_live_there() -> None:
    """__all__ is sorted and complete; each name prints as asyncflow.stores.X."""
    public = {
        name
        for name, value in vars(asyncflow.stores).items()
        if not name.startswith("_") and not isinstance(value, type(asyncflow))
    } - {"annotations"}
    assert asyncflow.stores.__all__ == sorted(asyncflow.stores.__all__)
    assert public <= set(asyncflow.stores.__all__) == public | {"MemoryStore"}
    for name in asyncflow.stores.__all__:
        assert getattr(asyncflow.stores, name).__module__ == "asyncflow.stores", name
    assert asyncflow.FileStore is FileStore
    assert asyncflow.CheckpointStore is asyncflow.stores.CheckpointStore


@pytest.mark.parametrize("module", ["_memory.py", "_conformance.py"])
def test_memory_store_and_the_checks_use_public_names_only(module: str) -> None:
    """Written as a user's store would be: from asyncflow and asyncflow.stores, by their __all__."""
    tree = ast.parse((STORES / module).read_text())
    ours = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and (n.level or "asyncflow" in (n.module or ""))
    ]
    assert ours
    for node in ours:
        assert node.level == 0
        assert node.module in {"asyncflow", "asyncflow.stores"}, node.module
        exported = vars(sys.modules[node.module])["__all__"]
        assert {alias.name for alias in node.names} <= set(exported)
