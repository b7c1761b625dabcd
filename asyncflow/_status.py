"""States and modes as enums: a leaf module, importing nothing from the package.

Events, results, the HTTP stack and stores all name these, so they sit below all of them.
Every one is an ``enum.StrEnum``: members compare equal to their values (``status ==
"succeeded"``), print as them, and go into JSON as them, the same for all four.
"""

from __future__ import annotations

import enum

__all__ = ["CircuitState", "OnOpen", "RunStatus", "StepStatus"]


class CircuitState(enum.StrEnum):
    """The state of a host's circuit. A ``StrEnum``: members compare equal to their values."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class OnOpen(enum.StrEnum):
    """What a request does when its host's circuit is open."""

    #: fail at once with :class:`~asyncflow.CircuitOpenError` (not retried by default).
    FAIL = "fail"
    #: wait until the circuit admits it, bounded by the caller's deadline (the step's attempt
    #: timeout, itself bounded by its retry timeout), without spending attempts.
    WAIT = "wait"


class StepStatus(enum.StrEnum):
    """What happened to one step of a run."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: not run, because a step it depends on failed (or the run failed fast).
    SKIPPED = "skipped"
    #: not run, because a valid checkpoint of its output was loaded.
    RESTORED = "restored"
    #: was running when a fail-fast run cancelled it.
    CANCELLED = "cancelled"
    #: not run, because its ``when=`` condition was false, or it needs the output of a step
    #: that was not taken. Not a failure: the run can still succeed.
    NOT_TAKEN = "not-taken"


class RunStatus(enum.StrEnum):
    """How a run ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
