"""Real processes killed with SIGKILL at random moments, restarted until they finish."""

from __future__ import annotations

import json
import random
from functools import partial
from typing import TYPE_CHECKING

import pytest

from tests.helpers import Child, dones, log_lines
from tests.stores.files import settle

if TYPE_CHECKING:
    from pathlib import Path

DOCS = 200
MIN_KILLS = 20
MAX_KILLS = 26


def spawn(store: Path, log: Path) -> Child:
    return Child("tests.crash_child", str(store), str(log), str(DOCS), log=log)


def durable_at_least(n: int, lines: list[str]) -> bool:
    return dones(lines) >= n


def logged_since(start: int, word: str, lines: list[str]) -> bool:
    return word in lines[start:]


def check_no_reexecution(log_lines: list[str]) -> int:
    """Fail if a step ran again after its checkpoint was durable; return executions."""
    durable: set[tuple[str, str]] = set()
    executions = 0
    for n, line in enumerate(log_lines):
        kind, *rest = line.split()
        if kind == "done":
            durable.add((rest[0], rest[1]))
        elif kind == "exec":
            executions += 1
            key = (rest[0], rest[1])
            assert key not in durable, f"line {n}: {key} ran again after its checkpoint was durable"
    return executions


@pytest.mark.timeout(120)
def test_sigkill_at_random_moments_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    """A pipeline SIGKILLed 20+ times resumes to the outputs of an uninterrupted run.

    No step whose checkpoint was durable runs again; every checkpoint file parses.
    """
    rng = random.Random(20260427)
    # An uninterrupted run, for the expected outputs.
    expected = spawn(tmp_path / "clean", tmp_path / "clean.log").finish_json()
    assert isinstance(expected, dict)
    assert len(expected) == DOCS

    store, log = tmp_path / "store", tmp_path / "run.log"
    kills = 0
    out = None
    while out is None:
        child = spawn(store, log)
        start = len(child.lines())
        done_at_start = dones(child.lines())
        if kills >= MAX_KILLS:
            out = child.finish()
            break
        # Progress-driven kill points: after a number of new durable checkpoints, sometimes
        # right after the engine opened (recovery just ran); near the end, once it started
        # closing (compaction), which lets the run finish first.
        target = rng.choice(["done", "done", "done", "open"])
        if kills >= MIN_KILLS and rng.random() < 0.5:
            target = "close"
        if target == "done":
            condition = partial(durable_at_least, done_at_start + rng.randint(1, 25))
        else:
            condition = partial(logged_since, start, target)
        reached = child.wait_for(condition, exit_ok=True)
        if reached and child.alive():
            child.kill()
            kills += 1
        else:
            out = child.finish()
    assert kills >= MIN_KILLS, f"only {kills} kills: the child finished too fast"

    assert json.loads(out) == expected
    executions = check_no_reexecution(log_lines(log))
    assert executions >= 3 * DOCS

    # A last pass restores everything and executes nothing.
    before = len(log_lines(log))
    assert spawn(store, log).finish_json() == expected
    assert not [ln for ln in log_lines(log)[before:] if ln.startswith("exec")]

    # Every checkpoint file parses; no temp file, moved-aside file or journal segment is left
    # once the journal the last engine left is compacted (as the next open does).
    settle(store)
    leftovers = [p for p in store.rglob("*") if p.is_file() and not p.name.endswith(".json")]
    leases = [p for p in leftovers if p.parent == store / ".journal" / "leases"]
    assert [p for p in leftovers if p not in leases] == [store / ".journal" / "sequence"]
    assert {p.stat().st_size for p in leases} == {0}  # lock files: never written
    runs = [p for p in store.iterdir() if not p.name.startswith(".")]
    assert len(runs) == DOCS
    for run in runs:
        record = json.loads(run.read_text())
        assert (record["format"], record["version"]) == ("asyncflow.run", 1)
        assert f"{record['run_id']}.json" == run.name
        assert record["manifest"]["status"] == "succeeded"
        assert sorted(record["steps"]) == ["enrich", "ingest", "summarize"]
