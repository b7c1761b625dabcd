"""Observer overhead: the batch benchmark's workload with exporters attached against none.

The workload is bench_batch.py's document pipeline (ingest, enrich awaiting 10 ms with at most
100 in flight, summarize) through ``Engine.map``, and its hand-written anyio baseline in the same
run. Each variant has its own engine; the variants take turns, round after round (each round
starting with another one), and each keeps its best round, so drift on this shared machine hits
all of them alike. Prints each variant's best time and its ratio to the engine without observers
(goal: at most 1.15x with every exporter attached) and to the baseline, and each variant's best
CPU seconds (all threads) with its ratio to none's.

``--enrich-seconds 0`` removes the wait: the pipeline is then pure engine work, the harshest
case for an observer (its cost is not hidden behind sleeps).

Exporters: logging (``LogObserver``; the ``asyncflow`` logger with no handler, as a library
leaves it), Prometheus, and OpenTelemetry when ``asyncflow.observe.otel`` and the SDK are
installed (spans through a ``BatchSpanProcessor`` to an exporter that drops them). The "all"
variant attaches every one of them at once.

Run: ``.venv/bin/python benchmarks/bench_observe.py`` (also part of ``make bench``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import time
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import bench_batch  # benchmarks/ is on sys.path when a benchmark runs
from bench_batch import BATCH_CONCURRENCY, IN_FLIGHT, make_flow

from asyncflow import Engine
from asyncflow.observe import LogObserver
from asyncflow.observe.prometheus import PrometheusObserver

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from asyncflow import Flow
    from asyncflow.events import Observer

#: Exporter name -> a factory of a fresh observer; "all" attaches every one of them.
EXPORTERS: dict[str, Callable[[], Observer]] = {
    "logging": LogObserver,
    "prometheus": PrometheusObserver,
}


def _tracing() -> Callable[[], Observer] | None:
    """The OpenTelemetry exporter over a real SDK (spans batched to an exporter that drops them).

    Its observer lives in ``asyncflow.observe.otel`` (extra ``[otel]``); without the module or
    the SDK the benchmark measures the other exporters and says so. Imported by name: neither
    need be installed for the others.
    """
    try:
        otel: Any = importlib.import_module("asyncflow.observe.otel")
        sdk: Any = importlib.import_module("opentelemetry.sdk.trace")
        export: Any = importlib.import_module("opentelemetry.sdk.trace.export")
    except ImportError:
        return None
    dropped = type(
        "Dropped",
        (export.SpanExporter,),
        {"export": lambda self, spans: export.SpanExportResult.SUCCESS},
    )
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.BatchSpanProcessor(dropped()))
    factory: Callable[[], Observer] = partial(otel.OpenTelemetryObserver, tracer_provider=provider)
    return factory


async def ours(engine: Engine, flow: Flow, n: int) -> None:
    summary = await engine.map(
        flow, ({"doc": d} for d in range(n)), concurrency=BATCH_CONCURRENCY
    ).summary()
    assert summary.succeeded == n, summary


async def timed(fn: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (every thread of the process: a span exporter's too)."""
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    await fn()
    return time.perf_counter() - t0, time.process_time() - c0


async def overhead(n: int, repeat: int) -> None:
    flow = make_flow()
    tracing = _tracing()
    if tracing is not None:
        EXPORTERS["otel"] = tracing
    else:
        print(
            "OpenTelemetry exporter not available (asyncflow.observe.otel, the SDK): not measured"
        )
    variants: dict[str, list[Observer]] = {"none": []}
    variants.update({name: [factory()] for name, factory in EXPORTERS.items()})
    if len(EXPORTERS) > 1:
        variants["all"] = [factory() for factory in EXPORTERS.values()]
    async with AsyncExitStack() as stack:
        engines = {
            name: await stack.enter_async_context(Engine(store=None, observers=observers))
            for name, observers in variants.items()
        }
        for engine in engines.values():
            await ours(engine, flow, 500)  # warm up
        best = dict.fromkeys(["baseline", *engines], float("inf"))
        cpu = dict.fromkeys(best, float("inf"))

        def keep(name: str, t: tuple[float, float]) -> None:
            best[name] = min(best[name], t[0])
            cpu[name] = min(cpu[name], t[1])

        order = list(engines.items())
        for i in range(repeat):
            keep("baseline", await timed(partial(bench_batch.baseline, n)))
            # Each round starts with a different variant: no variant always runs first.
            for name, engine in order[i % len(order) :] + order[: i % len(order)]:
                keep(name, await timed(partial(ours, engine, flow, n)))
    ideal = n / IN_FLIGHT * bench_batch.ENRICH_SECONDS
    print(
        f"{n} documents, enrich {bench_batch.ENRICH_SECONDS * 1000:g} ms, ideal {ideal:.2f} s, best of {repeat}"
    )
    # CPU seconds are steadier than wall time on a shared machine: other processes' load
    # stretches the wall clock, not this process's own work.
    print(f"{'variant':>12}{'best s':>9}{'vs none':>9}{'vs base':>9}{'cpu s':>9}{'vs none':>9}")
    for name, t in best.items():
        c = cpu[name]
        print(
            f"{name:>12}{t:>9.3f}{t / best['none']:>8.2f}x{t / best['baseline']:>8.2f}x"
            f"{c:>9.3f}{c / cpu['none']:>8.2f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="rounds; each variant keeps its best")
    parser.add_argument(
        "--enrich-seconds", type=float, default=bench_batch.ENRICH_SECONDS, help="0: no wait"
    )
    args = parser.parse_args()
    bench_batch.ENRICH_SECONDS = args.enrich_seconds  # read at call time by both pipelines
    anyio.run(overhead, args.documents, args.repeat)
