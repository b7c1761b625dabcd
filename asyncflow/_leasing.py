"""One owner per run: an engine claims each run before it executes, renews, and releases it.

An :class:`~asyncflow.Engine` with a store holds one :class:`Leasing`. :meth:`Leasing.acquire`
claims a run (waiting, with backoff, while another live owner holds it), :meth:`Leasing.renewer`
is one task that renews every lease about to need it in one ``renew_leases`` call per round,
and :meth:`Leasing.release` gives a run up when it ends. A lease that cannot be renewed (another
owner took the run) is reported to its holder, which stops the run: the store refuses its
writes anyway (each carries the lease), and the run fails with a :class:`LeaseLostError`.

Leases of stores that do not expire (``expires_at`` infinite: FileStore's) are never renewed,
so they cost nothing but the claim and the release.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Protocol

import anyio

from ._errors import CheckpointError, LeaseLostError

if TYPE_CHECKING:
    from .stores import CheckpointStore, Lease

__all__ = ["DEFAULT_LEASE_TTL", "Leasing", "new_owner"]

logger = logging.getLogger("asyncflow")

#: ``Engine(lease_ttl=)``'s default, in seconds.
DEFAULT_LEASE_TTL = 30.0
#: The longest wait between two claims of a run another owner holds.
MAX_CLAIM_WAIT = 0.25


def new_owner() -> str:
    """An owner name unique to one engine: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Holder(Protocol):
    """What holds a lease: told once if it is lost."""

    def lease_lost(self, error: LeaseLostError, /) -> None: ...


class Leasing:
    """The leases of one engine's runs on its store."""

    def __init__(self, store: CheckpointStore, *, owner: str, ttl: float) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        #: each held run's lease and who to tell when it is lost.
        self._held: dict[str, tuple[Lease, Holder]] = {}
        self._expiring = 0  # how many held leases expire (need renewing)
        self._wake = anyio.Event()

    async def acquire(self, run_id: str, holder: Holder) -> Lease:
        """Claim ``run_id``; while another owner holds it, wait for it (polling, with backoff).

        Raises:
            CheckpointError: the store failed.
        """
        delay = 0.005
        store, owner, ttl = self.store, self.owner, self.ttl
        # A store that announces releases (PostgresStore) wakes the wait early; an expiry is
        # never announced, so the claim is tried again after each wait either way.
        wait_released = getattr(store, "wait_released", None)
        while (lease := await store.claim_run(run_id, owner=owner, ttl=ttl)) is None:
            with anyio.move_on_after(delay):
                if wait_released is not None:
                    await wait_released(run_id)
                else:
                    await anyio.sleep(delay)
            delay = min(delay * 2, MAX_CLAIM_WAIT, ttl / 4)
        self._held[run_id] = (lease, holder)
        if lease.expires_at != math.inf:
            self._expiring += 1
            self._wake.set()
        return lease

    def current(self, run_id: str) -> Lease | None:
        """The lease held now on ``run_id`` (renewals replace it), if any."""
        held = self._held.get(run_id)
        return held[0] if held is not None else None

    async def release(self, lease: Lease) -> None:
        """Give the run up (a failure to is logged: the lease then lapses on its own)."""
        held = self._held.get(lease.run_id)
        if held is not None and held[0].epoch == lease.epoch:
            del self._held[lease.run_id]
            if held[0].expires_at != math.inf:
                self._expiring -= 1
            lease = held[0]
        try:
            await self.store.release_run(lease)
        except CheckpointError as exc:
            logger.warning("run %r: could not release its lease: %s", lease.run_id, exc)

    async def renewer(self) -> None:
        """Renew the leases that expire, a third of their ttl at a time, until cancelled."""
        while True:
            if not self._expiring:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            await anyio.sleep(self.ttl / 3)
            await self._renew_once()

    async def _renew_once(self) -> None:
        held = [(lease, holder) for lease, holder in self._held.values()]
        leases = [lease for lease, _ in held if lease.expires_at != math.inf]
        if not leases:
            return
        try:
            renewed = await self.store.renew_leases(leases, ttl=self.ttl)
        except CheckpointError as exc:
            logger.warning("could not renew %d lease(s): %s; trying again", len(leases), exc)
            now = time.time()
            renewed = [None if lease.expires_at <= now else lease for lease in leases]
        holders = {lease.run_id: holder for lease, holder in held}
        for old, new in zip(leases, renewed, strict=True):
            current = self._held.get(old.run_id)
            if current is None or current[0].epoch != old.epoch:
                continue  # released meanwhile
            if new is not None:
                self._held[old.run_id] = (new, current[1])
                continue
            del self._held[old.run_id]
            self._expiring -= 1
            holders[old.run_id].lease_lost(
                LeaseLostError(
                    f"Run {old.run_id!r} lost its lease (owner {old.owner!r}, epoch "
                    f"{old.epoch}): it was not renewed in time (the engine was paused or the "
                    f"store unreachable) and another owner may run it now. This engine stopped "
                    f"the run; its later writes are refused. Raise Engine(lease_ttl=) if "
                    f"pauses this long are expected.",
                    run_id=old.run_id,
                    epoch=old.epoch,
                )
            )
