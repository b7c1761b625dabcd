"""FileStore(max_pending=N): at most N saves wait for a commit at once; the others wait for room.

Commits are watched at the system call that makes them durable: each commit writes its records
to the journal segment and fsyncs it once, so the bytes a segment grew by between two fsyncs are
one commit's records.
"""

from __future__ import annotations

import math
import os
import threading
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncflow import FileStore
from asyncflow.stores import StepCheckpoint

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

SAVES = 60


class FsyncSpy:
    """Wraps ``os.fsync``: the size of each fsynced file at each call, by descriptor."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[tuple[int, int]] = []
        self._lock = threading.Lock()  # the store fsyncs from its own threads
        real = os.fsync

        def fsync(fd: int) -> None:
            real(fd)
            with self._lock:
                self.sizes.append((fd, os.fstat(fd).st_size))

        monkeypatch.setattr(os, "fsync", fsync)

    def growths(self, since: int) -> list[int]:
        """How much each file had grown at each fsync after the first ``since`` calls."""
        last: dict[int, int] = {}
        grown = []
        for n, (fd, size) in enumerate(self.sizes):
            if n >= since:
                grown.append(size - last.get(fd, size))
            last[fd] = size
        return grown


def checkpoint(n: int) -> StepCheckpoint:
    # Every record is as long as the others: a commit's growth counts its records.
    return StepCheckpoint(f"run-{n:03d}", "step", fingerprint="f", digest="d", output=f'"{n:03d}"')


@pytest.mark.parametrize("max_pending", [1, 4])
async def test_saves_beyond_max_pending_wait_for_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_pending: int
) -> None:
    """60 saves at once with max_pending=N: each commit holds at most N; all are durable."""
    spy = FsyncSpy(monkeypatch)
    store = FileStore(tmp_path / "store", max_pending=max_pending)
    async with store.open():
        before = len(spy.sizes)
        # Without the bound, every save would join the first commit: they all start before the
        # committer runs.
        async with anyio.create_task_group() as tg:
            for n in range(SAVES):
                tg.start_soon(store.save_step, checkpoint(n))
        commits = [g for g in spy.growths(before) if g]
    record = sum(commits) / SAVES
    assert record == int(record)  # every commit held whole records
    assert max(commits) <= max_pending * record
    assert len(commits) >= math.ceil(SAVES / max_pending)

    async with FileStore(tmp_path / "store").open() as reopened:
        for n in range(SAVES):
            loaded = await reopened.load_run(f"run-{n:03d}")
            assert loaded.steps["step"].output == f'"{n:03d}"'
