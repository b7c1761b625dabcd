"""The document pipeline on a local Dask cluster, in one command.

1. Writes a corpus of text files and starts a flaky enrichment API (5% errors, 50 ms).
2. Starts a ``LocalCluster`` of worker processes, each with one asyncflow engine (the
   :class:`~asyncflow.executors.dask.AsyncflowPlugin`) on one shared FileStore.
3. Maps the pipeline over the corpus with ``DaskExecutor``: results stream back as they finish.
4. Starts a fresh cluster and maps the same corpus again: every document is restored from its
   checkpoints, without a request to the API.

Run: ``python examples/dask/run.py [--documents N] [--workers N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections import Counter
from pathlib import Path

import anyio
from distributed import Client, LocalCluster

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dask_pipeline import flow  # noqa: E402  (a sibling module the workers import too)

from asyncflow import Engine  # noqa: E402
from asyncflow.executors.dask import AsyncflowPlugin, DaskExecutor  # noqa: E402
from asyncflow.testing import serve_flaky  # noqa: E402


def write_corpus(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"doc-{i:04d}.txt"
        path.write_text(f"Document {i} says hello to reliable distributed pipelines. " * 3)
        paths.append(path)
    return paths


async def batch(
    workers: int, store: Path, paths: list[Path], api: str
) -> tuple[int, int, Counter[int]]:
    """One cluster, one batch: (succeeded, restored, documents by worker pid)."""
    async with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=8,
            processes=True,
            asynchronous=True,
            dashboard_address=":0",
            silence_logs=40,
        ) as cluster,
        Client(cluster, asynchronous=True) as client,
    ):
        await client.register_plugin(AsyncflowPlugin(functools.partial(Engine, store=store)))
        by_worker: Counter[int] = Counter()
        async with Engine(store=store) as engine:
            inputs = [{"path": str(p), "api": api} for p in paths]
            results = engine.map(flow, inputs, executor=DaskExecutor(client))
            async for result in results:
                result.raise_for_status()
                done = result.outputs["summarize"]
                assert isinstance(done, dict)
                by_worker[done["worker"]] += 1
            summary = await results.summary()
    return summary.succeeded, summary.restored, by_worker


async def main(n: int, workers: int, out: Path) -> None:
    paths = write_corpus(out / "corpus", n)
    async with serve_flaky("127.0.0.1") as api:
        api.error_rate, api.latency = 0.05, 0.05
        ok, restored, by_worker = await batch(workers, out / "store", paths, api.url)
        print(f"first run:  {ok} documents succeeded on {len(by_worker)} workers {dict(by_worker)}")
        print(f"            {api.count('/enrich')} enrich requests (retries included)")
        before = api.count("/enrich")
        ok, restored, _ = await batch(workers, out / "store", paths, api.url)
        print(
            f"second run: {ok} succeeded, {restored} restored from checkpoints, "
            f"{api.count('/enrich') - before} enrich requests"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, args.documents, args.workers, args.out or Path(tmp))
