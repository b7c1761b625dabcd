"""Conditions: ``when=`` runs a step only when its predicate holds; NOT_TAKEN is not a failure."""

from __future__ import annotations

import json

import anyio
import pytest

from asyncflow import (
    Engine,
    Event,
    FileStore,
    Flow,
    FlowDefinitionError,
    StepError,
    StepNotTaken,
    StepSkipped,
    StepStatus,
)
from asyncflow._cli import main as cli_main
from asyncflow.stores import MemoryStore

pytestmark = pytest.mark.anyio


def routing_flow(calls: list[str]) -> Flow:
    """A document router: invoice (when one) -> book, receipt (when one), report takes either."""
    flow = Flow("routing")

    @flow.step
    async def classify(doc: str) -> str:
        calls.append("classify")
        return "invoice" if doc.startswith("INV") else "receipt"

    @flow.step(when=lambda classify: classify == "invoice")
    async def invoice(classify: str, doc: str) -> dict[str, str]:
        calls.append("invoice")
        return {"invoice": doc}

    @flow.step
    async def book(invoice: dict[str, str]) -> str:
        calls.append("book")
        return f"booked {invoice['invoice']}"

    @flow.step(when=lambda classify: classify == "receipt")
    async def receipt(classify: str, doc: str) -> dict[str, str]:
        calls.append("receipt")
        return {"receipt": doc}

    @flow.step
    async def report(
        invoice: dict[str, str] | None = None, receipt: dict[str, str] | None = None
    ) -> str:
        calls.append("report")
        return "invoice" if invoice is not None else "receipt" if receipt is not None else "none"

    return flow


async def test_a_false_condition_is_not_taken_and_so_is_what_needs_its_output() -> None:
    """A receipt: invoice and book are NOT_TAKEN, receipt and report run, the run succeeds."""
    calls: list[str] = []
    events: list[Event] = []
    async with Engine(store=None, observers=[events.append]) as engine:
        result = await engine.run(routing_flow(calls), doc="R-1")
    assert result.ok
    statuses = {name: r.status for name, r in result.steps.items()}
    assert statuses == {
        "classify": StepStatus.SUCCEEDED,
        "invoice": StepStatus.NOT_TAKEN,
        "book": StepStatus.NOT_TAKEN,
        "receipt": StepStatus.SUCCEEDED,
        "report": StepStatus.SUCCEEDED,
    }
    assert result.outputs["report"] == "receipt"
    assert "invoice" not in result.outputs
    assert sorted(calls) == ["classify", "receipt", "report"]
    not_taken = {e.step: e.reason for e in events if isinstance(e, StepNotTaken)}
    assert not_taken == {
        "invoice": "its when= was false",
        "book": "it needs the output of 'invoice', not taken",
    }
    # Distinct from skipped-by-failure: no StepSkipped at all.
    assert not [e for e in events if isinstance(e, StepSkipped)]


async def test_a_true_condition_runs_the_step() -> None:
    """An invoice takes the other branch."""
    calls: list[str] = []
    async with Engine(store=None) as engine:
        result = await engine.run(routing_flow(calls), doc="INV-7")
    assert result.outputs["book"] == "booked INV-7"
    assert result.outputs["report"] == "invoice"
    assert result.steps["receipt"].status is StepStatus.NOT_TAKEN


async def test_the_decision_is_restored_not_asked_again() -> None:
    """A predicate that reads the outside world: a rerun restores its first answer."""
    asked: list[bool] = []
    switch = {"on": False}
    flow = Flow("switch")

    def enabled() -> bool:
        asked.append(switch["on"])
        return switch["on"]

    @flow.step
    async def load(x: int) -> int:
        return x

    @flow.step(when=lambda load: enabled())
    async def send(load: int) -> str:
        return f"sent {load}"

    store = FileStore("store")
    async with Engine(store=store) as engine:
        first = await engine.run(flow, run_id="r", x=1)
        switch["on"] = True
        again = await engine.run(flow, run_id="r", x=1)
        other = await engine.run(flow, run_id="r2", x=1)
    assert first.steps["send"].status is StepStatus.NOT_TAKEN
    assert again.steps["send"].status is StepStatus.NOT_TAKEN
    assert other.outputs["send"] == "sent 1"
    assert asked == [False, True]  # once for r, once for r2: never again for r


