"""Webhook admission: deliveries admitted per second, against a bare Starlette endpoint.

Both sides are served by uvicorn on loopback the same way and get the same deliveries (a JSON
body and a unique ``webhook-id``) from one httpx client, ``--concurrency`` requests at a time:

- ours: a :class:`~asyncflow.Service` with one ``Webhook`` (HMAC-SHA256 verified): each
  delivery is admitted (``engine.admit``: the store's create-if-absent) and its run (one trivial
  step) is started;
- the baseline: a hand-written Starlette endpoint that reads the body, parses it, and does the
  same store write (``FileStore.create_run_if_absent`` of a pending manifest), answering 202.

They take turns, round after round, each on a fresh store, and each keeps its best round.
Prints both rates and the ratio (goal: ours at least 0.8x the baseline). Then the latency from
sending a delivery to its run's start (``RunStarted``), one delivery at a time: median and p99.

Run: ``.venv/bin/python benchmarks/bench_triggers.py`` (also part of ``make bench``).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from asyncflow import Engine, Event, FileStore, Flow, RunStarted, Service
from asyncflow._identity import canonical_inputs, encode_inputs
from asyncflow._plan import compile_plan
from asyncflow._service import serve_asgi
from asyncflow.stores import RunManifest
from asyncflow.triggers import Webhook

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

SECRET = b"bench-secret"

flow = Flow("bench-hook")


@flow.step
async def noop(doc: int) -> int:
    return doc


def delivery(i: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"doc": i}).encode()
    sig = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return body, {"webhook-id": f"d-{i}", "x-signature-256": f"sha256={sig}"}


async def send_all(url: str, n: int, concurrency: int, start: int) -> float:
    """POST n deliveries, ``concurrency`` at a time; seconds taken. Every one must be 202."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(i: int) -> None:
            async with limiter:
                body, headers = delivery(i)
                answer = await client.post(url, content=body, headers=headers)
                assert answer.status_code == 202, answer.text

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(start, start + n):
                tg.start_soon(one, i)
        return time.perf_counter() - t0


class _Served:
    def __init__(self) -> None:
        self.url = ""


async def _serving(app: object, tg: anyio.abc.TaskGroup) -> str:
    ready = anyio.Event()
    served = _Served()

    def on_ready(url: str) -> None:
        served.url = url
        ready.set()

    tg.start_soon(lambda: serve_asgi(app, "127.0.0.1", 0, ready=on_ready, signals=False))
    await ready.wait()
    return served.url


async def ours(root: Path, n: int, concurrency: int, *, run: bool = True) -> float:
    hook = Webhook("/hook", flow, secret=SECRET)
    service = Service(Engine(store=root), triggers=[hook], max_in_flight=n + 1)
    if not run:  # the admission path alone: admitted runs are not started (measurement only)
        service._start = lambda intake, flow, run_id, release: release()  # type: ignore[method-assign]
    async with service, anyio.create_task_group() as tg:
        url = await _serving(service.app, tg)
        took = await send_all(f"{url}/hook", n, concurrency, 0)
        await service.wait_idle()
        tg.cancel_scope.cancel()
    return n / took


def baseline_app(store: FileStore) -> Starlette:
    plan = compile_plan(flow)

    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        inputs = json.loads(body)
        run_id = "hook@" + request.headers["webhook-id"]
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        text = canonical_inputs(encode_inputs(store.codec, inputs))
        manifest = RunManifest(run_id, plan.flow, plan.fingerprint, text, "pending", now, now)
        created = await store.create_run_if_absent(manifest)
        return JSONResponse({"run_id": run_id}, status_code=202 if created else 200)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


async def ours_admit_only(root: Path, n: int, concurrency: int) -> float:
    return await ours(root, n, concurrency, run=False)


async def baseline(root: Path, n: int, concurrency: int) -> float:
    store = FileStore(root)
    async with store.open(), anyio.create_task_group() as tg:
        url = await _serving(baseline_app(store), tg)
        took = await send_all(f"{url}/hook", n, concurrency, 0)
        tg.cancel_scope.cancel()
    return n / took


async def latency(root: Path, n: int) -> list[float]:
    """Seconds from sending each delivery (one at a time) to its run's RunStarted event."""
    started: dict[str, float] = {}

    def observe(event: Event) -> None:
        if isinstance(event, RunStarted):
            started[event.run_id] = time.perf_counter()

    hook = Webhook("/hook", flow, secret=SECRET)
    service = Service(Engine(store=root, observers=[observe]), triggers=[hook])
    found = []
    async with service, anyio.create_task_group() as tg:
        url = await _serving(service.app, tg)
        async with httpx.AsyncClient() as client:
            for i in range(n):
                body, headers = delivery(i)
                t0 = time.perf_counter()
                answer = await client.post(f"{url}/hook", content=body, headers=headers)
                run_id = answer.json()["run_id"]
                while run_id not in started:
                    await anyio.lowlevel.checkpoint()
                found.append(started[run_id] - t0)
        await service.wait_idle()
        tg.cancel_scope.cancel()
    return found


async def rounds(n: int, concurrency: int, repeat: int) -> None:
    variants: dict[str, Callable[[Path, int, int], Awaitable[float]]] = {
        "ours": ours,
        "admit": ours_admit_only,
        "baseline": baseline,
    }
    best = dict.fromkeys(variants, 0.0)
    for r in range(repeat):
        order = list(variants)[r % 3 :] + list(variants)[: r % 3]
        for name in order:
            with tempfile.TemporaryDirectory() as tmp:
                rate = await variants[name](Path(tmp), n, concurrency)
            best[name] = max(best[name], rate)
            print(f"  round {r + 1} {name:8s} {rate:8.0f} deliveries/s")
    base = best["baseline"]
    print(f"webhook admissions, {n} deliveries, {concurrency} at a time, best of {repeat}:")
    print(f"  baseline  {base:6.0f} /s         (bare Starlette endpoint, the same store write)")
    print(
        f"  admit     {best['admit']:6.0f} /s {best['admit'] / base:5.2f}x  (our webhook and "
        f"admission path, HMAC verified, runs not started; goal >= 0.8x)"
    )
    print(
        f"  ours      {best['ours']:6.0f} /s {best['ours'] / base:5.2f}x  (the same, with every "
        f"admitted run executed in the same process meanwhile)"
    )


async def main(args: argparse.Namespace) -> None:
    await rounds(args.n, args.concurrency, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        waits = await latency(Path(tmp), args.latency_n)
    waits.sort()
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    print(f"delivery to run start, {len(waits)} deliveries one at a time:")
    print(f"  median {statistics.median(waits) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="deliveries per round")
    parser.add_argument("--concurrency", type=int, default=4, help="requests at once")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per variant")
    parser.add_argument("--latency-n", type=int, default=300, help="deliveries for latency")
    anyio.run(main, parser.parse_args())
