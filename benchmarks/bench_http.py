"""The per-host gate + breaker layer against a bare httpx client, on the same local server.

The server (asyncflow.testing's app under uvicorn) runs in its own process so it does not
share the client's event loop. Each case runs three clients in alternation, several rounds,
and keeps each side's best round:

- bare: ``httpx.AsyncClient`` with the case's connection limit;
- gated: the breaker layer (BreakerTransport) over one httpx pool of the same size;
- engine: what ``Engine`` builds, the breaker layer over ShardedTransport (the same number of
  connections split into pools of at most 8);
- rated: the same with ``HostPolicy(rate=, burst=)`` set so high it is never reached: the cost
  of the rate limiter (aiolimiter) alone, printed as rated / engine (goal: at most 1.05x).

Cases:

- 1,000 concurrent requests over 100 connections (the issue's case);
- 5,000 tasks over 20 connections (tasks far outnumber connections: httpx's pool queue);
- 100 tasks x 20 requests over 100 connections (no queueing: the layer's pure cost).

Run: ``python benchmarks/bench_http.py [ROUNDS]`` (or ``make bench``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import anyio
import httpx

from asyncflow import HostPolicy

# Internal transports: the benchmark times each layer alone as well as the whole engine.
from asyncflow._http import BreakerTransport, ShardedTransport

ROUNDS = 2
SIDES = ("bare", "gated", "engine", "rated")
#: A rate and burst no case reaches: every request finds room in the bucket.
NEVER_REACHED = HostPolicy(fail_max=5, reset_timeout=30.0, rate=1e9, burst=1_000_000)


@dataclass(frozen=True)
class Case:
    name: str
    tasks: int
    per_task: int
    connections: int


CASES = [
    Case("1,000 concurrent requests / 100 connections", 1_000, 1, 100),
    Case("5,000 tasks / 20 connections", 5_000, 1, 20),
    Case("100 tasks x 20 requests / 100 connections", 100, 20, 100),
]


def bare_client(connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0, pool=None))


def protected_client(
    connections: int, *, sharded: bool, policy: HostPolicy | None = None
) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    inner = ShardedTransport(connections) if sharded else httpx.AsyncHTTPTransport(limits=limits)
    transport = BreakerTransport(
        inner,
        default=policy or HostPolicy(fail_max=5, reset_timeout=30.0),
        default_concurrency=connections,
    )
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(120.0, pool=None))


async def load(client: httpx.AsyncClient, url: str, case: Case) -> tuple[float, float]:
    """Requests per second, and the client's CPU seconds per request, for one round of ``case``.

    CPU time is this process's only (the server has its own), so it varies less than the rate
    when other work shares the machine.
    """

    async def worker() -> None:
        for _ in range(case.per_task):
            response = await client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"unexpected status {response.status_code}")

    n = case.tasks * case.per_task
    start, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(case.tasks):
            tg.start_soon(worker)
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n


async def run_case(url: str, case: Case, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Each side's best rate and least CPU per request over ``rounds`` alternating rounds."""
    best = dict.fromkeys(SIDES, 0.0)
    least = dict.fromkeys(SIDES, float("inf"))
    async with (
        bare_client(case.connections) as bare,
        protected_client(case.connections, sharded=False) as gated,
        protected_client(case.connections, sharded=True) as engine,
        protected_client(case.connections, sharded=True, policy=NEVER_REACHED) as rated,
    ):
        clients = {"bare": bare, "gated": gated, "engine": engine, "rated": rated}
        for client in clients.values():  # warm up: open the connections
            await load(client, url, Case(case.name, case.connections, 1, case.connections))
        for n in range(rounds):
            # Alternate the order, so no side always runs just after another one's load.
            order = list(clients.items()) if n % 2 == 0 else list(clients.items())[::-1]
            for name, client in order:
                rate, cpu = await load(client, url, case)
                best[name] = max(best[name], rate)
                least[name] = min(least[name], cpu)
    return best, least


async def limiter_alone(n: int = 100_000) -> float:
    """Seconds of CPU per request the host's rate costs when never reached (no HTTP at all)."""
    from asyncflow._http.rate import HostRate

    rate = HostRate(NEVER_REACHED.rate or 1.0, NEVER_REACHED.burst)
    start = time.process_time()
    for _ in range(n):
        await rate.acquire()
    return (time.process_time() - start) / n


async def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    command = [sys.executable, "-m", "asyncflow.testing", "127.0.0.2", "0"]
    async with await anyio.open_process(command, stderr=None) as server:
        try:
            assert server.stdout is not None
            line = b""
            with anyio.fail_after(30):
                while not line.endswith(b"\n"):  # the URL, printed once the server listens
                    line += await server.stdout.receive()
            url = line.decode().strip() + "/bench"
            print(f"server: {url} (own process); best of {rounds} rounds each")
            print("req/s, and the speed of each against the bare client (higher is faster);")
            print("rated: engine req/s / rated req/s, and rated / engine client CPU per request")
            print("(the limiter's overhead when its rate is never reached; goal <= 1.05x)")
            print(
                f"{'case':48} {'bare':>7} {'gated':>7} {'engine':>7} {'rated':>7}"
                f" {'gated':>6} {'engine':>7} {'rated':>7} {'cpu/req':>8} {'rated cpu':>9}"
            )
            for case in CASES:
                r, cpu = await run_case(url, case, rounds)
                print(
                    f"{case.name:48} {r['bare']:7,.0f} {r['gated']:7,.0f} {r['engine']:7,.0f}"
                    f" {r['rated']:7,.0f} {r['gated'] / r['bare']:5.2f}x"
                    f" {r['engine'] / r['bare']:6.2f}x {r['engine'] / r['rated']:6.3f}x"
                    f" {cpu['engine'] * 1e6:6.0f}us {cpu['rated'] / cpu['engine']:8.3f}x"
                )
            alone = await limiter_alone()
            print(f"the limiter alone (aiolimiter, never reached): {alone * 1e6:.2f}us per request")
        finally:
            server.terminate()


if __name__ == "__main__":
    anyio.run(main)
