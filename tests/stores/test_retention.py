"""prune_runs and ``asyncflow store prune``: finished runs older than a time go, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from asyncflow import Engine, FileStore, Flow
from asyncflow.stores import MemoryStore, RunManifest, SqliteStore, prune_runs
from tests.test_cli import cli

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from asyncflow.stores import CheckpointStore

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)


def ended(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat(timespec="milliseconds")


#: run id -> (flow, status, days since its last update)
RUNS = {
    "old-ok": ("docs", "succeeded", 40),
    "old-failed": ("docs", "failed", 40),
    "old-other-flow": ("other", "succeeded", 40),
    "old-running": ("docs", "running", 40),  # its process died, or it still runs: kept
    "old-pending": ("docs", "pending", 40),
    "new-ok": ("docs", "succeeded", 1),
    "_trigger.nightly": ("asyncflow.trigger-state", "succeeded", 40),  # a Cron's watermark
}


async def fill(store: CheckpointStore) -> None:
    for run_id, (flow, status, days) in RUNS.items():
        m = RunManifest(run_id, flow, "fp", "{}", status, ended(days + 1), ended(days))
        await store.save_manifest(m)


STORES: dict[str, Callable[[Path], CheckpointStore]] = {
    "file": lambda p: FileStore(p / "store"),
    "sqlite": lambda p: SqliteStore(p / "runs.db"),
}


async def ids(store: CheckpointStore) -> set[str]:
    return {info.run_id async for info in store.list_runs()}


@pytest.mark.parametrize("kind", STORES)
async def test_prune_deletes_only_finished_runs_older_than_the_time(
    tmp_path: Path, kind: str
) -> None:
    """Across a reopen, as a cron job would run it; a dry run deletes nothing."""
    store = STORES[kind](tmp_path)
    async with store.open():
        await fill(store)
    month = NOW - timedelta(days=30)
    store = STORES[kind](tmp_path)
    async with store.open():
        dry = await prune_runs(store, finished_before=month, dry_run=True)
        assert set(dry.deleted) == {"old-ok", "old-failed", "old-other-flow"}
        assert await ids(store) == set(RUNS)
        only = await prune_runs(store, finished_before=month, statuses=["failed"], flow="docs")
        assert (only.deleted, only.kept) == (("old-failed",), ())
        pruned = await prune_runs(store, finished_before=month)
        assert set(pruned.deleted) == {"old-ok", "old-other-flow"}
        assert pruned.kept == ()
        kept = {"old-running", "old-pending", "new-ok", "_trigger.nightly"}
        assert await ids(store) == kept
    store = STORES[kind](tmp_path)
    async with store.open():
        assert await ids(store) == kept  # gone for good, not back from a journal


async def test_trigger_state_goes_only_when_its_flow_is_named() -> None:
    store = MemoryStore()
    async with store.open():
        await fill(store)
        later = NOW + timedelta(days=1)
        named = await prune_runs(store, finished_before=later, flow="asyncflow.trigger-state")
        assert named.deleted == ("_trigger.nightly",)


async def test_a_run_held_in_an_open_engines_journal_is_kept_with_the_reason(
    tmp_path: Path,
) -> None:
    """FileStore refuses to delete a run its open journal holds: reported, prune again later."""
    flow = Flow("tiny")

    @flow.step
    async def one() -> int:
        return 1

    async with Engine(store=FileStore(tmp_path)) as engine:
        assert (await engine.run(flow, run_id="t-1")).ok
        store = engine.store
        assert store is not None
        pruned = await prune_runs(store, finished_before=NOW + timedelta(days=1))
        assert pruned.deleted == ()
        ((run_id, reason),) = pruned.kept
        assert run_id == "t-1"
        assert "still has records in the journal" in reason
    async with FileStore(tmp_path).open() as store:
        again = await prune_runs(store, finished_before=NOW + timedelta(days=1))
        assert again.deleted == ("t-1",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"finished_before": datetime(2026, 1, 1)}, "has no time zone"),
        ({"finished_before": NOW, "statuses": ["running"]}, "finished runs only"),
        ({"finished_before": NOW, "statuses": []}, "finished runs only"),
    ],
)
async def test_bad_arguments_say_what_to_give(kwargs: dict[str, object], message: str) -> None:
    store = MemoryStore()
    async with store.open():
        with pytest.raises(ValueError, match=message):
            await prune_runs(store, **kwargs)  # type: ignore[arg-type]  # mixed values, on purpose


def test_the_command_prunes_a_file_store_and_says_what_it_did(tmp_path: Path) -> None:
    """``asyncflow store prune``: a dry run lists, the real one deletes; a bad time is exit 2."""
    import anyio

    async def made() -> None:
        async with FileStore(tmp_path / ".asyncflow").open() as store:
            await fill(store)

    anyio.run(made)
    out = cli(tmp_path, "store", "prune", "--finished-before", "30d", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sorted(lines[:-1]) == [f"would delete {r}" for r in ("old-failed", "old-ok", "old-other-flow")]  # fmt: skip
    assert lines[-1].startswith("would delete 3 run(s) that finished before ")
    out = cli(tmp_path, "store", "prune", "--finished-before", "30d", "--status", "succeeded")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()[:-1]) == ["deleted old-ok", "deleted old-other-flow"]
    listed = cli(tmp_path, "runs", "--json")
    assert "old-ok" not in listed.stdout
    assert "old-failed" in listed.stdout
    bad = cli(tmp_path, "store", "prune", "--finished-before", "last tuesday")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert "--finished-before 'last tuesday': give an ISO time" in bad.stderr
    nowhere = cli(tmp_path, "store", "prune", "--finished-before", "1d", "--store", "nope")
    assert nowhere.returncode == 2
    assert "There is no store at 'nope'" in nowhere.stderr
