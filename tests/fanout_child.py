"""Child process of test_fanout's SIGKILL test: a fan-out whose later items hang until killed.

    python -m tests.fanout_child STORE_DIR LOG_PATH URL

Runs ``fan``: ``fetch`` maps over :data:`ITEMS` paths, :data:`WIDTH` at a time, each a GET of
``URL/item/<k>``. Each item appends ``exec <k>`` to LOG_PATH before its request. In this process
items from :data:`HOLD_FROM` on never make their request: once all :data:`WIDTH` workers hold
one, every earlier item has been saved (a worker saves its item before it takes the next), and
the child is meant to be SIGKILLed. Imported by the test, the same flow runs to the end.
"""

from __future__ import annotations

import sys

import anyio

from asyncflow import Context, Engine, FileStore, Flow
from tests.helpers import ChildLog

ITEMS = 40
HOLD_FROM = 24
WIDTH = 3

flow = Flow("fan-after-kill")
log = ChildLog()
HOLD = False


@flow.step
async def paths(n: int) -> list[str]:
    return [f"/item/{k}" for k in range(n)]


@flow.step(map_over=paths, concurrency=WIDTH)
async def fetch(paths: str, url: str, ctx: Context) -> str:
    k = int(paths.rsplit("/", 1)[1])
    log(f"exec {k}")
    if HOLD and k >= HOLD_FROM:
        await anyio.sleep_forever()
    response = await ctx.http.get(url + paths)
    response.raise_for_status()
    return paths


async def main(store_dir: str, url: str) -> None:
    async with Engine(store=FileStore(store_dir)) as engine:
        await engine.run(flow, run_id="fan", n=ITEMS, url=url)


if __name__ == "__main__":
    log.open(sys.argv[2])
    HOLD = True
    anyio.run(main, sys.argv[1], sys.argv[3])
