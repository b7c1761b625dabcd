"""FileStore under faults: full disks, crashes during compaction, two engines, damaged files.

Real files, real small filesystems (tmpfs, mounted here: these tests need root, which CI has),
real child processes killed with SIGKILL. Every loop is driven by the child's progress, read
from its log, never by sleeps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncflow import (
    CheckpointDiscarded,
    CheckpointError,
    Engine,
    Event,
    FileStore,
    JsonCodec,
    StepStatus,
)
from asyncflow.stores import Lease, RunManifest, StepCheckpoint
from tests.helpers import Child, dones
from tests.stores.files import run_file
from tests.stores.store_child import IndentedCodec, flow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.anyio


def required(reason: str) -> None:
    """Skip outside CI; under CI a missing capability fails the run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this must run here)")
    pytest.skip(reason)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount tmpfs file systems of a given size in bytes (root only); unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        if os.geteuid() != 0:
            required("mounting a small tmpfs needs root")
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True
        )
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=True)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def fill(where: Path, leave: int) -> Path:
    """Fill a file system with one file until about ``leave`` bytes are free."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    filler = where / "filler"
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def spawn(store: Path, log: Path, **opts: object) -> Child:
    """A store_child.py process (see its docstring for ``opts``) and its log."""
    return Child("tests.stores.store_child", str(store), str(log), json.dumps(opts), log=log)


def acknowledged(lines: list[str]) -> dict[tuple[str, str], int]:
    """(run, step) -> the newest version whose checkpoint was acknowledged."""
    acked: dict[tuple[str, str], int] = {}
    for line in lines:
        kind, *rest = line.split()
        if kind == "done":
            key = (rest[0], rest[1])
            acked[key] = max(acked.get(key, 0), int(rest[2]))
    return acked


def failures(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("fail ")]


def version_of(step: str, output: object) -> int:
    if step == "make":
        assert isinstance(output, dict)
        return int(output["v"])
    assert isinstance(output, str)
    return int(output.split(":")[1])


async def stored_state(
    store: Path, runs: list[str]
) -> tuple[dict[tuple[str, str], int], dict[str, tuple[int, str]]]:
    """Open the store (recovering it): each run's step versions, manifest version and status."""
    codec = JsonCodec()
    found: dict[tuple[str, str], int] = {}
    manifests: dict[str, tuple[int, str]] = {}
    async with FileStore(store).open() as opened:
        for run in runs:
            loaded = await opened.load_run(run)
            assert loaded.discarded == ()
            for step, checkpoint in loaded.steps.items():
                found[(run, step)] = version_of(step, codec.decode(checkpoint.output))
            if loaded.manifest is not None:
                inputs = json.loads(loaded.manifest.inputs)
                manifests[run] = (int(inputs["version"]), loaded.manifest.status)
    return found, manifests


async def assert_nothing_acknowledged_is_lost(
    store: Path, lines: list[str], *, disk_failed: bool = False
) -> None:
    """Every acknowledged step and final manifest is there, in its newest acknowledged version.

    A record is never replaced by an older one: no step goes back to an older output, no
    finished run back to an older manifest (a "succeeded" one back to "running"). Where the disk
    failed, a finished run's final manifest may not have been saved (the run still returns its
    result, with a warning), so only steps are checked.
    """
    acked = acknowledged(lines)
    finished: dict[str, tuple[int, str]] = {}
    for line in lines:
        kind, *rest = line.split()
        if kind == "finished" and rest[2] == "succeeded" and not disk_failed:
            finished[rest[0]] = max(finished.get(rest[0], (0, "")), (int(rest[1]), rest[2]))
    runs = sorted({run for run, _ in acked} | set(finished))
    stored, manifests = await stored_state(store, runs)
    lost = {key: v for key, v in acked.items() if stored.get(key, 0) < v}
    assert lost == {}, f"acknowledged, then lost or replaced by an older version: {lost}"
    older = {
        run: (want, manifests.get(run))
        for run, want in finished.items()
        if manifests.get(run, (0, ""))[0] < want[0]
        or (manifests.get(run, (0, ""))[0] == want[0] and manifests[run][1] != want[1])
    }
    assert older == {}, f"finished runs whose manifest went back: {older}"


