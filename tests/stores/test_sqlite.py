"""SqliteStore: the contract, durability per save, fencing, several processes on one file."""

from __future__ import annotations

import itertools
import sqlite3
from typing import TYPE_CHECKING

import pytest

from asyncflow.stores import SqliteStore
from asyncflow.testing import check_checkpoint_store

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


def damage_step(store: SqliteStore, run_id: str, step: str) -> None:
    """Make a step's kept output something that is not JSON text."""
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "UPDATE asyncflow_steps SET output = '{not json' WHERE run_id = ? AND step = ?",
            (run_id, step),
        )


async def test_sqlite_store_keeps_the_contract(tmp_path: Path) -> None:
    files = itertools.count()
    await check_checkpoint_store(
        lambda: SqliteStore(tmp_path / f"store-{next(files)}.db"), damage=damage_step
    )
