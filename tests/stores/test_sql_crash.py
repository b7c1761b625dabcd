"""SQL stores across processes: a paused owner is fenced, a killed worker's runs are taken over."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncflow.stores import CheckpointStore, SqliteStore
from tests.helpers import Child

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, target): a new SQLite file or a new Postgres database."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "shared.db")
    new_database: Callable[[], str] = request.getfixturevalue("new_database")
    return "postgres", new_database()


def open_store(kind: str, where: str) -> CheckpointStore:
    if kind == "sqlite":
        return SqliteStore(where)
    from asyncflow.stores.postgres import PostgresStore

    return PostgresStore(where)


async def test_a_process_paused_past_its_lease_cannot_write_after_the_takeover(
    target: tuple[str, str], tmp_path: Path
) -> None:
    kind, where = target
    child = Child(
        "tests.stores.sql_child", "pause", kind, where, str(tmp_path / "log"), log=tmp_path / "log"
    )
    try:
        await anyio.to_thread.run_sync(lambda: child.wait_for(lambda lines: "claimed" in lines))
        os.kill(child.proc.pid, signal.SIGSTOP)
        store = open_store(kind, where)
        async with store.open():
            with anyio.fail_after(30):
                while (lease := await store.claim_run("r", owner="taker", ttl=60)) is None:  # noqa: ASYNC110 - a lapse has no event
                    await anyio.sleep(0.05)
            os.kill(child.proc.pid, signal.SIGCONT)
            child.send("go")
            await anyio.to_thread.run_sync(child.finish)
            assert child.lines() == ["claimed", "refused", "refused"]
            got = await store.load_run("r")
            assert sorted(got.steps) == ["a"]
            assert got.manifest is None
            assert lease.epoch > 1
    finally:
        if child.alive():
            os.kill(child.proc.pid, signal.SIGCONT)
            child.kill()


def durable_steps_never_ran_again(lines: list[str]) -> list[str]:
    """The ``exec`` lines of steps logged ``done`` before them (a durable step run again)."""
    done: set[str] = set()
    again = []
    for line in lines:
        kind, _, key = line.partition(" ")
        if kind == "done":
            done.add(key)
        elif kind == "exec" and key in done:
            again.append(line)
    return again


async def test_a_killed_worker_s_runs_are_taken_over_and_every_document_is_done_once(
    target: tuple[str, str], tmp_path: Path
) -> None:
    """A killed worker's runs are taken over by the other once their leases lapse.

    Both map the same batch; every document ends done, and no durable step runs again.
    """
    kind, where = target
    n, log = 60, tmp_path / "log"
    args = ("tests.stores.sql_child", "map", kind, where, str(log), str(n), "1")
    one = Child(*args, log=log)
    two = Child(*args, log=log)
    try:
        await anyio.to_thread.run_sync(
            lambda: one.wait_for(lambda lines: sum(ln.startswith("done") for ln in lines) >= 20)
        )
        assert one.alive(), "the first worker finished before it could be killed"
        one.kill()
        summary = await anyio.to_thread.run_sync(lambda: two.finish_json(120))
        assert isinstance(summary, dict)
        assert summary["failed"] == 0
        assert summary["succeeded"] == n  # restored runs included
        lines = two.lines()
        # A step is done when its checkpoint is durable: logged "done" by the worker that ran
        # it, or, if that one was killed between the commit and the log line, restored.
        done = {ln.split(" ", 1)[1] for ln in lines if ln.startswith(("done ", "restored "))}
        assert done == {f"doc-{i} {s}" for i in range(n) for s in ("parse", "score")}
        assert durable_steps_never_ran_again(lines) == []
    finally:
        for child in (one, two):
            if child.alive():
                child.kill()
