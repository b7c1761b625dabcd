"""Child process of the SQL stores' crash tests.

    python -m tests.stores.sql_child pause KIND TARGET LOG
    python -m tests.stores.sql_child map KIND TARGET LOG N TTL
    python -m tests.stores.sql_child saves KIND TARGET LOG

``pause``: claim run ``r`` (a 1 s lease), save step ``a`` under it, log ``claimed``, then wait for
a line on stdin (the test SIGSTOPs the process meanwhile and takes the run over) and try to save
step ``b`` and a manifest under the old lease: logs ``refused`` for each one refused.

``map``: Engine.map of a two-step flow over N documents (run ids ``doc-<i>``), leases of TTL
seconds; each step execution logs ``exec <run> <step>`` and each durable step ``done <run>
<step>``, each step restored from its checkpoint ``restored <run> <step>``. Prints the batch summary as JSON at the end.

``saves``: 50 concurrent savers saving steps without end; each logs ``acked <run> <step>`` once
its save returned (the test SIGKILLs the process).

KIND is ``sqlite`` (TARGET a file) or ``postgres`` (TARGET a DSN).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import anyio

from asyncflow import Engine, Event, Flow, LeaseLostError, StepRestored
from asyncflow.stores import CheckpointStore, RunManifest, SqliteStore, StepCheckpoint
from tests.helpers import ChildLog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

flow = Flow("sql-crash")
log = ChildLog()


@flow.step
async def parse(x: int, ctx_run: str) -> int:
    log(f"exec {ctx_run} parse")
    await anyio.sleep(0.005)
    return x * 3


@flow.step(concurrency=8)
async def score(parse: int, ctx_run: str) -> int:
    log(f"exec {ctx_run} score")
    await anyio.sleep(0.02)
    return parse + 1


def store(kind: str, target: str) -> CheckpointStore:
    if kind == "sqlite":
        return SqliteStore(target)
    from asyncflow.stores.postgres import PostgresStore

    return PostgresStore(target)


async def pause(s: CheckpointStore) -> None:
    async with s.open():
        lease = await s.claim_run("r", owner="paused", ttl=1)
        assert lease is not None
        await s.save_step(StepCheckpoint("r", "a", "fp", "d", '"a"'), lease=lease)
        log("claimed")
        await anyio.to_thread.run_sync(sys.stdin.readline)
        manifest = RunManifest("r", "f", "fp", "{}", "failed", "t0", "t1")
        saves: list[Callable[[], Awaitable[None]]] = [
            lambda: s.save_step(StepCheckpoint("r", "b", "fp", "d", '"b"'), lease=lease),
            lambda: s.save_manifest(manifest, lease=lease),
        ]
        for save in saves:
            try:
                await save()
            except LeaseLostError:
                log("refused")
            else:
                log("written")


def restored(event: Event) -> None:
    """An observer: ``restored <run> <step>`` for each step restored from its checkpoint."""
    if isinstance(event, StepRestored):
        log(f"restored {event.run_id} {event.step}")


async def batch(s: CheckpointStore, n: int, ttl: float) -> None:
    inputs = ((f"doc-{x}", {"x": x, "ctx_run": f"doc-{x}"}) for x in range(n))
    async with Engine(store=s, observers=[log.durable, restored], lease_ttl=ttl) as engine:
        summary = await engine.map(flow, inputs, concurrency=16, progress=False).summary()
    print(
        json.dumps(
            {"succeeded": summary.succeeded, "restored": summary.restored, "failed": summary.failed}
        )
    )


async def saves(s: CheckpointStore) -> None:
    async def saver(w: int) -> None:
        for i in range(1_000_000):
            await s.save_step(StepCheckpoint(f"w{w}", f"s{i}", "fp", "d", f'"{i}"'))
            log(f"acked w{w} s{i}")

    async with s.open(), anyio.create_task_group() as tg:
        for w in range(50):
            tg.start_soon(saver, w)


if __name__ == "__main__":
    mode, kind, target, log_path = sys.argv[1:5]
    log.open(log_path)
    if mode == "pause":
        anyio.run(pause, store(kind, target))
    elif mode == "saves":
        anyio.run(saves, store(kind, target))
    else:
        anyio.run(batch, store(kind, target), int(sys.argv[5]), float(sys.argv[6]))
