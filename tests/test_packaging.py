"""What a user installs: the distribution's name, and its version written once."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import asyncflow

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

#: Imports asyncflow with the metadata of our distribution replaced by {answer}.
OTHER_METADATA = """
from importlib import metadata
real = metadata.version
def version(name):
    if name != {name!r}:
        return real(name)
    {answer}
metadata.version = version
import asyncflow
print(asyncflow.__version__)
"""


def test_version_is_the_installed_distributions() -> None:
    """asyncflow.__version__ is the installed metadata's, which is pyproject.toml's."""
    assert asyncflow.__version__ == metadata.version(PROJECT["name"])
    assert asyncflow.__version__ == PROJECT["version"]


@pytest.mark.parametrize(
    ("answer", "version"),
    [
        ("return '9.9.9'", "9.9.9"),
        ("raise metadata.PackageNotFoundError(name)", "0+unknown"),  # a never-installed tree
    ],
    ids=["other-version", "not-installed"],
)
def test_version_has_no_second_copy_in_the_source(answer: str, version: str) -> None:
    """The version is read from the distribution's metadata when asyncflow is imported."""
    script = OTHER_METADATA.format(name=PROJECT["name"], answer=answer)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == version


def test_the_distribution_is_not_named_like_an_unrelated_project() -> None:
    """`asyncflow` on the package index is another project; only the import name is ours."""
    assert PROJECT["name"] != "asyncflow"
    assert PROJECT["scripts"]["asyncflow"].startswith("asyncflow.")
