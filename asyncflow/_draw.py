"""Pictures of a flow: one line per step, a Mermaid flowchart, or a Graphviz graph."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ._plan import compile_plan, topological_order

if TYPE_CHECKING:
    from ._flow import Flow, Step

__all__ = ["draw"]


def _marks(step: Step) -> list[str]:
    """What a picture says about a step's fan-out and condition."""
    marks = [] if step.map_over is None else [f"map_over={step.map_over}"]
    return [*marks, "when"] if step.when is not None else marks


def _label(step: Step) -> str:
    return f"{step.name} ({', '.join(_marks(step))})"


def draw(flow: Flow, format: str = "text") -> str:
    """A picture of ``flow``; see :meth:`Flow.draw <asyncflow.Flow.draw>`.

    Raises:
        FlowDefinitionError: the flow is not valid.
        ValueError: an unknown format.
    """
    plan = compile_plan(flow)
    steps = plan.steps
    data = {(src, j) for j, deps in enumerate(plan.data_deps) for _, src in deps}
    edges = [
        (steps[i].name, steps[j].name, (i, j) in data)
        for i, deps in enumerate(plan.dependents)
        for j in deps
    ]
    if format == "mermaid":
        lines = ["flowchart LR"]
        lines += [
            f"    {s.name}[{s.name}]" if not _marks(s) else f'    {s.name}["{_label(s)}"]'
            for s in steps
        ]
        lines += [f"    {a} {'-->' if data else '-.->'} {b}" for a, b, data in edges]
        return "\n".join(lines)
    if format == "dot":
        lines = [f"digraph {json.dumps(flow.name)} {{", "    rankdir=LR;"]
        lines += [
            f"    {json.dumps(a)} -> {json.dumps(b)}{'' if data else ' [style=dashed]'};"
            for a, b, data in edges
        ]
        lines += [
            f"    {json.dumps(s.name)}"
            + (f" [label={json.dumps(_label(s))}]" if _marks(s) else "")
            + ";"
            for s in steps
        ]
        lines.append("}")
        return "\n".join(lines)
    if format != "text":
        raise ValueError(f"format={format!r}: give 'text', 'mermaid' or 'dot'.")
    lines = [f"flow {flow.name!r}: {len(steps)} steps"]
    for i in topological_order(plan):
        s = steps[i]
        takes = [n for n, _ in plan.data_deps[i]] + list(plan.step_inputs[i])
        after = [a for a in s.after if a not in takes]
        policy = (
            [
                f"{k}={v}"
                for k, v in (("timeout", s.timeout), ("concurrency", s.concurrency))
                if v is not None
            ]
            + (["retry"] if s.retry is not None else [])
            + _marks(s)
        )
        line = f"  {s.name}({', '.join(takes)})"
        if after:
            line += f" after {', '.join(after)}"
        if policy:
            line += f"  [{', '.join(policy)}]"
        lines.append(line)
    return "\n".join(lines)
