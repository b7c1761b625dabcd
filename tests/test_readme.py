"""Every code block of README.md works: Python blocks run, shell blocks name real make targets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
BLOCKS = BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang in {"sh", "bash", "shell"}]


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
def test_shell_block_names_make_targets(code: str) -> None:
    """Each `make X` in a shell block is a target of the Makefile."""
    targets = re.findall(r"^make (\w+)", code, re.M)
    assert targets
    for target in targets:
        out = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, out.stderr
