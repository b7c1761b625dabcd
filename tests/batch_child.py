"""Child process of test_batch's SIGKILL test: a two-step flow mapped over N inputs.

    python -m tests.batch_child STORE_DIR LOG_PATH N

Each step execution appends ``exec <run> <step>`` to LOG_PATH; each durable step appends
``done <run> <step>`` (:class:`~tests.helpers.ChildLog`). Prints the
batch summary as JSON at the end.
"""

from __future__ import annotations

import json
import sys

import anyio

from asyncflow import Engine, FileStore, Flow
from tests.helpers import ChildLog

flow = Flow("batch-crash")
log = ChildLog()


@flow.step
async def parse(x: int, ctx_run: str) -> int:
    log(f"exec {ctx_run} parse")
    await anyio.sleep(0.002)
    return x * 3


@flow.step
async def score(parse: int, ctx_run: str) -> int:
    log(f"exec {ctx_run} score")
    await anyio.sleep(0.004)
    return parse + 1


async def main(store_dir: str, n: int) -> None:
    inputs = ((f"item-{x}", {"x": x, "ctx_run": f"item-{x}"}) for x in range(n))
    async with Engine(store=FileStore(store_dir), observers=[log.durable]) as engine:
        summary = await engine.map(flow, inputs, concurrency=16, progress=False).summary()
    print(
        json.dumps(
            {"succeeded": summary.succeeded, "restored": summary.restored, "failed": summary.failed}
        )
    )


if __name__ == "__main__":
    log.open(sys.argv[2])
    anyio.run(main, sys.argv[1], int(sys.argv[3]))
