"""Child process of test_resume_crash: runs that stop in their last step until SIGKILLed.

    python -m tests.resume_child STORE_DIR LOG_PATH RUNS

Run ``run-<n>`` for n in range(RUNS), all at once, with inputs :func:`inputs_of`. Every step
execution appends ``exec <run> <step>`` to LOG_PATH and every step whose checkpoint is durable
``done <run> <step>`` (:class:`~tests.helpers.ChildLog`). In this process the last step,
``publish``, never returns: the child is meant to be SIGKILLed there. Imported by the test, the
same flow runs to the end.
"""

from __future__ import annotations

import sys
from typing import TypedDict

import anyio

from asyncflow import Engine, FileStore, Flow
from tests.helpers import ChildLog

flow = Flow("resume-after-kill")
log = ChildLog()
HOLD = False


class Inputs(TypedDict):
    doc: dict[str, object]
    weight: float
    run: str


def inputs_of(n: int) -> Inputs:
    """The inputs of run ``run-<n>``: nested, so that a resume must decode them to match."""
    return {
        "doc": {"id": n, "words": [f"w{n}", "x", f"y{n % 3}"]},
        "weight": n / 4,
        "run": f"run-{n}",
    }


@flow.step
async def parse(doc: dict[str, object], run: str) -> list[str]:
    log(f"exec {run} parse")
    words = doc["words"]
    assert isinstance(words, list)
    return [str(w).upper() for w in words]


@flow.step
async def score(parse: list[str], weight: float, run: str) -> float:
    log(f"exec {run} score")
    return len("".join(parse)) * weight


@flow.step
async def publish(parse: list[str], score: float, run: str) -> str:
    log(f"exec {run} publish")
    if HOLD:
        await anyio.sleep_forever()
    return f"{'-'.join(parse)}={score:g}"


async def one(engine: Engine, n: int) -> None:
    await engine.run(flow, run_id=f"run-{n}", **inputs_of(n))


async def main(store_dir: str, runs: int) -> None:
    async with (
        Engine(store=FileStore(store_dir), observers=[log.durable]) as engine,
        anyio.create_task_group() as tg,
    ):
        for n in range(runs):
            tg.start_soon(one, engine, n)


if __name__ == "__main__":
    log.open(sys.argv[2])
    HOLD = True
    anyio.run(main, sys.argv[1], int(sys.argv[3]))
