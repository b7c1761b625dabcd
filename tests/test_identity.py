"""Run identity: derived run ids and code fingerprints are the same in every process.

Derived run ids follow the store's codec; a step whose code has no stable fingerprint is refused
clearly.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from asyncflow import Engine, Flow, FlowDefinitionError, StepStatus
from asyncflow.stores import MemoryStore

CHILD = Path(__file__).with_name("fingerprint_child.py")


def child(seed: int, *args: str) -> dict[str, str]:
    """Run the child under PYTHONHASHSEED=seed and return the JSON it prints."""
    out = subprocess.run(
        [sys.executable, str(CHILD), *args],
        env={**os.environ, "PYTHONHASHSEED": str(seed)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, str] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("step", ["scored", "tagged", "flow"])
def test_fingerprint_is_the_same_under_another_hash_seed(step: str) -> None:
    """A partial step, a step without source and the flow keep their fingerprint across processes.

    ``scored`` is a functools.partial binding sets of text; ``tagged`` is compiled from a string
    and holds a set literal; ``flow`` is the flow's fingerprint, built from both.
    """
    assert child(1, "fingerprints")[step] == child(2, "fingerprints")[step]


def test_resume_in_another_process_restores_every_step(tmp_path: Path) -> None:
    """A run's partial and source-less steps are restored, not re-run, by a later process."""
    store = str(tmp_path / "store")
    assert child(1, "run", store) == {"scored": "succeeded", "tagged": "succeeded"}
    assert child(2, "resume", store) == {"scored": "restored", "tagged": "restored"}


async def weigh(word: str, weights: dict[str, float], stop: frozenset[str]) -> float:
    return 0.0 if word in stop else weights.get(word, 1.0)


class Mode(enum.Enum):
    FAST = "fast"


@dataclass(frozen=True)
class Limits:
    low: float
    tags: frozenset[str]


def fingerprint(fn: Any) -> str:
    flow = Flow("f")
    flow.step(name="s")(fn)
    return flow.steps["s"].code_fingerprint


def test_partial_fingerprint_follows_the_function_and_its_bound_values() -> None:
    """Equal bound values give equal fingerprints; another value or function gives another."""
    weights = {"a": 1.0, "b": 2.5}
    same = fingerprint(functools.partial(weigh, weights=weights, stop=frozenset({"x", "y"})))
    again = fingerprint(functools.partial(weigh, stop=frozenset({"y", "x"}), weights=dict(weights)))
    other = fingerprint(functools.partial(weigh, weights={"a": 1.0}, stop=frozenset({"x", "y"})))
    assert same == again
    assert other != same
    assert fingerprint(weigh) not in {same, other}


@pytest.mark.parametrize(
    "value",
    [
        (1, 2.5, -0.0, float("nan"), 1j, None, True, b"x", "text", ...),
        [{"k": {1, 2}}, frozenset({"a"})],
        Mode.FAST,
        Limits(0.5, frozenset({"a", "b"})),
        Path("a/b"),
        len,
        weigh,
        Mode,
    ],
    ids=["scalars", "containers", "enum", "dataclass", "repr", "builtin", "function", "class"],
)
def test_stable_bound_values_are_accepted(value: object) -> None:
    """Values with a stable form are accepted as bound arguments of a partial step."""

    async def step(value: object) -> object:
        return value

    assert fingerprint(functools.partial(step, value))


class Client:
    """An object with the default repr, which shows its address."""


@pytest.mark.parametrize(
    "value", [Client(), [Client()]], ids=["default-repr", "nested-default-repr"]
)
def test_partial_bound_to_an_object_with_an_address_is_refused(value: object) -> None:
    """A bound value whose repr shows an address is refused at definition, saying what to do."""

    async def fetch(client: object) -> None: ...

    flow = Flow("f")
    with pytest.raises(FlowDefinitionError, match=r"Step 'fetch' cannot be fingerprinted") as info:
        flow.step(name="fetch")(functools.partial(fetch, value))
    assert "memory address" in str(info.value)
    assert "__repr__" in str(info.value)
    assert info.value.step == "fetch"


def test_a_bound_value_that_contains_itself_is_refused() -> None:
    """A list containing itself is refused rather than recursing without end."""
    loop: list[object] = []
    loop.append(loop)

    async def step(value: object) -> None: ...

    with pytest.raises(FlowDefinitionError, match="contains itself"):
        fingerprint(functools.partial(step, loop))