async def test_a_restored_decision_is_marked_restored_in_its_event() -> None:
    """StepNotTaken says when the decision came from the checkpoint."""
    events: list[Event] = []
    flow = Flow("restored-decision")

    @flow.step
    async def n(x: int) -> int:
        return x

    @flow.step(when=lambda n: n > 10)
    async def big(n: int) -> int:
        return n

    async with Engine(store=MemoryStore(), observers=[events.append]) as engine:
        await engine.run(flow, run_id="r", x=1)
        await engine.run(flow, run_id="r", x=1)
    assert [e.restored for e in events if isinstance(e, StepNotTaken)] == [False, True]


async def test_a_predicate_that_raises_fails_the_step_naming_the_predicate() -> None:
    """The error names the step and the predicate; dependents are skipped, not 'not taken'."""
    flow = Flow("raising")

    def is_urgent(doc: dict[str, str]) -> bool:
        return doc["priority"] == "high"

    @flow.step
    async def doc() -> dict[str, str]:
        return {}

    @flow.step(when=is_urgent)
    async def page(doc: dict[str, str]) -> str:
        raise AssertionError("never runs")

    @flow.step
    async def log(page: str) -> str:
        return page

    async with Engine(store=None) as engine:
        result = await engine.run(flow)
    err = result.steps["page"].error
    assert isinstance(err, StepError)
    assert result.steps["page"].status is StepStatus.FAILED
    assert "its when= predicate 'test_a_predicate_that_raises" in str(err)
    assert "is_urgent' raised KeyError: 'priority'" in str(err)
    assert isinstance(err.__cause__, KeyError)
    assert result.steps["log"].status is StepStatus.SKIPPED


async def test_a_lambda_predicate_is_named_by_where_it_is() -> None:
    """A lambda has no name: the error points at its file and line."""
    flow = Flow("lambda")

    @flow.step
    async def n() -> int:
        return 0

    @flow.step(when=lambda n: 1 / n)
    async def inverse(n: int) -> float:
        return 1 / n

    async with Engine(store=None) as engine:
        result = await engine.run(flow)
    message = str(result.steps["inverse"].error)
    assert "the lambda at " in message
    assert "test_conditions.py:" in message
    assert "ZeroDivisionError" in message


async def test_an_async_predicate_is_refused_when_the_flow_is_defined() -> None:
    """when= is a plain function: an async one is a definition error."""
    flow = Flow("async-when")

    async def check(x: int) -> bool:
        return x > 0

    with pytest.raises(FlowDefinitionError, match="plain \\(not async\\) function"):

        @flow.step(when=check)
        async def step(x: int) -> int:
            return x


def test_a_predicate_may_take_only_the_step_parameters() -> None:
    """A predicate parameter the step does not have is refused, naming the step's."""
    flow = Flow("params")

    with pytest.raises(FlowDefinitionError, match="taking y, which is not one of") as info:

        @flow.step(when=lambda y: y)
        async def step(x: int) -> int:
            return x

    assert "(x)" in str(info.value)


def test_the_condition_is_part_of_the_step_identity() -> None:
    """Changing when= changes the flow's fingerprint, so old checkpoints are not reused."""

    def make(threshold: int) -> str:
        flow = Flow("identity")

        if threshold:

            @flow.step(when=lambda x: x > 1)
            async def step(x: int) -> int:
                return x
        else:

            @flow.step(when=lambda x: x > 2)
            async def step(x: int) -> int:
                return x

        from asyncflow._plan import compile_plan

        return compile_plan(flow).fingerprint

    assert make(1) != make(0)


