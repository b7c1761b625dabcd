"""FileStore: compaction, recovery, failed writes; its faults are in test_file_faults."""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from asyncflow import CheckpointError, Engine, FileStore, Flow, JsonCodec, StepStatus
from asyncflow.stores import StepCheckpoint
from asyncflow.stores._file.disk import Sync
from asyncflow.stores._file.journal import compact_and_remove
from tests.stores.files import damage_entry, journal_line, names, run_file, run_file_json

if TYPE_CHECKING:
    from asyncflow.stores._file.runfiles import Records

pytestmark = pytest.mark.anyio


def segment_fds(root: Path) -> list[int]:
    """This process's open descriptors of journal segments in ``root``."""
    journal = root / ".journal"
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
        if target.parent == journal and target.name.endswith(".log"):
            found.append(int(fd))
    return found


def step(run_id: str, name: str, output: str) -> StepCheckpoint:
    return StepCheckpoint(run_id, name, fingerprint="f", digest="d", output=output)


@pytest.mark.parametrize("whole", [True, False], ids=["bad file", "bad entry"])
async def test_compaction_keeps_a_bad_run_file_aside_before_replacing_it(
    tmp_path: Path, whole: bool
) -> None:
    """Compaction merges records into the run file; a damaged file's bytes are kept aside."""
    store = FileStore(tmp_path)
    async with store.open():
        await store.save_step(step("r", "a", "1"))
        await store.save_step(step("r", "c", "3"))
    if whole:
        damaged = b"{torn"
    else:
        damaged = damage_entry(run_file(tmp_path, "r").read_bytes(), "c", lambda e: [])
    run_file(tmp_path, "r").write_bytes(damaged)
    async with store.open():
        await store.save_step(step("r", "b", "2"))
    assert (tmp_path / "r.json.corrupt-1").read_bytes() == damaged
    kept = ["b"] if whole else ["a", "b"]
    assert sorted(run_file_json(tmp_path, "r")["steps"]) == kept


async def test_records_of_a_run_in_several_segments_merge_into_one_file(tmp_path: Path) -> None:
    """Each compaction merges into the run file: later records replace earlier ones."""
    store = FileStore(tmp_path, segment_bytes=1)  # every commit seals and compacts a segment
    async with store.open():
        await store.save_step(step("r", "a", "1"))
        await store.save_step(step("r", "b", '{"x":[1,2]}'))
        await store.save_step(step("r", "a", '"again"'))
    raw = run_file_json(tmp_path, "r")
    assert raw["steps"]["a"]["output"] == "again"
    assert raw["steps"]["b"]["output"] == {"x": [1, 2]}
    assert raw["manifest"] is None
    assert names(tmp_path) == [".journal", "r.json"]


def step_record(run_id: str, step: str, output: object) -> dict[str, object]:
    return {
        "format": "asyncflow.step",
        "version": 1,
        "run_id": run_id,
        "step": step,
        "fingerprint": "f",
        "digest": "d",
        "output": output,
    }


async def test_recovery_compacts_a_dead_engines_journal_and_drops_a_torn_tail(
    tmp_path: Path,
) -> None:
    """A segment left by a crash is compacted; a bad checksum or torn last line is dropped."""
    journal = tmp_path / ".journal"
    journal.mkdir()
    good = journal_line(step_record("r1", "a", [1, 2]))
    corrupt = bytearray(journal_line(step_record("r1", "b", "x")))
    corrupt[12] ^= 0x01
    torn = journal_line(step_record("r1", "c", "y"))[:-7]
    (journal / "999-dead.log").write_bytes(good + bytes(corrupt) + torn)
    # A compaction that died left a temp file beside its target.
    leftover = tmp_path / "r1.json.0123abcd.tmp"
    leftover.write_bytes(b"half")
    store = FileStore(tmp_path)
    async with store.open():
        loaded = await store.load_run("r1")
    assert sorted(loaded.steps) == ["a"]
    assert JsonCodec().decode(loaded.steps["a"].output) == [1, 2]
    assert not leftover.exists()
    assert names(tmp_path) == [".journal", "r1.json"]
    assert names(journal) == ["sequence"]


async def test_a_failed_journal_write_fails_its_saves_and_the_store_goes_on(
    tmp_path: Path,
) -> None:
    """A failed write or fsync fails exactly its saves, clearly; later saves use a new segment."""
    flow = Flow("disk")

    @flow.step
    async def a() -> int:
        return 1

    async with Engine(store=FileStore(tmp_path)) as engine:
        (journal,) = segment_fds(tmp_path)  # the current segment, made unwritable under the store
        read_only = os.open(tmp_path / ".journal", os.O_RDONLY)
        os.dup2(read_only, journal)
        os.close(read_only)
        result = await engine.run(flow, run_id="r")
        err = result.steps["a"].error
        assert err is not None
        assert isinstance(err.__cause__, CheckpointError)
        assert "Could not save the checkpoint of run 'r'" in str(err)
        assert "Nothing of it was acknowledged" in str(err)
        again = await engine.run(flow, run_id="s")
        assert again.ok
    async with Engine(store=FileStore(tmp_path)) as engine:
        assert (await engine.run(flow, run_id="s")).steps["a"].status is StepStatus.RESTORED
        assert (await engine.run(flow, run_id="r")).steps["a"].status is StepStatus.SUCCEEDED


def test_compaction_without_syncfs_fsyncs_each_file_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where syncfs is missing, compaction falls back to fsyncing files and directories."""
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)  # no libc: no syncfs
    sync = Sync(tmp_path)
    segment = tmp_path / "seg.log"
    segment.write_bytes(b"")
    (tmp_path / ".journal").mkdir()
    records: Records = {"r": {"a/b": (1, step("r", "a/b", '{"x":1}'))}}
    compact_and_remove(sync, tmp_path, records, segment)
    assert run_file_json(tmp_path, "r")["steps"]["a/b"]["output"] == {"x": 1}
    assert not segment.exists()
