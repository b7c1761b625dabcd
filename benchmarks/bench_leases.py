"""What one owner per run costs on FileStore: the 10,000-document pipeline with and without leases.

Three runs of the same batch (ingest -> enrich, 10 ms of I/O, at most 100 in flight ->
summarize; 300 runs in flight), in one process, one after the other:

- a hand-written anyio baseline (the three functions, a task group, a semaphore; no store);
- ``engine.map`` on a FileStore whose leases are skipped (claims granted without locking,
  saves unfenced): the engine and store without this feature;
- ``engine.map`` on a FileStore as it is: every run claimed (an OFD lock), fenced, released.

Then the lease calls alone: claim and release of 10,000 runs on an open FileStore, in
microseconds a run. Prints times and ratios.

    python benchmarks/bench_leases.py [--docs N] [--repeat N]
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import anyio
from _common import best_of  # benchmarks/ is on sys.path when a benchmark runs

from asyncflow import Engine, FileStore, Flow
from asyncflow.stores import Lease, RunManifest, StepCheckpoint

flow = Flow("documents")


async def _ingest(doc_id: int) -> dict[str, object]:
    return {"id": doc_id, "text": f"document {doc_id} " * 4}


async def _enrich(ingest: dict[str, object]) -> dict[str, object]:
    await anyio.sleep(0.01)
    return {"id": ingest["id"], "words": len(str(ingest["text"]).split()), "lang": "en"}


async def _summarize(ingest: dict[str, object], enrich: dict[str, object]) -> str:
    return f"doc {ingest['id']}: {enrich['words']} words ({enrich['lang']})"


flow.step(name="ingest")(_ingest)
flow.step(name="enrich", concurrency=100)(_enrich)
flow.step(name="summarize")(_summarize)


class Unleased(FileStore):
    """FileStore with leases skipped: claims granted without a lock, saves not fenced."""

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


async def baseline(docs: int) -> None:
    """The pipeline by hand: what the engine's runs do, without an engine or a store."""
    runs = anyio.Semaphore(300)
    enrich_limit = anyio.Semaphore(100)

    async def one(i: int) -> None:
        try:
            ingest = await _ingest(i)
            async with enrich_limit:
                enrich = await _enrich(ingest)
            await _summarize(ingest, enrich)
        finally:
            runs.release()

    async with anyio.create_task_group() as tg:
        for i in range(docs):
            await runs.acquire()
            tg.start_soon(one, i)


async def mapped(store: FileStore, docs: int) -> None:
    inputs = ((f"doc-{i}", {"doc_id": i}) for i in range(docs))
    async with Engine(store=store) as engine:
        summary = await engine.map(flow, inputs, concurrency=300, progress=False).summary()
    assert summary.failed == 0, summary


async def claims(root: Path, runs: int) -> float:
    """Seconds per claim and release of one run, over ``runs`` runs, on an open FileStore."""
    async with FileStore(root).open() as store:
        start = time.perf_counter()
        for i in range(runs):
            lease = await store.claim_run(f"doc-{i}", owner="bench", ttl=30)
            assert lease is not None
            await store.release_run(lease)
        return (time.perf_counter() - start) / runs


async def main(docs: int, repeat: int) -> None:
    parent = Path(tempfile.mkdtemp(prefix="bench-leases-"))
    n = 0

    def fresh() -> Path:
        nonlocal n
        n += 1
        path = parent / f"s{n}"
        return path

    try:
        base = await best_of(repeat, lambda: baseline(docs))
        # Interleaved, so that a change in the machine's load falls on both alike.
        plain, leased = math.inf, math.inf
        for _ in range(repeat):
            plain = min(plain, await best_of(1, lambda: mapped(Unleased(fresh()), docs)))
            leased = min(leased, await best_of(1, lambda: mapped(FileStore(fresh()), docs)))
        per_claim = await claims(fresh(), docs)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    print(f"{docs} documents, best of {repeat}:")
    print(f"  anyio baseline (no store)       {base:7.3f} s")
    print(f"  FileStore, leases skipped       {plain:7.3f} s  = {plain / base:.2f}x baseline")
    print(
        f"  FileStore, one owner per run    {leased:7.3f} s  = {leased / base:.2f}x baseline,"
        f" {leased / plain:.3f}x without leases"
    )
    print(f"  claim + release alone           {per_claim * 1e6:7.1f} us a run")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    anyio.run(main, args.docs, args.repeat)
