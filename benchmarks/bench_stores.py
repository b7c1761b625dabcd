"""Store throughput: the document pipeline through Engine.map on every store, and two processes.

Part 1, one process: 10,000 documents, each a run of ingest -> enrich (awaits 10 ms, at most 100
in flight) -> summarize, 300 runs in flight, against a hand-written anyio pipeline doing the same
work in the same run (the baseline), and Engine.map without a store. Each store's time, its ratio
to both, and durable records per second (3 step checkpoints + 2 manifests per run, each
acknowledged only once durable). SqliteStore runs with synchronous=FULL (durable per save, the
default) and NORMAL (not durable against power loss), which is the measurement behind the
default.

Part 2, processes sharing a store: the same documents with an I/O-bound enrich (200 ms, at most
50 in flight per process: 250 documents/s at best per process), once by one process and once
split between two processes sharing one SqliteStore file / one Postgres database; the ratio of
their throughputs (goal: about 2x).

PostgreSQL: ``--postgres DSN``, or a throwaway server is started with initdb (tests/servers.py).

    python benchmarks/bench_stores.py [--docs N] [--quick] [--postgres DSN] [--dir PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from asyncflow import Engine, FileStore, Flow
from asyncflow.stores import CheckpointStore, SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
IN_FLIGHT = 300
#: Part 2's enrich: each call awaits this long, at most IO_LIMIT at once per process.
IO_SECONDS, IO_LIMIT = 0.2, 50


def make_flow(enrich_seconds: float, enrich_limit: int) -> Flow:
    flow = Flow("documents")

    @flow.step
    async def ingest(doc_id: int) -> dict[str, object]:
        return {"id": doc_id, "text": f"document {doc_id} " * 4}

    @flow.step(concurrency=enrich_limit)
    async def enrich(ingest: dict[str, object]) -> dict[str, object]:
        await anyio.sleep(enrich_seconds)
        return {"id": ingest["id"], "words": len(str(ingest["text"]).split()), "lang": "en"}

    @flow.step
    async def summarize(ingest: dict[str, object], enrich: dict[str, object]) -> str:
        return f"doc {ingest['id']}: {enrich['words']} words ({enrich['lang']})"

    return flow


async def baseline(docs: int) -> float:
    """The same work by hand: anyio tasks, a limiter for enrich, IN_FLIGHT documents at once."""
    enrich_limit, slots = anyio.CapacityLimiter(100), anyio.CapacityLimiter(IN_FLIGHT)

    async def one(doc_id: int) -> None:
        async with slots:
            ingest = {"id": doc_id, "text": f"document {doc_id} " * 4}
            async with enrich_limit:
                await anyio.sleep(0.01)
                enrich = {"id": doc_id, "words": len(str(ingest["text"]).split()), "lang": "en"}
            summary = f"doc {ingest['id']}: {enrich['words']} words ({enrich['lang']})"
            del summary

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(docs):
            await slots.acquire()  # pulled as slots free up, as engine.map pulls inputs
            slots.release()
            tg.start_soon(one, i)
    return time.perf_counter() - start


async def run_map(
    store: CheckpointStore | None, flow: Flow, first: int, last: int, concurrency: int = IN_FLIGHT
) -> float:
    inputs = ((f"doc-{i}", {"doc_id": i}) for i in range(first, last))
    async with Engine(store=store) as engine:
        start = time.perf_counter()
        summary = await engine.map(flow, inputs, concurrency=concurrency, progress=False).summary()
        elapsed = time.perf_counter() - start
    assert summary.failed == 0, summary
    return elapsed


async def count_steps(store: CheckpointStore) -> int:
    async with store.open():
        runs = [info.run_id async for info in store.list_runs(status="succeeded")]
        return sum([len((await store.load_run(r)).steps) for r in runs])


def make_store(kind: str, target: str) -> CheckpointStore:
    if kind == "sqlite":
        return SqliteStore(target)
    if kind == "sqlite-normal":
        return SqliteStore(target, synchronous="NORMAL")
    if kind == "file":
        return FileStore(target)
    from asyncflow.stores.postgres import PostgresStore

    return PostgresStore(target)


def child(kind: str, target: str, first: int, last: int) -> None:
    """One of the processes of part 2: ready, wait for the go line, run its share, report."""
    flow = make_flow(IO_SECONDS, IO_LIMIT)
    store = make_store(kind, target)
    print("ready", flush=True)
    sys.stdin.readline()
    elapsed = anyio.run(run_map, store, flow, first, last, 100)
    print(json.dumps({"elapsed": elapsed}), flush=True)


def processes(kind: str, target: str, docs: int, n: int) -> float:
    """Wall time for ``n`` processes to run ``docs`` documents between them, from one go."""
    share = docs // n
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                kind,
                target,
                str(i * share),
                str((i + 1) * share),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, _ = p.communicate()
        assert p.returncode == 0, out
    return time.perf_counter() - start


def fresh_database(dsn: str, name: str) -> str:
    """A new, empty database ``name`` on the server of ``dsn`` (dropped first if there)."""
    import psycopg
    import psycopg.conninfo

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 documents: a smoke run")
    parser.add_argument("--postgres", help="a DSN; default: start a throwaway server")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the store files")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, target, first, last = args.child
        child(kind, target, int(first), int(last))
        return
    docs: int = 1_000 if args.quick else args.docs
    parent = Path(tempfile.mkdtemp(prefix="bench-stores-", dir=args.dir))
    server = None
    try:
        if args.postgres:
            new_db: Callable[[str], str] = lambda name: fresh_database(args.postgres, name)  # noqa: E731
        else:
            sys.path.insert(0, str(ROOT))
            from tests.servers import Postgres, postgres_binaries

            bin_dir = postgres_binaries()
            assert bin_dir is not None, "PostgreSQL is not installed: give --postgres DSN"
            server = Postgres(bin_dir)
            server.start()
            new_db = server.create_database
        flow = make_flow(0.01, 100)
        ideal = docs / 100 * 0.01
        base = anyio.run(baseline, docs)
        bare = anyio.run(run_map, None, flow, 0, docs)
        records = 5 * docs
        print(f"documents: {docs}, durable records per store run: {records}")
        print(f"ideal (docs / 100 x 10 ms): {ideal:.2f} s")
        print(f"hand-written anyio baseline: {base:.2f} s ({base / ideal:.2f}x ideal)")
        print(f"Engine.map, no store:        {bare:.2f} s ({bare / base:.2f}x baseline)")
        targets = {
            "file": str(parent / "files"),
            "sqlite": str(parent / "full.db"),
            "sqlite-normal": str(parent / "normal.db"),
            "postgres": new_db("bench_one"),
        }
        for kind, target in targets.items():
            elapsed = anyio.run(run_map, make_store(kind, target), flow, 0, docs)
            steps = anyio.run(count_steps, make_store(kind, target))
            assert steps == 3 * docs, (kind, steps)
            print(
                f"{kind:>13}: {elapsed:.2f} s, {elapsed / bare:.2f}x no store, "
                f"{elapsed / base:.2f}x baseline, {elapsed / ideal:.1f}x ideal, "
                f"{records / elapsed:,.0f} durable records/s"
            )
        print(
            f"two processes against one (enrich {IO_SECONDS * 1000:.0f} ms, at most {IO_LIMIT} "
            f"in flight per process: at best {IO_LIMIT / IO_SECONDS:.0f} docs/s per process):"
        )
        for kind in ("sqlite", "postgres"):
            one_target = str(parent / "one.db") if kind == "sqlite" else new_db("bench_p1")
            two_target = str(parent / "two.db") if kind == "sqlite" else new_db("bench_p2")
            one = processes(kind, one_target, docs, 1)
            two = processes(kind, two_target, docs, 2)
            print(
                f"{kind:>13}: one process {docs / one:,.0f} docs/s, two {docs / two:,.0f} "
                f"docs/s: {one / two:.2f}x (goal about 2x)"
            )
    finally:
        if server is not None:
            server.remove()
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
