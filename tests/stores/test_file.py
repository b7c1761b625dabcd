"""FileStore: compaction, recovery, failed writes, listing; its faults are in test_file_faults."""

from __future__ import annotations

import ctypes.util
import gc
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from asyncflow import (
    CheckpointError,
    Engine,
    Event,
    FileStore,
    Flow,
    JsonCodec,
    RunResult,
    StepStatus,
    StepSucceeded,
)
from asyncflow.stores import RunInfo, RunManifest, StepCheckpoint

# FileStore's internals (fsync counting, compaction, the listing batch, record types) have no
# public name: these tests of its durability reach them on purpose.
from asyncflow.stores._file.disk import Sync
from asyncflow.stores._file.journal import compact_and_remove
from asyncflow.stores._file.store import LIST_BATCH
from tests.stores.files import (
    damage_entry,
    journal_line,
    names,
    run_file,
    run_file_json,
    settle,
)

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
    settle(tmp_path)
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


def manifest(run_id: str, status: str = "running", *failed: str) -> RunManifest:
    return RunManifest(
        run_id,
        flow="f",
        flow_fingerprint="fp",
        inputs="{}",
        status=status,
        created_at="2026-01-01T00:00:00.000+00:00",
        updated_at=f"2026-01-01T00:00:0{len(status) % 10}.000+00:00",
        failed_steps=failed,
    )


async def listed(store: FileStore) -> list[RunInfo]:
    return [info async for info in store.list_runs()]


async def test_list_runs_sees_records_still_in_the_journal_over_older_run_files(
    tmp_path: Path,
) -> None:
    """A manifest not yet compacted replaces its run file's in the listing, or is listed alone."""
    store = FileStore(tmp_path)
    async with store.open():
        await store.save_manifest(manifest("a"))
        await store.save_manifest(manifest("b"))
    async with store.open():
        await store.save_manifest(manifest("b", "failed", "x", "y"))
        await store.save_manifest(manifest("c", "succeeded"))
        assert not run_file(tmp_path, "c").exists()  # still in the journal
        assert run_file_json(tmp_path, "b")["manifest"]["status"] == "running"
        assert await listed(store) == [
            RunInfo.from_manifest(manifest("a")),
            RunInfo.from_manifest(manifest("b", "failed", "x", "y")),
            RunInfo.from_manifest(manifest("c", "succeeded")),
        ]


async def test_list_runs_reads_the_run_files_a_batch_at_a_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Files are read as the listing goes, not all at its start: one damaged meanwhile is left out."""
    runs = [f"run-{i:04d}" for i in range(2 * LIST_BATCH + 1)]
    store = FileStore(tmp_path)
    async with store.open(), anyio.create_task_group() as tg:
        for run_id in runs:
            tg.start_soon(store.save_manifest, manifest(run_id))
    settle(tmp_path)  # the manifests in run files, not held from the journal
    async with store.open():
        listing = store.list_runs()
        first = await anext(listing)
        run_file(tmp_path, runs[-1]).write_text("{damaged")
        rest = [info async for info in listing]
    assert [first.run_id, *(info.run_id for info in rest)] == runs[:-1]
    assert f"{runs[-1]}.json is unusable" in caplog.text


async def test_list_runs_leaves_bad_run_files_in_place_for_load_run_to_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Listing only reads: bad files are logged and left out; loading the run sets them aside."""
    store = FileStore(tmp_path)
    async with store.open():
        for run_id in "abc":
            await store.save_manifest(manifest(run_id))
            await store.save_step(step(run_id, "s", "1"))
    run_file(tmp_path, "b").write_bytes(b"\xff not a run file")
    raw = run_file_json(tmp_path, "c")
    raw["manifest"]["failed_steps"] = "s"
    run_file(tmp_path, "c").write_text(json.dumps(raw))
    (tmp_path / "d.json").mkdir()
    before = names(tmp_path)
    async with store.open():
        assert await listed(store) == [RunInfo.from_manifest(manifest("a"))]
        assert names(tmp_path) == before
        for run_id in "bcd":
            assert f"{run_id}.json is unusable" in caplog.text
        c = await store.load_run("c")
    assert c.manifest is None
    assert sorted(c.steps) == ["s"]
    assert [d.reason for d in c.discarded] == [
        "manifest: field 'failed_steps' is not a list of names"
    ]


OLD_RUN_FILE = """{
  "format": "asyncflow.run",
  "version": 1,
  "run_id": "old",
  "manifest": {
    "seq": 5,
    "flow": "f",
    "flow_fingerprint": "fp",
    "status": "failed",
    "created_at": "2025-01-01T00:00:00.000+00:00",
    "updated_at": "2025-01-01T00:00:01.000+00:00",
    "inputs": {"n":1}
  },
  "steps": {}
}
"""


async def test_manifests_written_before_failed_steps_were_kept_read_as_having_none(
    tmp_path: Path,
) -> None:
    """Old run files and old journal records have no failed_steps: they load and list as ()."""
    run_file(tmp_path, "old").write_text(OLD_RUN_FILE)
    journal = tmp_path / ".journal"
    journal.mkdir()
    record = {"format": "asyncflow.manifest", "version": 1, "run_id": "older", "flow": "f"}
    record |= {"flow_fingerprint": "fp", "status": "running", "inputs": {}}
    record |= {"created_at": "2024-01-01T00:00:00+00:00", "updated_at": "2024-01-01T00:00:00+00:00"}
    (journal / "1-dead.log").write_bytes(journal_line(record))
    async with FileStore(tmp_path).open() as store:
        old = await store.load_run("old")
        assert old.manifest is not None
        assert (old.manifest.status, old.manifest.failed_steps) == ("failed", ())
        assert old.discarded == ()
        assert [(i.run_id, i.failed_steps) for i in await listed(store)] == [
            ("old", ()),
            ("older", ()),
        ]


