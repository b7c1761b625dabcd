"""Flows the Dask tests ship to worker processes by reference (they import this module).

``documents``: ``enrich`` POSTs the document to ``{api}/enrich/{doc}`` (the server counts each
document's requests by path), at most ``ENRICH_SLOTS`` at once per worker engine, retrying
transient faults; ``save`` makes the record. ``broken`` fails in ``parse`` with a chained error.
"""

from __future__ import annotations

import functools
import os
import signal

from asyncflow import CheckpointStore, Context, Engine, FileStore, Flow, Retry, StepError
from asyncflow.stores import SqliteStore

ENRICH_SLOTS = 4
RETRY = Retry(attempts=6, timeout=None, wait_initial=0.01, wait_max=0.05, wait_jitter=0.01)

documents = Flow("documents")


@documents.step(concurrency=ENRICH_SLOTS, retry=RETRY)
async def enrich(doc: str, api: str, ctx: Context) -> dict[str, object]:
    response = await ctx.http.post(f"{api}/enrich/{doc}", json={"id": doc})
    response.raise_for_status()
    return {"doc": doc, "request": response.json()["request"]}


@documents.step
async def save(enrich: dict[str, object]) -> str:
    return f"saved {enrich['doc']}"


class ParseError(ValueError):
    """A user's error type with a keyword-only attribute, like asyncflow's own."""

    def __init__(self, message: str, *, line: int) -> None:
        super().__init__(message)
        self.line = line


broken = Flow("broken")


@broken.step
async def parse(text: str) -> int:
    try:
        int(text)
    except ValueError as exc:
        raise ParseError(f"not a number: {text!r}", line=3) from exc
    raise StepError("unreachable", step="parse")


def make_store(spec: str) -> CheckpointStore:
    """The store ``spec`` names: ``"sqlite:PATH"`` (a SqliteStore) or ``"file:DIR"`` (a FileStore)."""
    kind, _, path = spec.partition(":")
    return SqliteStore(path) if kind == "sqlite" else FileStore(path)


def make_engine(spec: str) -> Engine:
    return Engine(store=make_store(spec))


def engine_factory(spec: str) -> functools.partial[Engine]:
    """What the worker plugin calls: an engine on the shared store ``spec`` names."""
    return functools.partial(make_engine, spec)


limited = Flow("limited")


@limited.step(concurrency=ENRICH_SLOTS)
async def call(doc: str, api: str, leases: int, ctx: Context) -> int:
    from asyncflow.executors.dask import cluster_semaphore

    async with cluster_semaphore("test-api", leases):
        response = await ctx.http.post(f"{api}/enrich/{doc}", json={"id": doc})
    response.raise_for_status()
    return response.status_code


slow = Flow("slow")


@slow.step
async def first(doc: str) -> str:
    return doc


@slow.step
async def second(first: str, api: str, ctx: Context) -> int:
    response = await ctx.http.post(f"{api}/enrich/{first}", json={"id": first})
    return response.status_code


two_hosts = Flow("two-hosts")


@two_hosts.step(retry=RETRY)
async def fetch(doc: str, api: str, ctx: Context) -> str:
    response = await ctx.http.post(f"{api}/enrich/{doc}", json={"id": doc})
    response.raise_for_status()
    return doc


@two_hosts.step(retry=RETRY)
async def publish(fetch: str, sink: str, ctx: Context) -> int:
    response = await ctx.http.post(f"{sink}/publish/{fetch}", json={"id": fetch})
    response.raise_for_status()
    return response.status_code


fatal = Flow("fatal")


@fatal.step
async def die(doc: str) -> str:
    """Kills the worker process it runs in: the scheduler sees the worker lost mid-task."""
    os.kill(os.getpid(), signal.SIGKILL)
    return doc
