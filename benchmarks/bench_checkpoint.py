"""Durable at full speed: the document pipeline with and without a FileStore, and issue 16's goals.

Each goal is a ratio of two timings taken in this same run (median of ``--repeat``, the two
sides alternating), so a loaded machine slows both:

- ``engine.map`` over 10,000 and 1,000 documents (ingest -> enrich, which awaits 10 ms with at
  most 100 in flight across runs -> summarize; 300 runs in flight), a fresh FileStore each time,
  the engine opened and closed inside the timed part: FileStore / no store, goal <= 1.5x; and
  no store / ideal (documents / 100 x 10 ms), goal <= 1.1x.
- opening a FileStore holding 100,000 run files and a 50 MB journal left by an engine that is
  gone (the open takes it into memory and compacts it in the background): seconds, goal < 1 s;
  and closing it again while that compaction runs.
- defining a flow of 10,000 steps: seconds, goal <= 0.3 s.
- fan-out of 10,000 steps in one run against a bare anyio task group: goal <= 1.2x.
- peak RSS of 100,000 documents against 10,000 (each in its own process), goal <= 1.2x, and
  the store folder's size.
- what orjson / msgspec and a faster hash would save on the hot path's encoding and digests.
- the floor: the same pipeline written by hand in anyio, bare and with the least a durable run
  must write (its manifests and each step's output, group-committed and fsynced, no leases,
  loads or run files): how far the engine's ratio is from what checkpointing itself costs.

    python benchmarks/bench_checkpoint.py [--quick] [--repeat N] [--dir PATH] [--profile]

``--quick`` runs smaller sizes (for a check that it works, not for the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import importlib
import importlib.util
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from asyncflow import Engine, FileStore, Flow, JsonCodec
from asyncflow._identity import digest
from asyncflow.stores import RunManifest, StepCheckpoint
from asyncflow.stores._file.disk import JOURNAL_DIR
from asyncflow.stores._file.journal import SEGMENT_MAGIC, frame
from asyncflow.stores._file.records import manifest_record, run_file_text, step_record

if TYPE_CHECKING:
    from collections.abc import Callable

flow = Flow("documents")


@flow.step
async def ingest(doc_id: int) -> dict[str, object]:
    return {"id": doc_id, "text": f"document {doc_id} " * 4}


@flow.step(concurrency=100)
async def enrich(ingest: dict[str, object]) -> dict[str, object]:
    await anyio.sleep(0.01)
    return {"id": ingest["id"], "words": len(str(ingest["text"]).split()), "lang": "en"}


@flow.step
async def summarize(ingest: dict[str, object], enrich: dict[str, object]) -> str:
    return f"doc {ingest['id']}: {enrich['words']} words ({enrich['lang']})"


def ideal(docs: int) -> float:
    """The time the enrich limit allows: 100 at a time, 10 ms each."""
    return docs / 100 * 0.01


async def run_all(store: FileStore | None, docs: int, prefix: str) -> tuple[float, float]:
    """Open an engine, map the documents, close it: (total seconds, of which closing)."""
    inputs = ((f"{prefix}-{i}", {"doc_id": i}) for i in range(docs))
    start = time.perf_counter()
    async with Engine(store=store) as engine:
        summary = await engine.map(flow, inputs, concurrency=300, progress=False).summary()
        close_start = time.perf_counter()
    end = time.perf_counter()
    assert summary.succeeded == docs, summary
    return end - start, end - close_start


def median(values: list[float]) -> float:
    return statistics.median(values)


def pipeline(parent: Path, docs: int, repeat: int, prof: cProfile.Profile | None) -> None:
    bare: list[float] = []
    stored: list[float] = []
    closes: list[float] = []
    for r in range(repeat):
        bare.append(anyio.run(run_all, None, docs, "bare")[0])
        directory = parent / f"store-{docs}-{r}"
        if prof:
            prof.enable()
        total, closing = anyio.run(run_all, FileStore(directory), docs, "doc")
        if prof:
            prof.disable()
        stored.append(total)
        closes.append(closing)
        if r == 0:
            check_store(directory, docs)
        shutil.rmtree(directory)
    b, s = median(bare), median(stored)
    print(f"engine.map, {docs:,} documents, open and close included (median of {repeat}):")
    print(
        f"  no store     {b:6.2f} s   {b / ideal(docs):5.2f}x ideal ({ideal(docs):.2f} s)  goal <= 1.1x"
    )
    print(
        f"  FileStore    {s:6.2f} s   {s / b:5.2f}x no store                  goal <= 1.5x"
        f"   ({3 * docs / s:,.0f} durable steps/s; close {median(closes):.3f} s)"
    )


class _FloorJournal:
    """The least a durable checkpoint costs here: group commit of framed JSON records, fsync."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.bodies: list[bytes] = []
        self.done = asyncio.Event()
        self.wake = asyncio.Event()
        self.executor = ThreadPoolExecutor(1)
        self.seq = 0

    def _write(self, data: bytes) -> None:
        os.write(self.fd, data)
        os.fsync(self.fd)

    async def committer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake = asyncio.Event()
            bodies, self.bodies = self.bodies, []
            done, self.done = self.done, asyncio.Event()
            data = b"".join(frame(n, body) for n, body in enumerate(bodies, self.seq + 1))
            self.seq += len(bodies)
            await loop.run_in_executor(self.executor, self._write, data)
            done.set()

    async def save(self, text: str, *, wait: bool = True) -> None:
        self.bodies.append(text.encode())
        self.wake.set()
        if wait:
            await self.done.wait()


