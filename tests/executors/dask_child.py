"""A coordinator process: the documents batch on a running Dask cluster, one log line a result.

``python -m tests.executors.dask_child SCHEDULER API STORE LOG`` (STORE as make_store reads it): each finished run appends
``result <run id> <status> <restored|ran>`` to LOG (one write, so a SIGKILL tears none).
"""

from __future__ import annotations

import sys

import anyio
from distributed import Client

from asyncflow import Engine
from asyncflow.executors.dask import DaskExecutor
from tests.executors.dask_flows import documents, make_store
from tests.helpers import ChildLog

N = 40


async def main(scheduler: str, api: str, store: str, log_path: str) -> None:
    log = ChildLog()
    log.open(log_path)
    items = [(f"doc-{i:03d}", {"doc": f"doc-{i:03d}", "api": api}) for i in range(N)]
    async with (
        Client(scheduler, asynchronous=True) as client,
        Engine(store=make_store(store)) as engine,
    ):
        async for result in engine.map(documents, items, executor=DaskExecutor(client)):
            how = "restored" if result.restored else "ran"
            log(f"result {result.run_id} {result.status} {how}")


if __name__ == "__main__":
    scheduler, api, store, log_path = sys.argv[1:5]
    anyio.run(main, scheduler, api, store, log_path)
