"""Queue and RedisStream: messages from an async iterable or a Redis stream, each run once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from asyncflow._errors import CheckpointError

from ._base import Intake, Outcome, Trigger, default_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Mapping

    from anyio.abc import TaskStatus

    from asyncflow._flow import Flow

    from ._base import Admission

__all__ = ["Queue", "RedisStream"]

logger = logging.getLogger("asyncflow.triggers")

T = TypeVar("T")

#: Admissions tried for one message while the store fails, before it is left to the source.
STORE_ATTEMPTS = 5


class Queue(Trigger, Generic[T]):
    """Runs ``flow`` once per item of an async iterable (any queue client's consumer).

    Items are pulled one at a time; the next is pulled only after the current one was admitted,
    and only when the runs in flight are below their bound, so a full service stops reading.

    Args:
        source: the items; iterated once, by the service.
        inputs: the run inputs of an item; by default the item itself (a mapping).
        key: the item's event key (its run id's second part): a message id when the source
            has one, so a redelivery is a duplicate. By default the SHA-256 of the item as
            canonical JSON (identical items are one event).
        ack: awaited with each item once it is admitted (or was before): tell the source.
    """

    kind = "queue"

    def __init__(
        self,
        source: AsyncIterable[T],
        flow: Flow,
        *,
        inputs: Callable[[T], Mapping[str, object]] | None = None,
        key: Callable[[T], str] | None = None,
        ack: Callable[[T], Awaitable[object]] | None = None,
        name: str | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(
            flow, name=name or default_name("queue", flow.name), max_in_flight=max_in_flight
        )
        self._source = source
        self._inputs = inputs
        self._key = key
        self._ack = ack

    def key_of(self, item: T) -> str:
        """The event key of ``item``."""
        if self._key is not None:
            return self._key(item)
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def inputs_of(self, item: T) -> Mapping[str, object]:
        """The run inputs of ``item``."""
        if self._inputs is not None:
            return self._inputs(item)
        if not isinstance(item, dict):
            raise TypeError(
                f"Queue {self.name}: an item is {type(item).__name__}, not a mapping of inputs; "
                f"give Queue(inputs=...)."
            )
        return item

    async def run(self, intake: Intake, /, *, task_status: TaskStatus[None]) -> None:
        """Admit each item in turn, acknowledging it after admission."""
        task_status.started()
        async for item in self._source:
            key = self.key_of(item)
            try:
                inputs = self.inputs_of(item)
            except Exception as exc:
                intake.refuse(key, Outcome.INVALID, f"{type(exc).__name__}: {exc}")
                continue
            admission = await admit_retrying(intake, key, inputs, self.name)
            if admission is None:
                continue  # the store kept failing: not acknowledged, the source may redeliver
            if admission.outcome is Outcome.REJECTED:
                return  # stopping
            if admission.acknowledge and self._ack is not None:
                await self._ack(item)


async def admit_retrying(
    intake: Intake, key: str, inputs: Mapping[str, object], name: str
) -> Admission | None:
    """Admit, retrying a failing store with backoff; ``None`` when it kept failing."""
    for attempt in range(STORE_ATTEMPTS):
        try:
            return await intake.admit(key, inputs)
        except CheckpointError:
            logger.warning(
                "%s: cannot admit %s (attempt %d)", name, key, attempt + 1, exc_info=True
            )
            await anyio.sleep(min(0.1 * 2**attempt, 5.0))
    return None


class RedisStream(Trigger):
    """Runs ``flow`` once per entry of a Redis stream, read through a consumer group.

    Each entry's key is its stream entry id. An entry is acknowledged (``XACK``) only after
    its admission, so a service killed in between leaves it pending; entries pending on a
    consumer idle for ``claim_idle`` seconds (a dead one, or this one before a restart) are
    taken over with ``XAUTOCLAIM``, and admitted again as duplicates of the runs they already
    made. An entry whose admission failed ``max_failures`` times (its fields are not inputs of
    the flow, or it was delivered that often) is copied to the ``dead_letter`` stream, with
    ``_id``, ``_stream`` and ``_error`` fields, and acknowledged. Reading stops while the runs
    in flight are at their bound.

    Needs the ``redis`` extra (redis-py's asyncio client).

    Args:
        url: the server, ``redis://host:port/db``.
        stream: the stream's key; created (with the group) when missing.
        group: the consumer group.
        flow: the flow each entry runs.
        consumer: this consumer's name in the group (default: host name and process id).
        inputs: the run inputs of an entry's fields (a dict of text); the fields by default.
        dead_letter: where poison entries go (default ``<stream>:dead``).
        batch: entries read per call.
        block: seconds one read waits for new entries.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        group: str,
        flow: Flow,
        consumer: str | None = None,
        inputs: Callable[[dict[str, str]], Mapping[str, object]] | None = None,
        name: str | None = None,
        dead_letter: str | None = None,
        claim_idle: float = 60.0,
        max_failures: int = 5,
        batch: int = 10,
        block: float = 1.0,
        max_in_flight: int | None = None,
    ) -> None:
        if not isinstance(max_failures, int) or max_failures < 1:
            raise ValueError(f"max_failures={max_failures!r}: give a whole number of at least 1.")
        if not claim_idle > 0 or not block > 0 or not isinstance(batch, int) or batch < 1:
            raise ValueError(
                f"claim_idle={claim_idle!r}, block={block!r}, batch={batch!r}: give seconds "
                f"over 0 and a whole number of entries of at least 1."
            )
        super().__init__(
            flow, name=name or default_name("redis", stream), max_in_flight=max_in_flight
        )
        self.url = url
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead_letter = dead_letter or f"{stream}:dead"
        self.claim_idle = claim_idle
        self.max_failures = max_failures
        self.batch = batch
        self.block = block
        self._inputs = inputs

    async def run(self, intake: Intake, /, *, task_status: TaskStatus[None]) -> None:
        """Create the group if needed, then claim, read, admit and acknowledge until cancelled."""
        import redis.asyncio as redis
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        client: Any = redis.from_url(self.url, decode_responses=True)

        async def create_group() -> None:
            try:
                await client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        async with client:
            await create_group()
            task_status.started()
            failures: dict[str, int] = {}
            lost = 0
            while intake.accepting:
                try:
                    if not await self._step(client, intake, failures):
                        return
                    lost = 0
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    await create_group()  # a server restarted without its data
                except (RedisConnectionError, RedisTimeoutError):
                    # The server went away: entries stay pending on it; read again once back.
                    wait = min(0.1 * 2**lost, 5.0)
                    lost += 1
                    logger.warning(
                        "%s: lost %s, retrying in %.1fs", self.name, self.url, wait, exc_info=True
                    )
                    await anyio.sleep(wait)

    async def _step(self, client: Any, intake: Intake, failures: dict[str, int]) -> bool:
        """Claim or read one batch and handle it; False when the service is stopping."""
        entries = await self._claim(client, failures)
        if not entries and failures:  # retry our own pending entries that failed
            entries = await self._read(client, "0")
            entries = [e for e in entries if e[0] in failures]
        if not entries:
            entries = await self._read(client, ">")
        for entry_id, fields in entries:
            if not await self._handle(client, intake, entry_id, fields, failures):
                return False
        return True

    async def _read(self, client: Any, start: str) -> list[tuple[str, dict[str, str]]]:
        block = int(self.block * 1000) if start == ">" else None
        reply = await client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=self.batch, block=block
        )
        if not reply:
            return []
        # RESP2: [[stream, [(id, fields), ...]]]; RESP3: {stream: [[(id, fields), ...]]}
        if isinstance(reply, dict):
            items = next(iter(reply.values()))[0]
        else:
            items = reply[0][1]
        return [(i, f) for i, f in items if f is not None]

    async def _claim(
        self, client: Any, failures: dict[str, int]
    ) -> list[tuple[str, dict[str, str]]]:
        """Entries idle on any consumer for ``claim_idle`` s, taken over by this one."""
        reply = await client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=int(self.claim_idle * 1000),
            start_id="0-0",
            count=self.batch,
        )
        claimed = [(i, f) for i, f in reply[1] if f is not None]
        for entry_id, _ in claimed:
            pending = await client.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            delivered = int(pending[0]["times_delivered"]) if pending else 1
            # Each delivery but the last that did not end in an XACK was a failed admission.
            failures[entry_id] = max(failures.get(entry_id, 0), delivered - 1)
        return claimed

    async def _handle(
        self,
        client: Any,
        intake: Intake,
        entry_id: str,
        fields: dict[str, str],
        failures: dict[str, int],
    ) -> bool:
        """Admit one entry; acknowledge or count the failure. False: stop (service stopping)."""
        error = ""
        if failures.get(entry_id, 0) >= self.max_failures:
            error = f"delivered {failures[entry_id]} times without an admission"
        else:
            try:
                inputs = self._inputs(fields) if self._inputs is not None else fields
            except Exception as exc:
                inputs, error = {}, f"{type(exc).__name__}: {exc}"
            if not error:
                try:
                    admission = await intake.admit(entry_id, inputs)
                except CheckpointError as exc:
                    error = f"the store failed: {exc}"
                    logger.warning("%s: cannot admit %s", self.name, entry_id, exc_info=True)
                    await anyio.sleep(min(0.1 * 2 ** failures.get(entry_id, 0), 5.0))
                else:
                    if admission.outcome is Outcome.REJECTED:
                        return False
                    if admission.acknowledge:
                        await client.xack(self.stream, self.group, entry_id)
                        failures.pop(entry_id, None)
                        return True
                    error = admission.reason
            else:
                intake.refuse(entry_id, Outcome.INVALID, error)
        count = failures[entry_id] = failures.get(entry_id, 0) + 1
        if count >= self.max_failures:
            dead = {**fields, "_id": entry_id, "_stream": self.stream, "_error": error}
            async with client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.dead_letter, dead)
                pipe.xack(self.stream, self.group, entry_id)
                await pipe.execute()
            failures.pop(entry_id, None)
            logger.warning(
                "%s: entry %s moved to %s after %d failed admissions: %s",
                self.name,
                entry_id,
                self.dead_letter,
                count,
                error,
            )
        return True
