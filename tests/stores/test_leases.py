"""Leases: one owner per run, epochs that fence a stale owner's writes, admission."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from asyncflow import LeaseLostError
from asyncflow.stores import FileStore, Lease, MemoryStore, RunManifest, StepCheckpoint

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


def manifest(run_id: str, status: str = "running") -> RunManifest:
    return RunManifest(run_id, "f", "fp", "{}", status, "2026-01-01T00:00:00+00:00", "t")


def step(run_id: str, name: str = "a") -> StepCheckpoint:
    return StepCheckpoint(run_id, name, "fp", "d", '"x"')


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_paused_owner_whose_lease_expired_cannot_write_after_the_takeover() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    async with store.open():
        first = await store.claim_run("r", owner="a", ttl=10)
        assert first is not None
        assert first.expires_at == 1010.0
        await store.save_step(step("r"), lease=first)
        assert await store.claim_run("r", owner="b", ttl=10) is None
        clock.now += 11  # "a" paused past its lease, renewing nothing
        second = await store.claim_run("r", owner="b", ttl=10)
        assert second is not None
        assert second.epoch > first.epoch
        with pytest.raises(LeaseLostError) as lost:
            await store.save_step(step("r", "b"), lease=first)
        assert (lost.value.run_id, lost.value.epoch) == ("r", first.epoch)
        store.save_manifest_nowait(manifest("r", "failed"), lease=first)
        with pytest.raises(LeaseLostError, match="taken over"):
            await store.save_manifest(manifest("r", "failed"), lease=first)
        assert await store.renew_leases([first, second], ttl=10) == [None, second]
        got = await store.load_run("r")
        assert sorted(got.steps) == ["a"]
        assert got.manifest is None
        await store.save_step(step("r", "b"), lease=second)


async def test_the_same_owner_renews_and_epochs_never_go_down_after_delete() -> None:
    store = MemoryStore()
    async with store.open():
        lease = await store.claim_run("r", owner="a", ttl=30)
        assert lease is not None
        again = await store.claim_run("r", owner="a", ttl=60)
        assert again is not None
        assert again.epoch == lease.epoch
        await store.release_run(again)
        await store.release_run(again)  # idempotent
        await store.delete_run("r")
        later = await store.claim_run("r", owner="b", ttl=30)
        assert later is not None
        assert later.epoch > lease.epoch
        with pytest.raises(ValueError, match="ttl"):
            await store.claim_run("r", owner="b", ttl=0)


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_admission_creates_a_run_once(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else FileStore(f"{tmp_path}/s")
    async with store.open():
        assert await store.create_run_if_absent(manifest("r", "pending")) is True
        assert await store.create_run_if_absent(manifest("r", "pending")) is False
        listed = [i.run_id async for i in store.list_runs(status="pending")]
        assert listed == ["r"]
        assert [i async for i in store.list_runs(status="running")] == []


async def test_file_store_leases_last_as_long_as_their_holder(tmp_path: Path) -> None:
    one, two = FileStore(tmp_path / "s"), FileStore(tmp_path / "s")
    async with one.open(), two.open():
        lease = await one.claim_run("r", owner="a", ttl=1)
        assert lease is not None
        assert lease.expires_at == math.inf
        assert await two.claim_run("r", owner="b", ttl=1) is None
        assert await one.claim_run("r", owner="c", ttl=1) is None  # another owner, same store
        await one.save_step(step("r"), lease=lease)
        await one.release_run(lease)
        taken = await two.claim_run("r", owner="b", ttl=1)
        assert taken is not None
        assert taken.epoch > lease.epoch
        with pytest.raises(LeaseLostError):
            await one.save_step(step("r", "b"), lease=lease)
    async with one.open():
        assert await one.claim_run("r", owner="a", ttl=1) is not None  # closing released it


async def test_file_stores_sharing_a_folder_see_each_others_saves_before_compaction(
    tmp_path: Path,
) -> None:
    one, two = FileStore(tmp_path / "s"), FileStore(tmp_path / "s")
    async with one.open(), two.open():
        await one.save_manifest(manifest("r"))
        await one.save_step(step("r"))
        got = await two.load_run("r")
        assert got.manifest == manifest("r")
        assert sorted(got.steps) == ["a"]
        assert [i.run_id async for i in two.list_runs()] == ["r"]
        assert await two.create_run_if_absent(manifest("r", "pending")) is False
        await two.save_step(step("r", "b"))
        await one.save_step(step("r", "a2"))
        assert sorted((await two.load_run("r")).steps) == ["a", "a2", "b"]
        assert sorted((await one.load_run("r")).steps) == ["a", "a2", "b"]


async def test_file_store_claims_in_one_trip_still_give_one_owner_each(tmp_path: Path) -> None:
    """Claims waiting together share the loader's trip: the kernel still picks one owner."""
    store = FileStore(tmp_path / "s")
    async with store.open():
        got: list[tuple[str, Lease | None]] = []

        async def claim(owner: str) -> None:
            got.append((owner, await store.claim_run("r", owner=owner, ttl=1)))

        async with anyio.create_task_group() as tg:
            for owner in ("a", "a", "b", "c"):
                tg.start_soon(claim, owner)
        winners = {owner for owner, lease in got if lease is not None}
        assert len(winners) == 1, got
        (winner,) = winners
        leases = [lease for owner, lease in got if owner == winner]
        assert all(lease is not None for lease in leases)
        assert len({lease.epoch for lease in leases if lease is not None}) == 1  # one lease


