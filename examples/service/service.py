"""The document service: documents arrive by webhook, by file drop, and a report runs by cron.

    .venv/bin/asyncflow serve examples/service/service.py:make    # or: make serve-demo

- ``POST /documents`` with ``{"name": ..., "text": ...}``, signed with HMAC-SHA256 of the body
  (header ``X-Signature-256: sha256=<hex>``, secret ``$DEMO_SECRET``, ``demo-secret`` by
  default) and a ``webhook-id`` header: one run per delivery id;
- a ``*.txt`` file written into ``service-output/inbox/``: one run per file;
- every minute, a run that counts the documents summarized so far.

Runs and their checkpoints are kept in ``service-output/runs`` (``asyncflow runs --store
service-output/runs`` lists them); summaries are written to ``service-output/summaries/``.
SIGTERM or Ctrl-C stops intake and lets runs in flight finish (30 s), then exits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio

from asyncflow import Context, Engine, Flow, Service
from asyncflow.triggers import Cron, NewFiles, Webhook

OUT = Path("service-output")

documents = Flow("documents")


@documents.step
async def load(name: str, text: str = "", path: str = "") -> str:
    """The document's text: given inline (webhook) or read from its file (inbox)."""
    return text if not path else await anyio.Path(path).read_text(encoding="utf-8")


@documents.step
async def summarize(load: str, name: str, ctx: Context) -> dict[str, object]:
    """Word and line counts and the first words, written to summaries/<run id>.json."""
    words = load.split()
    summary = {"name": name, "words": len(words), "lines": load.count("\n") + 1, "start": words[:8]}
    target = anyio.Path(OUT / "summaries" / f"{ctx.run_id}.json")
    await target.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


report = Flow("report")


@report.step
async def count(tick: str) -> dict[str, object]:
    """How many summaries exist at this tick."""
    names = [p.name async for p in anyio.Path(OUT / "summaries").glob("*.json")]
    return {"tick": tick, "summaries": len(names)}


def make() -> Service:
    """The service, with its folders created (``asyncflow serve`` calls this)."""
    for folder in ("inbox", "summaries"):
        (OUT / folder).mkdir(parents=True, exist_ok=True)
    secret = os.environ.get("DEMO_SECRET", "demo-secret")
    return Service(
        Engine(store=OUT / "runs"),
        triggers=[
            Webhook("/documents", documents, secret=secret),
            NewFiles(
                OUT / "inbox",
                documents,
                pattern="*.txt",
                inputs=lambda path: {"name": path.name, "path": str(path)},
            ),
            Cron("* * * * *", report, tz="Europe/Paris", inputs=lambda t: {"tick": t.isoformat()}),
        ],
        host="127.0.0.1",
        port=int(os.environ.get("DEMO_PORT", "8080")),
    )
