"""Conditions: a step with ``when=`` runs only when its predicate holds on its inputs.

:func:`decide` evaluates the predicate once, when the step is ready, with the parameters it
names. A false verdict makes the step NOT_TAKEN; with a store the decision, either way, is checkpointed
under the step's fingerprint, so a resumed run restores it instead of asking again (a predicate
that reads the clock or the environment gives the same answer the run already acted on). A
"taken" decision stands until the step's output replaces it. A
predicate that raises, or returns an awaitable, fails the step with an error naming it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from ._attempt import Failed
from ._errors import StepError

if TYPE_CHECKING:
    from ._flow import Step
    from ._scheduler import Run

__all__ = ["decide"]


def _predicate_name(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    code = getattr(fn, "__code__", None)
    if name.endswith("<lambda>") and code is not None:
        return f"the lambda at {code.co_filename}:{code.co_firstlineno}"
    return repr(name)


async def decide(run: Run, i: int, step: Step) -> bool | Failed:
    """Whether step ``i`` runs: its ``when=`` on its inputs; Failed when the predicate fails.

    With a store the decision is saved before it is returned, or read back when it was.
    """
    when = step.when
    assert when is not None
    checkpointing = run.checkpointing
    if checkpointing is not None and checkpointing.decided(i):
        return True  # decided before (a "no" is restored before the step is ever launched)
    kwargs = run.kwargs(i)
    args = {name: kwargs[name] for name in step.when_params if name in kwargs}
    try:
        verdict = when(**args)
        if inspect.isawaitable(verdict):
            if inspect.iscoroutine(verdict):
                verdict.close()
            raise TypeError(
                "it returned an awaitable; when= takes a plain function (compute what it "
                "needs in a step it depends on)"
            )
        taken = bool(verdict)
    except Exception as exc:
        err = StepError(
            f"Step {step.name!r}: its when= predicate {_predicate_name(when)} raised "
            f"{type(exc).__name__}: {exc}. Fix the predicate; the step did not run.",
            step=step.name,
            attempts=0,
        )
        err.__cause__ = exc
        return Failed(err)
    if checkpointing is not None:
        try:
            await checkpointing.save_decision(i, taken)
        except Exception as exc:
            err = StepError(
                f"Step {step.name!r}: could not checkpoint its when= decision: {exc}",
                step=step.name,
                attempts=0,
            )
            err.__cause__ = exc
            return Failed(err)
    return taken
