"""Child process of test_file_faults: an engine on a FileStore, driven by its parent.

    python -m tests.stores.store_child STORE_DIR LOG_PATH OPTIONS_JSON

OPTIONS_JSON: ``runs`` (how many), ``first`` (the first run's number), ``size`` (bytes of
padding in each output), ``version`` (put in every output and input), ``block`` (the second step
never ends, so the run stays "running"), ``segment_bytes``, ``indented`` (a codec whose text
holds newlines), ``concurrency``, ``spin_ms`` (each ``make`` holds the event loop this long,
as CPU-bound user code does), ``rounds`` (how many times to run the runs: 0 means until
killed, each round with the next version, so every round writes new checkpoints).

Every step whose checkpoint is durable appends ``done <run> <step> <version>`` to LOG_PATH
(:class:`~tests.helpers.ChildLog`); a step that fails appends ``fail <run> <step> <error type>``;
a run whose final manifest is durable (``engine.run`` returned) appends
``finished <run> <version> <status>``.
``open`` is
logged once the engine is open, ``end <round>`` after each round. After its rounds the child
waits for a line on standard input: ``again`` runs the failed runs once more, anything else
closes the engine (logging ``closing`` before and ``closed`` after) and exits. It is meant to be
SIGKILLed at any of these points.
"""

from __future__ import annotations

import json
import sys
import time

import anyio

from asyncflow import Engine, Event, FileStore, Flow, JsonCodec, StepFailed, StepSucceeded
from tests.helpers import ChildLog

flow = Flow("faults")
log = ChildLog()
VERSION = 0
SPIN = 0.0
JSON = JsonCodec()


class IndentedCodec:
    """JsonCodec's values, as indented JSON text: newlines inside every record."""

    def encode(self, value: object, /) -> str:
        return json.dumps(json.loads(JSON.encode(value)), indent=2, sort_keys=True)

    def decode(self, text: str, /) -> object:
        return JSON.decode(text)


@flow.step
async def make(n: int, size: int, version: int) -> dict[str, object]:
    end = time.perf_counter() + SPIN
    while time.perf_counter() < end:
        pass
    return {"n": n, "v": version, "pad": "x" * size}


@flow.step
async def after(make: dict[str, object], block: bool) -> str:
    if block:
        await anyio.sleep_forever()
    return f"{make['n']}:{make['v']}"


def on_event(event: Event) -> None:
    if isinstance(event, StepSucceeded):
        log(f"done {event.run_id} {event.step} {VERSION}")
    elif isinstance(event, StepFailed):
        cause = event.error.__cause__ or event.error
        log(f"fail {event.run_id} {event.step} {type(cause).__name__}")


async def main(store_dir: str, opts: dict[str, object]) -> None:
    global VERSION, SPIN
    SPIN = float(str(opts.get("spin_ms", 0))) / 1000
    runs = int(str(opts.get("runs", 10)))
    first = int(str(opts.get("first", 0)))
    size = int(str(opts.get("size", 10)))
    VERSION = int(str(opts.get("version", 1)))
    block = bool(opts.get("block", False))
    rounds = int(str(opts.get("rounds", 1)))
    store = FileStore(
        store_dir,
        codec=IndentedCodec() if opts.get("indented") else None,
        segment_bytes=int(str(opts.get("segment_bytes", 16 * 1024 * 1024))),
    )
    limiter = anyio.CapacityLimiter(int(str(opts.get("concurrency", 20))))

    async def one(engine: Engine, n: int, failed: set[int]) -> None:
        async with limiter:
            result = await engine.run(
                flow, run_id=f"run-{n}", n=n, size=size, version=VERSION, block=block
            )
        if not result.ok:
            failed.add(n)
        log(f"finished run-{n} {VERSION} {result.status.value}")

    async with Engine(store=store, observers=[on_event]) as engine:
        log("open")
        todo = set(range(first, first + runs))
        done_rounds = 0
        while True:
            failed: set[int] = set()
            async with anyio.create_task_group() as tg:
                for n in sorted(todo):
                    tg.start_soon(one, engine, n, failed)
            done_rounds += 1
            log(f"end {done_rounds}")
            if not rounds:
                VERSION += 1
                todo = set(range(first, first + runs))
            elif done_rounds >= rounds:
                word = await anyio.to_thread.run_sync(sys.stdin.readline)
                if word.strip() != "again":
                    break
                todo = failed
        log("closing")
    log("closed")


if __name__ == "__main__":
    log.open(sys.argv[2])
    anyio.run(main, sys.argv[1], json.loads(sys.argv[3]))
