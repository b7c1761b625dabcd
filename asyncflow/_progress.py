"""A live progress bar for batches, drawn by rich, fed by BatchProgress events.

Log lines and the bar must not fight: while the bar is live, every stream handler of the
``asyncflow`` logger and its ancestors that writes to the bar's file writes through rich's
console instead, so each line is printed above the bar and the bar redrawn below it. The
handlers get their streams back when the bar stops. (Python's last-resort handler writes to
``sys.stderr`` at each call, which rich itself redirects while live.)
"""

from __future__ import annotations

import io
import logging
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
from rich.text import Text

from .events import BatchProgress

if TYPE_CHECKING:
    from types import TracebackType

    from .events import Event

__all__ = ["ProgressBar"]


class _AboveBar(io.TextIOBase):
    """A stream that prints each whole line through a live console: above its bar, unwrapped.

    rich's own ``FileProxy`` wraps lines at the console's width, which breaks a log line in two
    (and its grep); here a long line is left to the terminal to wrap.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            partial, self._partial = self._partial, ""
            self._console.print(Text.from_ansi(partial), soft_wrap=True)


class ProgressBar:
    """An observer that draws one live bar per batch: done of total, failures, rate and ETA.

    Register it on an engine (``Engine(observers=[ProgressBar()])``), or let
    :meth:`Engine.map` add one with ``progress=True`` (the default when standard error is a
    terminal). Use it as a context manager, or call :meth:`close`, to stop the display.
    While it draws, log lines to the same file are printed above the bar (module docstring).

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
        self._console = console
        self._tasks: dict[str, TaskID] = {}
        self._running = False
        self._redirected: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []

    def __call__(self, event: Event, /) -> None:
        """Update the bar of the event's batch; other events are ignored."""
        if not isinstance(event, BatchProgress):
            return
        if not self._running:
            self._progress.start()
            self._running = True
            self._redirect_logs()
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
            self._restore_logs()
            self._progress.stop()
            self._running = False

    def _redirect_logs(self) -> None:
        file = self._console.file
        proxy = _AboveBar(self._console)
        logger: logging.Logger | None = logging.getLogger("asyncflow")
        while logger is not None:
            for handler in logger.handlers:
                # FileHandler is a StreamHandler too, but never on the bar's file.
                if isinstance(handler, logging.StreamHandler) and handler.stream is file:
                    handler.setStream(proxy)
                    self._redirected.append((handler, file))
            logger = logger.parent if logger.propagate else None

    def _restore_logs(self) -> None:
        redirected, self._redirected = self._redirected, []
        for handler, stream in redirected:
            handler.flush()  # a partial line still in the proxy goes out above the bar
            handler.setStream(stream)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
