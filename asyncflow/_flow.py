"""Flow and Step: the definition of a workflow, validated, with no I/O.

A step's parameters say what it needs. A parameter named after another step receives that
step's output; a parameter annotated :class:`Context` receives the step context; every other
parameter is a run input. The definition layer (this module, ``_plan``, ``_draw``,
``_context``) never imports the runtime: an :class:`~asyncflow.Engine` runs a flow.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._context import Context
from ._draw import draw
from ._errors import FlowDefinitionError
from ._identity import UnstableFingerprintError, code_fingerprint, digest, lazy_code_fingerprint
from ._plan import compile_plan

if TYPE_CHECKING:
    from ._plan import Plan
    from ._retry import Retry

__all__ = ["Flow", "Step"]

StepFn = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=StepFn)


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
    #: the code fingerprint, or how to take it at first use (see :attr:`code_fingerprint`).
    fingerprint_of: str | Callable[[], str] = field(default="", repr=False, compare=False)
    #: the data dependency (a step name) whose output this step maps over, one run per item.
    map_over: str | None = None
    #: a predicate on the step's inputs; the step runs only when it returns true.
    when: Callable[..., object] | None = None
    #: the parameters ``when`` takes, all among the step's own.
    when_params: tuple[str, ...] = ()
    #: the step's declared version (``flow.step(version=...)``), part of its fingerprint
    version: str | None = None

    @property
    def code_fingerprint(self) -> str:
        """A digest of the step's code (see ``_identity``), taken at first use and kept.

        Raises:
            FlowDefinitionError: the step's source file changed since it was defined and its
                code binds a value with no stable text.
        """
        fp = self.fingerprint_of
        if not isinstance(fp, str):
            fp = fp()
            object.__setattr__(self, "fingerprint_of", fp)  # frozen: set once, as a cache
        return fp


def _checked(flow: str, step: str, take: Callable[[], str]) -> str:
    """A step's code fingerprint; an unstable one is a :class:`FlowDefinitionError`."""
    try:
        return take()
    except UnstableFingerprintError as exc:
        raise FlowDefinitionError(
            f"Step {step!r} cannot be fingerprinted the same way in every process, so "
            f"its checkpoints would never be reused: {exc}. Bind only plain values (numbers, "
            f"text, tuples, lists, dicts, sets, enums, dataclasses, functions), give its "
            f"class a __repr__ that shows its state, or let the step reach the object (a "
            f"module global, a closure) instead of binding it.",
            flow=flow,
            step=step,
        ) from exc


_CO_VARARGS, _CO_VARKEYWORDS = inspect.CO_VARARGS, inspect.CO_VARKEYWORDS


@functools.lru_cache(maxsize=1024)
def _compiled(annotation: str) -> types.CodeType:
    return compile(annotation, "<annotation>", "eval")


def _plain_params(fn: object) -> tuple[Param, ...] | None:
    """The parameters of a plain function, read off its code as ``inspect.signature`` would.

    ``inspect.signature(fn, eval_str=True)`` costs ~20 us a step; this ~3. ``None`` for anything
    else (a wrapper, a partial, a callable object, ``*args``, ``**kwargs`` or positional-only
    parameters, whose errors and signatures the slow path words).
    """
    if type(fn) is not types.FunctionType or hasattr(fn, "__wrapped__"):
        return None
    code = fn.__code__
    if code.co_flags & (_CO_VARARGS | _CO_VARKEYWORDS) or code.co_posonlyargcount:
        return None
    if "__signature__" in fn.__dict__:
        return None
    n_pos, n_kw = code.co_argcount, code.co_kwonlyargcount
    names = code.co_varnames[: n_pos + n_kw]
    first_default = n_pos - len(fn.__defaults__ or ())
    kwdefaults = fn.__kwdefaults__ or {}
    annotations = fn.__annotations__
    if any(type(v) is str for v in annotations.values()):
        try:
            # As eval_str=True does: every string annotation evaluated, or (one fails) none.
            annotations = {
                k: eval(_compiled(v), fn.__globals__) if isinstance(v, str) else v
                for k, v in annotations.items()
            }
        except (NameError, TypeError, SyntaxError):
            pass
        except Exception:
            return None
    return tuple(
        _param(
            name,
            (i >= first_default) if i < n_pos else name in kwdefaults,
            _is_context_annotation(annotations.get(name)),
        )
        for i, name in enumerate(names)
    )


@functools.lru_cache(maxsize=4096)
def _param(name: str, has_default: bool, is_context: bool) -> Param:
    """Params are values: steps with alike parameters share them."""
    return Param(name, has_default, is_context)


def _shaped(
    flow: str,
    step: str,
    base: str | Callable[[], str],
    map_over: str | None,
    when: Callable[..., object] | None,
) -> str:
    """The code fingerprint of a step with ``map_over=`` or ``when=``: its own, and theirs."""
    code = base if isinstance(base, str) else base()
    when_code = (
        "" if when is None else _checked(flow, step, functools.partial(code_fingerprint, when))
    )
    return digest(f"{code};map_over={map_over!r};when={when_code}")[:24]


