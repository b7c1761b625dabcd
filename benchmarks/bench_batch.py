"""Batch throughput: the document pipeline through Engine.map against a hand-written anyio baseline.

The pipeline: ingest, enrich (awaits 10 ms, like an API call; at most 100 in flight),
summarize. The ideal wall time is documents / 100 x 10 ms. Prints each side's best of five runs as a ratio
to the ideal, and asyncflow's ratio to the baseline. Without checkpoints (store=None).

Also measures peak RSS for 10,000 and 100,000 inputs from a generator, each in a fresh
process, so memory proven to grow with concurrency rather than with the inputs.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_batch.py``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from functools import partial

import anyio
from _common import best_of  # benchmarks/ is on sys.path when a benchmark runs

from asyncflow import Engine, Flow

ENRICH_SECONDS = 0.010
IN_FLIGHT = 100
BATCH_CONCURRENCY = 300


def make_flow() -> Flow:
    flow = Flow("documents")

    @flow.step
    async def ingest(doc: int) -> str:
        return f"document {doc}"

    @flow.step(concurrency=IN_FLIGHT)
    async def enrich(ingest: str) -> dict[str, object]:
        await anyio.sleep(ENRICH_SECONDS)
        return {"text": ingest, "words": len(ingest.split())}

    @flow.step
    async def summarize(enrich: dict[str, object]) -> str:
        return f"{enrich['text']}: {enrich['words']} words"

    return flow


async def baseline(n: int) -> int:
    """The same pipeline by hand: a task group, a semaphore, three awaits per document."""
    limiter = anyio.CapacityLimiter(IN_FLIGHT)
    slots = anyio.Semaphore(BATCH_CONCURRENCY)
    done = 0

    async def ingest(doc: int) -> str:
        return f"document {doc}"

    async def enrich(text: str) -> dict[str, object]:
        async with limiter:
            await anyio.sleep(ENRICH_SECONDS)
        return {"text": text, "words": len(text.split())}

    async def summarize(e: dict[str, object]) -> str:
        return f"{e['text']}: {e['words']} words"

    async def one(doc: int) -> None:
        nonlocal done
        try:
            await summarize(await enrich(await ingest(doc)))
            done += 1
        finally:
            slots.release()

    async with anyio.create_task_group() as tg:
        for doc in range(n):
            await slots.acquire()
            tg.start_soon(one, doc)
    return done


async def ours(engine: Engine, flow: Flow, n: int) -> int:
    summary = await engine.map(
        flow, ({"doc": d} for d in range(n)), concurrency=BATCH_CONCURRENCY
    ).summary()
    assert summary.succeeded == n, summary
    return summary.succeeded


async def throughput(sizes: list[int], repeat: int) -> None:
    flow = make_flow()
    print(
        f"{'documents':>10}{'ideal s':>9}{'baseline s':>12}{'x ideal':>9}{'asyncflow s':>13}{'x ideal':>9}{'vs base':>9}"
    )
    async with Engine(store=None) as engine:
        await ours(engine, flow, 500)  # warm up
        for n in sizes:
            ideal = n / IN_FLIGHT * ENRICH_SECONDS
            t_base = await best_of(repeat, partial(baseline, n))
            t_ours = await best_of(repeat, partial(ours, engine, flow, n))
            print(
                f"{n:>10}{ideal:>9.2f}{t_base:>12.2f}{t_base / ideal:>8.2f}x"
                f"{t_ours:>13.2f}{t_ours / ideal:>8.2f}x{t_ours / t_base:>8.2f}x"
            )


async def rss_child(n: int) -> None:
    flow = make_flow()
    async with Engine(store=None) as engine:
        await ours(engine, flow, n)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def rss() -> None:
    peaks = {}
    for n in (10_000, 100_000):
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[n] = int(out.stdout.split()[-1])
        print(f"peak RSS, {n:>7} inputs from a generator: {peaks[n] / 1024:.1f} MiB")
    print(f"ratio 100,000 / 10,000: {peaks[100_000] / peaks[10_000]:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-rss", action="store_true", help="skip the memory measurement")
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs each")
    args = parser.parse_args()
    if args.rss_child:
        anyio.run(rss_child, args.rss_child)
    else:
        anyio.run(throughput, args.sizes, args.repeat)
        if not args.no_rss:
            rss()
