"""The classic exercise, end to end: a flaky API, a circuit that opens, a kill, a resume.

1. Writes a seeded corpus of a few hundred documents.
2. Starts the enrichment API (``api.py``) in its own process: some errors, some 429s, added
   latency, and an outage that strikes at a fixed request count.
3. Runs the pipeline (``pipeline.py``) in a child process with a live progress bar. When the
   outage strikes, the API host's circuit opens and the batch stops hammering it: only one
   trial request per reset timeout gets through.
4. Kills the pipeline the hard way (SIGKILL) while it waits for the API.
5. Ends the outage and runs the pipeline again: finished documents are restored from their
   checkpoints, without a request; only the rest run.
6. Prints a report and leaves everything in ``demo-output/``.

Run: ``make demo`` (or ``python examples/documents/demo.py [--out DIR] [--documents N]``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import write_corpus  # noqa: E402  (a sibling script, not a package)

DEMO_API_ARGS = [
    "--error-rate",
    "0.06",
    "--rate-limited",
    "0.03",
    "--retry-after",
    "0.2",
    "--latency",
    "0.08",
    "--outage-for",
    "600",
]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def start_api(outage_after: int, seed: int) -> tuple[subprocess.Popen[str], str]:
    api = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "api.py"),
            "--seed",
            str(seed),
            "--outage-after",
            str(outage_after),
            *DEMO_API_ARGS,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert api.stdout is not None
    url = api.stdout.readline().strip()
    if not url.startswith("http://"):
        api.kill()
        raise RuntimeError(f"the enrichment API did not start (it printed {url!r})")
    return api, url


def pipeline_cmd(corpus: Path, url: str, out: Path, events: Path) -> list[str]:
    return [
        sys.executable,
        str(HERE / "pipeline.py"),
        "--demo-scale",
        "--corpus",
        str(corpus),
        "--api",
        url,
        "--out",
        str(out),
        "--events",
        str(events),
    ]


def wait_for_line(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(encoding="utf-8"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    t0 = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    corpus = out / "corpus"
    write_corpus(corpus, args.documents, seed=args.seed)
    say(f"Wrote {args.documents} documents to {corpus}")

    outage_after = max(10, int(args.documents * 0.45))
    api, url = start_api(outage_after, args.seed)
    client = httpx.Client(base_url=url, timeout=10)
    try:
        say(
            f"Enrichment API at {url}: 6% errors, 3% 429s, 80 ms latency; "
            f"it goes down at its {outage_after}th enrich request"
        )

        say("Run 1: ingest -> enrich -> summarize, checkpointing every step")
        events1 = out / "events-run1.jsonl"
        run1 = subprocess.Popen(pipeline_cmd(corpus, url, out, events1))
        opened = wait_for_line(events1, '"open"', run1, timeout=90)
        if not opened:
            run1.kill()
            raise RuntimeError("run 1 ended before the API's circuit opened; see its output")
        at_open = client.get("/_stats").json()["requests"]
        time.sleep(3.0)
        after_wait = client.get("/_stats").json()["requests"]
        say(
            f"The API is down and its circuit is open: in 3 s the API got only "
            f"{after_wait - at_open} request(s), the circuit's trial calls"
        )
        run1.send_signal(signal.SIGKILL)
        run1.wait()
        say(f"Killed run 1 with SIGKILL (pid {run1.pid}) while it waited for the API")

        stats_before = client.get("/_stats").json()
        client.post("/_control", json={"outage": False, "outage_after": None})
        say("The API is back. Run 2: the same command, resuming from the checkpoints")
        events2 = out / "events-run2.jsonl"
        run2 = subprocess.run(
            pipeline_cmd(corpus, url, out, events2), stdout=subprocess.PIPE, text=True, check=True
        )
        stats = json.loads(run2.stdout.strip().splitlines()[-1])
        stats_after = client.get("/_stats").json()
    finally:
        client.close()
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(timeout=5)
        except subprocess.TimeoutExpired:
            api.kill()

    before, after = stats_before["per_doc"], stats_after["per_doc"]
    # A document whose enrichment was checkpointed in run 1 must get no request in run 2.
    resent = sorted(d for d in stats["enrich_restored"] if after.get(d, 0) != before.get(d, 0))
    results = len(list((out / "results").glob("*.json")))
    story1 = events1.read_text(encoding="utf-8")
    opened_run1 = story1.count('"circuit": "open"')
    retries_run1 = story1.count('"retry": ')
    report = [
        "Report",
        f"  documents             {stats['documents']}",
        f"  done                  {stats['done']} (restored from checkpoints in run 2: "
        f"{stats['restored']}; run in run 2: {stats['ran']})",
        f"  failed                {stats['failed']}",
        f"  enrichments restored  {len(stats['enrich_restored'])}, and requests sent for them "
        f"in run 2: {len(resent)}",
        f"  API requests          {stats_after['requests']} in all: "
        f"{stats_before['requests']} in run 1, "
        f"{stats_after['requests'] - stats_before['requests']} in run 2",
        f"  retries               run 1: {retries_run1}, run 2: {stats['retries']}",
        f"  circuit opened        run 1: {opened_run1} time(s) (each failed trial call reopens "
        f"it), run 2: {stats['circuit_opened']}",
        f"  time taken            {time.monotonic() - t0:.1f} s",
        f"  results               {out / 'results'} ({results} files)",
        f"  checkpoints           {out / 'checkpoints'}",
    ]
    if resent:
        report.append(f"  !! restored documents sent again: {resent}")
    text = "\n".join(report)
    (out / "report.txt").write_text(text + "\n", encoding="utf-8")
    facts = {
        **stats,
        "api_requests_run1": stats_before["requests"],
        "api_requests_run2": stats_after["requests"] - stats_before["requests"],
        "requests_at_open": at_open,
        "requests_while_open": after_wait - at_open,
        "restored_enrichments_resent": resent,
        "results": results,
        "retries_run1": retries_run1,
        "circuit_opened_run1": opened_run1,
    }
    (out / "report.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    print("\n" + text, flush=True)
    return 0 if stats["failed"] == 0 and results == args.documents else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
