"""Triggers: where a :class:`~asyncflow.Service`'s runs come from.

Every trigger admits its events the same way: the event gets a deterministic run id (the
trigger's name and the event's key), the run is recorded with a create-if-absent in the
engine's store, and only then is the source acknowledged. Redeliveries, restarts and several
service processes on one store therefore give one run per event.
"""

from __future__ import annotations

from ._base import Admission, Intake, Outcome, Trigger
from ._cron import Clock, Cron, SystemClock
from ._files import NewFiles
from ._queue import Queue, RedisStream
from ._webhook import Webhook

__all__ = [
    "Admission",
    "Clock",
    "Cron",
    "Intake",
    "NewFiles",
    "Outcome",
    "Queue",
    "RedisStream",
    "SystemClock",
    "Trigger",
    "Webhook",
]

for _name in __all__:
    globals()[_name].__module__ = __name__  # they print as asyncflow.triggers.X
del _name
