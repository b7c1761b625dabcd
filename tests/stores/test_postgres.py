"""PostgresStore: the contract on a real server, fencing, wake-ups, migrations, restarts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import psycopg
import pytest

from asyncflow import CheckpointError, Engine, Flow
from asyncflow._cli import main
from asyncflow.stores import StepCheckpoint
from asyncflow.stores.postgres import PostgresStore
from asyncflow.testing import check_checkpoint_store
from tests.helpers import until

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.servers import Postgres

pytestmark = pytest.mark.anyio

# The module's DSNs are kept per store so damage() can reach the store's database.
_dsns: dict[int, str] = {}


def store_in(dsn: str) -> PostgresStore:
    store = PostgresStore(dsn)
    _dsns[id(store)] = dsn
    return store


def damage_step(store: PostgresStore, run_id: str, step: str) -> None:
    """Make a step's kept output something that is not JSON text."""
    with psycopg.connect(_dsns[id(store)], autocommit=True) as conn:
        conn.execute(
            "UPDATE asyncflow_steps SET output = '{not json' WHERE run_id = %s AND step = %s",
            (run_id, step),
        )


async def test_postgres_store_keeps_the_contract(new_database: Callable[[], str]) -> None:
    await check_checkpoint_store(lambda: store_in(new_database()), damage=damage_step)


def step(run_id: str, name: str = "a", output: str = '"x"') -> StepCheckpoint:
    return StepCheckpoint(run_id, name, "fp", "d", output)


