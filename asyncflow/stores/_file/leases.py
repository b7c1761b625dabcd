"""FileStore's leases: one owner per run on this machine, by byte-range locks on empty files.

``<dir>/.journal/leases/`` holds :data:`SHARDS` empty files; a run's lease is an exclusive
open-file-description lock (``F_OFD_SETLK``) on one byte of one of them, file and offset hashed
from the run id. (The kernel checks a lock against every lock of its file in turn: with 300 runs
in flight on one file a claim took about 50 us, spread over the files it takes a few.) The
kernel drops the
lock when its holder closes the file or dies (SIGKILL included), so a lease lasts exactly as
long as its holder: it never expires while the holder lives (a SIGSTOPped process keeps it),
and ``expires_at`` is ``math.inf``. The locks are of this machine only: engines on other
machines sharing the folder over a network filesystem are not excluded (use a database store).

Each owner has its own open file description of each file, so two owners conflict even within
one process.
Claiming and releasing are one non-blocking ``fcntl`` each; no file is written and nothing is
fsynced. The store does them on its loader thread, in the trip that reads the claimed runs'
files (an ``fcntl`` on the event loop gives the GIL away, and waits to get it back behind the
store's threads): a claim rides along with the run's load, a release with the next trip.
Renewing and fencing are in memory (a lock is held until released or its holder dies).

Epochs: a new owner's epoch is the wall clock in nanoseconds (above the process's previous
epoch): owners of a run follow each other in time, the lock orders them, so epochs grow at every
change of owner, across restarts and after a run is deleted. Fencing is exact without them: a
holder loses its lock only by releasing it or by dying, so a save carrying a lease is accepted
only while this store still holds that very lease.

Admission (``create_run_if_absent``) takes a second lock per run, in the upper half of the
offsets, for the check-then-write; it is tried without blocking and retried, so a waiting
admission never holds one of the store's threads.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import struct
import time
from typing import TYPE_CHECKING

from asyncflow._errors import LeaseLostError
from asyncflow.stores._base import Lease

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

try:
    import fcntl

    _fcntl: Callable[[int, int, bytes], bytes] | None = fcntl.fcntl
    _WRLCK, _UNLCK = fcntl.F_WRLCK, fcntl.F_UNLCK
    #: ``fcntl.F_OFD_SETLK`` where Python lacks the name (Linux's number).
    F_OFD_SETLK: int = getattr(fcntl, "F_OFD_SETLK", 37)
except ImportError:  # Windows: no locks; one engine per directory there
    _fcntl, _WRLCK, _UNLCK, F_OFD_SETLK = None, 1, 2, 37

__all__ = ["LEASES_DIR", "SHARDS", "MachineLeases", "lock", "unlock"]

logger = logging.getLogger("asyncflow")

LEASES_DIR = "leases"
#: How many lock files the leases are spread over.
SHARDS = 64
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on 64-bit Linux: type, whence, start, len, pid
_HALF = 1 << 61
_OPEN = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def lease_place(run_id: str) -> tuple[int, int]:
    """The file (its number) and byte whose lock is ``run_id``'s lease (admission: ``+ 2**61``)."""
    digest = hashlib.blake2b(run_id.encode("utf-8"), digest_size=8).digest()
    h = int.from_bytes(digest, "big")
    return h % SHARDS, (h // SHARDS) % _HALF


def _lock(fd: int, offset: int, *, exclusive: bool) -> bool:
    """Take (or, not ``exclusive``, drop) an OFD lock on one byte; False when another holds it."""
    if _fcntl is None:
        return True
    kind = _WRLCK if exclusive else _UNLCK
    try:
        _fcntl(fd, F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, offset, 1, 0))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def lock(fd: int, offset: int) -> bool:
    """Take the lock of a lease (see :meth:`MachineLeases.place`); False when another holds it.

    Raises:
        OSError: the lock could not be tried.
    """
    return _lock(fd, offset, exclusive=True)


def unlock(fd: int, offset: int) -> None:
    """Drop the lock of a released lease (a failure is harmless: closing the file drops it)."""
    try:
        _lock(fd, offset, exclusive=False)
    except OSError:
        logger.warning("dropping a lease's lock failed; it goes when the store closes")


