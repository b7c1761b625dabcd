"""The logging exporter: how many lines a batch writes, and what LogObserver costs.

Lines: 5,000 documents whose one step fails with a transient error on 10% of attempts (seeded),
retried at once; counts the lines LogObserver writes at each level, and stamina's lines (none:
``quiet_stamina`` drops them).

Cost: bench_batch's pipeline (10 ms enrich, 100 in flight) and the same without the sleep
(pure engine overhead, where each event's cost shows most), with no observer and with a
LogObserver at the default level (WARNING, nothing written), best of five, as a ratio.

Run: ``.venv/bin/python benchmarks/bench_logging.py``.
"""

from __future__ import annotations

import argparse
import logging
import random
from functools import partial

import anyio
from _common import best_of  # benchmarks/ is on sys.path when a benchmark runs
from bench_batch import BATCH_CONCURRENCY, make_flow, ours

from asyncflow import Engine, Flow, Retry
from asyncflow.observe import LogObserver


class Flaky(Exception):
    """The transient error of the line-count batch."""


class Count(logging.Handler):
    """Counts the records it receives, by logger and level."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[tuple[str, str], int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.name, record.levelname)
        self.counts[key] = self.counts.get(key, 0) + 1


def flaky_flow(rate: float, seed: int) -> Flow:
    rng = random.Random(seed)
    flow = Flow("flaky")

    @flow.step(retry=Retry(attempts=3, wait_initial=0.0, wait_jitter=0.0, on=Flaky))
    async def enrich(doc: int) -> int:
        await anyio.lowlevel.checkpoint()
        if rng.random() < rate:
            raise Flaky(f"document {doc}: upstream hiccup")
        return doc

    return flow


async def lines(n: int, rate: float) -> None:
    count = Count()
    root = logging.getLogger()
    root.addHandler(count)
    root.setLevel(logging.DEBUG)
    try:
        async with Engine(store=None, observers=[LogObserver()]) as engine:
            batch = engine.map(flaky_flow(rate, seed=12), ({"doc": d} for d in range(n)))
            summary = await batch.summary()
    finally:
        root.removeHandler(count)
        root.setLevel(logging.WARNING)
    print(f"{n} documents, {rate:.0%} of attempts fail: {summary.failed} runs failed for good")
    for level in ("DEBUG", "INFO", "WARNING"):
        shown = sum(
            c
            for (name, lv), c in count.counts.items()
            if name == "asyncflow" and logging.getLevelName(lv) >= logging.getLevelName(level)
        )
        print(f"  asyncflow lines at {level:<7}: {shown:>6}")
    stamina = sum(c for (name, _), c in count.counts.items() if name == "stamina")
    print(f"  stamina lines            : {stamina:>6}")


def instant_flow() -> Flow:
    flow = Flow("instant")

    @flow.step
    async def ingest(doc: int) -> str:
        return f"document {doc}"

    @flow.step
    async def summarize(ingest: str) -> str:
        return ingest.upper()

    return flow


async def cost(n: int, repeat: int) -> None:
    print(f"{'pipeline':>24}{'none s':>9}{'LogObserver s':>15}{'ratio':>8}")
    for label, flow in (("bench_batch (10 ms)", make_flow()), ("no sleep", instant_flow())):
        times = []
        for observers in ([], [LogObserver()]):
            async with Engine(store=None, observers=observers) as engine:
                await ours(engine, flow, 500)  # warm up
                times.append(await best_of(repeat, partial(ours, engine, flow, n)))
        print(f"{label:>24}{times[0]:>9.3f}{times[1]:>15.3f}{times[1] / times[0]:>7.2f}x")


async def main(n_lines: int, n_cost: int, repeat: int) -> None:
    await lines(n_lines, 0.10)
    print(f"cost, {n_cost} documents, {BATCH_CONCURRENCY} runs in flight:")
    await cost(n_cost, repeat)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=5_000, help="documents for the line count")
    parser.add_argument("--cost", type=int, default=10_000, help="documents for the cost")
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs each")
    args = parser.parse_args()
    anyio.run(main, args.lines, args.cost, args.repeat)
