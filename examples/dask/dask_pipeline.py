"""The document pipeline as Dask workers import it: the flow is bound at module level.

``ingest`` reads a text file, ``enrich`` posts it to the enrichment API (at most 8 calls at once
per worker engine, transient faults retried), ``summarize`` combines both with the worker's pid,
so the run shows where each document ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from asyncflow import Context, Flow, Retry

flow = Flow("dask-documents")


@flow.step
async def ingest(path: str) -> dict[str, str]:
    text = await anyio.Path(path).read_text(encoding="utf-8")
    return {"id": Path(path).stem, "text": text}


@flow.step(concurrency=8, retry=Retry(attempts=5, wait_initial=0.05, wait_max=0.5))
async def enrich(ingest: dict[str, str], api: str, ctx: Context) -> dict[str, object]:
    response = await ctx.http.post(f"{api}/enrich", json=ingest)
    response.raise_for_status()
    answer: dict[str, object] = response.json()
    return answer


@flow.step
async def summarize(ingest: dict[str, str], enrich: dict[str, object]) -> dict[str, object]:
    return {"id": ingest["id"], "words": enrich["words"], "worker": os.getpid()}
