"""Child process of test_serve: ``python -m asyncflow serve tests.service_child:make``.

Set by the test in the environment: SERVICE_STORE (the store's folder), SERVICE_LOG (where
``exec <doc>``, ``admitted <run>`` and ``finished <run> <status>`` lines go), SERVICE_GRACE,
SERVICE_REDIS (a server URL: also consume its stream ``docs``), and SERVICE_CRASH=1 to SIGKILL the process right after its first admission, before the source
is answered. A doc named ``slow*`` waits until the file SERVICE_LOG + ".release" exists.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio

from asyncflow import Engine, Event, Flow, RunFinished, Service, TriggerAdmitted
from asyncflow.triggers import RedisStream, Trigger, Webhook
from tests.helpers import ChildLog

log = ChildLog()
flow = Flow("served")


@flow.step
async def ingest(doc: str) -> str:
    log(f"exec {doc}")
    if doc.startswith("slow"):
        release = Path(os.environ["SERVICE_LOG"] + ".release")
        while not await anyio.Path(release).exists():  # noqa: ASYNC110 - another process
            await anyio.sleep(0.01)
    return doc.upper()


def observe(event: Event) -> None:
    if isinstance(event, TriggerAdmitted):
        log(f"admitted {event.run_id}")
        if os.environ.get("SERVICE_CRASH") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
    elif isinstance(event, RunFinished):
        log(f"finished {event.run_id} {event.status}")


def make() -> Service:
    log.open(os.environ["SERVICE_LOG"])
    engine = Engine(store=os.environ["SERVICE_STORE"], observers=[observe])
    triggers: list[Trigger] = [Webhook("/docs", flow, insecure=True)]
    if "SERVICE_REDIS" in os.environ:  # the stream "docs", group "g"; a fixed consumer name
        stream = RedisStream(
            os.environ["SERVICE_REDIS"],
            stream="docs",
            group="g",
            flow=flow,
            consumer="served",
            claim_idle=0.2,
            block=0.05,
        )
        triggers.append(stream)
    return Service(engine, triggers=triggers, port=0, grace=float(os.environ["SERVICE_GRACE"]))
