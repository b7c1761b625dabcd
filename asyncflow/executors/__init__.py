"""Executors: where :meth:`Engine.map <asyncflow.Engine.map>` runs its runs.

By default a batch runs in the engine's own process. An executor runs them elsewhere:
:class:`asyncflow.executors.dask.DaskExecutor` (extra ``[dask]``) ships each run to a Dask worker,
where one long-lived engine per worker runs it::

    batch = engine.map(flow, inputs, executor=DaskExecutor(client))

The batch is the same :class:`~asyncflow.Batch` either way: results in finish order, the failure
budget, progress and events. An executor is anything with the two methods of :class:`Executor`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from asyncflow._batch import Runner
    from asyncflow._codec import Codec
    from asyncflow._flow import Flow

__all__ = ["Executor"]


class Executor(Protocol):
    """What :meth:`Engine.map <asyncflow.Engine.map>` needs to run a batch somewhere else."""

    def runner(self, local: Runner, flow: Flow, /, *, codec: Codec | None) -> Runner:
        """A runner for a batch of ``flow``, built on the engine's own ``local`` runner.

        ``local`` gives the task group the batch lives in and the engine's observers;
        ``codec`` is the engine's store's (``None`` without a store), which encodes the inputs
        shipped.

        Raises:
            FlowRefError: ``flow`` cannot be named from another process.
        """

    def window(self) -> int:
        """How many runs it takes at once: the batch's concurrency when none is given."""
