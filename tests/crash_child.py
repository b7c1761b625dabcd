"""Child process of test_checkpoint_crash: a document pipeline with checkpoints, killed at will.

    python -m tests.crash_child STORE_DIR LOG_PATH DOCS

Every step execution appends ``exec <run> <step>`` to LOG_PATH, and every step whose checkpoint
is durable appends ``done <run> <step>`` (:class:`~tests.helpers.ChildLog`). ``open`` is logged
once the engine is open, ``close`` before it closes. On success it prints every run's outputs as JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import anyio

from asyncflow import Engine, FileStore, Flow, JsonCodec
from tests.helpers import ChildLog

CODEC = JsonCodec()


@dataclass(frozen=True)
class Doc:
    doc_id: int
    words: tuple[str, ...]


flow = Flow("crash-documents")
log = ChildLog()


@flow.step
async def ingest(doc_id: int, run: str) -> Doc:
    log(f"exec {run} ingest")
    await anyio.sleep(0.001 * (doc_id % 3))
    return Doc(doc_id, tuple(f"w{doc_id * 7 % (i + 3)}" for i in range(5)))


@flow.step(concurrency=3)
async def enrich(ingest: Doc, run: str) -> dict[str, object]:
    log(f"exec {run} enrich")
    await anyio.sleep(0.01)
    return {"doc": ingest, "count": len(set(ingest.words)), "tags": {"a", str(ingest.doc_id % 4)}}


@flow.step
async def summarize(enrich: dict[str, object], run: str) -> str:
    log(f"exec {run} summarize")
    return f"{enrich['count']}:{sorted(enrich['tags'])}"  # type: ignore[call-overload]


async def main(store_dir: str, docs: int) -> None:
    outputs: dict[str, object] = {}
    limiter = anyio.CapacityLimiter(40)

    async def one(engine: Engine, i: int) -> None:
        run = f"doc-{i}"
        async with limiter:
            result = await engine.run(flow, run_id=run, doc_id=i, run=run)
        result.raise_for_status()
        # Canonical JSON: restored dicts come back with sorted keys, and set order varies.
        outputs[run] = json.loads(CODEC.encode(dict(result.outputs)))

    async with Engine(store=FileStore(store_dir), observers=[log.durable]) as engine:
        log("open")
        async with anyio.create_task_group() as tg:
            for i in range(docs):
                tg.start_soon(one, engine, i)
        log("close")
    print(json.dumps(outputs, sort_keys=True))


if __name__ == "__main__":
    log.open(sys.argv[2])
    anyio.run(main, sys.argv[1], int(sys.argv[3]))