# --- full disks -------------------------------------------------------------------------------


async def test_a_full_disk_fails_only_unwritten_saves_and_a_crash_loses_none_acknowledged(
    small_fs: Callable[[int], Path], tmp_path: Path
) -> None:
    """Saves that did not fit fail with CheckpointError; every acknowledged one survives SIGKILL.

    Group commits of up to 40 records of 3 KB meet 150 KB of free space: writes fall short.
    """
    fs = small_fs(2 * 1024 * 1024)
    filler = fill(fs, 150 * 1024)
    child = spawn(fs / "store", tmp_path / "log", runs=150, size=3000, concurrency=40)
    child.wait_for(lambda lines: "end 1" in lines)
    lines = child.lines()
    child.kill()
    assert acknowledged(lines), "nothing fitted: the test's disk is too small"
    assert failures(lines), "everything fitted: the test's disk is too large"
    assert {ln.split()[3] for ln in failures(lines)} == {"CheckpointError"}
    filler.unlink()
    await assert_nothing_acknowledged_is_lost(fs / "store", lines, disk_failed=True)


async def test_after_a_full_disk_the_store_goes_on_once_there_is_room(
    small_fs: Callable[[int], Path], tmp_path: Path
) -> None:
    """The engine keeps saving after ENOSPC: once space is freed, the failed runs complete."""
    fs = small_fs(2 * 1024 * 1024)
    filler = fill(fs, 150 * 1024)
    child = spawn(fs / "store", tmp_path / "log", runs=150, size=3000, concurrency=40)
    child.wait_for(lambda lines: "end 1" in lines)
    assert failures(child.lines())
    filler.unlink()
    child.send("again")
    child.wait_for(lambda lines: "end 2" in lines)
    lines = child.lines()
    child.kill()
    acked = acknowledged(lines)
    assert {run for run, step in acked if step == "after"} == {f"run-{n}" for n in range(150)}
    await assert_nothing_acknowledged_is_lost(fs / "store", lines, disk_failed=True)


async def test_a_read_only_folder_is_refused_at_open_with_a_clear_error(
    small_fs: Callable[[int], Path],
) -> None:
    """Opening a store on a read-only file system says so, naming the folder."""
    fs = small_fs(1024 * 1024)
    async with Engine(store=FileStore(fs / "store")) as engine:
        assert (await engine.run(flow, run_id="ok", n=1, size=1, version=1, block=False)).ok
    remount(fs, "ro")
    try:
        with pytest.raises(CheckpointError, match="Cannot use checkpoint directory") as info:
            async with Engine(store=FileStore(fs / "store")):
                pass
    finally:
        remount(fs, "rw")
    assert str(fs / "store") in str(info.value)


async def test_a_folder_deleted_mid_run_fails_saves_clearly_and_acknowledges_nothing(
    tmp_path: Path,
) -> None:
    """No save is acknowledged into a deleted journal; no raw ExceptionGroup leaves the engine.

    With one segment per commit, the committer also meets a segment it cannot create.
    """
    store = tmp_path / "store"
    for segment_bytes in (1, 16 * 1024 * 1024):
        async with Engine(store=FileStore(store, segment_bytes=segment_bytes)) as engine:
            assert (await engine.run(flow, run_id="ok", n=1, size=1, version=1, block=False)).ok
            while store.exists():  # a compaction may be writing into it meanwhile
                shutil.rmtree(store, ignore_errors=True)
            gone = await engine.run(flow, run_id="gone", n=3, size=1, version=1, block=False)
            err = gone.steps["make"].error
            assert err is not None
            assert isinstance(err.__cause__, CheckpointError)
            assert str(store) in str(err)


# --- close and background compaction -----------------------------------------------------------


def run_files(store: Path) -> int:
    return sum(1 for p in store.glob("run-*.json"))