def generated(source: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<generated>", "exec"), namespace)
    return namespace["step"]


def test_code_without_source_is_fingerprinted_by_its_code() -> None:
    """Compiled-from-a-string steps: equal code, equal fingerprint; another constant, another."""
    text = "async def step(word):\n    return word in {{'a', 'b', {extra!r}}} and {n}\n"
    one = fingerprint(generated(text.format(extra="c", n=1.5)))
    assert fingerprint(generated(text.format(extra="c", n=1.5))) == one
    assert fingerprint(generated(text.format(extra="d", n=1.5))) != one
    assert fingerprint(generated(text.format(extra="c", n=2.5))) != one
    default = "async def step(word={d!r}):\n    return word\n"
    assert fingerprint(generated(default.format(d="x"))) != fingerprint(
        generated(default.format(d="y"))
    )


class Scorer:
    """Steps as methods: bound, class and static."""

    async def bound(self, word: str) -> int:
        return len(word)

    @classmethod
    async def of_class(cls, word: str) -> int:
        return len(word)

    @staticmethod
    async def static(word: str) -> int:
        return len(word)


def wrapped(fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize(
    "fn",
    [
        Scorer().bound,
        Scorer.of_class,
        Scorer.static,
        functools.partial(Scorer().bound),
        wrapped(weigh),
        generated("async def step(self, w):\n    return w\n").__get__(Scorer()),
    ],
    ids=["bound", "classmethod", "staticmethod", "partial-of-method", "wrapped", "no-source"],
)
def test_methods_and_wrapped_functions_are_fingerprinted(fn: Any) -> None:
    """Methods and decorated functions are steps, with a fingerprint of their code."""
    assert len(fingerprint(fn)) == 24


def test_a_bound_method_is_fingerprinted_by_its_function() -> None:
    """The instance is state, not code: two instances give one fingerprint."""
    assert fingerprint(Scorer().bound) == fingerprint(Scorer().bound)


class Point:
    """A value only its own codec can store: its repr shows its address, unique per object."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


class PointCodec:
    """Stores Points as [x, y]; everything else as JSON."""

    def encode(self, value: object, /) -> str:
        if isinstance(value, Point):
            return json.dumps([value.x, value.y])
        return json.dumps(value)

    def decode(self, text: str, /) -> object:
        raw = json.loads(text)
        return Point(*raw) if isinstance(raw, list) else raw


@pytest.mark.anyio
async def test_a_derived_run_id_comes_from_the_stores_codec() -> None:
    """Equal inputs the store's codec encodes alike name one run, whatever their repr says."""
    flow = Flow("points")
    calls = 0

    @flow.step
    async def norm(p: Point) -> int:
        nonlocal calls
        calls += 1
        return p.x * p.x + p.y * p.y

    async with Engine(store=MemoryStore(codec=PointCodec())) as engine:
        first = await engine.run(flow, p=Point(3, 4))
        again = await engine.run(flow, p=Point(3, 4))
        other = await engine.run(flow, p=Point(4, 3))
    assert first.run_id == again.run_id != other.run_id
    assert again.steps["norm"].status is StepStatus.RESTORED
    assert calls == 2


@pytest.mark.anyio
async def test_without_a_custom_codec_run_ids_stay_as_they_were() -> None:
    """The default codec derives the ids it always has (pinned), so old checkpoints are found."""
    flow = Flow("stable")

    @flow.step
    async def a(x: int, name: str) -> None: ...

    async with Engine(store=MemoryStore()) as engine:
        with_store = await engine.run(flow, x=1, name="é")
    async with Engine(store=None) as engine:
        without = await engine.run(flow, x=1, name="é")
    assert with_store.run_id == without.run_id == "stable-4dcf3cb6d7343483986c"


STEP_MODULE = """
async def step(x: int) -> int:
    # the source is part of the fingerprint
    return x + {n}
"""


def load_module(path: Path, n: int) -> Any:
    """A module with one step, imported from its file (its source read as a user's is)."""
    import importlib.util

    path.write_text(STEP_MODULE.format(n=n))
    spec = importlib.util.spec_from_file_location(f"steps_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_fingerprint_taken_lazily_is_the_one_taken_at_definition(tmp_path: Path) -> None:
    """Defining a step does not read its source; the fingerprint taken later is the same text."""
    from asyncflow._identity import code_fingerprint

    module = load_module(tmp_path / "lazy.py", 1)
    flow = Flow("lazy")
    flow.step(module.step)
    held = flow.steps["step"].fingerprint_of
    assert callable(held)  # not taken yet
    assert flow.steps["step"].code_fingerprint == code_fingerprint(module.step)
    assert flow.steps["step"].fingerprint_of == code_fingerprint(module.step)  # kept


def test_a_source_edited_after_definition_never_lends_its_fingerprint(tmp_path: Path) -> None:
    """The file changed before the fingerprint was taken: it no longer shows the running code.

    The step then gets its code object's fingerprint: neither the edited source's (a checkpoint
    of the old code would restore into the new one) nor a failure.
    """
    path = tmp_path / "edited.py"
    old = load_module(path, 1)
    flow = Flow("edited")
    flow.step(old.step)
    new = load_module(path, 2)
    os.utime(path, ns=(1, 1))  # linecache compares size and mtime: make the edit visible
    edited = Flow("edited")
    edited.step(new.step)
    taken = flow.steps["step"].code_fingerprint
    assert taken != edited.steps["step"].code_fingerprint
    # The code object's fingerprint, as a step defined without source gets.
    no_source: dict[str, Any] = {}
    source = compile(STEP_MODULE.format(n=1), "<edited step, no source>", "exec", dont_inherit=True)
    exec(source, no_source)
    without = Flow("without")
    without.step(no_source["step"])
    assert taken == without.steps["step"].code_fingerprint
