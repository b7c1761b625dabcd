"""Flow definition and validation: every definition error names the step and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from asyncflow import Engine, Flow, FlowDefinitionError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def test_step_decorator_returns_the_function_unchanged() -> None:
    """@flow.step, bare or with options, returns the function so it can still be called."""
    flow = Flow("f")

    async def a(x: int) -> int:
        return x

    assert flow.step(a) is a

    async def b() -> None: ...

    assert flow.step(timeout=1.0)(b) is b
    assert list(flow.steps) == ["a", "b"]


def _coro(name: str) -> object:
    async def fn() -> None:
        return None

    fn.__name__ = name
    return fn


def test_sync_function_is_rejected() -> None:
    """A plain def is not a step: the error says to use async def."""
    flow = Flow("f")

    def load(path: str) -> str:
        return path

    with pytest.raises(
        FlowDefinitionError, match=r"Step 'load' is not an async function.*async def load"
    ) as info:
        flow.step(load)  # type: ignore[type-var]
    assert info.value.step == "load"
    assert info.value.flow == "f"


def test_async_generator_is_rejected() -> None:
    """An async generator is not a coroutine function."""
    flow = Flow("f")

    async def gen() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(FlowDefinitionError, match="is an async generator"):
        flow.step(gen)  # type: ignore[type-var]


def test_duplicate_name_is_rejected() -> None:
    """Two steps with one name: the error says to rename or pass name=."""
    flow = Flow("f")

    @flow.step
    async def a() -> None: ...

    async def other() -> None: ...

    with pytest.raises(FlowDefinitionError, match=r"already has a step named 'a'.*name="):
        flow.step(name="a")(other)


def test_var_args_are_rejected() -> None:
    """Steps get inputs by name: *args and **kwargs are definition errors."""
    flow = Flow("f")

    async def a(*parts: int) -> None: ...

    async def b(**parts: int) -> None: ...

    with pytest.raises(FlowDefinitionError, match=r"\*parts"):
        flow.step(a)
    with pytest.raises(FlowDefinitionError, match=r"\*\*parts"):
        flow.step(b)


def test_empty_flow_and_bad_options() -> None:
    """An empty flow, a non-positive timeout and a bad concurrency are refused clearly."""
    with pytest.raises(FlowDefinitionError, match="has no steps"):
        Flow("empty").validate()
    flow = Flow("f")
    with pytest.raises(FlowDefinitionError, match=r"timeout=0.*positive"):
        flow.step(timeout=0)(_coro("a"))  # type: ignore[type-var]
    with pytest.raises(FlowDefinitionError, match=r"concurrency=0.*at least 1"):
        flow.step(concurrency=0)(_coro("b"))  # type: ignore[type-var]
    with pytest.raises(FlowDefinitionError, match="non-empty name"):
        Flow("")


@pytest.mark.anyio
async def test_context_annotation_as_string_without_import() -> None:
    """A Context annotation is recognised even when it cannot be evaluated."""
    flow = Flow("f")
    seen: list[str] = []

    async def step_a(ctx: asyncflow_Context) -> None:  # type: ignore[name-defined]  # noqa: F821
        seen.append(ctx.step)

    step_a.__annotations__["ctx"] = "asyncflow.Context"
    flow.step(step_a)
    async with Engine(store=None) as engine:
        (await engine.run(flow)).raise_for_status()
    assert seen == ["step_a"]