def wait_for_run_files(store: Path, target: int, child: Child) -> None:
    """Until ``target`` run files are there (or the child exited); fail if that stalls."""
    seen, deadline = -1, time.monotonic() + 60
    while (now := run_files(store)) < target and child.alive():
        if now != seen:
            seen, deadline = now, time.monotonic() + 60
        assert time.monotonic() < deadline, f"compaction stalled at {seen} run files"
        time.sleep(0.001)  # polling files another process writes; nothing to await


def assert_nothing_runs_again(store: Path, log: Path, runs: int) -> None:
    """A new engine over the same runs restores every step: nothing durable runs again."""
    child = spawn(store, log, runs=runs, version=1)
    start = len(child.lines())
    child.wait_for(lambda lines: "end 1" in lines[start:])
    again = [ln for ln in child.lines()[start:] if ln.startswith(("done ", "fail "))]
    assert again == [], again[:5]
    child.send("close")
    child.finish()


@pytest.mark.timeout(180)
async def test_sigkill_during_close_loses_nothing(tmp_path: Path) -> None:
    """Killed as it closes (while it compacts what the previous engine left, too), every time.

    Closing commits what is pending and leaves the journal for the next open: whatever instant
    the kill lands at, every acknowledged step and final manifest is there, and nothing runs
    again.
    """
    store, log = tmp_path / "store", tmp_path / "log"
    runs = 600  # over COMPACT_BATCH: the compaction of the previous engine's journal takes steps
    for _ in range(3):
        child = spawn(store, log, runs=runs, version=1)
        start = len(child.lines())
        child.wait_for(lambda lines: "end 1" in lines[start:])  # noqa: B023 - waited on at once
        child.send("close")
        if child.wait_for(lambda lines: "closing" in lines[start:], exit_ok=True):  # noqa: B023
            err = child.kill()
            assert "Traceback" not in err, err
        await assert_nothing_acknowledged_is_lost(store, child.lines())
    assert_nothing_runs_again(store, log, runs)


@pytest.mark.timeout(180)
async def test_sigkill_during_background_compaction_loses_nothing(tmp_path: Path) -> None:
    """An engine takes a dead one's journal at open and compacts it in steps; killed midway.

    The run files written so far and the journal left behind hold every acknowledged step and
    final manifest; the next engine restores them all and runs nothing again.
    """
    rng = random.Random(20261202)
    runs = 1500
    mid_way = 0
    for attempt in range(2):
        store, log = tmp_path / f"store-{attempt}", tmp_path / f"log-{attempt}"
        writer = spawn(store, log, runs=runs, version=1)
        writer.wait_for(lambda lines: "end 1" in lines)
        writer.kill()  # its whole journal is left uncompacted
        assert run_files(store) == 0
        target = rng.randint(1, runs - 1)
        compactor = spawn(store, log, runs=runs, version=1)
        wait_for_run_files(store, target, compactor)
        err = compactor.kill()
        assert "Traceback" not in err, err
        mid_way += run_files(store) < runs
        await assert_nothing_acknowledged_is_lost(store, compactor.lines())
        assert_nothing_runs_again(store, log, runs)
    assert mid_way, "every kill landed after the compaction ended; nothing was tested midway"


# --- order of replay --------------------------------------------------------------------------


