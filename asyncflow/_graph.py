"""Flow, Step and Context: the definition of a workflow, validated, with no I/O.

A step's parameters say what it needs. A parameter named after another step receives that
step's output; a parameter annotated :class:`Context` receives the step context; every other
parameter is a run input. ``_graph`` never imports the scheduler.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._errors import FlowDefinitionError, RunInputError
from ._fingerprint import UnstableFingerprintError, code_fingerprint

if TYPE_CHECKING:
    import httpx

    from ._result import RunResult
    from ._retry import Retry

__all__ = ["Context", "Flow", "Step"]

StepFn = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=StepFn)

#: Keyword arguments of Engine.run that are not run inputs.
RESERVED_INPUTS = frozenset({"run_id", "fail_fast"})


class Context:
    """What a step knows about the run it is part of. Take it as a parameter annotated ``Context``.

    Attributes:
        run_id: the run's id.
        step: the step's name.
        attempt: the attempt number, from 1.
        http: the engine's HTTP client. Requests through it pass the host's concurrency gate and
            circuit breaker. ``None`` only outside an engine.
    """

    __slots__ = ("attempt", "http", "run_id", "step")

    def __init__(
        self, *, run_id: str, step: str, attempt: int = 1, http: httpx.AsyncClient | None = None
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self.http = http

    def __repr__(self) -> str:
        return f"Context(run_id={self.run_id!r}, step={self.step!r}, attempt={self.attempt})"


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a step function, as the flow sees it."""

    name: str
    has_default: bool
    is_context: bool


