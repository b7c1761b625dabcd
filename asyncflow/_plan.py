"""The plan compiler: a Flow checked and compiled for the scheduler, steps by index.

:func:`compile_plan` turns a :class:`~asyncflow.Flow` into a :class:`Plan`: indices, what each
step waits for and what waits for it, the run inputs it takes, a cycle check and a fingerprint
of the whole. It imports nothing of the runtime.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import FlowDefinitionError, RunInputError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._flow import Flow, Step

__all__ = ["RESERVED_INPUTS", "Plan", "compile_plan", "topological_order"]

#: Keyword arguments of Engine.run that are not run inputs.
RESERVED_INPUTS = frozenset({"run_id", "fail_fast", "traceparent"})


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated flow, compiled for the scheduler: steps by index, in a topological order."""

    flow: str
    steps: tuple[Step, ...]
    index: Mapping[str, int]
    #: for each step, the indices of the steps that wait for it (data or after=).
    dependents: tuple[tuple[int, ...], ...]
    #: for each step, how many steps it waits for.
    n_deps: tuple[int, ...]
    #: for each step, (parameter name, source step index) for data dependencies.
    data_deps: tuple[tuple[tuple[str, int], ...], ...]
    #: for each step, the run inputs it takes.
    step_inputs: tuple[tuple[str, ...], ...]
    #: for each step, the name of its Context parameter, if any.
    context_param: tuple[str | None, ...]
    required_inputs: frozenset[str]
    optional_inputs: frozenset[str]
    roots: tuple[int, ...] = field(default=())
    #: one root and at most one dependent per step: at most one step is ever ready.
    is_chain: bool = False
    _fingerprint: list[str] = field(default_factory=list, repr=False, compare=False)
    #: what other modules derive from the plan once and reuse for every run (``_details``).
    derived: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        """A digest of the steps' names, code fingerprints and what each waits for.

        Taken at first use (a run with a store): it reads every step's source.
        """
        if not self._fingerprint:
            waits_for: list[list[str]] = [[] for _ in self.steps]
            for d, after in enumerate(self.dependents):
                for i in after:
                    waits_for[i].append(self.steps[d].name)
            digest = hashlib.blake2b(digest_size=12)
            for s, deps in zip(self.steps, waits_for, strict=True):
                digest.update(f"{s.name}:{s.code_fingerprint}:{sorted(deps)};".encode())
            self._fingerprint.append(digest.hexdigest())
        return self._fingerprint[0]

    def check_inputs(self, inputs: Mapping[str, object]) -> None:
        """Raise :class:`RunInputError` when inputs are missing or unexpected."""
        known = self.required_inputs | self.optional_inputs
        missing = tuple(sorted(self.required_inputs.difference(inputs)))
        unexpected = tuple(sorted(k for k in inputs if k not in known))
        if not missing and not unexpected:
            return
        lines = []
        if missing:
            users = {
                name: [
                    s.name
                    for s, ins in zip(self.steps, self.step_inputs, strict=True)
                    if name in ins
                ]
                for name in missing
            }
            lines.append(
                "missing "
                + ", ".join(f"{n!r} (needed by {', '.join(map(repr, users[n]))})" for n in missing)
            )
        for name in unexpected:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"unexpected input {name!r}{hint}")
        accepted = ", ".join(sorted(known)) or "none"
        raise RunInputError(
            f"Flow {self.flow!r} cannot start: {'; '.join(lines)}. Inputs it takes: {accepted}.",
            missing=missing,
            unexpected=unexpected,
        )


def compile_plan(flow: Flow) -> Plan:
    """Check ``flow`` and compile it for the scheduler, once per change of its steps.

    Raises:
        FlowDefinitionError: no steps, an unknown ``after=`` step, a cycle, or a run input
            with a reserved name.
    """
    plan = flow._plan
    if plan is None:
        plan = flow._plan = _compile(flow)
    return plan


