"""Runs started from inside a step: sub-flows (``ctx.run``) and ``engine.run`` within a step.

A step that waits for another run gives back its slot of the engine's limit while it waits
(:func:`~asyncflow._attempt.slots_lent`) and takes it back after: parents that fill the
engine's limit cannot starve the children they wait for. (Its step's own slot stays held; a
nested run of the same step shares it, see :class:`~asyncflow._attempt.Slots`.) The chain of
run ids from the outermost run is kept in a context variable the child's steps inherit: a run
nested deeper than :data:`MAX_SUBFLOW_DEPTH` is refused with
:class:`~asyncflow.SubflowDepthError` (a flow that calls itself without end stops there), and a
step that would wait for its own run is refused at once rather than wait forever.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from ._attempt import current_run_id, slots_lent
from ._errors import AsyncflowError, SubflowDepthError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._result import RunResult

__all__ = ["MAX_SUBFLOW_DEPTH", "run_nested"]

#: How deep runs may nest (a run started from a step of a run started from a step ...).
MAX_SUBFLOW_DEPTH = 20

#: The run ids from the outermost run to the one whose step is running in this task (empty
#: until a run nests in another).
_CHAIN: ContextVar[tuple[str, ...]] = ContextVar("asyncflow_run_chain", default=())


async def run_nested(
    run_id: str, flow: str, start: Callable[[], Awaitable[RunResult]]
) -> RunResult:
    """``await start()`` (run ``run_id`` of ``flow``) from inside a step, its slot lent out.

    Raises:
        SubflowDepthError: the run would nest deeper than :data:`MAX_SUBFLOW_DEPTH`.
    """
    parent = current_run_id()
    # The outermost run, then each run nested in it down to the one whose step this is.
    chain = _CHAIN.get() or ((parent,) if parent is not None else ())
    shown = " -> ".join((*chain[:3], "...", *chain[-2:]) if len(chain) > 6 else chain)
    if run_id in chain:
        raise AsyncflowError(
            f"Run {run_id!r} cannot wait for itself: the step waiting belongs to it "
            f"({shown} -> {run_id}). Give the sub-flow a run id of its own (ctx.run derives "
            f"one from the parent's)."
        )
    if len(chain) > MAX_SUBFLOW_DEPTH:
        raise SubflowDepthError(
            f"Run {run_id!r} of flow {flow!r} would nest {len(chain)} runs deep in other "
            f"runs, over the limit of {MAX_SUBFLOW_DEPTH} ({shown}). A flow that starts itself "
            f"needs a case that stops: check the condition that ends the recursion.",
            depth=MAX_SUBFLOW_DEPTH,
            chain=(*chain, run_id),
        )
    token = _CHAIN.set((*chain, run_id))
    try:
        async with slots_lent():
            return await start()
    finally:
        _CHAIN.reset(token)