def test_the_cli_shows_not_taken(capsys: pytest.CaptureFixture[str]) -> None:
    """`asyncflow show` reads the kept decision as not-taken."""

    async def go() -> None:
        async with Engine(store=FileStore("store")) as engine:
            await engine.run(routing_flow([]), run_id="doc-1", doc="R-1")

    anyio.run(go)
    assert cli_main(["show", "doc-1", "--store", "store", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["steps"]["invoice"]["status"] == "not-taken"  # beside the run's step details
    assert shown["steps"]["receipt"]["status"] == "succeeded"


async def test_a_step_only_ordered_after_a_step_not_taken_still_runs() -> None:
    """after= orders without taking an output: a step not taken does not hold it back."""
    flow = Flow("after-not-taken")

    @flow.step(when=lambda x: x > 0)
    async def maybe(x: int) -> int:
        return x

    @flow.step(after=[maybe])
    async def always() -> str:
        return "ran"

    async with Engine(store=None) as engine:
        result = await engine.run(flow, x=0)
    assert result.steps["maybe"].status is StepStatus.NOT_TAKEN
    assert result.outputs["always"] == "ran"


async def test_when_on_a_mapped_step_is_asked_once_about_the_whole_list() -> None:
    """The predicate sees the list; when false no item runs, and the step is not taken."""
    flow = Flow("when-mapped")
    asked: list[object] = []

    @flow.step
    async def items(n: int) -> list[int]:
        return list(range(n))

    def enough(items: list[int]) -> bool:
        asked.append(items)
        return len(items) >= 3

    @flow.step(map_over=items, when=enough)
    async def each(items: int) -> int:
        return items * 2

    async with Engine(store=None) as engine:
        few = await engine.run(flow, n=2)
        many = await engine.run(flow, n=3)
    assert few.steps["each"].status is StepStatus.NOT_TAKEN
    assert many.outputs["each"] == [0, 2, 4]
    assert asked == [[0, 1], [0, 1, 2]]


async def test_a_step_mapped_over_a_step_not_taken_is_not_taken() -> None:
    """There are no items to map over: a default on the parameter does not change that."""
    flow = Flow("map-not-taken")

    @flow.step(when=lambda x: x > 0)
    async def items(x: int) -> list[int]:
        return list(range(x))

    @flow.step(map_over=items)
    async def each(items: int = 0) -> int:
        return items

    async with Engine(store=None) as engine:
        result = await engine.run(flow, x=0)
    assert result.ok
    assert result.steps["each"].status is StepStatus.NOT_TAKEN


async def test_a_taken_decision_is_restored_for_a_step_that_failed() -> None:
    """The predicate said yes, the step failed; on the rerun it runs without being asked."""
    asked: list[bool] = []
    switch = {"on": True, "broken": True}
    flow = Flow("taken-then-failed")

    def enabled() -> bool:
        asked.append(switch["on"])
        return switch["on"]

    @flow.step
    async def load(x: int) -> int:
        return x

    @flow.step(when=lambda load: enabled())
    async def send(load: int) -> str:
        if switch["broken"]:
            raise ValueError("not yet")
        return f"sent {load}"

    async with Engine(store=FileStore("store")) as engine:
        first = await engine.run(flow, run_id="r", x=1)
        switch.update(on=False, broken=False)
        again = await engine.run(flow, run_id="r", x=1)
    assert first.steps["send"].status is StepStatus.FAILED
    assert again.outputs["send"] == "sent 1"
    assert asked == [True]


def test_the_cli_shows_a_taken_step_that_did_not_finish(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A kept "taken" decision is never shown as succeeded: failed, or taken if not ended."""
    flow = Flow("taken-shown")

    @flow.step(when=lambda x: x > 0)
    async def fails(x: int) -> int:
        raise ValueError("no")

    async def go() -> None:
        async with Engine(store=FileStore("store")) as engine:
            await engine.run(flow, run_id="t", x=1)

    anyio.run(go)
    assert cli_main(["show", "t", "--store", "store", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["steps"]["fails"]["status"] == "failed"
    assert shown["steps"]["fails"]["error"]["causes"] == [{"type": "ValueError", "message": "no"}]
