"""The public surface: __all__ in step with the package, and the examples run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncflow

ROOT = Path(__file__).resolve().parent.parent


def test_all_lists_every_public_name() -> None:
    """__all__ names exactly the public attributes, sorted."""
    public = {
        name
        for name, value in vars(asyncflow).items()
        if not name.startswith("_") and not isinstance(value, type(asyncflow))
    } - {"annotations"}
    assert sorted(asyncflow.__all__) == asyncflow.__all__
    assert set(asyncflow.__all__) == public


def test_hello_example_runs(tmp_path: Path) -> None:
    """examples/hello.py runs to the end and prints its summary."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hello.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.stdout.strip() == "4 words: HELLO RELIABLE ASYNC WORLD"
