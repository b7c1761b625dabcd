r"""Blocking file primitives of FileStore: locks, durable writes, safe reads, setting aside.

Run on the store's own executor, never on the event loop (see :mod:`.store`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = [
    "JOURNAL_DIR",
    "MAX_FILE_BYTES",
    "OPEN_READ",
    "BadEntry",
    "LockTimeout",
    "Sync",
    "copy_aside",
    "fsync_dir",
    "move_aside",
    "read_entry",
    "try_lock",
    "write_all",
    "write_new",
]

try:
    import fcntl

    flock: Callable[[int, int], None] | None = fcntl.flock
    LOCK_FLAGS = fcntl.LOCK_EX | fcntl.LOCK_NB
except ImportError:  # Windows: no flock; one engine per directory there
    flock, LOCK_FLAGS = None, 0


#: The journal's directory; its ``flock`` is the directory's lock (see :meth:`Sync.lock`).
JOURNAL_DIR = ".journal"
#: The largest run file or segment read; a larger one is moved aside, never read into memory.
MAX_FILE_BYTES = 1 << 30
#: How the store opens what it reads: never following a link, never blocking on a pipe.
OPEN_READ = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False when another holds it.

    The lock belongs to the open file, so it is released when the file is closed or its
    process dies (SIGKILL included). Without ``fcntl`` (Windows) there is no lock.
    """
    if flock is None:
        return True
    try:
        flock(fd, LOCK_FLAGS)
    except BlockingIOError:
        return False
    return True


class LockTimeout(OSError):
    """The directory's lock was not had in time, or the store closed while waiting for it."""


class BadEntry(Exception):
    """A name in the store that cannot be read as a file of ours (a directory, pipe, link, ...)."""


class Sync:
    """Makes a batch of written files durable: one ``syncfs`` where available, else fsyncs.

    It also holds the directory's lock, which every writer of run files takes (see :meth:`lock`).

    Args:
        root: the store's directory.
        lock_timeout: the longest wait for the directory's lock, in seconds.
    """

    def __init__(self, root: Path, *, lock_timeout: float = 60.0) -> None:
        self.root = root
        self.lock_timeout = lock_timeout
        #: set when the store closes: waits for the lock end at once.
        self.abort = threading.Event()
        self._threads = threading.Lock()
        self._syncfs: Callable[[int], int] | None = None
        name = ctypes.util.find_library("c")
        if name is not None and hasattr(os, "O_DIRECTORY"):
            fn = getattr(ctypes.CDLL(name, use_errno=True), "syncfs", None)
            if fn is not None:
                self._syncfs = fn

    def files(self, paths: list[Path]) -> None:
        if self._syncfs is not None:
            self._fs()
            return
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def dirs(self, dirs: set[Path]) -> None:
        if self._syncfs is not None:
            self._fs()
            return
        for d in dirs:
            fsync_dir(d)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's lock: writers of run files read, merge and replace them under it.

        A thread lock within this store, and a ``flock`` on the journal directory across stores
        and processes (a lock that a dead process releases). Blocks, at most ``lock_timeout``
        seconds, and ends early once :attr:`abort` is set: call it on the executor.

        Raises:
            LockTimeout: the lock was not had in time (another engine holds it: compacting, or
                stopped) or the store is closing.
        """
        deadline = time.monotonic() + self.lock_timeout
        while not self._threads.acquire(timeout=0.05):
            self._check_wait(deadline)
        try:
            if flock is None:
                yield
                return
            fd = os.open(self.root / JOURNAL_DIR, os.O_RDONLY)
            try:
                pause = 0.001
                while True:
                    try:
                        flock(fd, LOCK_FLAGS)
                        break
                    except BlockingIOError:
                        self._check_wait(deadline)
                        self.abort.wait(pause)
                        pause = min(pause * 2, 0.05)
                yield
            finally:
                os.close(fd)
        finally:
            self._threads.release()

    def _check_wait(self, deadline: float) -> None:
        if self.abort.is_set():
            raise LockTimeout(
                errno.EINTR, f"the store closed while waiting for the lock of {self.root}"
            )
        if time.monotonic() >= deadline:
            raise LockTimeout(
                errno.ETIMEDOUT,
                f"another engine has held the lock of {self.root} for over {self.lock_timeout:g} s "
                f"(a compaction, or a process that is stopped: find it with "
                f"'fuser {self.root / JOURNAL_DIR}'); let it finish or end it, or raise "
                f"FileStore(lock_timeout=...)",
            )

    def _fs(self) -> None:
        assert self._syncfs is not None
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if self._syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs: {os.strerror(err)}")
        finally:
            os.close(fd)


def fsync_dir(path: Path) -> None:
    """Fsync a directory so the entries created or renamed in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def aside_path(path: Path) -> Path:
    n = 1
    while True:
        target = path.with_name(f"{path.name}.corrupt-{n}")
        if not os.path.lexists(target):
            return target
        n += 1


def move_aside(path: Path) -> Path:
    """Rename ``path`` (a file, directory, pipe or link: never followed) to ``.corrupt-<n>``."""
    target = aside_path(path)
    os.replace(path, target)
    return target


def copy_aside(path: Path, data: bytes) -> Path:
    """Keep ``data`` (a run file's bad bytes) in a new ``.corrupt-<n>`` file beside ``path``."""
    while True:
        target = aside_path(path)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        return target


def read_entry(path: Path, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """Read a file of the store; ``None`` when there is none.

    Never follows a symbolic link, never blocks on a pipe, never reads more than ``limit``.

    Raises:
        BadEntry: the name is not a regular file of at most ``limit`` bytes.
    """
    try:
        fd = os.open(path, OPEN_READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise BadEntry("a symbolic link, which the store never follows") from None
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):
            raise BadEntry("a socket or device, not a file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a pipe, socket or device"
            raise BadEntry(f"{kind}, not a regular file")
        if st.st_size > limit:
            raise BadEntry(f"{st.st_size} bytes, over the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(limit + 1 - size, 1 << 24) or 1):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise BadEntry(f"over {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; a short write is continued, and one that cannot be is an error."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, "short write: no space left on device")
        view = view[n:]


def write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