class MachineLeases:
    """The leases one open FileStore holds, and the fencing of its saves by them."""

    def __init__(self, directory: Path) -> None:
        """Use the lock files in ``directory`` (made when first needed)."""
        self._dir = directory
        #: an open file description per owner and file: its locks are that owner's leases.
        self._fds: dict[tuple[str, int], int] = {}
        #: the leases held now, by run id.
        self._held: dict[str, Lease] = {}
        #: runs whose manifest saved without waiting carried a lost lease: raised by the next
        #: fenced save of the run.
        self._lost: dict[str, LeaseLostError] = {}
        #: released leases whose lock is still to drop: (owner, run id) -> (descriptor, offset).
        self._unlocks: dict[tuple[str, str], tuple[int, int]] = {}
        self._last_epoch = 0

    def close(self) -> None:
        """Release every lease (closing the files drops their locks)."""
        fds, self._fds = self._fds, {}
        self._held.clear()
        self._lost.clear()
        self._unlocks.clear()
        for fd in fds.values():
            os.close(fd)

    def _fd(self, owner: str, shard: int) -> int:
        fd = self._fds.get((owner, shard))
        if fd is None:
            # All of an owner's files at once, at its first claim: its later claims then need
            # no new file (and keep working in a folder removed under the store).
            for n in range(SHARDS):
                if (owner, n) not in self._fds:
                    self._fds[owner, n] = self._open(n)
            fd = self._fds[owner, shard]
        return fd

    def _open(self, shard: int) -> int:
        path = self._dir / f"{shard:02x}"
        try:
            return os.open(path, _OPEN, 0o644)
        except FileNotFoundError:
            # Made at the first claim (once per folder): a store never claiming adds nothing.
            self._dir.mkdir(exist_ok=True)
            return os.open(path, _OPEN, 0o644)

    def answer(self, run_id: str, owner: str) -> tuple[bool, Lease | None]:
        """A claim answered without the kernel, if it can be: (answered, lease or ``None``).

        A run this store holds is ``owner``'s lease or, for another owner, ``None``. A run
        ``owner`` released whose lock is not dropped yet is taken back (a new epoch) and that
        drop called off: the lock was never let go.
        """
        held = self._held.get(run_id)
        if held is not None:
            return True, (held if held.owner == owner else None)
        if self._unlocks.pop((owner, run_id), None) is not None:
            return True, self.granted(run_id, owner)
        return False, None

    def place(self, run_id: str, owner: str) -> tuple[int, int]:
        """The descriptor and offset whose lock is ``owner``'s lease of ``run_id``."""
        shard, offset = lease_place(run_id)
        return self._fd(owner, shard), offset

    def granted(self, run_id: str, owner: str) -> Lease:
        """``owner`` has the lock of ``run_id``: its lease (the one held, if it has one)."""
        held = self._held.get(run_id)
        if held is not None and held.owner == owner:
            return held  # two claims of one owner met in one trip
        self._last_epoch = epoch = max(time.time_ns(), self._last_epoch + 1)
        lease = self._held[run_id] = Lease(run_id, owner, epoch, math.inf)
        return lease

    def renew(self, lease: Lease) -> Lease | None:
        held = self._held.get(lease.run_id)
        if held is None or held.epoch != lease.epoch or held.owner != lease.owner:
            return None
        return held

    def held(self, run_id: str) -> Lease | None:
        """The lease held now on ``run_id``, if any."""
        return self._held.get(run_id)

    def release(self, lease: Lease) -> None:
        """Give ``lease`` up now: it is no longer held, and its lock is dropped at once."""
        if self.release_later(lease):
            fd, offset = self._unlocks.pop((lease.owner, lease.run_id))
            unlock(fd, offset)

    def release_later(self, lease: Lease) -> bool:
        """Give ``lease`` up: refuse saves under it now, drop its lock at :meth:`take_unlocks`.

        Returns False when ``lease`` was not held.
        """
        if self.renew(lease) is None:
            return False
        del self._held[lease.run_id]
        shard, offset = lease_place(lease.run_id)
        self._unlocks[lease.owner, lease.run_id] = (self._fds[lease.owner, shard], offset)
        return True

    def take_unlocks(self) -> list[tuple[int, int]]:
        """The locks released since the last call, to drop (with :func:`unlock`)."""
        if not self._unlocks:
            return []
        unlocks = list(self._unlocks.values())
        self._unlocks.clear()
        return unlocks

    def fence(self, run_id: str, lease: Lease | None) -> None:
        """Raise :class:`LeaseLostError` unless ``lease`` is none or held now."""
        if lease is None:
            return
        lost = self._lost.pop(run_id, None)
        if lost is not None and lost.epoch == lease.epoch:
            raise lost
        if self.renew(lease) is None:
            raise self._lost_error(run_id, lease)

    def fence_later(self, run_id: str, lease: Lease | None) -> bool:
        """Whether a save without waiting may be written; if not, the next fenced one raises."""
        if lease is None or self.renew(lease) is not None:
            return True
        self._lost[run_id] = self._lost_error(run_id, lease)
        return False

    def _lost_error(self, run_id: str, lease: Lease) -> LeaseLostError:
        return LeaseLostError(
            f"Run {run_id!r}: the lease of {lease.owner!r} (epoch {lease.epoch}) is no longer "
            f"held in {str(self._dir.parent.parent)!r} (it was released, or the store closed); "
            f"nothing was written. Claim the run again before writing it.",
            run_id=run_id,
            epoch=lease.epoch,
        )

    def try_admission(self, run_id: str) -> int | None:
        """Take ``run_id``'s admission lock on a file of its own; the fd, or None if held."""
        shard, offset = lease_place(run_id)
        fd = self._open(shard)
        try:
            if _lock(fd, _HALF + offset, exclusive=True):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None