async def _floor_run(docs: int, directory: Path | None) -> float:
    """The pipeline by hand in anyio (300 runs in flight, 100 enrich calls): seconds.

    With ``directory``, each run saves what a durable run must: its "running" manifest (not
    awaited), each step's output with its digest (awaited before the next step), and its final
    manifest (awaited), through :class:`_FloorJournal`: no leases, loads or run files.
    """
    encode = JsonCodec().encode
    limit, slots = anyio.CapacityLimiter(100), anyio.Semaphore(300)
    journal = _FloorJournal(directory / "journal") if directory is not None else None

    async def output(run_id: str, step: str, value: object) -> None:
        if journal is not None:
            text = encode(value)
            await journal.save(
                f'{{"run_id":"{run_id}","step":"{step}","digest":"{digest(text)}","output":{text}}}'
            )

    async def one(i: int) -> None:
        try:
            run_id = f"doc-{i}"
            if journal is not None:
                inputs = encode({"doc_id": i})
                await journal.save(
                    f'{{"run_id":"{run_id}","status":"running","inputs":{inputs}}}', wait=False
                )
            a = {"id": i, "text": f"document {i} " * 4}
            await output(run_id, "ingest", a)
            async with limit:
                await anyio.sleep(0.01)
            b = {"id": a["id"], "words": len(str(a["text"]).split()), "lang": "en"}
            await output(run_id, "enrich", b)
            await output(run_id, "summarize", f"doc {a['id']}: {b['words']} words ({b['lang']})")
            if journal is not None:
                await journal.save(f'{{"run_id":"{run_id}","status":"succeeded"}}')
        finally:
            slots.release()

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        if journal is not None:
            tg.start_soon(journal.committer)
        for i in range(docs):
            await slots.acquire()
            tg.start_soon(one, i)
        for _ in range(300):
            await slots.acquire()
        tg.cancel_scope.cancel()
    if journal is not None:
        os.close(journal.fd)
        journal.executor.shutdown()
    return time.perf_counter() - start


def floor(parent: Path, docs: int, repeat: int) -> None:
    """How close to the least durable checkpointing can cost: a hand-written pipeline."""
    bare, durable = [], []
    for r in range(repeat):
        bare.append(anyio.run(_floor_run, docs, None))
        directory = parent / f"floor-{docs}-{r}"
        directory.mkdir()
        durable.append(anyio.run(_floor_run, docs, directory))
        shutil.rmtree(directory)
    b, d = median(bare), median(durable)
    print(
        f"  by hand: anyio {b:5.2f} s; with a minimal durable journal {d:5.2f} s: {d / b:4.2f}x"
        f" (the floor: {(d - b) / docs * 1e6:,.0f} us a run of durable saves)"
    )


def check_store(directory: Path, docs: int) -> None:
    """Every run's three steps and final manifest are in the store (read as the next open does)."""

    async def check() -> None:
        store = FileStore(directory)
        async with store.open():
            listed = [i async for i in store.list_runs()]
            assert len(listed) == docs, len(listed)
            assert {i.status for i in listed} == {"succeeded"}
            for run_id in ("doc-0", f"doc-{docs - 1}"):
                assert sorted((await store.load_run(run_id)).steps) == [
                    "enrich",
                    "ingest",
                    "summarize",
                ]

    anyio.run(check)


