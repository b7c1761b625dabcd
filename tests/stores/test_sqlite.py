"""SqliteStore: the contract, durability per acknowledged save, files it cannot use.

Leases and several processes: test_sql_leases and test_sql_crash, with PostgresStore.
"""

from __future__ import annotations

import itertools
import sqlite3
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncflow import CheckpointError
from asyncflow._cli import main
from asyncflow.stores import SqliteStore
from asyncflow.testing import check_checkpoint_store
from tests.helpers import Child

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


async def test_every_acknowledged_save_survives_a_sigkill(tmp_path: Path) -> None:
    """50 savers group-committing; SIGKILL mid-stream; each save that returned is in the file."""
    path, log = tmp_path / "store.db", tmp_path / "log"
    child = Child("tests.stores.sql_child", "saves", "sqlite", str(path), str(log), log=log)
    try:
        await anyio.to_thread.run_sync(lambda: child.wait_for(lambda lines: len(lines) >= 2000))
    finally:
        child.kill()
    acked = [line.split()[1:] for line in child.lines() if line.startswith("acked ")]
    assert len(acked) >= 2000
    store = SqliteStore(path)
    async with store.open():
        kept: dict[str, set[str]] = {}
        for run_id in {run for run, _ in acked}:
            kept[run_id] = set((await store.load_run(run_id)).steps)
    assert [(run, step) for run, step in acked if step not in kept[run]] == []


async def test_the_store_explains_a_file_it_cannot_use(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_text("hello, I am text" * 100)
    with pytest.raises(CheckpointError, match="Cannot use the SQLite checkpoint database"):
        async with SqliteStore(tmp_path / "not-a-db").open():
            pass
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db").open():
        pass
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("INSERT INTO asyncflow_schema (version) VALUES (99)")
    with pytest.raises(CheckpointError, match="schema version 99, newer"):
        async with SqliteStore(tmp_path / "s.db").open():
            pass


def test_store_migrate_prints_a_script_that_makes_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new.db"
    assert main(["store", "migrate", str(path)]) == 0
    script = capsys.readouterr().out
    assert not path.exists()  # printing changes nothing
    with sqlite3.connect(path) as conn:
        conn.executescript(script)
    assert main(["store", "migrate", str(path)]) == 0
    assert "up to date (version 1)" in capsys.readouterr().out
    assert main(["store", "migrate", str(tmp_path / "other.db"), "--apply"]) == 0
    assert "applied schema version 1" in capsys.readouterr().out
