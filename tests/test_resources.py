"""Engine(resources=): settings and clients steps reach through the Context, outside identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from asyncflow import Context, Engine, Flow, Resources, StepStatus

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


@dataclass
class Api:
    base_url: str
    key: str


flow = Flow("resources")


@flow.step
async def call(item: str, ctx: Context) -> str:
    api = ctx.resource("api", Api)
    return f"{api.base_url}/{item}?{ctx.resources['suffix']}"


async def test_steps_reach_the_engines_resources() -> None:
    resources = {"api": Api("https://one.example", "k1"), "suffix": "v=1"}
    async with Engine(store=None, resources=resources) as engine:
        result = await engine.run(flow, item="x")
    assert result.outputs["call"] == "https://one.example/x?v=1"


async def test_changing_resources_keeps_the_run_and_its_checkpoints(tmp_path: Path) -> None:
    """Resources are not inputs: the same call is the same run, restored, under other ones."""
    store = tmp_path / "store"
    async with Engine(store=store, resources={"api": Api("a", "1"), "suffix": ""}) as engine:
        first = await engine.run(flow, item="x")
    async with Engine(store=store, resources={"api": Api("b", "2"), "suffix": "z"}) as engine:
        second = await engine.run(flow, item="x")
    assert second.run_id == first.run_id
    assert second.steps["call"].status is StepStatus.RESTORED
    assert second.outputs == first.outputs


async def test_a_missing_or_mistyped_resource_fails_the_step_saying_which() -> None:
    async with Engine(store=None) as engine:
        missing = await engine.run(flow, item="x")
    async with Engine(store=None, resources={"api": "not an Api", "suffix": ""}) as engine:
        mistyped = await engine.run(flow, item="x")
    error = missing.steps["call"].error
    assert error is not None
    assert isinstance(error.__cause__, KeyError)
    assert "No resource 'api' (there are: none)" in str(error)
    assert "Engine(resources={'api': ...})" in str(error)
    error = mistyped.steps["call"].error
    assert error is not None
    assert isinstance(error.__cause__, TypeError)
    assert "Resource 'api' is a str, not an instance of Api" in str(error)


def test_resources_are_read_only_and_their_repr_shows_names_only() -> None:
    resources = Resources({"key": "s3cret"})
    assert repr(resources) == "Resources(['key'])"
    assert dict(resources) == {"key": "s3cret"}
    with pytest.raises(TypeError):
        resources["key"] = "x"  # type: ignore[index]  # read-only on purpose


@pytest.mark.parametrize("bad", [["api"], {1: "x"}, "api"])
def test_resources_that_are_not_a_mapping_of_names_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"resources=.*mapping of names"):
        Engine(resources=bad)  # type: ignore[arg-type]  # bad input on purpose
