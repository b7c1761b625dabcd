"""Checkpoint throughput: the document pipeline with and without a FileStore.

10,000 documents, each a run of ingest -> enrich (awaits 10 ms, at most 100 in flight across
runs) -> summarize, driven by ``engine.map`` with 300 runs in flight. Reports durable checkpoints
per second (step checkpoints plus manifests, each acknowledged only after its fsync) and the
ratio of the two runs' times. Engine close (commit and compaction into per-run files) is timed
separately: the time from the end of the last run to the engine being closed.

    python benchmarks/bench_checkpoint.py [--docs N] [--dir PATH] [--segment-mib N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import anyio

from asyncflow import Engine, FileStore, Flow, JsonCodec
from asyncflow.stores import StepCheckpoint

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


async def run_all(store: FileStore | None, docs: int, prefix: str) -> tuple[float, float, int]:
    """Run the batch through Engine.map; (run seconds, engine close seconds, failed runs)."""
    inputs = ((f"{prefix}-{i}", {"doc_id": i}) for i in range(docs))
    engine = Engine(store=store)
    async with engine:
        start = time.perf_counter()
        summary = await engine.map(flow, inputs, concurrency=300, progress=False).summary()
        elapsed = time.perf_counter() - start
        close_start = time.perf_counter()
    closing = time.perf_counter() - close_start
    return elapsed, closing, summary.failed


async def store_alone(directory: Path, saves: int, writers: int) -> tuple[float, float]:
    """Durable saves per second of the store by itself: ``writers`` tasks saving in a loop."""
    store = FileStore(directory)
    output = JsonCodec().encode({"id": 1, "words": 4, "lang": "en"})
    per_writer = saves // writers

    async def writer(w: int) -> None:
        for i in range(per_writer):
            await store.save_step(
                StepCheckpoint(f"w{w}", f"s{i}", fingerprint="f", digest="d", output=output)
            )

    async with store.open():
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for w in range(writers):
                tg.start_soon(writer, w)
        elapsed = time.perf_counter() - start
        close_start = time.perf_counter()
    return elapsed, time.perf_counter() - close_start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the checkpoint dir")
    parser.add_argument(
        "--segment-mib", type=int, default=16, help="journal segment size: smaller compacts sooner"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the checkpointed run")
    args = parser.parse_args()
    docs: int = args.docs
    parent = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=args.dir))
    try:
        bare, _, failed = anyio.run(run_all, None, docs, "bare")
        assert not failed
        store = FileStore(parent / "store", segment_bytes=args.segment_mib * 1024 * 1024)
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        stored, closing, failed = anyio.run(run_all, store, docs, "doc")
        if prof:
            prof.disable()
        assert not failed
        files = list((parent / "store").glob("*.json"))
        assert len(files) == docs, len(files)
        steps = sum(len(json.loads(f.read_text())["steps"]) for f in files)
        assert steps == 3 * docs, steps
        # Durable records: 3 step checkpoints and 2 manifests (start, end) per run.
        records = 5 * docs
        print(f"documents: {docs}, steps: {3 * docs}, durable records: {records}")
        print(f"without store: {bare:.2f} s  ({3 * docs / bare:,.0f} steps/s)")
        print(
            f"with FileStore: {stored:.2f} s  ({3 * docs / stored:,.0f} step checkpoints/s, "
            f"{records / stored:,.0f} durable records/s)"
        )
        print(f"ratio: {stored / bare:.2f}x (target <= 2x)")
        print(f"engine close (commit + compaction into {len(files)} run files): {closing:.2f} s")
        saves, writers = 3 * docs, 300
        alone, alone_close = anyio.run(store_alone, parent / "alone", saves, writers)
        print(
            f"store alone ({writers} writers, {saves} saves): {saves / alone:,.0f} durable "
            f"saves/s; close {alone_close:.2f} s"
        )
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
