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
installed (spans through a ``BatchSpanProcessor`` with a queue large enough not to drop, to an
exporter that discards them; spans ended but not exported are reported as dropped), sampling
every trace ("otel") and with ``ParentBased(TraceIdRatioBased(0.1))`` ("otel 10%"). The "all"
variant attaches logging, Prometheus and "otel" at once. "us/event" is a variant's CPU beyond
none's per event its observers were given.

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


def _tracing() -> dict[str, Callable[[], Observer]] | None:
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
    made: dict[str, Callable[[], Observer]] = {}
    for name, sampler in (("otel", None), ("otel 10%", _ratio(0.1))):
        provider = sdk.TracerProvider(sampler=sampler) if sampler else sdk.TracerProvider()
        # What an application sets up: spans batched off the loop, a queue large enough that a
        # burst of spans is not dropped (the benchmark reports any dropped: ended - exported).
        provider.add_span_processor(_COUNTS.ended_counter(name))
        provider.add_span_processor(
            export.BatchSpanProcessor(
                _COUNTS.exporter(name, export),
                max_queue_size=1 << 16,
                max_export_batch_size=2048,
            )
        )
        made[name] = partial(otel.OpenTelemetryObserver, tracer_provider=provider)
        _COUNTS.providers.append(provider)
    return made


def _ratio(rate: float) -> Any:
    sampling: Any = importlib.import_module("opentelemetry.sdk.trace.sampling")
    return sampling.ParentBased(sampling.TraceIdRatioBased(rate))


class _Counts:
    """Spans ended and spans exported per tracing variant: the difference was dropped."""

    def __init__(self) -> None:
        self.ended: dict[str, int] = {}
        self.exported: dict[str, int] = {}
        self.providers: list[Any] = []

    def ended_counter(self, name: str) -> Any:
        counts = self.ended
        counts[name] = 0
        sdk: Any = importlib.import_module("opentelemetry.sdk.trace")

        class Ended(sdk.SpanProcessor):  # type: ignore[misc]  # the SDK is untyped via Any
            def on_end(self, span: Any) -> None:
                counts[name] += 1

        return Ended()

    def exporter(self, name: str, export: Any) -> Any:
        counts = self.exported
        counts[name] = 0

        class Dropped(export.SpanExporter):  # type: ignore[misc]  # the SDK is untyped via Any
            def export(self, spans: Any) -> Any:
                counts[name] += len(spans)
                return export.SpanExportResult.SUCCESS

        return Dropped()


_COUNTS = _Counts()


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
        EXPORTERS.update(tracing)
    else:
        print(
            "OpenTelemetry exporter not available (asyncflow.observe.otel, the SDK): not measured"
        )
    variants: dict[str, list[Observer]] = {"none": []}
    variants.update({name: [factory()] for name, factory in EXPORTERS.items()})
    # "all": logging, Prometheus and OpenTelemetry sampling every trace (not the 10% one).
    everything = [name for name in EXPORTERS if name != "otel 10%"]
    if len(everything) > 1:
        variants["all"] = [EXPORTERS[name]() for name in everything]
    async with AsyncExitStack() as stack:
        engines = {
            name: await stack.enter_async_context(Engine(store=None, observers=observers))
            for name, observers in variants.items()
        }
        for engine in engines.values():
            await ours(engine, flow, 500)  # warm up
        seen: list[object] = []
        async with Engine(store=None, observers=[seen.append]) as counting:
            await ours(counting, flow, 500)
        per_doc = len(seen) / 500  # events an observer gets per document
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
    # cpu us/event: the variant's extra CPU over none's, per event its observers were given.
    print(f"{per_doc:g} events per document")
    print(
        f"{'variant':>12}{'best s':>9}{'vs none':>9}{'vs base':>9}{'cpu s':>9}{'vs none':>9}"
        f"{'us/event':>10}"
    )
    for name, t in best.items():
        c = cpu[name]
        extra = "" if name == "baseline" else f"{(c - cpu['none']) / (n * per_doc) * 1e6:>10.2f}"
        print(
            f"{name:>12}{t:>9.3f}{t / best['none']:>8.2f}x{t / best['baseline']:>8.2f}x"
            f"{c:>9.3f}{c / cpu['none']:>8.2f}x{extra}"
        )
    for provider in _COUNTS.providers:
        provider.force_flush()
    for name, ended in _COUNTS.ended.items():
        label = f"{name} (and all)" if name == "otel" else name
        exported = _COUNTS.exported[name]
        print(f"spans {label}: {ended} ended, {exported} exported, {ended - exported} dropped")


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