def _step_name(step: str | Callable[..., object]) -> str:
    """A step named by its name or by its function."""
    return step if isinstance(step, str) else getattr(step, "__name__", repr(step))


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
        #: The compiled plan, made and cached by :func:`compile_plan`; reset by every new step.
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
        map_over: str | Callable[..., object] | None = None,
        when: Callable[..., object] | None = None,
        version: str | None = None,
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
        map_over: str | Callable[..., object] | None = None,
        when: Callable[..., object] | None = None,
        version: str | None = None,
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
            retry: the retry policy for this step (for a mapped step: of each item).
            map_over: a step (its name or function) whose output, an iterable, this step maps
                over: the parameter named after it receives one item, the step runs once per
                item (each item retried, timed out and checkpointed on its own, at most
                ``concurrency`` at once, 100 by default), and its output is the list of the
                items' outputs, in input order.
            when: a predicate on the step's inputs: a plain function whose parameters are some
                of the step's (dependency outputs, run inputs). The step runs only when it
                returns true; otherwise it is :attr:`~asyncflow.StepStatus.NOT_TAKEN`, and so
                is every step that needs its output (one with a default for that parameter
                runs with the default). The decision is checkpointed with the run.
            version: a label for the step's logic, part of its fingerprint: change it (``"2"``)
                when something the code fingerprint does not see changed (a helper the step
                calls, a module constant, a model or a prompt file), and the step's old
                checkpoints stop matching. Leaving it out keeps today's checkpoints valid.

        Returns:
            The function itself, unchanged, so it can still be called directly.
        """
        after_names = tuple(_step_name(a) for a in after)
        map_name = None if map_over is None else _step_name(map_over)

        def add(f: F) -> F:
            self._add(
                f,
                name=name,
                after=after_names,
                timeout=timeout,
                concurrency=concurrency,
                retry=retry,
                map_over=map_name,
                when=when,
                version=version,
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
        map_over: str | None = None,
        when: Callable[..., object] | None = None,
        version: str | None = None,
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
        params = self._params(step_name, fn)
        when_params = self._when_params(step_name, when, params)
        if version is not None and (not isinstance(version, str) or not version):
            raise FlowDefinitionError(
                f"Step {step_name!r} has version={version!r}; give a non-empty string such as "
                f"version='2', or leave it out.",
                flow=self.name,
                step=step_name,
            )
        lazy = lazy_code_fingerprint(fn)
        fingerprint: str | Callable[[], str] = (
            _checked(self.name, step_name, functools.partial(code_fingerprint, fn))
            if lazy is None
            else functools.partial(_checked, self.name, step_name, lazy)
        )
        if map_over is not None or when is not None:
            # What decides whether and how often the step runs is part of what it runs.
            fingerprint = functools.partial(
                _shaped, self.name, step_name, fingerprint, map_over, when
            )
        self._steps[step_name] = Step(
            name=step_name,
            fn=fn,
            params=params,
            after=after,
            timeout=timeout,
            concurrency=concurrency,
            retry=retry,
            fingerprint_of=fingerprint,
            map_over=map_over,
            when=when,
            when_params=when_params,
            version=version,
        )
        self._plan = None

    def _params(self, step_name: str, fn: StepFn) -> tuple[Param, ...]:
        fast = _plain_params(fn)
        if fast is not None:
            return fast
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

    def _when_params(
        self, step_name: str, when: Callable[..., object] | None, params: tuple[Param, ...]
    ) -> tuple[str, ...]:
        """The parameters of a ``when=`` predicate, checked against the step's own."""
        if when is None:
            return ()
        if not callable(when) or inspect.iscoroutinefunction(when):
            raise FlowDefinitionError(
                f"Step {step_name!r} has when={when!r}: give a plain (not async) function of "
                f"some of the step's parameters returning true to run the step, e.g. "
                f"when=lambda kind: kind == 'invoice'.",
                flow=self.name,
                step=step_name,
            )
        try:
            sig = inspect.signature(when)
        except (TypeError, ValueError) as exc:
            raise FlowDefinitionError(
                f"Step {step_name!r}: cannot read the parameters of its when= predicate "
                f"{when!r} ({exc}). Give a plain function.",
                flow=self.name,
                step=step_name,
            ) from exc
        own = [p.name for p in params if not p.is_context]
        names = []
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name not in own:
                raise FlowDefinitionError(
                    f"Step {step_name!r} has a when= predicate taking {p}, which is not one of "
                    f"the step's parameters ({', '.join(own) or 'none'}). The predicate "
                    f"receives the step's inputs by name: take only some of them.",
                    flow=self.name,
                    step=step_name,
                )
            names.append(p.name)
        return tuple(names)

    def draw(self, format: str = "text") -> str:
        """A picture of the flow: its steps, what each takes and what it waits for.

        Args:
            format: ``"text"`` (one line per step, in a topological order), ``"mermaid"``
                (a flowchart for Markdown renderers) or ``"dot"`` (Graphviz).

        Raises:
            FlowDefinitionError: the flow is not valid.
            ValueError: an unknown format.
        """
        return draw(self, format)

    def validate(self) -> None:
        """Check the flow before anything runs; an engine does it on every run too.

        Raises:
            FlowDefinitionError: no steps, an unknown ``after=`` step, a cycle, or a run input
                with a reserved name.
        """
        compile_plan(self)
