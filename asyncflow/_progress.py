"""A live progress bar for batches, drawn by rich, fed by BatchProgress events."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .events import BatchProgress

if TYPE_CHECKING:
    from types import TracebackType

    from .events import Event

__all__ = ["ProgressBar"]


class ProgressBar:
    """An observer that draws one live bar per batch: done of total, failures, rate and ETA.

    Register it on an engine (``Engine(observers=[ProgressBar()])``), or let
    :meth:`Engine.map` add one with ``progress=True`` (the default when standard error is a
    terminal). Use it as a context manager, or call :meth:`close`, to stop the display.

    Args:
        file: where to draw; standard error by default.
        force: draw even when ``file`` is not a terminal.
    """

    def __init__(self, file: TextIO | None = None, *, force: bool = False) -> None:
        console = Console(file=file or sys.stderr, force_terminal=force or None)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._running = False

    def __call__(self, event: Event, /) -> None:
        """Update the bar of the event's batch; other events are ignored."""
        if not isinstance(event, BatchProgress):
            return
        if not self._running:
            self._progress.start()
            self._running = True
        task = self._tasks.get(event.batch)
        if task is None:
            task = self._tasks[event.batch] = self._progress.add_task(
                event.batch, total=event.total, detail=""
            )
        detail = (
            f"ok {event.succeeded} (restored {event.restored}) · failed {event.failed} · "
            f"in flight {event.in_flight} · {event.rate:,.0f}/s"
        )
        self._progress.update(task, completed=event.done, total=event.total, detail=detail)
        if event.finished:
            self._progress.refresh()
            del self._tasks[event.batch]
            if not self._tasks:
                self.close()

    def close(self) -> None:
        """Stop drawing; the last state stays on screen."""
        if self._running:
            self._progress.stop()
            self._running = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
