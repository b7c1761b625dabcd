"""Scheduler overhead: asyncflow against a hand-written anyio task group doing the same work.

Workloads (trivial steps, so only scheduling is measured):
- fan-out/fan-in: one source, N steps that each take the source's output, one sink taking all.
- chain: N steps, each taking the previous one's output.

Prints microseconds per step for both and the ratio. Run: ``make bench`` or
``.venv/bin/python benchmarks/bench_scheduler.py [--repeat 5]``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import anyio
from _common import best_of  # benchmarks/ is on sys.path when a benchmark runs

from asyncflow import Engine, Flow

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


def fan_flow(n: int) -> Flow:
    flow = Flow(f"fan-{n}")

    @flow.step
    async def source() -> int:
        return 1

    names = []
    for k in range(n):

        async def mid(source: int) -> int:
            return source + 1

        name = f"m{k}"
        flow.step(name=name)(mid)
        names.append(name)

    # A sink taking N outputs by name: build a function with N keyword parameters.
    params = ", ".join(f"{n}: int" for n in names)
    ns: dict[str, Any] = {}
    exec(f"async def sink({params}) -> int:\n    return sum(({', '.join(names)},))\n", ns)
    flow.step(name="sink")(ns["sink"])
    return flow


def chain_flow(n: int) -> Flow:
    flow = Flow(f"chain-{n}")

    @flow.step(name="s0")
    async def first() -> int:
        return 0

    for k in range(1, n):
        ns: dict[str, Any] = {}
        exec(f"async def s{k}(s{k - 1}: int) -> int:\n    return s{k - 1} + 1\n", ns)
        flow.step(name=f"s{k}")(ns[f"s{k}"])
    return flow


async def baseline_fan(n: int) -> int:
    async def source() -> int:
        return 1

    async def mid(x: int, out: list[int], k: int) -> None:
        out[k] = x + 1

    src = await source()
    out = [0] * n
    async with anyio.create_task_group() as tg:
        for k in range(n):
            tg.start_soon(mid, src, out, k)

    async def sink(parts: list[int]) -> int:
        return sum(parts)

    return await sink(out)


async def baseline_chain(n: int) -> int:
    # Each link is its own task started when the previous one finishes, as a scheduler would.
    result = [0]

    async def link(k: int, tg: anyio.abc.TaskGroup) -> None:
        result[0] = result[0] + 1 if k else 0
        if k + 1 < n:
            tg.start_soon(link, k + 1, tg)

    async with anyio.create_task_group() as tg:
        tg.start_soon(link, 0, tg)
    return result[0]


async def baseline_chain_awaits(n: int) -> int:
    # The tightest hand-written chain: plain awaits in one task, no scheduler at all.
    async def link(x: int) -> int:
        return x + 1

    x = 0
    for _ in range(n - 1):
        x = await link(x)
    return x


async def main(repeat: int) -> None:
    print(
        f"{'workload':<24}{'steps':>7}{'baseline us/step':>18}{'asyncflow us/step':>19}{'ratio':>8}"
    )
    async with Engine(store=None) as engine:
        cases: list[tuple[str, int, Flow, Callable[[], Awaitable[object]]]] = []
        for n in (100, 1_000, 10_000):
            cases.append(("fan-out/fan-in", n, fan_flow(n), lambda n=n: baseline_fan(n)))  # type: ignore[misc]
        chain = chain_flow(1_000)
        cases.append(("chain (task per link)", 1_000, chain, lambda: baseline_chain(1_000)))
        cases.append(("chain (plain awaits)", 1_000, chain, lambda: baseline_chain_awaits(1_000)))
        for label, n, flow, base in cases:
            flow.validate()
            steps = len(flow.steps)

            async def ours(flow: Flow = flow) -> object:
                result = await engine.run(flow, run_id="bench")
                result.raise_for_status()
                return result

            await ours()  # warm up
            await base()
            t_base = await best_of(repeat, base)
            t_ours = await best_of(repeat, ours)
            us_base = t_base / steps * 1e6
            us_ours = t_ours / steps * 1e6
            print(f"{label:<24}{n:>7}{us_base:>18.2f}{us_ours:>19.2f}{us_ours / us_base:>7.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.repeat)
