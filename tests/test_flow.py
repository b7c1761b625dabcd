"""Flow definition and validation: every definition error names the step and what to do."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from asyncflow import Context, Engine, Flow, FlowDefinitionError, RunInputError
from asyncflow._plan import compile_plan  # the compiled plan has no public name

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


def test_cycle_is_printed() -> None:
    """A cycle is reported with its path, in execution order."""
    flow = Flow("f")

    @flow.step
    async def a(c: int) -> int:
        return c

    @flow.step
    async def b(a: int) -> int:
        return a

    @flow.step
    async def c(b: int) -> int:
        return b

    with pytest.raises(FlowDefinitionError, match="has a cycle") as info:
        flow.validate()
    cycle = re.search(r"cycle: (.*?)\.", str(info.value))
    assert cycle is not None
    names = cycle.group(1).split(" -> ")
    assert names[0] == names[-1]
    assert set(names) == {"a", "b", "c"}
    assert len(names) == 4


def test_cycle_through_after() -> None:
    """Cycles made with after= are found too."""
    flow = Flow("f")

    @flow.step(after=["b"])
    async def a() -> None: ...

    @flow.step(after=[a])
    async def b() -> None: ...

    with pytest.raises(FlowDefinitionError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        flow.validate()


def test_unknown_after_step_suggests_a_close_name() -> None:
    """after= naming a step not in the flow says so, with a did-you-mean."""
    flow = Flow("f")

    @flow.step
    async def fetch() -> None: ...

    @flow.step(after=["fetc"])
    async def load() -> None: ...

    with pytest.raises(
        FlowDefinitionError,
        match=r"Step 'load' runs after 'fetc', which is not in flow 'f' \(did you mean 'fetch'\?\)",
    ):
        flow.validate()


def test_var_args_are_rejected() -> None:
    """Steps get inputs by name: *args and **kwargs are definition errors."""
    flow = Flow("f")

    async def a(*parts: int) -> None: ...

    async def b(**parts: int) -> None: ...

    with pytest.raises(FlowDefinitionError, match=r"\*parts"):
        flow.step(a)
    with pytest.raises(FlowDefinitionError, match=r"\*\*parts"):
        flow.step(b)


def test_reserved_input_name_is_rejected() -> None:
    """A run input named run_id would clash with engine.run(run_id=...)."""
    flow = Flow("f")

    @flow.step
    async def a(run_id: str) -> None: ...

    with pytest.raises(FlowDefinitionError, match=r"reserves.*ctx\.run_id"):
        flow.validate()


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


def test_parameters_are_classified() -> None:
    """Step names are dependencies, Context is the context, the rest are run inputs."""
    flow = Flow("f")

    @flow.step
    async def ingest(path: str, encoding: str = "utf-8") -> str:
        return path

    @flow.step
    async def enrich(ingest: str, ctx: Context, api_key: str) -> str:
        return ingest

    plan = compile_plan(flow)
    i = plan.index["enrich"]
    assert plan.data_deps[i] == (("ingest", plan.index["ingest"]),)
    assert plan.context_param[i] == "ctx"
    assert plan.step_inputs[i] == ("api_key",)
    assert plan.required_inputs == {"path", "api_key"}
    assert plan.optional_inputs == {"encoding"}


@pytest.mark.anyio
async def test_missing_and_unexpected_inputs_raise_before_any_step() -> None:
    """Missing inputs are named with the steps that need them; near misses get a did-you-mean."""
    flow = Flow("docs")
    ran: list[str] = []

    @flow.step
    async def ingest(path: str) -> str:
        ran.append("ingest")
        return path

    async with Engine(store=None) as engine:
        with pytest.raises(RunInputError, match=r"missing 'path' \(needed by 'ingest'\)") as info:
            await engine.run(flow)
        assert info.value.missing == ("path",)
        with pytest.raises(RunInputError, match=r"unexpected input 'pth'; did you mean 'path'\?"):
            await engine.run(flow, path="a", pth="b")
    assert ran == []


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
