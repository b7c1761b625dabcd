"""The public surface: each public module's __all__ honest, names printed as public, examples run."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
import textwrap
import types
from enum import StrEnum
from pathlib import Path

import pytest

import asyncflow

ROOT = Path(__file__).resolve().parent.parent


#: Every public module; everything else in the package is private (its name starts with _).
PUBLIC_MODULES = (
    "asyncflow",
    "asyncflow.events",
    "asyncflow.observe",
    "asyncflow.observe.prometheus",
    "asyncflow.stores",
    "asyncflow.stores.postgres",
    "asyncflow.testing",
    "asyncflow.triggers",
)


def _public_attributes(module: types.ModuleType) -> set[str]:
    """Names a user of ``module`` could take for its API: defined there or re-exported."""
    if module.__name__ == "asyncflow.stores":
        module.MemoryStore  # noqa: B018  # loaded on first use: load it, so that vars() has it
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or name in {"annotations", "TYPE_CHECKING"}:
            continue
        if isinstance(value, types.ModuleType):
            continue  # a submodule or an import (import json), not a re-export
        home = getattr(value, "__module__", None)
        if isinstance(value, (type, types.FunctionType)) or callable(value):
            if home is None or not home.startswith("asyncflow"):
                continue  # imported from the standard library or a dependency
        names.add(name)
    return names


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    """__all__ is sorted, names only what exists, and leaves out no public name."""
    module = importlib.import_module(name)
    # isort's order, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert module.__all__ == sorted(
        module.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n)
    )
    assert [n for n in module.__all__ if not hasattr(module, n)] == []
    assert set(module.__all__) == _public_attributes(module)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_names_print_with_a_public_module(name: str) -> None:
    """Each public class and function says it comes from a public module, never a private one."""
    module = importlib.import_module(name)
    homes = {
        n: value.__module__
        for n in module.__all__
        if isinstance(value := getattr(module, n), type) or inspect.isfunction(value)
    }
    assert {n: home for n, home in homes.items() if home not in PUBLIC_MODULES} == {}


def test_errors_print_as_asyncflow_errors_in_a_traceback() -> None:
    """An uncaught RunFailedError's traceback line reads asyncflow.RunFailedError."""
    script = textwrap.dedent(
        """
        import anyio
        from asyncflow import Engine, Flow

        flow = Flow("fails")

        @flow.step
        async def boom() -> None:
            raise ValueError("no")

        async def main() -> None:
            async with Engine(store=None) as engine:
                (await engine.run(flow, run_id="r")).raise_for_status()

        anyio.run(main)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1].startswith("asyncflow.RunFailedError: Run 'r' of flow")
    assert "asyncflow._" not in out.stderr.replace(str(ROOT), "")


#: The vocabulary at the bottom of the package, and the leaves each may import.
LEAVES = {
    "_errors.py": set(),
    "_status.py": set(),
    "events.py": {"_errors", "_status"},
}


@pytest.mark.parametrize("module", sorted(LEAVES))
def test_vocabulary_modules_import_only_leaves(module: str) -> None:
    """Errors, statuses and events import nothing from the package but these leaves."""
    tree = ast.parse((ROOT / "asyncflow" / module).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            imported.add(node.module or "")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asyncflow"):
            imported.add(node.module or "")
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names if a.name.startswith("asyncflow")}
    assert imported <= LEAVES[module]


@pytest.mark.parametrize(
    "enum", [asyncflow.StepStatus, asyncflow.RunStatus, asyncflow.CircuitState, asyncflow.OnOpen]
)
def test_every_status_enum_is_one_kind(enum: type[StrEnum]) -> None:
    """Each state and mode is a StrEnum: its members equal, print and serialise as their text."""
    assert issubclass(enum, StrEnum)
    for member in enum:
        assert member == member.value
        assert f"{member}" == member.value
        assert json.dumps(member) == json.dumps(member.value)


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
