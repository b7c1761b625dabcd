"""Real processes killed with SIGKILL at random moments, restarted until they finish."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

CHILD = Path(__file__).with_name("crash_child.py")
DOCS = 200
MIN_KILLS = 20
MAX_KILLS = 26


def spawn(store: Path, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(store), str(log), str(DOCS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def durable(log: Path) -> int:
    return sum(1 for ln in lines(log) if ln.startswith("done "))


def wait_for_growth(
    proc: subprocess.Popen[str], log: Path, start: int, grow: int, count: Callable[[Path], int]
) -> bool:
    """Wait until ``count(log)`` reaches ``start + grow``; False if the child exited first."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if count(log) >= start + grow:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.001)  # polling a file another process writes; nothing to await
    raise AssertionError(f"the child made no progress for 20 s (log at {len(lines(log))} lines)")


def wait_for_line(proc: subprocess.Popen[str], log: Path, start: int, word: str) -> bool:
    """Wait until the child logs ``word`` (after line ``start``); False if it exited first."""
    seen = start
    while wait_for_growth(proc, log, seen, 1, lambda p: len(lines(p))):
        new = lines(log)
        if word in new[start:]:
            return True
        seen = len(new)
    return False


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


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
    expected = json.loads(finish(spawn(tmp_path / "clean", tmp_path / "clean.log")))
    assert len(expected) == DOCS

    store, log = tmp_path / "store", tmp_path / "run.log"
    kills = 0
    out = None
    while out is None:
        proc = spawn(store, log)
        start = len(lines(log))
        done_at_start = durable(log)
        if kills >= MAX_KILLS:
            out = finish(proc)
            break
        # Progress-driven kill points: after a number of new durable checkpoints, sometimes
        # right after the engine opened (recovery just ran); near the end, once it started
        # closing (compaction), which lets the run finish first.
        target = rng.choice(["done", "done", "done", "open"])
        if kills >= MIN_KILLS and rng.random() < 0.5:
            target = "close"
        if target == "done":
            reached = wait_for_growth(proc, log, done_at_start, rng.randint(1, 25), durable)
        else:
            reached = wait_for_line(proc, log, start, target)
        if reached and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            kills += 1
        else:
            out = finish(proc)
    assert kills >= MIN_KILLS, f"only {kills} kills: the child finished too fast"

    assert json.loads(out) == expected
    log_lines = lines(log)
    executions = check_no_reexecution(log_lines)
    assert executions >= 3 * DOCS

    # A last pass restores everything and executes nothing.
    before = len(log_lines)
    assert json.loads(finish(spawn(store, log))) == expected
    assert not [ln for ln in lines(log)[before:] if ln.startswith("exec")]

    # Every checkpoint file parses; no temp file, moved-aside file or journal segment is left.
    leftovers = [p for p in store.rglob("*") if p.is_file() and not p.name.endswith(".json")]
    assert leftovers == [store / ".journal" / "sequence"]
    runs = [p for p in store.iterdir() if not p.name.startswith(".")]
    assert len(runs) == DOCS
    for run in runs:
        record = json.loads(run.read_text())
        assert (record["format"], record["version"]) == ("asyncflow.run", 1)
        assert f"{record['run_id']}.json" == run.name
        assert record["manifest"]["status"] == "succeeded"
        assert sorted(record["steps"]) == ["enrich", "ingest", "summarize"]