async def test_a_database_behind_is_refused_until_migrated(
    new_database: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = new_database()
    with pytest.raises(CheckpointError, match="asyncflow store migrate DSN --apply"):
        async with PostgresStore(dsn, migrate=False).open():
            pass
    assert await anyio.to_thread.run_sync(main, ["store", "migrate", dsn]) == 0
    printed = capsys.readouterr().out
    assert "CREATE TABLE asyncflow_runs" in printed
    assert "not applied" in printed
    with pytest.raises(CheckpointError, match="lacks schema version 1"):
        async with PostgresStore(dsn, migrate=False).open():
            pass
    assert await anyio.to_thread.run_sync(main, ["store", "migrate", dsn, "--apply"]) == 0
    assert "applied schema version 1" in capsys.readouterr().out
    async with PostgresStore(dsn, migrate=False).open() as store:
        await store.save_step(step("r"))
    assert await anyio.to_thread.run_sync(main, ["store", "migrate", dsn]) == 0
    assert "up to date" in capsys.readouterr().out


async def test_engines_opening_a_new_database_at_once_migrate_it_once(
    new_database: Callable[[], str],
) -> None:
    dsn = new_database()

    async def use(i: int) -> None:
        async with PostgresStore(dsn).open() as store:
            await store.save_step(step(f"r{i}"))

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(use, i)
    async with PostgresStore(dsn).open() as store:
        for i in range(4):
            assert sorted((await store.load_run(f"r{i}")).steps) == ["a"]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM asyncflow_schema").fetchone() == (1,)


async def test_a_release_wakes_an_engine_waiting_for_the_run(
    new_database: Callable[[], str],
) -> None:
    dsn = new_database()
    one, two = PostgresStore(dsn), PostgresStore(dsn)
    async with one.open(), two.open():
        lease = await one.claim_run("r", owner="a", ttl=600)  # no expiry within the test
        assert lease is not None
        woke = anyio.Event()

        async def wait() -> None:
            await two.wait_released("r")
            woke.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await until(lambda: two._listening)  # LISTEN is in place (no public event for it)
            await one.release_run(lease)
            with anyio.fail_after(30):
                await woke.wait()
        taken = await two.claim_run("r", owner="b", ttl=600)
        assert taken is not None
        assert taken.epoch > lease.epoch


async def test_a_server_restart_mid_run_loses_nothing(
    new_database: Callable[[], str], postgres_server: Postgres
) -> None:
    """Saves made while the server is down are retried and land; every acknowledged one is kept."""
    store = PostgresStore(new_database(), retry_timeout=120)
    async with store.open():
        lease = await store.claim_run("r", owner="a", ttl=600)
        assert lease is not None
        for i in range(20):
            await store.save_step(step("r", f"s{i}"), lease=lease)
        acknowledged: list[int] = []

        async def save_more() -> None:
            for i in range(20, 40):
                await store.save_step(step("r", f"s{i}"), lease=lease)
                acknowledged.append(i)

        await anyio.to_thread.run_sync(postgres_server.stop)
        async with anyio.create_task_group() as tg:
            tg.start_soon(save_more)
            await anyio.to_thread.run_sync(postgres_server.start)
        assert acknowledged == list(range(20, 40))
        got = await store.load_run("r")
        assert sorted(got.steps) == sorted(f"s{i}" for i in range(40))
        assert await store.renew_leases([lease], ttl=600) != [None]  # the lease survived too


async def test_an_unreachable_server_is_a_clear_checkpoint_error(
    new_database: Callable[[], str], postgres_server: Postgres
) -> None:
    store = PostgresStore(new_database(), retry_timeout=0.5)
    async with store.open():
        await store.save_step(step("r"))
        await anyio.to_thread.run_sync(postgres_server.stop)
        try:
            with pytest.raises(CheckpointError, match=r"unreachable for 0\.5 s"):
                await store.save_step(step("r", "b"))
            with pytest.raises(CheckpointError, match="unreachable"):
                await store.load_run("r")
        finally:
            await anyio.to_thread.run_sync(postgres_server.start)
        # It works again once the pool has reconnected (its own backoff may outlast 0.5 s).
        with anyio.fail_after(30):
            while True:
                try:
                    got = await store.load_run("r")
                except CheckpointError:
                    await anyio.sleep(0.1)
                else:
                    break
        assert sorted(got.steps) == ["a"]
    port = postgres_server.port + 1  # nothing listens there
    with pytest.raises(CheckpointError, match="Cannot connect"):
        async with PostgresStore(
            f"postgresql://postgres@127.0.0.1:{port}/x", connect_timeout=0.5
        ).open():
            pass


def test_the_store_prints_without_the_password() -> None:
    store = PostgresStore("postgresql://me:s3cret@db.example:6432/app", prepare_threshold=None)
    assert repr(store) == "PostgresStore('db.example:6432/app')"
    with pytest.raises(ValueError, match="max_size"):
        PostgresStore("postgresql://h/db", min_size=5, max_size=2)


async def test_a_batch_survives_a_server_restart_mid_run(
    new_database: Callable[[], str], postgres_server: Postgres
) -> None:
    """Engine.map keeps going through a restart: the store's calls are retried, nothing lost."""
    flow = Flow("restart")
    done: list[int] = []
    restarted = anyio.Event()  # runs from 100 on wait for it: the batch outlasts the restart

    @flow.step
    async def fetch(n: int) -> int:
        await anyio.sleep(0.005)
        return n

    @flow.step
    async def count(fetch: int) -> int:
        if fetch >= 100:
            await restarted.wait()
        done.append(fetch)
        return fetch + 1

    store = PostgresStore(new_database(), retry_timeout=120)
    n = 300
    async with Engine(store=store) as engine:
        batch = engine.map(flow, ({"n": i} for i in range(n)), concurrency=20, progress=False)
        async with anyio.create_task_group() as tg:

            async def restart() -> None:
                await until(lambda: len(done) >= 50)
                await anyio.to_thread.run_sync(postgres_server.stop)
                await anyio.to_thread.run_sync(postgres_server.start)
                restarted.set()

            tg.start_soon(restart)
            summary = await batch.summary()
        assert sorted(done) == list(range(n))  # each ran once: no save failed, none repeated
    assert (summary.succeeded, summary.failed) == (n, 0)
    async with store.open():
        runs = [info async for info in store.list_runs(status="succeeded")]
        assert len(runs) == n
        for info in runs:
            assert sorted((await store.load_run(info.run_id)).steps) == ["count", "fetch"]
