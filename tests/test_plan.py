"""The plan compiler: cycles, unknown steps and reserved inputs refused, parameters classified."""

from __future__ import annotations

import re

import pytest

from asyncflow import Context, Engine, Flow, FlowDefinitionError, RunInputError
from asyncflow._plan import compile_plan  # the compiled plan has no public name


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


def test_reserved_input_name_is_rejected() -> None:
    """A run input named run_id would clash with engine.run(run_id=...)."""
    flow = Flow("f")

    @flow.step
    async def a(run_id: str) -> None: ...

    with pytest.raises(FlowDefinitionError, match=r"reserves.*ctx\.run_id"):
        flow.validate()


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
