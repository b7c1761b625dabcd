"""Child process of test_one_owner: one of several workers on one batch and one store folder.

    python -m tests.lease_child STORE_DIR LOG_PATH URL DOCS

Runs ``engine.map`` over documents ``doc-0`` .. ``doc-<DOCS-1>``: ``fetch`` GETs
``URL/doc/<n>`` (the server counts each document's calls), ``summarize`` uses its answer. Every
step execution appends ``exec <run> <step>`` to LOG_PATH and every durable step ``done <run>
<step>`` (:class:`~tests.helpers.ChildLog`); ``open`` once the engine is open. On success it
prints each run's outputs as JSON on stdout.
"""

from __future__ import annotations

import json
import sys

import anyio

from asyncflow import Context, Engine, FileStore, Flow
from tests.helpers import ChildLog

flow = Flow("lease-documents")
log = ChildLog()


@flow.step
async def fetch(n: int, url: str, ctx: Context) -> dict[str, object]:
    log(f"exec doc-{n} fetch")
    response = await ctx.http.get(f"{url}/doc/{n}")
    response.raise_for_status()
    return {"n": n, "path": response.json()["path"]}


@flow.step
async def summarize(fetch: dict[str, object], n: int) -> str:
    log(f"exec doc-{n} summarize")
    return f"{fetch['path']}:{n * 7 % 11}"


async def main(store_dir: str, url: str, docs: int) -> None:
    outputs: dict[str, object] = {}
    async with Engine(store=FileStore(store_dir), observers=[log.durable]) as engine:
        log("open")
        inputs = [(f"doc-{n}", {"n": n, "url": url}) for n in range(docs)]
        async for result in engine.map(flow, inputs, concurrency=20, progress=False):
            result.raise_for_status()
            outputs[result.run_id] = result.outputs["summarize"]
    print(json.dumps(outputs, sort_keys=True))


if __name__ == "__main__":
    log.open(sys.argv[2])
    anyio.run(main, sys.argv[1], sys.argv[3], int(sys.argv[4]))
