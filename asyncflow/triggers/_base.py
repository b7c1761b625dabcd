"""The trigger contract: a Trigger turns outside events into admissions through its Intake."""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from anyio.abc import TaskStatus

    from asyncflow._flow import Flow
    from asyncflow.stores import CheckpointStore

__all__ = ["Admission", "Intake", "Outcome", "Route", "Trigger", "event_run_id"]

#: A trigger's name: the first part of each run id it makes, so a plain, short name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=,~-]{0,79}")
#: The reason of a REJECTED admission while the service stops (not a full backlog).
STOPPING = "the service is stopping"
#: An event key that can stand in a run id as it is; any other key is replaced by its digest.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.+=,~-]{1,100}")


class Outcome(enum.StrEnum):
    """What became of one event offered for admission."""

    ADMITTED = "admitted"  #: a new run was recorded and will start
    DUPLICATE = "duplicate"  #: the event's run already exists: acknowledge, nothing more
    REJECTED = "rejected"  #: not now (backlog full, shutting down): the source should retry
    INVALID = "invalid"  #: the event cannot become a run (bad inputs): retrying will not help


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to one offered event.

    Attributes:
        outcome: what happened (an :class:`Outcome`).
        run_id: the event's run id (also for a duplicate, and for a rejected or invalid event).
        reason: why it was rejected or invalid; empty otherwise.
    """

    outcome: Outcome
    run_id: str
    reason: str = ""

    @property
    def acknowledge(self) -> bool:
        """Whether the source may forget the event: it was admitted now or before."""
        return self.outcome in (Outcome.ADMITTED, Outcome.DUPLICATE)


def event_run_id(trigger: str, key: str) -> str:
    """The run id of event ``key`` of trigger ``trigger``: the same event, the same run.

    A key that is a plain short name is kept as it is (``cron@20261201T0930Z``); any other (a
    path, a long delivery id) is replaced by the first 32 hex digits of its SHA-256.
    """
    if not _PLAIN_KEY.fullmatch(key):
        key = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{trigger}@{key}"


class Intake(Protocol):
    """What a :class:`Trigger` admits its events through (one per trigger, from the Service)."""

    async def admit(
        self,
        key: str,
        inputs: Mapping[str, object],
        /,
        *,
        wait: bool = True,
        traceparent: str | None = None,
    ) -> Admission:
        """Offer one event: record its run in the store if absent, then start it.

        Acknowledge the event at the source only when the answer's ``acknowledge`` is true:
        then it is durably admitted (now or by an earlier delivery). ``wait=False`` answers
        :attr:`Outcome.REJECTED` at once when the trigger or the service has no free slot;
        ``wait=True`` waits for one (a consumer stops reading meanwhile). ``traceparent``
        (W3C trace context, e.g. a request's header) makes the run's trace a child of it.

        Raises:
            CheckpointError: the store failed; nothing was admitted (offer it again later).
        """

    def refuse(self, key: str, outcome: Outcome, reason: str, /) -> Admission:
        """Report an event refused before admission, so it is counted and observed too.

        REJECTED for a bad signature, INVALID for a malformed body.
        """

    @property
    def accepting(self) -> bool:
        """False once the service is stopping (or not started): stop taking events."""

    def report_lag(self, run_id: str, scheduled: float, lag: float, /) -> None:
        """Report that run ``run_id`` of a schedule was admitted ``lag`` s after its instant."""

    @property
    def store(self) -> CheckpointStore:
        """The engine's store: where a trigger may keep its own state (a watermark)."""

    @property
    def in_flight(self) -> int:
        """This trigger's runs started by this service and not finished."""

    async def wait_idle(self) -> None:
        """Return once none of this trigger's runs is in flight in this service."""


#: One ASGI route of a trigger: (path, methods, ASGI app) that the Service's app serves.
Route = tuple[str, tuple[str, ...], "Callable[..., object]"]


class Trigger:
    """Base class of triggers: where runs of one flow come from.

    A subclass sets what it needs in ``__init__`` and overrides :meth:`run` (a loop reading
    its source) and/or :meth:`routes` (HTTP endpoints in the Service's app). Each event goes
    through ``intake.admit(key, inputs)``; acknowledge it at the source only after that.

    Args:
        flow: the flow each event runs.
        name: the trigger's name, the first part of its run ids (``name@key``). Two triggers
            of one service need different names.
        max_in_flight: the most runs of this trigger admitted and not finished; the service's
            own bound applies as well. ``None``: only the service's.
    """

    kind = "trigger"

    def __init__(self, flow: Flow, *, name: str, max_in_flight: int | None = None) -> None:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"Trigger name {name!r} cannot start a run id: use 1 to 80 of A-Z a-z 0-9 "
                f"_ . + = , ~ -, starting with a letter or digit (give name=...)."
            )
        if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
            raise ValueError(
                f"max_in_flight={max_in_flight!r}: give a whole number of at least 1, or None."
            )
        self.flow = flow
        self.name = name
        self.max_in_flight = max_in_flight

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, flow={self.flow.name!r})"

    def run_id(self, key: str, /) -> str:
        """The run id of this trigger's event ``key``."""
        return event_run_id(self.name, key)

    def routes(self, intake: Intake, /) -> Sequence[Route]:
        """HTTP routes to serve in the Service's app, admitting through ``intake``; none here."""
        return ()

    async def run(self, intake: Intake, /, *, task_status: TaskStatus[None]) -> None:
        """Read the source and admit its events until cancelled; by default, nothing to read.

        Call ``task_status.started()`` once the trigger is ready (a listening socket, a first
        scan done). Cancellation is how the Service stops it.
        """
        task_status.started()
        await anyio.sleep_forever()


def default_name(kind: str, detail: str) -> str:
    """A trigger name from its kind and what it watches: ``webhook-documents``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+=,~-]+", "-", detail).strip("-._")
    return f"{kind}-{cleaned}"[:80].rstrip("-") if cleaned else kind
