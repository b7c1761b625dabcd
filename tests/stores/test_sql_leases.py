"""SqliteStore and PostgresStore with leases: one owner per run, fencing, admission, filters.

Two store instances on one database stand for two engines (processes) sharing it.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncflow import CheckpointError, LeaseLostError
from asyncflow.stores import RunManifest, SqliteStore, StepCheckpoint

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from asyncflow.stores import CheckpointStore, Lease

pytestmark = pytest.mark.anyio


def manifest(run_id: str, status: str = "running", flow: str = "f", at: str = "t0") -> RunManifest:
    return RunManifest(run_id, flow, "fp", "{}", status, "2026-01-01T00:00:00+00:00", at)


def step(run_id: str, name: str = "a") -> StepCheckpoint:
    return StepCheckpoint(run_id, name, "fp", "d", '"x"')


@pytest.fixture(params=["sqlite", "postgres"])
def make_pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], tuple[CheckpointStore, CheckpointStore]]:
    """Makes two stores on one new database (two engines sharing it)."""
    files = itertools.count()
    if request.param == "sqlite":

        def sqlite_pair() -> tuple[CheckpointStore, CheckpointStore]:
            path = tmp_path / f"s{next(files)}.db"
            return SqliteStore(path), SqliteStore(path)

        return sqlite_pair
    from asyncflow.stores.postgres import PostgresStore

    new_database: Callable[[], str] = request.getfixturevalue("new_database")

    def postgres_pair() -> tuple[CheckpointStore, CheckpointStore]:
        dsn = new_database()
        return PostgresStore(dsn), PostgresStore(dsn)

    return postgres_pair


@contextlib.asynccontextmanager
async def opened(
    make_pair: Callable[[], tuple[CheckpointStore, CheckpointStore]],
) -> AsyncIterator[tuple[CheckpointStore, CheckpointStore]]:
    one, two = make_pair()
    async with one.open(), two.open():
        yield one, two


async def claim_when_free(store: CheckpointStore, run_id: str, owner: str, ttl: float) -> Lease:
    """Claim ``run_id``, trying again until the holder's lease has lapsed (progress-driven)."""
    with anyio.fail_after(30):
        while (lease := await store.claim_run(run_id, owner=owner, ttl=ttl)) is None:  # noqa: ASYNC110 - a lapse has no event
            await anyio.sleep(0.01)
    return lease


async def test_a_stale_owner_cannot_write_after_another_took_the_run_over(
    make_pair: Callable[[], tuple[CheckpointStore, CheckpointStore]],
) -> None:
    async with opened(make_pair) as (one, two):
        first = await one.claim_run("r", owner="a", ttl=0.3)
        assert first is not None
        await one.save_manifest(manifest("r"), lease=first)
        await one.save_step(step("r", "a"), lease=first)
        assert await two.claim_run("r", owner="b", ttl=30) is None  # held, unexpired
        second = await claim_when_free(two, "r", "b", 30)  # "a" paused past its lease
        assert second.epoch > first.epoch
        with pytest.raises(LeaseLostError) as lost:
            await one.save_step(step("r", "late"), lease=first)
        assert (lost.value.run_id, lost.value.epoch) == ("r", first.epoch)
        one.save_manifest_nowait(manifest("r", "failed"), lease=first)
        with pytest.raises(LeaseLostError, match="taken over"):
            await one.save_step(step("r", "b"), lease=first)
        renewed = await one.renew_leases([first, second], ttl=30)
        assert renewed[0] is None
        assert renewed[1] is not None
        assert (renewed[1].owner, renewed[1].epoch) == ("b", second.epoch)
        await two.save_step(step("r", "b"), lease=second)
        got = await two.load_run("r")
        assert sorted(got.steps) == ["a", "b"]
        assert got.manifest == manifest("r")  # the stale "failed" manifest was refused


async def test_one_of_two_racing_claims_wins_and_epochs_only_grow(
    make_pair: Callable[[], tuple[CheckpointStore, CheckpointStore]],
) -> None:
    async with opened(make_pair) as (one, two):
        for n in range(20):
            got: list[Lease | None] = []

            async def claim(
                store: CheckpointStore,
                owner: str,
                run_id: str = f"r{n}",
                got: list[Lease | None] = got,
            ) -> None:
                got.append(await store.claim_run(run_id, owner=owner, ttl=30))

            async with anyio.create_task_group() as tg:
                tg.start_soon(claim, one, "a")
                tg.start_soon(claim, two, "b")
            assert len([lease for lease in got if lease is not None]) <= 1
        lease = await claim_when_free(one, "x", "a", 30)
        again = await one.claim_run("x", owner="a", ttl=60)
        assert again is not None
        assert again.epoch == lease.epoch
        assert again.expires_at > lease.expires_at
        await one.release_run(again)
        await one.release_run(again)  # idempotent
        await one.save_manifest(manifest("x"))
        assert await one.delete_run("x") is True
        later = await claim_when_free(two, "x", "b", 30)
        assert later.epoch > lease.epoch
        with pytest.raises(ValueError, match="ttl"):
            await two.claim_run("x", owner="b", ttl=0)


async def test_admission_creates_a_run_once_across_stores(
    make_pair: Callable[[], tuple[CheckpointStore, CheckpointStore]],
) -> None:
    async with opened(make_pair) as (one, two):
        results: list[bool] = []

        async def admit(store: CheckpointStore) -> None:
            results.append(await store.create_run_if_absent(manifest("r", "pending")))

        async with anyio.create_task_group() as tg:
            for store in (one, two, one, two):
                tg.start_soon(admit, store)
        assert sorted(results) == [False, False, False, True]
        assert [i.run_id async for i in two.list_runs(status="pending")] == ["r"]
        assert (await one.load_run("r")).manifest == manifest("r", "pending")


async def test_listings_filter_by_flow_status_and_time(
    make_pair: Callable[[], tuple[CheckpointStore, CheckpointStore]],
) -> None:
    async with opened(make_pair) as (one, two):
        for i in range(600):
            status = ("running", "succeeded", "failed")[i % 3]
            at = f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00"
            await one.save_manifest(manifest(f"r{i:03d}", status, flow=f"f{i % 2}", at=at))

        async def ids(**filters: str) -> list[str]:
            return [info.run_id async for info in two.list_runs(**filters)]

        assert len(await ids()) == 600
        failed_f1 = await ids(status="failed", flow="f1")
        assert failed_f1 == [f"r{i:03d}" for i in range(600) if i % 3 == 2 and i % 2 == 1]
        assert await ids(since="2026-01-01T00:09:58+00:00") == ["r598", "r599"]
        assert await ids(flow="nope") == []


async def test_closed_sql_stores_refuse_lease_calls(
    make_pair: Callable[[], tuple[CheckpointStore, CheckpointStore]],
) -> None:
    one, _ = make_pair()
    with pytest.raises(CheckpointError, match="not open"):
        await one.claim_run("r", owner="a", ttl=1)
    with pytest.raises(CheckpointError, match="not open"):
        await one.create_run_if_absent(manifest("r"))