SAVE_THEN_DIE = """
import os, sys, anyio
from asyncflow.stores import FileStore, RunManifest

async def main() -> None:
    async with FileStore(sys.argv[1]).open() as store:
        await store.save_manifest(RunManifest(*sys.argv[2:9], tuple(sys.argv[9:])))
        os._exit(0)  # as a crash: the journal stays, for the next open to recover

anyio.run(main)
"""


async def test_a_manifest_recovered_from_the_journal_keeps_its_failed_steps(
    tmp_path: Path,
) -> None:
    """The journal record carries failed_steps: a run that ended just before a crash lists them."""
    saved = manifest("r", "failed", "a", "b")
    fields = [saved.run_id, saved.flow, saved.flow_fingerprint, saved.inputs, saved.status]
    fields += [saved.created_at, saved.updated_at, *saved.failed_steps]
    await anyio.run_process([sys.executable, "-c", SAVE_THEN_DIE, str(tmp_path), *fields])
    assert not (tmp_path / "r.json").exists()
    async with FileStore(tmp_path).open() as store:
        assert (await store.load_run("r")).manifest == saved
        assert await listed(store) == [RunInfo.from_manifest(saved)]


async def test_a_block_that_raises_leaves_no_stream_of_the_store_open(tmp_path: Path) -> None:
    """The store's tasks are cancelled; what they would have closed is closed all the same."""
    try:
        async with FileStore(tmp_path).open():
            raise LookupError("the body failed")
    except* LookupError:
        pass
    gc.collect()  # an unclosed stream warns when collected: pytest fails the test on it


async def test_a_failed_commit_of_the_running_manifest_is_written_before_the_next_step(
    tmp_path: Path,
) -> None:
    """The manifest whose commit failed is durable with the run's next acknowledged step."""
    flow = Flow("ordered")
    hold = anyio.Event()

    @flow.step
    async def a() -> int:
        for _ in range(3):  # let the committer take the manifest alone into its commit
            await anyio.lowlevel.checkpoint()
        return 1

    @flow.step
    async def b(a: int) -> int:
        await hold.wait()
        return a

    a_saved = anyio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, StepSucceeded) and event.step == "a":
            a_saved.set()  # emitted once a's save is acknowledged

    store = FileStore(tmp_path)
    engine_ = Engine(store=store, observers=[on_event])
    async with engine_ as engine, anyio.create_task_group() as tg:
        journal = store._journal
        assert journal is not None
        read_only = os.open(tmp_path / ".journal", os.O_RDONLY)
        os.dup2(read_only, journal)  # the first commit (the "running" manifest) fails
        os.close(read_only)
        results: list[RunResult] = []

        async def run() -> None:
            results.append(await engine.run(flow, run_id="r"))

        tg.start_soon(run)
        with anyio.fail_after(10):
            await a_saved.wait()
        loaded = await store.load_run("r")
        assert loaded.manifest is not None
        assert loaded.manifest.status == "running"
        hold.set()
    assert results[0].ok


async def test_delete_run_is_refused_while_a_live_journal_holds_the_run(tmp_path: Path) -> None:
    """A run in an open engine's journal is not deleted (compaction would bring it back).

    Once that engine has closed it is, with the bad copies kept beside its file.
    """
    async with FileStore(tmp_path).open() as first:
        await first.save_manifest(manifest("old"))
        await first.save_step(step("old", "a", '"x"'))
    (tmp_path / "old.json.corrupt-1").write_text("bad", encoding="utf-8")
    writer, deleter = FileStore(tmp_path), FileStore(tmp_path)
    async with writer.open(), deleter.open():
        await writer.save_step(step("old", "b", '"y"'))
        with pytest.raises(CheckpointError, match=r"'old' still has records in the journal"):
            await deleter.delete_run("old")
        assert run_file(tmp_path, "old").exists()
    async with deleter.open():
        assert await deleter.delete_run("old") is True
        assert names(tmp_path) == [".journal"]
        assert (await deleter.load_run("old")).manifest is None


def test_records_read_back_as_the_full_parse_reads_them() -> None:
    """Records the store wrote are read without a full parse; any other text takes the full one."""
    from asyncflow._identity import digest
    from asyncflow.stores._file.records import (
        manifest_record,
        parse_record,
        step_record,
    )

    output = '{"a":[1,2,{"b":"}"}],"t":"é \\" \\\\n"}'
    steps = [
        StepCheckpoint("r", "s", "f", digest(output), output),
        StepCheckpoint("r", 'quoted "step"', "f", "not its digest", output),
    ]
    manifests = [manifest("r"), manifest("r", "failed", "a", "b")]
    for c in steps:
        assert parse_record(step_record(c)) == c
    for m in manifests:
        assert parse_record(manifest_record(m)) == m
    # A field after the output (not a layout this store writes): read in full, not misread.
    extra = step_record(steps[0])[:-1] + ',"later":1}'
    assert parse_record(extra) == steps[0]
