"""PostgresStore: the contract on a real server, fencing, wake-ups, migrations, restarts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest

from asyncflow.stores.postgres import PostgresStore
from asyncflow.testing import check_checkpoint_store

if TYPE_CHECKING:
    from collections.abc import Callable

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
