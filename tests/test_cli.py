"""The command line: run, resume and graph, with clear errors and exit statuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# The command line's entry point has no public Python name (it is the asyncflow script and
# python -m asyncflow, tested in subprocesses below); calling it in-process keeps these fast.
from asyncflow._cli import main

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
        (["run", "{target}x"], "has no attribute 'flowx'. Flows in it: flow."),
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


#: Files beside the target for the misuse cases: broken in each way a user's module can be.
BROKEN = {
    "syntax.py": "from asyncflow import Flow\n\nflow = Flow('x'\n",
    "raises.py": "raise RuntimeError('no API key at import')\n",
    "needs.py": "import nosuch_dependency_xyz\n",
    "needsmod.py": "import nosuch_dependency_xyz\n",
}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch_module_xyz:flow"], "no module named 'nosuch_module_xyz'"),
        (["graph", "nosuch_pkg_xyz.flows:flow"], "no module named 'nosuch_pkg_xyz'"),
        (["graph", ".:flow"], "'.' is not a module name"),
        (
            ["graph", "syntax.py:flow"],
            "Cannot import 'syntax.py': SyntaxError in {dir}/syntax.py, line 3:",
        ),
        (["graph", "raises.py:flow"], "raised RuntimeError: no API key at import"),
        (
            ["graph", "needs.py:flow"],
            "Importing 'needs.py' raised ModuleNotFoundError: "
            "No module named 'nosuch_dependency_xyz' ({dir}/needs.py, line 1).",
        ),
        (
            ["graph", "needsmod:flow"],
            "Importing 'needsmod' raised ModuleNotFoundError: "
            "No module named 'nosuch_dependency_xyz'",
        ),
        (["run", "cliflow.py:flow", "n=" + "[" * 5000], "nested more than 100 levels"),
        (["run", "cliflow.py:flow", "n=" + "[" * 500 + "]" * 500], "nested more than 100"),
        (["run", "cliflow.py:flow", "n=1", "run_id=r"], "run_id is not a run input; use --run-id"),
        (["run", "cliflow.py:flow", "n=1", "fail_fast=true"], "use --fail-fast"),
        (["run", "cliflow.py:flow", "n=1", "n=2"], "Input 'n' is given twice"),
        (["run"], "the following arguments are required: target"),
    ],
    ids=[
        "missing-module",
        "missing-package",
        "not-a-module-name",
        "syntax-error",
        "raises-at-import",
        "file-imports-missing-module",
        "module-imports-missing-module",
        "json-past-its-recursion-limit",
        "json-too-deep",
        "run-id-as-input",
        "fail-fast-as-input",
        "input-twice",
        "argparse",
    ],
)
def test_misuse_is_one_line_and_exit_2(
    target: str, tmp_path: Path, args: list[str], message: str
) -> None:
    """The real command, misused, prints one line naming the problem and exits 2: no traceback."""
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    script = Path(sys.executable).with_name("asyncflow")
    out = subprocess.run(
        [str(script), *args, "--no-store"] if args[0] == "run" else [str(script), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (out.returncode, out.stdout) == (2, "")
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("asyncflow: error: ")
    assert message.format(dir=tmp_path) in out.stderr


def test_python_dash_m_misuse(tmp_path: Path) -> None:
    """Python -m asyncflow reports an import failure in the same one line and exit status."""
    (tmp_path / "raises.py").write_text(BROKEN["raises.py"], encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "asyncflow", "run", "raises:flow", "--no-store"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"asyncflow: error: Importing 'raises' raised RuntimeError: no API key at import "
        f"({tmp_path}/raises.py, line 1)."
    ]


def test_fail_fast_option(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--fail-fast is the run option that fail_fast=... as an input used to reach by accident."""
    assert main(["run", target, "n=500", "--no-store", "--fail-fast"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["steps"]["check"]["status"] == "failed"
