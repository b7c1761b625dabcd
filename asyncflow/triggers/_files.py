"""NewFiles: each file that appears in a folder, once settled, is admitted once."""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from asyncflow._errors import CheckpointError

from ._base import Intake, Outcome, Trigger, default_name

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from anyio.abc import TaskStatus

    from asyncflow._flow import Flow

__all__ = ["NewFiles"]

logger = logging.getLogger("asyncflow.triggers")

#: A file's identity for admission: its size and modification time, in nanoseconds.
Signature = tuple[int, int]


class NewFiles(Trigger):
    """Runs ``flow`` once for each file matching ``pattern`` that appears in ``folder``.

    A file is admitted once it has *settled*: its size and modification time were seen
    unchanged for ``settle`` seconds, so a file still being written is not taken half-way.
    Its key (hence its run id) is its path relative to the folder, its size and its
    modification time: the same file is admitted once, also across restarts and by several
    services on one folder and one store; a file written again (new size or time) is a new
    event. Files that appeared while the service was down are found by the scan at start.

    Changes are noticed through watchfiles (the ``files`` extra); give ``polling=`` seconds to
    scan on a timer instead (network mounts, where change notifications do not arrive).
    When the runs in flight are at their bound, admissions wait: new files are claimed later.

    Args:
        folder: the folder to watch (it must exist).
        inputs: the run inputs from the file's path; ``{"path": str(path)}`` by default.
        recursive: watch the subfolders too (``pattern`` matches the file name).
    """

    kind = "files"

    def __init__(
        self,
        folder: str | os.PathLike[str],
        flow: Flow,
        *,
        pattern: str = "*",
        inputs: Callable[[Path], Mapping[str, object]] | None = None,
        name: str | None = None,
        settle: float = 1.0,
        polling: float | None = None,
        recursive: bool = False,
        max_in_flight: int | None = None,
    ) -> None:
        if not settle >= 0:
            raise ValueError(f"settle={settle!r}: give the seconds a file must stay unchanged.")
        if polling is not None and not polling > 0:
            raise ValueError(f"polling={polling!r}: give the seconds between scans, or None.")
        self.folder = Path(folder)
        super().__init__(
            flow, name=name or default_name("files", self.folder.name), max_in_flight=max_in_flight
        )
        self.pattern = pattern
        self.settle = settle
        self.polling = polling
        self.recursive = recursive
        self._inputs = inputs

    def key(self, path: Path, signature: Signature) -> str:
        """The event key of ``path`` as it is now: relative path, size, mtime."""
        return f"{path.relative_to(self.folder).as_posix()}:{signature[0]}:{signature[1]}"

    def scan(self) -> dict[Path, Signature]:
        """The matching files and their signatures (blocking: run it in a thread)."""
        found: dict[Path, Signature] = {}
        stack = [self.folder]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if self.recursive and not entry.name.startswith("."):
                            stack.append(Path(entry.path))
                    elif entry.is_file() and fnmatch.fnmatchcase(entry.name, self.pattern):
                        st = entry.stat()
                        found[Path(entry.path)] = (st.st_size, st.st_mtime_ns)
                except FileNotFoundError:  # gone between the listing and the look
                    continue
        return found

    async def run(self, intake: Intake, /, *, task_status: TaskStatus[None]) -> None:
        """Scan at start, then on each change (or timer); admit the files that settled."""
        if not await anyio.Path(self.folder).is_dir():
            raise FileNotFoundError(
                f"NewFiles: {str(self.folder)!r} is not a folder; create it before the service starts."
            )
        settler = Settler(self.settle)
        self._woken = anyio.Event()
        async with anyio.create_task_group() as tg:
            if self.polling is None:
                await tg.start(self._watch)
            task_status.started()
            while True:
                files = await anyio.to_thread.run_sync(self.scan)
                failed = False
                for path, signature in settler.observe(files, anyio.current_time()):
                    inputs = self._inputs(path) if self._inputs is not None else {"path": str(path)}
                    try:
                        admission = await intake.admit(self.key(path, signature), inputs)
                    except CheckpointError:
                        logger.warning(
                            "NewFiles %s: cannot admit %s now", self.name, path, exc_info=True
                        )
                        failed = True
                        break
                    if admission.outcome is not Outcome.REJECTED:
                        settler.claimed(path, signature)  # admitted, duplicate, or never valid
                wait = settler.next_check(anyio.current_time())
                if failed:
                    wait, failed = 1.0, False
                if self.polling is not None:
                    wait = self.polling if wait is None else min(wait, self.polling)
                with anyio.move_on_after(wait if wait is not None else float("inf")):
                    await self._woken.wait()

    _woken: anyio.Event

    async def _watch(self, *, task_status: TaskStatus[None]) -> None:
        from watchfiles import awatch

        stop = anyio.Event()
        task_status.started()
        try:
            async for _ in awatch(
                self.folder,
                watch_filter=None,
                recursive=self.recursive,
                stop_event=stop,
                debounce=50,
                step=10,
                rust_timeout=500,
            ):
                self._woken.set()
                self._woken = anyio.Event()
        finally:
            stop.set()


@dataclass
class _Seen:
    signature: Signature
    since: float  # when this signature was first seen


@dataclass
class Settler:
    """The settle rule over successive scans: ready once unchanged for ``settle`` seconds."""

    settle: float
    _pending: dict[Path, _Seen] = field(default_factory=dict)
    _done: dict[Path, Signature] = field(default_factory=dict)

    def observe(self, files: Mapping[Path, Signature], now: float) -> list[tuple[Path, Signature]]:
        """Take one scan; return the files that have settled and are not claimed yet."""
        ready = []
        for path in [p for p in self._pending if p not in files]:
            del self._pending[path]  # gone before it settled (renamed, deleted)
        for path in [p for p in self._done if p not in files]:
            del self._done[path]
        for path, signature in files.items():
            if self._done.get(path) == signature:
                continue
            seen = self._pending.get(path)
            if seen is None or seen.signature != signature:
                self._pending[path] = _Seen(signature, now)
                if self.settle > 0:
                    continue
                seen = self._pending[path]
            if now - seen.since >= self.settle:
                ready.append((path, signature))
        return ready

    def claimed(self, path: Path, signature: Signature) -> None:
        """``path`` was admitted (or refused for good) as ``signature``: never offer it again."""
        self._pending.pop(path, None)
        self._done[path] = signature

    def next_check(self, now: float) -> float | None:
        """Seconds until a pending file may have settled; ``None`` when none is pending."""
        if not self._pending:
            return None
        return max(0.0, min(s.since for s in self._pending.values()) + self.settle - now)
