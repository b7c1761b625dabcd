"""Step versions in the fingerprint, what the code fingerprint does not see, and forgetting."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncflow import (
    CheckpointError,
    Engine,
    Flow,
    FlowDefinitionError,
    InvalidRunIdError,
    RunResult,
    StepStatus,
)
from asyncflow._cli import main  # the command line's entry point (see tests/test_cli.py)
from asyncflow.stores import MemoryStore

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

#: A module constant a step reads: outside its code fingerprint.
FACTOR = 2
calls: list[str] = []


def make_flow(version: str | None = None, *, name: str = "versions") -> Flow:
    """The same step code each time, declared with ``version``."""
    flow = Flow(name)

    @flow.step(version=version)
    async def scale(n: int) -> int:
        calls.append("scale")
        return n * FACTOR

    @flow.step
    async def report(scale: int) -> str:
        calls.append("report")
        return f"={scale}"

    return flow


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()


def statuses(result: RunResult) -> dict[str, StepStatus]:
    return {name: r.status for name, r in result.steps.items()}


async def test_a_new_version_runs_the_step_again_and_the_same_version_restores() -> None:
    """version= enters the fingerprint: "2" re-runs the step; its unchanged output restores the rest."""
    async with Engine(store=MemoryStore()) as engine:
        first = await engine.run(make_flow("1"), run_id="r", n=3)
        same = await engine.run(make_flow("1"), run_id="r", n=3)
        bumped = await engine.run(make_flow("2"), run_id="r", n=3)
    assert first.outputs["report"] == "=6"
    assert statuses(same) == {"scale": StepStatus.RESTORED, "report": StepStatus.RESTORED}
    assert statuses(bumped) == {"scale": StepStatus.SUCCEEDED, "report": StepStatus.RESTORED}
    assert calls == ["scale", "report", "scale"]


async def test_no_version_keeps_the_checkpoints_of_a_step_declared_without_one() -> None:
    """version=None is the identity a step had before versions existed."""
    async with Engine(store=MemoryStore()) as engine:
        await engine.run(make_flow(), run_id="r", n=3)
        again = await engine.run(make_flow(None), run_id="r", n=3)
        versioned = await engine.run(make_flow("1"), run_id="r", n=3)
    assert again.restored
    assert versioned.steps["scale"].status is StepStatus.SUCCEEDED


async def test_a_changed_module_constant_is_not_seen_until_the_version_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the README says: the code fingerprint is the step's own source, not what it reads."""
    async with Engine(store=MemoryStore()) as engine:
        await engine.run(make_flow("1"), run_id="r", n=3)
        monkeypatch.setattr(f"{__name__}.FACTOR", 10)
        stale = await engine.run(make_flow("1"), run_id="r", n=3)
        fresh = await engine.run(make_flow("2"), run_id="r", n=3)
    assert stale.restored  # the old result, silently
    assert stale.outputs["report"] == "=6"
    assert fresh.outputs["report"] == "=30"


@pytest.mark.parametrize("version", ["", 2, b"2"])
def test_a_version_that_is_not_a_non_empty_string_is_refused(version: object) -> None:
    with pytest.raises(FlowDefinitionError, match=r"version=.*non-empty string"):
        make_flow(version)  # type: ignore[arg-type]  # bad input on purpose


async def test_forget_a_step_runs_it_again_on_resume() -> None:
    """engine.forget(run, step=) makes that step run again; the others stay restored."""
    async with Engine(store=MemoryStore()) as engine:
        flow = make_flow()
        await engine.run(flow, run_id="r", n=3)
        assert await engine.forget("r", step="scale")
        assert not await engine.forget("r", step="scale")  # already forgotten
        assert not await engine.forget("r", step="nonesuch")
        resumed = await engine.resume(flow, "r")
    assert statuses(resumed) == {"scale": StepStatus.SUCCEEDED, "report": StepStatus.RESTORED}
    assert calls == ["scale", "report", "scale"]


async def test_forget_a_run_deletes_it() -> None:
    async with Engine(store=MemoryStore()) as engine:
        flow = make_flow()
        await engine.run(flow, run_id="r", n=3)
        assert await engine.forget("r")
        assert not await engine.forget("r")
        with pytest.raises(CheckpointError, match="no run 'r'"):
            await engine.resume(flow, "r")
        again = await engine.run(flow, run_id="r", n=3)
    assert statuses(again) == {"scale": StepStatus.SUCCEEDED, "report": StepStatus.SUCCEEDED}


async def test_forget_bad_input() -> None:
    async with Engine(store=None) as engine:
        with pytest.raises(CheckpointError, match="without checkpoints"):
            await engine.forget("r")
        with pytest.raises(InvalidRunIdError):
            await engine.forget("../r")


def test_the_command_line_forgets_one_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line's forget RUN --step NAME: the step runs again, in any later engine."""
    store = tmp_path / "store"
    flow = make_flow()

    async def run(resume: bool) -> RunResult:
        async with Engine(store=store) as engine:
            if resume:
                return await engine.resume(flow, "r")
            return await engine.run(flow, run_id="r", n=3)

    anyio.run(run, False)
    assert main(["forget", "r", "--step", "scale", "--store", str(store)]) == 0
    assert capsys.readouterr().out == "forgot step scale of run r: it runs again on resume\n"
    assert main(["forget", "r", "--step", "scale", "--store", str(store)]) == 0
    assert "nothing to forget" in capsys.readouterr().out
    assert main(["show", "r", "--json", "--store", str(store)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["steps"]["scale"]["status"] == "forgotten"
    assert shown["steps"]["report"]["status"] == "succeeded"
    resumed = anyio.run(run, True)
    assert statuses(resumed) == {"scale": StepStatus.SUCCEEDED, "report": StepStatus.RESTORED}


async def test_a_file_store_forgets_a_step_at_once_and_a_whole_run_once_closed(
    tmp_path: Path,
) -> None:
    """What the README says of FileStore: its journal holds the run until the engine closes."""
    store = tmp_path / "store"
    flow = make_flow()
    async with Engine(store=store) as engine:
        await engine.run(flow, run_id="r", n=3)
        assert await engine.forget("r", step="scale")
        with pytest.raises(CheckpointError, match="still has records in the journal"):
            await engine.forget("r")
    async with Engine(store=store) as engine:
        assert await engine.forget("r")
        with pytest.raises(CheckpointError, match="no run 'r'"):
            await engine.resume(flow, "r")
