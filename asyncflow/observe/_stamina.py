"""Keeps stamina's own retry line for asyncflow's retries off the console.

stamina logs every scheduled retry to the ``stamina`` logger at WARNING, which Python's
last-resort handler prints even when an application configured no logging: a bare
``stamina.retry_scheduled`` line over the progress bar that names no step, error or wait. Its
hooks are process-global, so switching them off would silence every other user of stamina in
the process too. Instead :data:`quiet_stamina`, a filter on the ``stamina`` logger, drops only
the records about asyncflow's own attempts (the redacted :class:`~asyncflow._retry.AttemptFailed`
carrier stamina sees); :class:`~asyncflow.observe.LogObserver` logs those retries with the step,
attempt, error and wait. It is installed when :mod:`asyncflow` is imported. To get stamina's line
back::

    logging.getLogger("stamina").removeFilter(asyncflow.observe.quiet_stamina)
"""

from __future__ import annotations

import logging

__all__ = ["install", "quiet_stamina"]

#: What the ``stamina.caused_by`` field of a record about one of our attempts starts with.
_CARRIER = "AttemptFailed("


class _QuietStamina(logging.Filter):
    """Drops stamina's records about asyncflow's attempts; lets every other record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        caused_by = record.__dict__.get("stamina.caused_by")
        return not (isinstance(caused_by, str) and caused_by.startswith(_CARRIER))

    def __repr__(self) -> str:
        return "asyncflow.observe.quiet_stamina"


#: The filter on the ``stamina`` logger; see the module docstring.
quiet_stamina: logging.Filter = _QuietStamina()


def install() -> None:
    """Add :data:`quiet_stamina` to the ``stamina`` logger (adding it twice is a no-op)."""
    logging.getLogger("stamina").addFilter(quiet_stamina)
