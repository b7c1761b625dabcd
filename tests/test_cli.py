"""The command line: run, resume and graph, with clear errors and exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from asyncflow._cli import main

if TYPE_CHECKING:
    from pathlib import Path

FLOW = """
from asyncflow import Flow

flow = Flow("cli")


@flow.step
async def load(n: int, label: str = "x") -> int:
    return n * 2


@flow.step(timeout=5.0)
async def check(load: int) -> int:
    if load > 100:
        raise ValueError("too big")
    return load + 1


@flow.step(after=[check])
async def notify() -> None: ...
"""


@pytest.fixture
def target(tmp_path: Path) -> str:
    path = tmp_path / "cliflow.py"
    path.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    return f"{path}:flow"


def test_graph_formats(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Graph draws the steps in order as text, mermaid (dashed for after=) and dot."""
    assert main(["graph", target]) == 0
    text = capsys.readouterr().out
    assert text.splitlines() == [
        "flow 'cli': 3 steps",
        "  load(n, label)",
        "  check(load)  [timeout=5.0]",
        "  notify() after check",
    ]
    assert main(["graph", target, "--format", "mermaid"]) == 0
    mermaid = capsys.readouterr().out
    assert "load --> check" in mermaid
    assert "check -.-> notify" in mermaid
    assert main(["graph", target, "--format", "dot"]) == 0
    assert '"check" -> "notify" [style=dashed];' in capsys.readouterr().out


def test_run_then_resume(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Run prints a JSON report; resume takes the inputs from the manifest and restores."""
    assert main(["run", target, "n=4", "--run-id", "r1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "succeeded"
    assert first["steps"]["check"] == {"status": "succeeded", "attempts": 1}
    assert main(["resume", target, "r1"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {s["status"] for s in again["steps"].values()} == {"restored"}


def test_failed_run_exits_1(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A failed run reports the error and exits 1."""
    assert main(["run", target, "n=500", "--no-store"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["steps"]["check"]["status"] == "failed"
    assert "too big" in report["steps"]["check"]["error"]
    assert report["steps"]["notify"]["status"] == "skipped"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{target}", "m=1"], "missing 'n'"),
        (["run", "{target}", "n"], "give inputs as name=value"),
        (["run", "nosuchfile.py:flow"], "is not a file"),
        (["run", "{target}x"], "is NoneType, not a Flow"),
        (["graph", "no-colon"], "module:attribute"),
        (["resume", "{target}", "never-ran"], "There is no run 'never-ran'"),
        (["run", "{target}", "n=1", "--run-id", "../escape"], "run id"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(
    target: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Bad input says what is wrong on stderr and exits 2."""
    assert main([a.format(target=target) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_python_dash_m(target: str) -> None:
    """Python -m asyncflow is the same command."""
    out = subprocess.run(
        [sys.executable, "-m", "asyncflow", "graph", target],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.startswith("flow 'cli': 3 steps")