class OtherMachine(FileStore):
    """A FileStore blind to this machine's leases, as one on another machine sharing the folder.

    (FileStore's leases are per machine: two machines on one folder are not excluded.)
    """

    async def claim_run(self, run_id: str, /, *, owner: str, ttl: float) -> Lease | None:
        return Lease(run_id, owner, 1, math.inf)

    async def release_run(self, lease: Lease, /) -> None:
        pass

    async def save_step(self, checkpoint: StepCheckpoint, /, *, lease: Lease | None = None) -> None:
        await super().save_step(checkpoint)

    async def save_manifest(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        await super().save_manifest(manifest)

    def save_manifest_nowait(self, manifest: RunManifest, /, *, lease: Lease | None = None) -> None:
        super().save_manifest_nowait(manifest)


async def test_an_old_segment_replayed_after_newer_run_files_changes_nothing(
    tmp_path: Path,
) -> None:
    """A stopped engine's segment, recovered after another engine finished the run, is older.

    The finished run keeps its "succeeded" manifest, its new inputs and its new outputs.
    """
    store = tmp_path / "store"
    stopped = spawn(store, tmp_path / "log", runs=1, version=1, block=True)
    stopped.wait_for(lambda lines: "done run-0 make 1" in lines)
    # The stopped engine holds run-0's lease on this machine: only an engine elsewhere runs it.
    async with Engine(store=OtherMachine(store)) as engine:
        done = await engine.run(flow, run_id="run-0", n=0, size=10, version=2, block=False)
        assert done.ok
    stopped.kill()
    async with Engine(store=FileStore(store)) as engine:
        resumed = await engine.resume(flow, "run-0")
        assert {s.status for s in resumed.steps.values()} == {StepStatus.RESTORED}
        assert resumed.outputs["make"] == {"n": 0, "v": 2, "pad": "x" * 10}
    manifest = json.loads(run_file(store, "run-0").read_text())["manifest"]
    assert manifest["status"] == "succeeded"
    assert manifest["inputs"]["version"] == 2


@pytest.mark.timeout(180)
async def test_sigkill_during_compaction_in_a_loop_never_resurrects_old_records(
    tmp_path: Path,
) -> None:
    """Small segments compact all the time; killed at random, no newer record is ever lost."""
    rng = random.Random(20261201)
    store, log = tmp_path / "store", tmp_path / "log"
    version = 1
    for _ in range(30):
        # Few runs and small segments: each entry is rewritten every other segment or so, so
        # the segments a kill leaves behind hold older and newer records of the same entries.
        child = spawn(store, log, runs=1, version=version, rounds=0, segment_bytes=256)
        target = dones(child.lines()) + rng.randint(1, 20)
        child.wait_for(lambda lines: dones(lines) >= target)  # noqa: B023 - waited on at once
        err = child.kill()
        assert "Traceback" not in err, err
        version = max(acknowledged(child.lines()).values()) + 1
        await assert_nothing_acknowledged_is_lost(store, child.lines())


@pytest.mark.timeout(180)
async def test_two_engines_on_one_folder_never_take_each_others_live_segments(
    tmp_path: Path,
) -> None:
    """Engine B opens and closes the folder over and over while A rolls segments constantly.

    B's recovery never takes one of A's segments for a dead one (A's saves would be
    acknowledged into a deleted file); whatever A acknowledged survives A's SIGKILL.
    """
    store, log = tmp_path / "store", tmp_path / "log"
    # A's steps hold its event loop for 2 ms at a time, as CPU-bound user code does: the
    # moments between creating a segment and locking it (before the fix) grow that long.
    a = spawn(store, log, runs=20, rounds=0, segment_bytes=1, concurrency=4, spin_ms=2)
    a.wait_for(lambda lines: "open" in lines)
    opens = 0
    while sum(ln.startswith("end ") for ln in a.lines()) < 8 or opens < 200:
        async with FileStore(store).open() as b:
            await b.load_run("run-0")
        opens += 1
    err = a.kill()
    assert "compacting journal" not in err, err
    assert "Traceback" not in err, err
    await assert_nothing_acknowledged_is_lost(store, a.lines())


async def test_two_engines_opening_one_folder_at_once_keep_their_segments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One engine's recovery runs while the other creates its first segment, 60 times.

    It never takes the new segment for a dead one: no segment vanishes under its engine (whose
    close would then fail to remove it), and every save of both is kept.
    """
    store = tmp_path / "store"

    async def engine(name: str, i: int) -> None:
        async with FileStore(store).open() as opened:
            await opened.save_step(checkpoint(f"{name}-{i}"))

    for i in range(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine, "a", i)
            tg.start_soon(engine, "b", i)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
    async with FileStore(store).open() as opened:
        for i in range(60):
            for name in "ab":
                assert "s" in (await opened.load_run(f"{name}-{i}")).steps


def checkpoint(run_id: str) -> StepCheckpoint:
    output = JsonCodec().encode(run_id)
    digest = hashlib.blake2b(output.encode(), digest_size=16).hexdigest()
    return StepCheckpoint(run_id, "s", fingerprint="f", digest=digest, output=output)


# --- framing and integrity ----------------------------------------------------------------------


async def test_a_codec_whose_text_holds_newlines_is_recovered_after_a_crash(
    tmp_path: Path,
) -> None:
    """Framing does not depend on the codec: indented JSON records survive SIGKILL."""
    store = tmp_path / "store"
    child = spawn(store, tmp_path / "log", runs=5, indented=True)
    child.wait_for(lambda lines: "end 1" in lines)
    child.kill()
    async with Engine(store=FileStore(store, codec=IndentedCodec())) as engine:
        for n in range(5):
            again = await engine.run(flow, run_id=f"run-{n}", n=n, size=10, version=1, block=False)
            assert {s.status for s in again.steps.values()} == {StepStatus.RESTORED}, n


async def test_an_edited_output_fails_its_digest_and_the_step_runs_again(
    tmp_path: Path,
) -> None:
    """A restored output must match its digest; a mismatch is CheckpointDiscarded and a rerun."""
    async with Engine(store=FileStore(tmp_path)) as engine:
        await engine.run(flow, run_id="r", n=1, size=3, version=1, block=False)
    path = run_file(tmp_path, "r")
    path.write_text(path.read_text().replace('"pad":"xxx"', '"pad":"yyy"'))
    events: list[Event] = []
    async with Engine(store=FileStore(tmp_path), observers=[events.append]) as engine:
        again = await engine.run(flow, run_id="r", n=1, size=3, version=1, block=False)
    assert again.steps["make"].status is StepStatus.SUCCEEDED
    assert again.outputs["make"] == {"n": 1, "v": 1, "pad": "xxx"}
    assert again.steps["after"].status is StepStatus.RESTORED  # the same output: still valid
    reasons = [e.reason for e in events if isinstance(e, CheckpointDiscarded)]
    assert reasons == ["its output does not match its digest (edited or damaged)"]


def legacy_line(body: bytes) -> bytes:
    """A journal line as asyncflow wrote them before frames: still read, and still checked."""
    return b"%08x %s\n" % (zlib.crc32(body), body)


def good_record(run_id: str) -> bytes:
    return json.dumps(
        {
            "format": "asyncflow.step",
            "version": 1,
            "run_id": run_id,
            "step": "a",
            "fingerprint": "f",
            "digest": "d",
            "output": 1,
        }
    ).encode()


BAD_RECORDS = {
    "not UTF-8": b'{"format": "asyncflow.step", "x": "\xff\xfe"}',
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("body", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
async def test_a_bad_journal_record_with_a_valid_checksum_is_dropped_alone(
    tmp_path: Path, body: bytes
) -> None:
    """The store opens; the record is dropped; the records around it are kept."""
    journal = tmp_path / ".journal"
    journal.mkdir()
    data = legacy_line(good_record("r1")) + legacy_line(body) + legacy_line(good_record("r2"))
    (journal / "1-dead.log").write_bytes(data)
    async with FileStore(tmp_path).open() as store:
        assert sorted((await store.load_run("r1")).steps) == ["a"]
        assert sorted((await store.load_run("r2")).steps) == ["a"]
    async with FileStore(tmp_path).open() as store:
        assert sorted((await store.load_run("r1")).steps) == ["a"]


def make_directory(path: Path) -> None:
    path.mkdir()


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_zero_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


def make_deep_json(path: Path) -> None:
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)


BAD_ENTRIES: dict[str, Callable[[Path], None]] = {
    "directory": make_directory,
    "named pipe": make_fifo,
    "symlink to /dev/zero": make_zero_link,
    "JSON nested 100,000 deep": make_deep_json,
}


@pytest.mark.parametrize("make", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
async def test_a_bad_entry_where_a_run_file_belongs_is_moved_aside_and_reported(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    """Loading the run moves the entry aside (never followed or read whole) and runs it."""
    make(tmp_path / "r.json")
    events: list[Event] = []
    with anyio.fail_after(20):
        async with Engine(store=FileStore(tmp_path), observers=[events.append]) as engine:
            result = await engine.run(flow, run_id="r", n=1, size=1, version=1, block=False)
    assert result.ok
    discarded = [e for e in events if isinstance(e, CheckpointDiscarded)]
    assert [Path(e.path).name for e in discarded] == ["r.json.corrupt-1"]
    assert (tmp_path / "r.json.corrupt-1").is_symlink() or (tmp_path / "r.json.corrupt-1").exists()
    async with Engine(store=FileStore(tmp_path)) as engine:
        again = await engine.run(flow, run_id="r", n=1, size=1, version=1, block=False)
    assert {s.status for s in again.steps.values()} == {StepStatus.RESTORED}


@pytest.mark.parametrize("make", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
async def test_a_bad_entry_met_during_compaction_is_moved_aside_and_later_opens_work(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    """The run's records reach a new run file; the entry is kept aside, not in the way."""
    store = FileStore(tmp_path)
    async with Engine(store=store) as engine:
        first = await engine.run(flow, run_id="r", n=1, size=1, version=1, block=False)
        make(tmp_path / "r.json")  # before the journal is compacted into r.json
        await store.compact()
    assert first.ok
    assert (tmp_path / "r.json.corrupt-1").is_symlink() or (tmp_path / "r.json.corrupt-1").exists()
    for _ in range(2):
        async with Engine(store=FileStore(tmp_path)) as engine:
            again = await engine.run(flow, run_id="r", n=1, size=1, version=1, block=False)
        assert {s.status for s in again.steps.values()} == {StepStatus.RESTORED}


# --- the directory's lock ---------------------------------------------------------------------


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[Path]:
    """A stopped process (SIGSTOP) holding the store's directory lock, as mid-compaction."""
    store = tmp_path / "store"
    (store / ".journal").mkdir(parents=True)
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(store / '.journal')!r}, os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n"
    os.kill(proc.pid, signal.SIGSTOP)
    yield store
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("asyncflow-ckpt")]


