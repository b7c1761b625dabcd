"""MemoryStore under an engine: runs resume across engines sharing the store, nothing on disk."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from asyncflow import Engine, Flow, StepStatus
from asyncflow.stores import MemoryStore, RunInfo
from tests.stores.files import names

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


def flaky_flow(failures: list[str]) -> Flow:
    """Fetch -> publish, and a step beside them; publish fails while ``failures`` is not empty."""
    flow = Flow("memory")

    @flow.step
    async def fetch(n: int) -> dict[str, int]:
        return {"n": n}

    @flow.step
    async def publish(fetch: dict[str, int]) -> int:
        if failures:
            raise RuntimeError(failures.pop())
        return fetch["n"] * 2

    @flow.step
    async def log(publish: int) -> str:
        return f"published {publish}"

    return flow


async def test_an_engine_resumes_what_another_started_on_the_same_memory_store(
    tmp_path: Path,
) -> None:
    """The store outlives each engine: the second restores what the first saved, lists the run."""
    store = MemoryStore()
    flow = flaky_flow(["publisher down"])
    async with Engine(store=store) as engine:
        first = await engine.run(flow, run_id="doc-1", n=21)
    assert first.steps["publish"].status is StepStatus.FAILED
    async with store.open():
        (info,) = [info async for info in store.list_runs()]
    assert (info.run_id, info.status, info.failed_steps) == ("doc-1", "failed", ("publish",))
    async with Engine(store=store) as engine:
        resumed = await engine.resume(flow, "doc-1")
    assert resumed.ok
    assert resumed.steps["fetch"].status is StepStatus.RESTORED
    assert resumed.outputs["log"] == "published 42"
    async with store.open():
        listed = [info async for info in store.list_runs()]
    assert listed == [
        RunInfo("doc-1", "memory", "succeeded", info.created_at, listed[0].updated_at)
    ]
    assert names(tmp_path) == []  # the working directory: no .asyncflow


async def test_a_memory_store_is_opened_by_one_engine_at_a_time() -> None:
    store = MemoryStore()
    async with Engine(store=store):
        with pytest.raises(RuntimeError, match="already open"):
            async with Engine(store=store):
                pass
