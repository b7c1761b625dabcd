"""Every code block of README.md works: Python runs, shell commands run as shown, JSON parses."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = BLOCK.findall(README)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
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


def _checkout_like(tmp_path: Path) -> Path:
    """A directory where the README's relative paths resolve: the examples and the venv."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the environment under test (make's .venv)
    return tmp_path


def _check_pip_install(words: list[str]) -> None:
    """`pip install .` or `.[extra]`: this checkout, with extras that pyproject.toml defines."""
    assert words[:2] == ["pip", "install"]
    assert len(words) == 3, words
    target = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", words[2])
    assert target, f"the README installs {words[2]!r}, not this checkout"
    extras = set(target[1].split(",")) if target[1] else set()
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


@pytest.mark.parametrize("code", SHELL, ids=[f"shell-{n}" for n in range(len(SHELL))])
def test_shell_block_works(code: str, tmp_path: Path) -> None:
    """Each command runs as shown, from a directory laid out like the checkout, and succeeds.

    Two kinds are checked without running them: `make X` must be a Makefile target (`make -n`:
    `make test` would run this suite again), and `pip install .` must name this checkout and
    its extras (it would reinstall the environment under test).
    """
    commands = [line for line in code.splitlines() if line.strip()]
    assert commands
    cwd = _checkout_like(tmp_path)
    for command in commands:
        words = shlex.split(command, comments=True)
        if words[0] == "pip":
            _check_pip_install(words)
            continue
        if words[0] == "make":
            shown = ["make", "-n", *words[1:]]
            out = subprocess.run(shown, cwd=ROOT, capture_output=True, text=True, check=False)
        else:
            out = subprocess.run(
                command,
                shell=True,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert out.returncode == 0, f"{command}: {out.stdout}{out.stderr}"


def test_readme_installs_the_distribution_pyproject_names() -> None:
    """Every `pip install NAME` the README mentions names this project's distribution."""
    named = re.findall(r"pip install \"?([A-Za-z][\w.-]*)", README)
    assert named
    for name in named:
        assert name == PYPROJECT["project"]["name"], name


def _runs_at_import(source: str) -> list[int]:
    """Lines where a module calls anyio.run at its top level, outside `if __name__ == ...`."""
    calls = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr | ast.Assign) and isinstance(node.value, ast.Call):
            if ast.unparse(node.value.func) == "anyio.run":
                calls.append(node.lineno)
    return calls


EXAMPLES = sorted((ROOT / "examples").rglob("*.py"))


@pytest.mark.parametrize(
    "source",
    PYTHON + [path.read_text(encoding="utf-8") for path in EXAMPLES],
    ids=[f"python-{n}" for n in range(len(PYTHON))] + [str(p.relative_to(ROOT)) for p in EXAMPLES],
)
def test_example_runs_only_as_a_script(source: str) -> None:
    """`anyio.run(main)` is guarded by `if __name__ == "__main__":`, so the CLI can import it."""
    assert _runs_at_import(source) == []


@pytest.mark.parametrize("code", JSON, ids=[f"json-{n}" for n in range(len(JSON))])
def test_json_block_parses(code: str) -> None:
    """A JSON sample (a checkpoint file) is valid JSON in the format it names."""
    sample = json.loads(code)
    assert sample["format"] == "asyncflow.run"
