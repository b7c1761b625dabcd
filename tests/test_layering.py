"""Layering: each module imports alone, the definition layer never pulls in the runtime.

Each module is imported in a fresh interpreter with the ``asyncflow`` package stubbed out, so
``asyncflow/__init__.py`` (which imports everything) cannot load a module's dependencies for
it: what ends up in ``sys.modules`` is what the module itself needs, and a module that only
imports in a certain order (an import cycle) fails here. Modules written against the public
API alone (``from asyncflow import ...``: the store contract's checks, ``MemoryStore``) are
imported through the real package instead.
"""

from __future__ import annotations

import ast
import functools
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import asyncflow

PACKAGE = Path(asyncflow.__file__).parent
MODULES = sorted(
    m.name.removeprefix("asyncflow.")
    for m in pkgutil.walk_packages([str(PACKAGE)], prefix="asyncflow.")
    if m.name.rsplit(".", 1)[-1] != "__main__"
)
#: Vocabulary: they import nothing from the package, so every exporter and store can.
LEAVES = {"_errors", "_status", "_events", "events"} & set(MODULES)
#: The definition layer: a Flow, its plan, its pictures and its Context.
DEFINITION = {"_flow", "_plan", "_draw", "_context"} | LEAVES
#: What runs flows; the definition layer must load none of it.
RUNTIME = {
    "_attempt",
    "_batch",
    "_checkpointing",
    "_cli",
    "_engine",
    "_http",
    "_progress",
    "_retry",
    "_scheduler",
    "stores",
    "testing",
}

_ALONE = """
import importlib, importlib.util, json, sys, types
if sys.argv[2] == "stub":
    spec = importlib.util.find_spec("asyncflow")
    package = types.ModuleType("asyncflow")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["asyncflow"] = package
importlib.import_module("asyncflow." + sys.argv[1])
print(json.dumps(sorted(m.removeprefix("asyncflow.") for m in sys.modules
                        if m.startswith("asyncflow."))))
"""


def _import_alone(module: str) -> set[str]:
    """The asyncflow modules loaded by importing ``module`` first, in a fresh interpreter."""
    # Through the real package when the module, or one it loads, imports public names.
    stub = "asyncflow" not in _reachable("asyncflow." + module)
    done = subprocess.run(
        [sys.executable, "-c", _ALONE, module, "stub" if stub else "package"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout)
    return set(loaded)


def test_the_layers_are_named_after_modules_that_exist() -> None:
    """The layer lists name real modules, so a rename cannot quietly empty a check."""
    top = {m.split(".", 1)[0] for m in MODULES}
    assert DEFINITION - LEAVES <= top
    assert RUNTIME <= top
    assert {"_errors", "_status"} <= LEAVES


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports_alone(module: str) -> None:
    """Any module can be the first one imported: no import cycle decides the order."""
    assert module in _import_alone(module)


@pytest.mark.parametrize("module", sorted(DEFINITION))
def test_the_definition_layer_never_loads_the_runtime(module: str) -> None:
    """Flow, plan, drawing, Context and the vocabulary load no engine, scheduler, HTTP or store."""
    loaded = {m.split(".", 1)[0] for m in _import_alone(module)}
    assert loaded & RUNTIME == set()


@pytest.mark.parametrize("module", sorted(DEFINITION))
def test_the_definition_layer_imports_no_runtime_even_when_called(module: str) -> None:
    """No import inside a function of the definition layer reaches the runtime either."""
    imported = {
        m.removeprefix("asyncflow.").split(".", 1)[0]
        for m in _runtime_imports(module, anywhere=True)
    }
    assert imported & RUNTIME == set()


@pytest.mark.parametrize("module", sorted(LEAVES))
def test_the_vocabulary_imports_nothing_from_the_package(module: str) -> None:
    """Errors, statuses and events are leaves: importing one loads no other asyncflow module."""
    assert _import_alone(module) == {module}


def _source(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in {
        "TYPE_CHECKING",
        "typing.TYPE_CHECKING",
    }


def _runtime_imports(module: str, *, anywhere: bool = False) -> set[str]:
    """The asyncflow modules ``module`` imports when it is loaded (not for type checking only).

    With ``anywhere``, also the imports inside functions, which run when they are called.
    """
    path = _source(module)
    tree = ast.parse(path.read_text())
    package = ["asyncflow", *filter(None, module.split("."))]
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    nodes: list[ast.AST] = list(tree.body)
    while nodes:
        node = nodes.pop()
        if anywhere and not _is_type_checking(node):
            nodes.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            found.update(n for n in [target, *names] if n.split(".")[0] == "asyncflow")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "asyncflow")
    return found


@functools.cache
def _import_graph() -> dict[str, frozenset[str]]:
    """For each asyncflow module (and the package itself), the asyncflow modules it imports."""
    graph = {"asyncflow." + m: _runtime_imports(m) for m in MODULES}
    graph["asyncflow"] = _runtime_imports("")
    # A name imported from a package may be one of its modules or a name in its __init__.
    return {m: frozenset(t for t in deps if t in graph and t != m) for m, deps in graph.items()}


def _reachable(module: str) -> set[str]:
    graph = _import_graph()
    seen: set[str] = set()
    # Importing asyncflow.a.b runs asyncflow.a's __init__ first: its imports count too.
    parts = module.split(".")
    stack = [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
    while stack:
        for t in graph[stack.pop()]:
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return seen


def test_no_import_cycle_remains() -> None:
    """The graph of module-level imports between asyncflow modules has no cycle."""
    graph = _import_graph()
    assert graph["asyncflow"], "the package's own imports were not read"
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = [*path[path.index(t) :], t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
