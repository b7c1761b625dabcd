"""The document pipeline: ingest, enrich against an external API, summarize.

- ``ingest`` reads a text file.
- ``enrich`` posts the document to the enrichment API through the engine's HTTP client
  (``ctx.http``): retried by its :class:`~asyncflow.Retry` policy, guarded by the API host's
  circuit breaker.
- ``summarize`` builds a deterministic summary from the text and the enrichment.

Every step's output is checkpointed, so running the same batch again restores what was done
and runs only the rest. Run it on its own::

    python examples/documents/pipeline.py --corpus DIR --api URL --out DIR

The demo (``make demo``, ``examples/documents/demo.py``) drives it against a flaky API.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx

from asyncflow import (
    CircuitStateChanged,
    Context,
    Engine,
    FileStore,
    Flow,
    HostPolicy,
    Retry,
    StepRestored,
    StepRetrying,
    StepStatus,
)

if TYPE_CHECKING:
    from asyncflow import Event


@dataclass(frozen=True, slots=True)
class Settings:
    """The knobs of the pipeline; the production values, scaled down by the demo."""

    attempts: int = 5
    wait_initial: float = 1.0
    wait_max: float = 60.0
    wait_jitter: float = 1.0
    retry_timeout: float = 300.0
    attempt_timeout: float = 10.0
    fail_max: int = 3
    reset_timeout: float = 60.0
    enrich_in_flight: int = 10
    documents_in_flight: int = 50


def build_flow(api_url: str, settings: Settings) -> Flow:
    """The three-stage flow, talking to the API at ``api_url``."""
    flow = Flow("documents")

    @flow.step
    async def ingest(path: str) -> dict[str, str]:
        text = await anyio.Path(path).read_text(encoding="utf-8")
        return {"id": Path(path).stem, "text": text}

    @flow.step(
        timeout=settings.attempt_timeout,
        concurrency=settings.enrich_in_flight,
        retry=Retry(
            attempts=settings.attempts,
            timeout=settings.retry_timeout,
            wait_initial=settings.wait_initial,
            wait_max=settings.wait_max,
            wait_jitter=settings.wait_jitter,
        ),
    )
    async def enrich(ingest: dict[str, str], ctx: Context) -> dict[str, object]:
        response = await ctx.http.post(f"{api_url}/enrich", json=ingest)
        response.raise_for_status()
        answer: dict[str, object] = response.json()
        return answer

    @flow.step
    async def summarize(ingest: dict[str, str], enrich: dict[str, object]) -> dict[str, object]:
        first = ingest["text"].split(".")[0].strip()
        keywords = [str(k) for k in enrich.get("keywords") or []]  # type: ignore[attr-defined]
        return {
            "id": ingest["id"],
            "headline": first[:80],
            "words": enrich.get("words"),
            "keywords": keywords,
            "summary": f"{first[:60]}... ({enrich.get('words')} words; about "
            f"{', '.join(map(str, keywords[:3]))})",
        }

    return flow


@dataclass
class Tally:
    """What one pipeline process saw, from the engine's events."""

    retries: int = 0
    circuit_opened: int = 0
    restored_steps: int = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepRetrying):
            self.retries += 1
        elif isinstance(event, StepRestored):
            self.restored_steps += 1
        elif isinstance(event, CircuitStateChanged) and event.new == "open":
            self.circuit_opened += 1


async def run(
    corpus: Path,
    api_url: str,
    out: Path,
    settings: Settings,
    *,
    progress: bool | None = None,
    events: Path | None = None,
) -> dict[str, object]:
    """Run the batch over every ``*.txt`` in ``corpus``; write results and a stats file."""
    paths = sorted([Path(p) async for p in anyio.Path(corpus).glob("*.txt")])
    results_dir = anyio.Path(out / "results")
    await results_dir.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    observers: list[object] = [tally]
    log = events.open("a", encoding="utf-8", buffering=1) if events else None

    def log_event(event: Event) -> None:
        # A line per circuit change and per retry, so a killed run's story survives it.
        if log is None:
            return
        if isinstance(event, CircuitStateChanged):
            log.write(json.dumps({"circuit": event.new, "host": event.host}) + "\n")
        elif isinstance(event, StepRetrying):
            log.write(json.dumps({"retry": event.step, "run": event.run_id}) + "\n")

    observers.append(log_event)
    host = httpx.URL(api_url).host
    started = anyio.current_time()
    async with Engine(
        store=FileStore(out / "checkpoints"),
        observers=observers,  # type: ignore[arg-type]
        hosts={
            host: HostPolicy(
                fail_max=settings.fail_max, reset_timeout=settings.reset_timeout, on_open="wait"
            )
        },
    ) as engine:
        flow = build_flow(api_url, settings)
        batch = engine.map(
            flow,
            [(p.stem, {"path": str(p)}) for p in paths],  # a list, so the bar knows the total
            concurrency=settings.documents_in_flight,
            progress=progress,
            name="documents",
        )
        done = restored = failed = 0
        enrich_restored: list[str] = []
        async for result in batch:
            if result.steps["enrich"].status is StepStatus.RESTORED:
                enrich_restored.append(result.run_id)
            if result.ok:
                done += 1
                restored += result.restored
                target = results_dir / f"{result.run_id}.json"
                await anyio.Path(target).write_text(
                    json.dumps(result.outputs["summarize"], indent=2) + "\n"
                )
            else:
                failed += 1
    if log is not None:
        log.close()
    stats = {
        "documents": len(paths),
        "done": done,
        "restored": restored,
        "ran": done - restored,
        "failed": failed,
        "retries": tally.retries,
        "circuit_opened": tally.circuit_opened,
        "seconds": round(anyio.current_time() - started, 2),
        "pid": os.getpid(),
        "enrich_restored": sorted(enrich_restored),
    }
    (out / "last-run.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv: list[str]) -> None:
    # asyncflow reports every retry as a StepRetrying event (tallied above). stamina also logs
    # each one (a redacted "stamina.retry_scheduled" warning, since asyncflow hides the error and
    # the step's arguments from it); this application does not want those lines on its terminal.
    logging.getLogger("stamina").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--api", required=True, help="the enrichment API's base URL")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--events", type=Path, help="append circuit changes and retries here (JSON lines)"
    )
    parser.add_argument("--demo-scale", action="store_true", help="seconds instead of minutes")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.demo_scale:
        settings = Settings(
            wait_initial=0.05,
            wait_max=0.5,
            wait_jitter=0.05,
            retry_timeout=60.0,
            attempt_timeout=5.0,
            reset_timeout=1.0,
            enrich_in_flight=8,
            documents_in_flight=24,
        )
    stats = anyio.run(partial(run, args.corpus, args.api, args.out, settings, events=args.events))
    print(json.dumps(stats))


if __name__ == "__main__":
    main(sys.argv[1:])