def _compile(flow: Flow) -> Plan:
    name = flow.name
    steps = list(flow.steps.values())
    if not steps:
        raise FlowDefinitionError(
            f"Flow {name!r} has no steps. Add one with @flow.step.", flow=name
        )
    index = {s.name: i for i, s in enumerate(steps)}
    waits_for: list[list[int]] = []
    data_deps: list[tuple[tuple[str, int], ...]] = []
    step_inputs: list[tuple[str, ...]] = []
    context_param: list[str | None] = []
    required: set[str] = set()
    optional: set[str] = set()
    for s in steps:
        deps: list[int] = []
        data: list[tuple[str, int]] = []
        ins: list[str] = []
        ctx: str | None = None
        for p in s.params:
            if p.is_context:
                ctx = p.name
            elif p.name == s.name:
                raise FlowDefinitionError(
                    f"Step {s.name!r} takes a parameter named after itself. Rename the parameter.",
                    flow=name,
                    step=s.name,
                )
            elif p.name in index:
                deps.append(index[p.name])
                data.append((p.name, index[p.name]))
            else:
                if p.name in RESERVED_INPUTS:
                    raise FlowDefinitionError(
                        f"Step {s.name!r} takes a run input named {p.name!r}, which "
                        f"engine.run() reserves. Rename the parameter (the run id is "
                        f"ctx.run_id).",
                        flow=name,
                        step=s.name,
                    )
                ins.append(p.name)
                (optional if p.has_default else required).add(p.name)
        if s.map_over is not None and s.map_over not in {n for n, _ in data}:
            raise FlowDefinitionError(
                f"Step {s.name!r} maps over {s.map_over!r}, which is not one of its "
                f"parameters named after a step of flow {name!r}. Give it a parameter "
                f"{s.map_over!r} (it receives one item) and add a step {s.map_over!r} that "
                f"returns the items, or fix map_over=.",
                flow=name,
                step=s.name,
            )
        for a in s.after:
            if a not in index:
                close = difflib.get_close_matches(a, list(index), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise FlowDefinitionError(
                    f"Step {s.name!r} runs after {a!r}, which is not in flow "
                    f"{name!r}{hint}. Add it with @flow.step or drop it from after=.",
                    flow=name,
                    step=s.name,
                )
            if index[a] not in deps:
                deps.append(index[a])
        waits_for.append(deps)
        data_deps.append(tuple(data))
        step_inputs.append(tuple(ins))
        context_param.append(ctx)
    optional -= required
    _check_acyclic(name, steps, waits_for)
    dependents: list[list[int]] = [[] for _ in steps]
    for i, deps in enumerate(waits_for):
        for d in deps:
            dependents[d].append(i)
    return Plan(
        flow=name,
        steps=tuple(steps),
        index=index,
        dependents=tuple(tuple(d) for d in dependents),
        n_deps=tuple(len(d) for d in waits_for),
        data_deps=tuple(data_deps),
        step_inputs=tuple(step_inputs),
        context_param=tuple(context_param),
        required_inputs=frozenset(required),
        optional_inputs=frozenset(optional),
        roots=tuple(i for i, d in enumerate(waits_for) if not d),
        is_chain=sum(1 for d in waits_for if not d) == 1 and all(len(d) <= 1 for d in dependents),
    )


def _check_acyclic(name: str, steps: list[Step], waits_for: list[list[int]]) -> None:
    white, grey, black = 0, 1, 2
    color = [white] * len(steps)
    for start in range(len(steps)):
        if color[start] != white:
            continue
        # Iterative DFS: a deep chain must not hit the recursion limit.
        path = [start]
        iters = [iter(waits_for[start])]
        color[start] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = black
                iters.pop()
            elif color[nxt] == grey:
                cycle = [*path[path.index(nxt) :], nxt]
                # path runs from dependent to dependency; print in execution order.
                text = " -> ".join(steps[i].name for i in reversed(cycle))
                raise FlowDefinitionError(
                    f"Flow {name!r} has a cycle: {text}. A step cannot depend on its own "
                    f"output; break the cycle by removing one of these dependencies.",
                    flow=name,
                    step=steps[nxt].name,
                )
            elif color[nxt] == white:
                color[nxt] = grey
                path.append(nxt)
                iters.append(iter(waits_for[nxt]))


def topological_order(plan: Plan) -> list[int]:
    """Step indices in an order where every step comes after what it waits for."""
    remaining = list(plan.n_deps)
    ready = list(reversed(plan.roots))
    order: list[int] = []
    while ready:
        i = ready.pop()
        order.append(i)
        for j in plan.dependents[i]:
            remaining[j] -= 1
            if remaining[j] == 0:
                ready.append(j)
    return order
