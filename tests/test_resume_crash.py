"""engine.resume() after a SIGKILL: the saved inputs come back, durable steps are not run again.

The manifest of a run, with its inputs, is saved before any step checkpoint of the run, so a run
killed at any point after its first durable step can be resumed by its id alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from asyncflow import Engine, Event, FileStore, StepStarted, StepStatus
from tests.helpers import Child
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