def make_big_store(directory: Path, runs: int, journal_bytes: int) -> int:
    """Run files for ``runs`` runs, and a dead engine's journal of about ``journal_bytes``."""
    directory.mkdir(parents=True)
    codec = JsonCodec()
    stamp = "2026-12-01T00:00:00.000+00:00"
    for i in range(runs):
        m = RunManifest(
            f"old-{i}", "documents", "f" * 32, '{"doc_id":1}', "succeeded", stamp, stamp
        )
        steps = {
            name: StepCheckpoint(m.run_id, name, "a" * 32, "b" * 32, codec.encode({"i": i}))
            for name in ("ingest", "enrich", "summarize")
        }
        (directory / f"{m.run_id}.json").write_text(run_file_text(m.run_id, m, steps, {}))
    jdir = directory / JOURNAL_DIR
    jdir.mkdir()
    seq, size, n = 1, 0, 0
    chunks = [SEGMENT_MAGIC]
    output = codec.encode({"id": 1, "text": "document 1 " * 20, "lang": "en"})
    output_digest = digest(output)
    while size < journal_bytes:
        run_id = f"new-{n}"
        m = RunManifest(run_id, "documents", "f" * 32, '{"doc_id":1}', "running", stamp, stamp)
        bodies = [manifest_record(m)] + [
            step_record(StepCheckpoint(run_id, s, "a" * 32, output_digest, output))
            for s in ("ingest", "enrich", "summarize")
        ]
        for body in bodies:
            data = frame(seq, body.encode())
            chunks.append(data)
            seq += 1
            size += len(data)
        n += 1
    (jdir / f"{1:020d}-1-deadbeef.log").write_bytes(b"".join(chunks))
    return n


def big_open(parent: Path, runs: int, journal_mb: int) -> None:
    directory = parent / "big"
    made = make_big_store(directory, runs, journal_mb * 1024 * 1024)

    async def open_close() -> tuple[float, float, int]:
        store = FileStore(directory)
        start = time.perf_counter()
        async with store.open():
            opened = time.perf_counter() - start
            loaded = await store.load_run(f"new-{made - 1}")
            assert loaded.manifest is not None
            close_start = time.perf_counter()
        closing = time.perf_counter() - close_start
        return opened, closing, len(loaded.steps)

    opened, closing, steps = anyio.run(open_close)
    assert steps == 3
    print(
        f"open of a store with {runs:,} run files + a {journal_mb} MB journal "
        f"({made:,} runs in it): {opened:.2f} s (goal < 1 s); close during the background "
        f"compaction: {closing:.3f} s"
    )

    async def compact_all() -> float:
        store = FileStore(directory)
        async with store.open():
            start = time.perf_counter()
            await store.compact()
            return time.perf_counter() - start

    if hasattr(FileStore, "compact"):  # run against an older asyncflow, for its figures
        print(f"  then compacting what is left of that journal: {anyio.run(compact_all):.2f} s")
    shutil.rmtree(directory)


def define(n: int, parent: Path) -> None:
    """Define a flow of ``n`` steps, each its own function in a module with source on disk."""
    source = "\n".join(f"async def s{k}(x: int) -> int:\n    return x + {k}\n" for k in range(n))
    path = parent / "many_steps.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("many_steps", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fns = [getattr(module, f"s{k}") for k in range(n)]
    times = []
    for _ in range(3):
        many = Flow("many")
        start = time.perf_counter()
        for fn in fns:
            many.step(fn)
        times.append(time.perf_counter() - start)
        many.validate()
    print(f"defining a flow of {n:,} steps: {median(times):.3f} s (goal <= 0.3 s)")


