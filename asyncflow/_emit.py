"""Emitter: fans each event out to the engine's observers; a failing observer is logged."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .observe._redact import redact_urls

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .events import Event, Observer

__all__ = ["Emitter"]

logger = logging.getLogger("asyncflow")


class Emitter:
    """Calls each observer with each event; a failing observer is logged, never raised."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self._observers = list(observers)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def add(self, observer: Observer) -> None:
        """Register another observer."""
        self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        """Unregister an observer."""
        self._observers.remove(observer)

    def __call__(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                # The event's error may hold a URL with a key in it: the line never does.
                logger.warning(
                    "observer %r failed on %s", observer, redact_urls(repr(event)), exc_info=True
                )
