"""Every code block of README.md works: Python runs, make targets exist, JSON parses."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
BLOCKS = BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang in {"sh", "bash", "shell"}]
JSON = [code for lang, code in BLOCKS if lang == "json"]


def test_readme_has_blocks() -> None:
    """The README shows code (the parametrized tests below are not vacuous)."""
    assert len(PYTHON) >= 3
    assert SHELL


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{n}" for n in range(len(PYTHON))])
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    """The block runs as a script; each `print(...)  # text` line prints that text."""
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for expected in re.findall(r"^\s*print\(.*\)\s+#\s*(.+)$", code, re.M):
        assert expected.strip() in out.stdout


@pytest.mark.parametrize("code", SHELL, ids=[f"shell-{n}" for n in range(len(SHELL))])
def test_shell_block_works(code: str, tmp_path: Path) -> None:
    """Each `make X` is a Makefile target; each `asyncflow ...` command runs and succeeds."""
    commands = [line.split("#")[0].strip() for line in code.splitlines() if line.strip()]
    assert commands
    run_id = ""
    for command in commands:
        words = shlex.split(command)
        if words[0] == "make":
            out = subprocess.run(
                ["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, check=False
            )
        else:
            assert words[0] == "asyncflow", f"unexpected command in README: {command}"
            args = [
                str(ROOT / w) if w.startswith("examples/") else run_id if w == "RUN_ID" else w
                for w in words[1:]
            ]
            out = subprocess.run(
                [sys.executable, "-m", "asyncflow", *args],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if words[1] == "run":
                run_id = json.loads(out.stdout)["run_id"]
        assert out.returncode == 0, f"{command}: {out.stderr}"


@pytest.mark.parametrize("code", JSON, ids=[f"json-{n}" for n in range(len(JSON))])
def test_json_block_parses(code: str) -> None:
    """A JSON sample (a checkpoint file) is valid JSON in the format it names."""
    sample = json.loads(code)
    assert sample["format"] == "asyncflow.run"
