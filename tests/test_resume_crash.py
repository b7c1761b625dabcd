"""engine.resume() after a SIGKILL: the saved inputs come back, durable steps are not run again.

The manifest of a run, with its inputs, is saved before any step checkpoint of the run, so a run
killed at any point after its first durable step can be resumed by its id alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from asyncflow import Engine, Event, FileStore, StepStarted, StepStatus
from tests.helpers import Child, dones, log_lines
from tests.resume_child import flow, inputs_of

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

RUNS = 12


async def test_resume_after_sigkill_restores_durable_steps_and_runs_only_the_rest(
    tmp_path: Path,
) -> None:
    """Runs SIGKILLed in their last step resume with their saved inputs and run only that step."""
    store, log = tmp_path / "store", tmp_path / "log"
    child = Child("tests.resume_child", str(store), str(log), str(RUNS), log=log)
    # Killed once every run's first two steps are durable and its last one has started.
    child.wait_for(
        lambda lines: all(
            {f"done run-{n} parse", f"done run-{n} score", f"exec run-{n} publish"} <= set(lines)
            for n in range(RUNS)
        )
    )
    child.kill()

    started: list[tuple[str, str]] = []

    def on_event(event: Event) -> None:
        if isinstance(event, StepStarted):
            started.append((event.run_id, event.step))

    async with Engine(store=FileStore(store), observers=[on_event]) as engine:
        results = [await engine.resume(flow, f"run-{n}") for n in range(RUNS)]

    for n, result in enumerate(results):
        assert result.ok, [(s.name, s.error) for s in result.steps.values()]
        assert result.inputs == inputs_of(n)
        assert {name: r.status for name, r in result.steps.items()} == {
            "parse": StepStatus.RESTORED,
            "score": StepStatus.RESTORED,
            "publish": StepStatus.SUCCEEDED,
        }
        words = [f"W{n}", "X", f"Y{n % 3}"]
        assert result.outputs["publish"] == f"{'-'.join(words)}={len(''.join(words)) * n / 4:g}"
    assert sorted(started) == sorted((f"run-{n}", "publish") for n in range(RUNS))


@pytest.mark.parametrize("kill_after", [1, 7, 18])
async def test_resume_after_sigkill_at_any_point_reruns_no_durable_step(
    tmp_path: Path, kill_after: int
) -> None:
    """Killed after any number of durable steps: every run with one resumes, none runs twice.

    A run's manifest is durable no later than its first durable step, so each run that logged
    one is found by its id; its durable steps are restored, and the rest run.
    """
    store, log = tmp_path / "store", tmp_path / "log"
    child = Child("tests.resume_child", str(store), str(log), str(RUNS), log=log)
    child.wait_for(lambda lines: dones(lines) >= kill_after)
    child.kill()
    durable: dict[str, set[str]] = {}
    for line in log_lines(log):
        kind, run, step = line.split()
        if kind == "done":
            durable.setdefault(run, set()).add(step)
    assert len(durable) >= 1

    started: list[tuple[str, str]] = []

    def on_event(event: Event) -> None:
        if isinstance(event, StepStarted):
            started.append((event.run_id, event.step))

    async with Engine(store=FileStore(store), observers=[on_event]) as engine:
        for run, steps in durable.items():
            result = await engine.resume(flow, run)
            assert result.ok
            assert result.inputs == inputs_of(int(run.removeprefix("run-")))
            restored = {n for n, r in result.steps.items() if r.status is StepStatus.RESTORED}
            assert steps <= restored
            assert "publish" not in restored  # it never finished in the child
    assert not {(run, step) for run, steps in durable.items() for step in steps} & set(started)
