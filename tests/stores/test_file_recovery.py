"""FileStore's open notes where a dead engine's records are, and reads them back when needed.

Recovery checks every frame (length, checksum) but parses only those it cannot index from their
head; the rest are read back from the segment by loads, listings and the compaction. These tests
write dead engines' segments frame by frame and check that what loads, listings and run files
see is exactly what was saved.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from asyncflow import FileStore
from asyncflow._identity import digest
from asyncflow.stores import RunCheckpoints, RunManifest, StepCheckpoint
from asyncflow.stores._file.journal import SEGMENT_MAGIC, frame, resolve_run
from asyncflow.stores._file.records import manifest_record, run_file_text, step_record
from tests.stores.files import run_file_json

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

STAMP = "2026-12-01T00:00:00.000+00:00"


def manifest(run_id: str, status: str = "running") -> RunManifest:
    return RunManifest(run_id, "docs", "fp", '{"n":1}', status, STAMP, STAMP)


def step(run_id: str, name: str, output: str) -> StepCheckpoint:
    return StepCheckpoint(run_id, name, "f", digest(output), output)


def body(rec: RunManifest | StepCheckpoint) -> bytes:
    text = manifest_record(rec) if isinstance(rec, RunManifest) else step_record(rec)
    return text.encode()


def dead_segment(root: Path, frames: list[bytes], name: str = "1-1-dead.log") -> Path:
    journal = root / ".journal"
    journal.mkdir(parents=True, exist_ok=True)
    path = journal / name
    path.write_bytes(SEGMENT_MAGIC + b"".join(frames))
    return path


async def test_recovered_records_are_exactly_what_loads_listings_and_run_files_see(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Indexed and parsed frames alike; the newest of an entry wins whatever the order."""
    first = manifest("r1")
    final = RunManifest(
        "r1", "docs", "fp", '{"n":1}', "failed", STAMP, STAMP, ("b",), '{"steps":{}}'
    )
    a_old, a_new = step("r1", "a", '{"v":1}'), step("r1", "a", '{"v":2,"s":"x\\ny"}')
    quoted = step("r1", 'q"uote', "[1,2]")  # escaped in JSON: parsed at open, not indexed
    accented = step("r1", "ünï", '"é"')  # non-ASCII, nothing escaped: indexed
    flipped = bytearray(frame(7, body(step("r1", "lost", "1"))))
    flipped[-3] ^= 0x01
    dead = dead_segment(
        tmp_path,
        [
            frame(10, body(a_new)),  # newer, and written first: still wins
            frame(1, body(first)),
            frame(2, body(a_old)),
            bytes(flipped),
            frame(3, body(quoted)),
            frame(4, body(accented)),
            frame(11, body(final)),
            frame(12, body(step("r1", "torn", "1")))[:-5],
        ],
    )
    expected = RunCheckpoints(final, {"a": a_new, 'q"uote': quoted, "ünï": accented})
    async with FileStore(tmp_path).open() as store:
        assert await store.load_run("r1") == expected
        listed = [info async for info in store.list_runs()]
        assert [(i.run_id, i.status, i.failed_steps) for i in listed] == [("r1", "failed", ("b",))]
        await store.compact()
        assert not dead.exists()
        assert await store.load_run("r1") == expected
    raw = run_file_json(tmp_path, "r1")
    assert sorted(raw["steps"]) == ["a", 'q"uote', "ünï"]
    assert raw["steps"]["a"] == {"seq": 10, "fingerprint": "f", "digest": a_new.digest,
                                 "output": {"v": 2, "s": "x\ny"}}  # fmt: skip
    assert raw["manifest"]["seq"] == 11
    assert raw["manifest"]["details"] == {"steps": {}}
    assert "dropped 2 record(s) with a bad checksum or cut short" in caplog.text


async def test_a_checked_frame_whose_record_is_broken_is_dropped_alone_when_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its head is indexed at open; reading it back finds it unusable: logged, left out."""
    good = step("r", "a", "1")
    broken = b'{"format":"asyncflow.step","version":1,"run_id":"r","step":"b","fing'
    dead_segment(tmp_path, [frame(1, body(good)), frame(2, broken), frame(3, body(manifest("r")))])
    with caplog.at_level(logging.WARNING, logger="asyncflow"):
        async with FileStore(tmp_path).open() as store:
            loaded = await store.load_run("r")
            assert loaded == RunCheckpoints(manifest("r"), {"a": good})
            await store.compact()
    assert "journal" in caplog.text
    assert "dropped a record" in caplog.text
    assert sorted(run_file_json(tmp_path, "r")["steps"]) == ["a"]


async def test_listing_reads_recovered_manifests_back_batch_by_batch(tmp_path: Path) -> None:
    """Over several listing batches; a run file newer than the journal's record wins."""
    runs = 600
    for n in range(0, runs, 3):  # a run file for every third run: older, except run 0's
        seq = 10**6 if n == 0 else 1
        text = run_file_text(f"run-{n:03d}", manifest(f"run-{n:03d}", "succeeded"), {}, {None: seq})
        (tmp_path / f"run-{n:03d}.json").write_text(text)
    dead_segment(tmp_path, [frame(100 + n, body(manifest(f"run-{n:03d}"))) for n in range(runs)])
    async with FileStore(tmp_path).open() as store:
        listed = {i.run_id: i.status async for i in store.list_runs()}
        running = [i.run_id async for i in store.list_runs(status="running")]
    assert len(listed) == runs
    assert listed["run-000"] == "succeeded"
    assert {s for r, s in listed.items() if r != "run-000"} == {"running"}
    assert len(running) == runs - 1


def test_a_record_whose_segment_is_gone_is_left_to_the_run_file(tmp_path: Path) -> None:
    """A load that noted a record just before its segment was compacted reads the file instead."""
    data = body(step("r", "a", "1"))
    path = dead_segment(tmp_path, [frame(1, data)])
    ref = (str(path), len(SEGMENT_MAGIC) + frame(1, data).index(b"\n") + 1, len(data))
    assert resolve_run("r", {"a": (1, ref)}) == {"a": (1, step("r", "a", "1"))}
    assert resolve_run("other", {"a": (1, ref)}) == {}  # not the run it is filed under
    path.unlink()
    assert resolve_run("r", {"a": (1, ref)}) == {}


async def test_the_store_holds_where_its_own_records_are_not_the_records(tmp_path: Path) -> None:
    """Memory stays flat: a commit notes each record's place; a load reads it back exactly."""
    saved = [step("r", "a", '{"big":"' + "x" * 10_000 + '"}'), step("r", "b", "2")]
    async with FileStore(tmp_path).open() as store:
        for checkpoint in saved:
            await store.save_step(checkpoint)
        await store.save_manifest(manifest("r"))
        held = store._index["r"]  # what the store keeps in memory
        assert all(isinstance(entry, tuple) for _, _, entry in held.values())
        assert await store.load_run("r") == RunCheckpoints(
            manifest("r"), {"a": saved[0], "b": saved[1]}
        )
        assert [i.status async for i in store.list_runs()] == ["running"]
        await store.compact()
        assert "r" not in store._index
        assert await store.load_run("r") == RunCheckpoints(
            manifest("r"), {"a": saved[0], "b": saved[1]}
        )