async def test_a_lock_held_by_a_stopped_engine_times_out_with_a_clear_error(
    lock_holder: Path,
) -> None:
    with pytest.raises(CheckpointError, match="held the lock of") as info:
        async with FileStore(lock_holder, lock_timeout=0.2).open():
            pass
    assert "lock_timeout" in str(info.value)


async def test_waiting_for_a_held_lock_is_cancellable_and_leaves_no_thread(
    lock_holder: Path,
) -> None:
    with anyio.move_on_after(0.2) as scope:
        async with FileStore(lock_holder).open():
            pass
    assert scope.cancelled_caught
    with anyio.fail_after(10):
        while store_threads():  # noqa: ASYNC110 - a thread's end has no event to await
            await anyio.sleep(0.01)


class EscapingCodec:
    """A codec writing lone surrogates as escapes: valid JSON, read back as lone surrogates."""

    def encode(self, value: object, /) -> str:
        return json.dumps(value, ensure_ascii=True)

    def decode(self, text: str, /) -> object:
        return json.loads(text)


async def test_escaped_lone_surrogates_survive_compaction_and_restore(tmp_path: Path) -> None:
    """A run file re-written from its parsed entries keeps such text encodable; it restores."""
    name = os.fsdecode(b"caf\xe9.txt")
    text = json.dumps(name, ensure_ascii=True)
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    for step in ("s", "t"):  # the second compaction merges into the file the first wrote
        async with FileStore(tmp_path, codec=EscapingCodec()).open() as store:
            await store.save_step(StepCheckpoint("r", step, "f", digest, text))
    async with FileStore(tmp_path, codec=EscapingCodec()).open() as again:
        loaded = await again.load_run("r")
    assert sorted(loaded.steps) == ["s", "t"]
    assert json.loads(loaded.steps["s"].output) == name