async def test_file_store_released_then_claimed_again_by_the_same_owner(tmp_path: Path) -> None:
    store, other = FileStore(tmp_path / "s"), FileStore(tmp_path / "s")
    async with store.open(), other.open():
        first = await store.claim_run("r", owner="a", ttl=1)
        assert first is not None
        await store.release_run(first)
        again = await store.claim_run("r", owner="a", ttl=1)
        assert again is not None
        assert again.epoch > first.epoch
        with pytest.raises(LeaseLostError):
            await store.save_step(step("r"), lease=first)
        assert await other.claim_run("r", owner="b", ttl=1) is None  # the lock stayed held
        await store.release_run(again)
        assert await other.claim_run("r", owner="b", ttl=1) is not None


async def test_file_store_load_after_a_claim_sees_saves_and_compactions_since(
    tmp_path: Path,
) -> None:
    """The claim reads the run for the load after it; what changed between is not lost."""
    store = FileStore(tmp_path / "s")
    async with store.open():
        lease = await store.claim_run("r", owner="a", ttl=1)
        assert lease is not None
        await store.save_step(step("r", "a"), lease=lease)
        got = await store.load_run("r")
        assert sorted(got.steps) == ["a"]
        await store.release_run(lease)
        lease = await store.claim_run("r", owner="a", ttl=1)
        assert lease is not None
        await store.save_step(step("r", "b"), lease=lease)
        await store.compact()  # records move from the journal to the run file meanwhile
        got = await store.load_run("r")
        assert sorted(got.steps) == ["a", "b"]
        # And a claim whose read predates a compaction of records saved before it.
        await store.save_step(step("r", "c"), lease=lease)
        await store.release_run(lease)
        lease = await store.claim_run("r", owner="a", ttl=1)
        await store.compact()
        got = await store.load_run("r")
        assert sorted(got.steps) == ["a", "b", "c"]


async def test_file_store_release_does_not_wait_for_a_cancelled_store(tmp_path: Path) -> None:
    """A shielded release after the store's tasks were cancelled: no hang, the lock dropped."""
    store = FileStore(tmp_path / "s")
    with anyio.CancelScope() as outer:
        async with store.open():
            lease = await store.claim_run("r", owner="a", ttl=1)
            assert lease is not None
            outer.cancel()  # the store's loader goes, as a service's shutdown cancels it
            with anyio.CancelScope(shield=True), anyio.fail_after(10):
                await anyio.lowlevel.checkpoint()
                await store.release_run(lease)
    async with FileStore(tmp_path / "s").open() as other:
        assert await other.claim_run("r", owner="b", ttl=1) is not None
