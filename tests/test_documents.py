"""The document pipeline exercise, end to end with real processes, on a small corpus.

The API fails some requests, rate-limits others, then goes down; its circuit opens; the
pipeline is killed with SIGKILL; a second run resumes from the checkpoints.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "documents" / "demo.py"


def test_demo_resumes_without_resending_checkpointed_documents(tmp_path: Path) -> None:
    """Run 2 restores what run 1 checkpointed, sends it no request, and finishes the rest."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--out", str(out), "--documents", "60"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert facts["documents"] == facts["done"] == facts["results"] == 60
    assert facts["failed"] == 0
    # Run 1 got partway before the outage; run 2 restored that part and ran only the rest.
    assert 0 < facts["restored"] < 60
    assert facts["ran"] == 60 - facts["restored"]
    assert len(facts["enrich_restored"]) >= facts["restored"]
    assert facts["restored_enrichments_resent"] == []
    # While the circuit was open, only trial requests reached the API (1 per reset timeout).
    assert facts["requests_while_open"] <= 4
    # Run 2 sent at most one request per document it ran, plus retries.
    assert facts["api_requests_run2"] <= facts["ran"] + facts["retries"] + 1
    summary = json.loads((out / "results" / "doc-0000.json").read_text(encoding="utf-8"))
    assert set(summary) == {"id", "headline", "words", "keywords", "summary"}
    assert "Report" in proc.stdout