@dataclass(frozen=True, slots=True)
class Step:
    """A step of a flow: an async function and its policies. Built by :meth:`Flow.step`."""

    name: str
    fn: StepFn
    params: tuple[Param, ...]
    after: tuple[str, ...] = ()
    timeout: float | None = None
    concurrency: int | None = None
    retry: Retry | None = None
    code_fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated flow, compiled for the scheduler: steps by index, in a topological order."""

    flow: str
    fingerprint: str
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


def _is_context_annotation(annotation: object) -> bool:
    if annotation is Context:
        return True
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1].strip("'\"") in {"Context", "Context | None"}
    return False


class Flow:
    """A workflow definition: named async steps and their dependencies.

    A Flow does no I/O. It is validated when first run or by :meth:`validate`, which raises
    :class:`FlowDefinitionError` naming the step at fault and what to do.

    Example::

        flow = Flow("documents")

        @flow.step
        async def ingest(path: str) -> str: ...

        @flow.step(timeout=30.0)
        async def enrich(ingest: str) -> dict: ...
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise FlowDefinitionError(
                "A flow needs a non-empty name: Flow('documents').", flow=str(name)
            )
        self.name = name
        self._steps: dict[str, Step] = {}
        self._plan: Plan | None = None

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps={list(self._steps)})"

    @property
    def steps(self) -> Mapping[str, Step]:
        """The steps, by name, in the order they were added."""
        return dict(self._steps)

    @overload
    def step(self, fn: F, /) -> F: ...

    @overload
    def step(
        self,
        /,
        *,
        name: str | None = None,
        after: Iterable[str | Callable[..., object]] = (),
        timeout: float | None = None,
        concurrency: int | None = None,
        retry: Retry | None = None,
    ) -> Callable[[F], F]: ...

    def step(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        after: Iterable[str | Callable[..., object]] = (),
        timeout: float | None = None,
        concurrency: int | None = None,
        retry: Retry | None = None,
    ) -> F | Callable[[F], F]:
        """Add an async function as a step. Use bare (``@flow.step``) or with options.

        Args:
            fn: the step function, when used bare.
            name: the step's name; defaults to the function's name.
            after: steps (names or functions) this one runs after without taking their output.
            timeout: seconds one attempt may take; past it the attempt fails with
                :class:`StepTimeoutError`.
            concurrency: how many runs of this step may be in flight at once, across every run
                of the engine.
            retry: the retry policy for this step.

        Returns:
            The function itself, unchanged, so it can still be called directly.
        """
        after_names = tuple(
            a if isinstance(a, str) else getattr(a, "__name__", repr(a)) for a in after
        )

        def add(f: F) -> F:
            self._add(
                f,
                name=name,
                after=after_names,
                timeout=timeout,
                concurrency=concurrency,
                retry=retry,
            )
            return f

        return add(fn) if fn is not None else add

    def _add(
        self,
        fn: StepFn,
        *,
        name: str | None,
        after: tuple[str, ...],
        timeout: float | None,
        concurrency: int | None,
        retry: Retry | None,
    ) -> None:
        step_name = name or getattr(fn, "__name__", None)
        if not step_name or not isinstance(step_name, str):
            raise FlowDefinitionError(
                f"Cannot name the step {fn!r}; pass name= to flow.step.", flow=self.name
            )
        if not inspect.iscoroutinefunction(fn):
            kind = (
                "an async generator" if inspect.isasyncgenfunction(fn) else "not an async function"
            )
            raise FlowDefinitionError(
                f"Step {step_name!r} is {kind}. Steps are coroutines: "
                f"declare it with 'async def {step_name}(...)'.",
                flow=self.name,
                step=step_name,
            )
        if step_name in self._steps:
            raise FlowDefinitionError(
                f"Flow {self.name!r} already has a step named {step_name!r}. "
                f"Rename one of them or pass name= to flow.step.",
                flow=self.name,
                step=step_name,
            )
        if timeout is not None and not timeout > 0:
            raise FlowDefinitionError(
                f"Step {step_name!r} has timeout={timeout!r}; give a positive number of seconds "
                f"or None for no timeout.",
                flow=self.name,
                step=step_name,
            )
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise FlowDefinitionError(
                f"Step {step_name!r} has concurrency={concurrency!r}; give a whole number of at "
                f"least 1, or None for no per-step limit.",
                flow=self.name,
                step=step_name,
            )
        try:
            fingerprint = code_fingerprint(fn)
        except UnstableFingerprintError as exc:
            raise FlowDefinitionError(
                f"Step {step_name!r} cannot be fingerprinted the same way in every process, so "
                f"its checkpoints would never be reused: {exc}. Bind only plain values (numbers, "
                f"text, tuples, lists, dicts, sets, enums, dataclasses, functions), give its "
                f"class a __repr__ that shows its state, or let the step reach the object (a "
                f"module global, a closure) instead of binding it.",
                flow=self.name,
                step=step_name,
            ) from exc
        self._steps[step_name] = Step(
            name=step_name,
            fn=fn,
            params=self._params(step_name, fn),
            after=after,
            timeout=timeout,
            concurrency=concurrency,
            retry=retry,
            code_fingerprint=fingerprint,
        )
        self._plan = None

    def _params(self, step_name: str, fn: StepFn) -> tuple[Param, ...]:
        try:
            sig = inspect.signature(fn, eval_str=True)
        except (NameError, TypeError, SyntaxError):
            sig = inspect.signature(fn)
        params = []
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise FlowDefinitionError(
                    f"Step {step_name!r} has parameter {p}: steps receive their inputs by name, so "
                    f"*args, **kwargs and positional-only parameters are not allowed. "
                    f"Name each input as a parameter.",
                    flow=self.name,
                    step=step_name,
                )
            params.append(
                Param(
                    name=p.name,
                    has_default=p.default is not p.empty,
                    is_context=_is_context_annotation(p.annotation),
                )
            )
        return tuple(params)

    def draw(self, format: str = "text") -> str:
        """A picture of the flow: its steps, what each takes and what it waits for.

        Args:
            format: ``"text"`` (one line per step, in a topological order), ``"mermaid"``
                (a flowchart for Markdown renderers) or ``"dot"`` (Graphviz).

        Raises:
            FlowDefinitionError: the flow is not valid.
            ValueError: an unknown format.
        """
        plan = self.validate()
        steps = plan.steps
        data = {(src, j) for j, deps in enumerate(plan.data_deps) for _, src in deps}
        edges = [
            (steps[i].name, steps[j].name, (i, j) in data)
            for i, deps in enumerate(plan.dependents)
            for j in deps
        ]
        if format == "mermaid":
            lines = ["flowchart LR"]
            lines += [f"    {s.name}[{s.name}]" for s in steps]
            lines += [f"    {a} {'-->' if data else '-.->'} {b}" for a, b, data in edges]
            return "\n".join(lines)
        if format == "dot":
            lines = [f"digraph {json.dumps(self.name)} {{", "    rankdir=LR;"]
            lines += [
                f"    {json.dumps(a)} -> {json.dumps(b)}{'' if data else ' [style=dashed]'};"
                for a, b, data in edges
            ]
            lines += [f"    {json.dumps(s.name)};" for s in steps]
            lines.append("}")
            return "\n".join(lines)
        if format != "text":
            raise ValueError(f"format={format!r}: give 'text', 'mermaid' or 'dot'.")
        lines = [f"flow {self.name!r}: {len(steps)} steps"]
        for i in _topological(plan):
            s = steps[i]
            takes = [n for n, _ in plan.data_deps[i]] + list(plan.step_inputs[i])
            after = [a for a in s.after if a not in takes]
            policy = [
                f"{k}={v}"
                for k, v in (("timeout", s.timeout), ("concurrency", s.concurrency))
                if v is not None
            ] + (["retry"] if s.retry is not None else [])
            line = f"  {s.name}({', '.join(takes)})"
            if after:
                line += f" after {', '.join(after)}"
            if policy:
                line += f"  [{', '.join(policy)}]"
            lines.append(line)
        return "\n".join(lines)

    def validate(self) -> Plan:
        """Check the flow and compile it for the scheduler.

        Raises:
            FlowDefinitionError: no steps, an unknown ``after=`` step, a cycle, or a run input
                with a reserved name.
        """
        if self._plan is not None:
            return self._plan
        steps = list(self._steps.values())
        if not steps:
            raise FlowDefinitionError(
                f"Flow {self.name!r} has no steps. Add one with @flow.step.", flow=self.name
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
                        f"Step {s.name!r} takes a parameter named after itself. "
                        f"Rename the parameter.",
                        flow=self.name,
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
                            flow=self.name,
                            step=s.name,
                        )
                    ins.append(p.name)
                    (optional if p.has_default else required).add(p.name)
            for a in s.after:
                if a not in index:
                    close = difflib.get_close_matches(a, list(index), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise FlowDefinitionError(
                        f"Step {s.name!r} runs after {a!r}, which is not in flow "
                        f"{self.name!r}{hint}. Add it with @flow.step or drop it from after=.",
                        flow=self.name,
                        step=s.name,
                    )
                if index[a] not in deps:
                    deps.append(index[a])
            waits_for.append(deps)
            data_deps.append(tuple(data))
            step_inputs.append(tuple(ins))
            context_param.append(ctx)
        optional -= required
        self._check_acyclic(steps, waits_for)
        dependents: list[list[int]] = [[] for _ in steps]
        for i, deps in enumerate(waits_for):
            for d in deps:
                dependents[d].append(i)
        digest = hashlib.blake2b(digest_size=12)
        for s, deps in zip(steps, waits_for, strict=True):
            digest.update(
                f"{s.name}:{s.code_fingerprint}:{sorted(steps[d].name for d in deps)};".encode()
            )
        self._plan = Plan(
            flow=self.name,
            fingerprint=digest.hexdigest(),
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
            is_chain=sum(1 for d in waits_for if not d) == 1
            and all(len(d) <= 1 for d in dependents),
        )
        return self._plan

    def _check_acyclic(self, steps: list[Step], waits_for: list[list[int]]) -> None:
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
                        f"Flow {self.name!r} has a cycle: {text}. A step cannot depend on its own "
                        f"output; break the cycle by removing one of these dependencies.",
                        flow=self.name,
                        step=steps[nxt].name,
                    )
                elif color[nxt] == white:
                    color[nxt] = grey
                    path.append(nxt)
                    iters.append(iter(waits_for[nxt]))

    async def run(self, /, **inputs: Any) -> RunResult:
        """Run this flow once in a temporary :class:`Engine` with default settings.

        ``run_id=`` and ``fail_fast=`` are passed to :meth:`Engine.run`; the rest are run inputs.
        """
        # Imported here: the definition layer does not depend on the engine at import time.
        from ._engine import Engine

        async with Engine() as engine:
            return await engine.run(self, **inputs)


def _topological(plan: Plan) -> list[int]:
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