def fan_out(n: int, repeat: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scheduler import baseline_fan, fan_flow

    fan = fan_flow(n)

    async def ours() -> object:
        async with Engine(store=None) as engine:
            t0 = time.perf_counter()
            await engine.run(fan)
            return time.perf_counter() - t0

    async def base() -> float:
        t0 = time.perf_counter()
        await baseline_fan(n)
        return time.perf_counter() - t0

    b, o = [], []
    for _ in range(repeat):
        b.append(anyio.run(base))
        o.append(float(anyio.run(ours)))  # type: ignore[arg-type]  # ours returns a float
    mb, mo = median(b), median(o)
    print(
        f"fan-out of {n:,} steps in one run: {mo / n * 1e6:.1f} us/step against {mb / n * 1e6:.1f}"
        f" for a bare anyio task group: {mo / mb:.2f}x (goal <= 1.2x)"
    )


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: VmHWM, which (unlike ru_maxrss) starts again at exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(docs: int, directory: str) -> None:
    anyio.run(run_all, FileStore(directory), docs, "doc")
    print(peak_rss_kib())


def folder_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def rss(parent: Path, small: int, large: int) -> None:
    peaks: dict[int, int] = {}
    for docs in (small, large):
        directory = parent / f"rss-{docs}"
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(docs), "--dir", str(directory)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        peaks[docs] = int(out.split()[-1])
        size = folder_size(directory)
        print(
            f"peak RSS, {docs:>7,} documents with FileStore: {peaks[docs] / 1024:6.1f} MiB; "
            f"store folder {size / 1e6:6.1f} MB ({size / docs:,.0f} bytes a run)"
        )
        shutil.rmtree(directory)
    print(f"  ratio {large:,} / {small:,}: {peaks[large] / peaks[small]:.2f}x (goal <= 1.2x)")


def per_call(fn: Callable[[], object], n: int = 20_000) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def libraries() -> None:
    """What a faster encoder or hash would save per step (microseconds a call)."""
    value: dict[str, Any] = {"id": 42, "words": 4, "lang": "en", "text": "document 42 " * 4}
    codec = JsonCodec()
    text = codec.encode(value)
    data = text.encode()
    rows = [
        ("JsonCodec.encode (stdlib json)", per_call(lambda: codec.encode(value))),
        (
            "blake2b digest, 16 bytes",
            per_call(lambda: hashlib.blake2b(data, digest_size=16).hexdigest()),
        ),
    ]
    # Optional: measured when installed (not dependencies of asyncflow).
    orjson, msgspec, xxhash = (_optional(name) for name in ("orjson", "msgspec", "xxhash"))
    if orjson is not None:
        rows.append(
            (
                "orjson.dumps (sorted keys)",
                per_call(lambda: orjson.dumps(value, option=orjson.OPT_SORT_KEYS)),
            )
        )
    if msgspec is not None:
        enc = msgspec.json.Encoder(order="sorted")
        rows.append(("msgspec.json encode (sorted)", per_call(lambda: enc.encode(value))))
    if xxhash is not None:
        rows.append(("xxh3_128 digest", per_call(lambda: xxhash.xxh3_128_hexdigest(data))))
    missing = [
        n for n, m in (("orjson", orjson), ("msgspec", msgspec), ("xxhash", xxhash)) if not m
    ]
    if missing:
        rows.append((f"not installed: {', '.join(missing)}", 0.0))
    print("per call, the hot path's encoding and digests (4 digests + 3 encodes a run):")
    for label, us in rows:
        print(f"  {label:<34} {us:6.2f} us" if us else f"  {label}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes: a check, not figures")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the checkpoint dirs")
    parser.add_argument("--profile", action="store_true", help="cProfile the checkpointed runs")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--only", default="", help="comma-separated parts: map,open,define,fan,rss,libs"
    )
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, str(args.dir))
        return
    quick: bool = args.quick
    repeat: int = 1 if quick else args.repeat
    parts = (
        set(args.only.split(",")) if args.only else {"map", "open", "define", "fan", "rss", "libs"}
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    parent = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=args.dir))
    prof = cProfile.Profile() if args.profile else None
    try:
        if "map" in parts:
            for docs in (1_000, 2_000) if quick else (10_000, 1_000):
                pipeline(parent, docs, repeat, prof)
                floor(parent, docs, repeat)
        if "open" in parts:
            big_open(parent, *((5_000, 5) if quick else (100_000, 50)))
        if "define" in parts:
            define(1_000 if quick else 10_000, parent)
        if "fan" in parts:
            fan_out(1_000 if quick else 10_000, repeat)
        if "rss" in parts:
            rss(parent, *((1_000, 5_000) if quick else (10_000, 100_000)))
        if "libs" in parts:
            libraries()
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
