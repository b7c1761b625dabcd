"""Child process of test_batch's SIGKILL test: a two-step flow mapped over N inputs.

    python tests/batch_child.py STORE_DIR LOG_PATH N

Each step execution appends ``exec <run> <step>`` to LOG_PATH (O_APPEND, outside the process);
each durable step appends ``done <run> <step>`` (StepSucceeded comes after the save). Prints the
batch summary as JSON at the end.
"""

from __future__ import annotations

import json
import os
import sys

import anyio

from asyncflow import Engine, Event, FileStore, Flow, StepSucceeded

flow = Flow("batch-crash")
LOG_FD = -1


def log(line: str) -> None:
    os.write(LOG_FD, f"{line}\n".encode())


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


def on_event(event: Event) -> None:
    if isinstance(event, StepSucceeded):
        log(f"done {event.run_id} {event.step}")


async def main(store_dir: str, n: int) -> None:
    inputs = ((f"item-{x}", {"x": x, "ctx_run": f"item-{x}"}) for x in range(n))
    async with Engine(store=FileStore(store_dir), observers=[on_event]) as engine:
        summary = await engine.map(flow, inputs, concurrency=16, progress=False).summary()
    print(
        json.dumps(
            {"succeeded": summary.succeeded, "restored": summary.restored, "failed": summary.failed}
        )
    )


if __name__ == "__main__":
    LOG_FD = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    anyio.run(main, sys.argv[1], int(sys.argv[3]))
