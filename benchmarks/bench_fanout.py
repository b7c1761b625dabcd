"""Fan-out inside one run (``map_over=``) against ``engine.map`` over the same items.

10,000 items, each one call of ``enrich`` (a dict from an int, after one await), 100 in flight:

- fan-out: one run of ``split -> enrich (map_over=split, concurrency=100) -> join``;
- engine.map: 10,000 runs of a one-step flow ``enrich``, ``concurrency=100``;
- baseline: the same by hand, 100 anyio workers pulling items from one iterator.

Each is measured without a store and with a :class:`FileStore` (a fresh directory per repetition,
so nothing is restored; engine open and close are inside the time, as a job would see them).
Prints seconds (best of N), fan-out / engine.map (the goal: at most 1.2x) and each / baseline.

    python benchmarks/bench_fanout.py [--items N] [--repeat N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from functools import partial
from pathlib import Path

import anyio
from _common import best_of  # benchmarks/ is on sys.path when a benchmark runs

from asyncflow import Engine, FileStore, Flow

WIDTH = 100


async def work(k: int) -> dict[str, object]:
    await anyio.lowlevel.checkpoint()  # one trip through the loop, like the cheapest API call
    return {"id": k, "text": f"item {k}"}


def fan_out_flow() -> Flow:
    flow = Flow("fan-out")

    @flow.step
    async def split(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over=split, concurrency=WIDTH)
    async def enrich(split: int) -> dict[str, object]:
        return await work(split)

    @flow.step
    async def join(enrich: list[dict[str, object]]) -> int:
        return len(enrich)

    return flow


def one_item_flow() -> Flow:
    flow = Flow("one-item")

    @flow.step
    async def enrich(k: int) -> dict[str, object]:
        return await work(k)

    return flow


async def baseline(n: int) -> None:
    items = iter(range(n))
    results: list[dict[str, object] | None] = [None] * n

    async def worker() -> None:
        for k in items:
            results[k] = await work(k)

    async with anyio.create_task_group() as tg:
        for _ in range(WIDTH):
            tg.start_soon(worker)
    assert all(r is not None for r in results)


def _store(root: Path | None) -> FileStore | None:
    if root is None:
        return None
    path = Path(tempfile.mkdtemp(dir=root))
    return FileStore(path)


async def fan_out(flow: Flow, n: int, root: Path | None) -> None:
    async with Engine(store=_store(root)) as engine:
        result = await engine.run(flow, n=n)
    assert result.outputs["join"] == n, result.errors


async def mapped(flow: Flow, n: int, root: Path | None) -> None:
    async with Engine(store=_store(root)) as engine:
        summary = await engine.map(flow, ({"k": k} for k in range(n)), concurrency=WIDTH).summary()
    assert summary.succeeded == n, summary


async def main(n: int, repeat: int) -> None:
    fan, one = fan_out_flow(), one_item_flow()
    root = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    try:
        t_base = await best_of(repeat, partial(baseline, n))
        print(f"{n} items, {WIDTH} in flight; hand-written anyio baseline: {t_base:.3f} s")
        print(
            f"{'store':>9}{'fan-out s':>11}{'map s':>9}{'fan/map':>9}"
            f"{'fan/base':>10}{'map/base':>10}"
        )
        for label, where in (("none", None), ("FileStore", root)):
            await fan_out(fan, min(n, 500), where)  # warm up
            await mapped(one, min(n, 500), where)
            t_fan = await best_of(repeat, partial(fan_out, fan, n, where))
            t_map = await best_of(repeat, partial(mapped, one, n, where))
            print(
                f"{label:>9}{t_fan:>11.3f}{t_map:>9.3f}{t_fan / t_map:>8.2f}x"
                f"{t_fan / t_base:>9.2f}x{t_map / t_base:>9.2f}x"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs each")
    args = parser.parse_args()
    anyio.run(main, args.items, args.repeat)
