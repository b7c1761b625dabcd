"""Retention: delete the runs that finished before a time, from any store.

A store keeps every run until it is deleted (FileStore: one file per run). :func:`prune_runs`
is ``list_runs`` and ``delete_run`` over the finished runs older than a time, for a cron job or
``asyncflow store prune``; runs not finished (pending, running, or a run whose process died) are
never deleted by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from asyncflow._errors import CheckpointError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._base import CheckpointStore

__all__ = ["FINISHED", "Pruned", "prune_runs"]

#: The statuses of finished runs: the ones :func:`prune_runs` deletes.
FINISHED = ("succeeded", "failed")
#: The flow triggers keep their state under (a Cron's watermark): never pruned unless named.
TRIGGER_STATE_FLOW = "asyncflow.trigger-state"


@dataclass(frozen=True, slots=True)
class Pruned:
    """What :func:`prune_runs` did.

    Attributes:
        deleted: the run ids deleted (with ``dry_run``, those that would be).
        kept: ``(run id, reason)`` of matching runs the store refused to delete now (FileStore:
            the run is still in the journal of an engine that is open); prune again later.
    """

    deleted: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()


async def prune_runs(
    store: CheckpointStore,
    /,
    *,
    finished_before: datetime,
    statuses: Iterable[str] = FINISHED,
    flow: str | None = None,
    dry_run: bool = False,
) -> Pruned:
    """Delete the runs of an open store that finished (ended) before ``finished_before``.

    A run matches when its manifest's status is one of ``statuses`` (finished ones only) and
    its last update, the time it ended, is before ``finished_before``; with ``flow``, only that
    flow's runs. Trigger state (flow ``asyncflow.trigger-state``) is left alone unless ``flow``
    names it. The matching runs are listed first, then deleted one by one.

    Raises:
        ValueError: ``finished_before`` has no time zone, or a status is not a finished one.
        CheckpointError: the store is not open, or cannot be listed or written.
    """
    if finished_before.tzinfo is None or finished_before.utcoffset() is None:
        raise ValueError(
            f"finished_before={finished_before!r} has no time zone: give an aware time, e.g. "
            f"datetime.now(UTC) - timedelta(days=30)."
        )
    wanted = tuple(statuses)
    if not wanted or any(s not in FINISHED for s in wanted):
        raise ValueError(
            f"statuses={wanted!r}: prune deletes finished runs only; give some of {FINISHED!r}."
        )
    matching: list[str] = []
    async for info in store.list_runs(flow=flow):
        if info.status not in wanted or (flow is None and info.flow == TRIGGER_STATE_FLOW):
            continue
        ended = _time(info.updated_at)
        if ended is not None and ended < finished_before:  # an unreadable time: kept
            matching.append(info.run_id)
    if dry_run:
        return Pruned(deleted=tuple(matching))
    deleted: list[str] = []
    kept: list[tuple[str, str]] = []
    for run_id in matching:
        try:
            await store.delete_run(run_id)
        except CheckpointError as exc:
            kept.append((run_id, str(exc)))
        else:
            deleted.append(run_id)
    return Pruned(tuple(deleted), tuple(kept))


def _time(text: str) -> datetime | None:
    """A manifest's ISO 8601 time (one without a zone is UTC); ``None`` when it is not one."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
