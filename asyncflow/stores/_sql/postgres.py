"""PostgresStore's implementation (public as :mod:`asyncflow.stores.postgres`).

Checkpoints in PostgreSQL, shared by engines on many machines (extra ``[postgres]``).

Install with ``pip install 'asyncflow-engine[postgres]'`` (psycopg 3 with its pool). Saves waiting
at a moment are committed in one transaction by the store's writer task; each save carrying a
lease is fenced in that transaction (the run's lease row is read ``FOR SHARE``, so a takeover
waits for the commit or the commit sees the takeover). Claims lock the lease row with ``FOR
UPDATE SKIP LOCKED``; releases ``NOTIFY`` the processes waiting for the run, which
:meth:`PostgresStore.wait_released` listens for. Lease expiry is by the server's clock, so the
engines' clocks need not agree.

Why psycopg 3 rather than asyncpg: its pool has the knobs people sharing a database need (idle
and lifetime limits, a connection check, ``prepare_threshold=None`` for PgBouncer in transaction
mode), its pipeline mode sends a group's statements in one round trip, and it is the driver the
PostgreSQL project's own docs and most of the ecosystem maintain against. asyncpg was not
benchmarked against it here; the commit's fsync, not the driver, dominates a group's cost.

The schema is versioned (:mod:`asyncflow.stores._sql.migrations`); ``asyncflow store migrate
DSN`` prints what a database lacks and ``--apply`` applies it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import psycopg
import psycopg.conninfo
import psycopg_pool

from asyncflow._codec import Codec, JsonCodec
from asyncflow._errors import CheckpointError
from asyncflow.stores._base import Lease, RunCheckpoints, RunInfo, RunManifest
from asyncflow.stores._sql.common import (
    RUN_COLUMNS,
    STEP_COLUMNS,
    Coalescer,
    GroupSaving,
    GroupWriter,
    Save,
    check_ttl,
    lease_lost,
    listing,
    loaded,
    manifest_row,
    step_row,
)
from asyncflow.stores._sql.migrations import POSTGRES, SCHEMA_TABLE, Migration

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

T = TypeVar("T")

__all__ = ["PostgresStore"]

logger = logging.getLogger("asyncflow")

#: The channel releases are announced on; the payload is the run id.
CHANNEL = "asyncflow_released"
#: The advisory lock that serializes migrations of one database.
_MIGRATION_LOCK = 0x61_73_79_6E_63_66  # "asyncf"

#: Many rows in one statement (one round trip): each column as an array, unnested into rows.
_INSERT_RUN = (
    f"INSERT INTO asyncflow_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join(['%s'] * 9)}) "
    "ON CONFLICT (run_id) DO NOTHING"
)


def _fenced_upsert(table: str, columns: tuple[str, ...], key: str, order: str) -> str:
    """Upsert rows given as column arrays, each with the epoch of the lease it was saved under.

    The fencing is in the statement: the runs' lease rows are read FOR SHARE (a takeover waits
    for this transaction, or this one sees it), and a row whose lease epoch is older than its
    run's is left out. RETURNING names the rows written; the rest were refused.
    """
    cols = ", ".join(columns)
    arrays = ", ".join(["%s::text[]"] * len(columns))
    return f"""
WITH i AS (SELECT * FROM unnest({arrays}, %s::bigint[]) AS i({cols}, lease_epoch)),
cur AS (
    SELECT l.run_id, l.epoch FROM asyncflow_leases AS l
    WHERE l.run_id IN (SELECT run_id FROM i WHERE lease_epoch IS NOT NULL)
    ORDER BY l.run_id FOR SHARE
)
INSERT INTO {table} ({cols})
SELECT {", ".join(f"i.{c}" for c in columns)} FROM i LEFT JOIN cur ON cur.run_id = i.run_id
WHERE i.lease_epoch IS NULL OR i.lease_epoch >= coalesce(cur.epoch, 0)
ORDER BY {order}
ON CONFLICT ({key}) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)}
RETURNING {key}
"""


_UPSERT_RUNS = _fenced_upsert("asyncflow_runs", RUN_COLUMNS, "run_id", "1")
_UPSERT_STEPS = _fenced_upsert("asyncflow_steps", STEP_COLUMNS, "run_id, step", "1, 2")
#: Runs' manifest rows and step rows in one statement (one round trip, one snapshot).
_LOAD = (
    f"SELECT 'run', {', '.join(RUN_COLUMNS)} FROM asyncflow_runs WHERE run_id = ANY(%(ids)s) "
    f"UNION ALL SELECT 'step', {', '.join(STEP_COLUMNS)}, NULL, NULL, NULL, NULL "
    "FROM asyncflow_steps WHERE run_id = ANY(%(ids)s)"
)
_NOW = "extract(epoch from clock_timestamp())::double precision"
#: Claims of many runs by one owner in one statement (one round trip), the rules of
#: ``common.claimed`` in SQL: a run never claimed gets epoch 1 (``fresh``); otherwise its lease
#: row, locked FOR UPDATE SKIP LOCKED, is renewed by the same owner at the same epoch, or taken
#: at the next epoch when released ('') or expired (``taken``). No row for a run: held by
#: another owner, or locked by another engine's claim or write at this instant. An INSERT's
#: rows are not visible to the other parts of its statement, so a run claimed gets one row.
_CLAIM = f"""
WITH t AS (SELECT {_NOW} AS now),
w AS (SELECT DISTINCT unnest(%(ids)s::text[]) AS run_id),
fresh AS (
    INSERT INTO asyncflow_leases (run_id, owner, epoch, expires_at)
    SELECT w.run_id, %(owner)s, 1, t.now + %(ttl)s FROM w, t ORDER BY w.run_id
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, epoch, expires_at
),
held AS (
    SELECT l.run_id, l.owner, l.epoch, l.expires_at FROM asyncflow_leases AS l JOIN w USING (run_id)
    ORDER BY l.run_id FOR UPDATE OF l SKIP LOCKED
),
taken AS (
    UPDATE asyncflow_leases AS l
    SET owner = %(owner)s,
        epoch = CASE WHEN held.owner = %(owner)s THEN held.epoch ELSE held.epoch + 1 END,
        expires_at = t.now + %(ttl)s
    FROM held, t
    WHERE l.run_id = held.run_id
      AND (held.owner = %(owner)s OR held.owner = '' OR held.expires_at <= t.now)
    RETURNING l.run_id, l.epoch, l.expires_at
)
SELECT run_id, epoch, expires_at FROM fresh UNION ALL SELECT run_id, epoch, expires_at FROM taken
"""
#: Releases of many leases in one statement, each announced (NOTIFY, sent at commit).
_RELEASE = """
WITH w AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS w(run_id, owner, epoch)),
released AS (
    UPDATE asyncflow_leases AS l SET owner = '', expires_at = 0 FROM w
    WHERE l.run_id = w.run_id AND l.owner = w.owner AND l.epoch = w.epoch
    RETURNING l.run_id
)
SELECT pg_notify(%s, run_id) FROM released
"""


class PostgresStore(GroupSaving):
    """Checkpoints in a PostgreSQL database: engines on many machines share it.

    Every save is durable when it returns (committed); saves waiting at once share one commit.
    A call that loses its connection (the server restarted, a network blip) is retried on a
    new one until ``retry_timeout``; past it, or for any other database error,
    :class:`~asyncflow.CheckpointError` says what failed.

    Args:
        dsn: a libpq connection string or URL, e.g. ``postgresql://user@host:5432/db``.
        codec: turns outputs and inputs into JSON text; :class:`~asyncflow.JsonCodec` by default.
        min_size: connections the pool keeps open.
        max_size: the most connections the pool opens.
        max_idle: seconds an idle connection above ``min_size`` is kept.
        max_lifetime: seconds after which a connection is replaced (servers and proxies that
            drop old connections).
        prepare_threshold: executions after which a statement is prepared on the server;
            ``None`` never prepares, which PgBouncer in transaction mode needs.
        connect_timeout: the longest wait, in seconds, for a connection at open.
        retry_timeout: how long a call that lost its connection is retried.
        migrate: apply missing schema migrations at open (under an advisory lock, so engines
            opening at once apply them once). With ``False`` a database whose schema is behind
            is refused: apply them with ``asyncflow store migrate DSN --apply``.
    """

    def __init__(
        self,
        dsn: str,
        *,
        codec: Codec | None = None,
        min_size: int = 1,
        max_size: int = 10,
        max_idle: float = 600.0,
        max_lifetime: float = 3600.0,
        prepare_threshold: int | None = 5,
        connect_timeout: float = 30.0,
        retry_timeout: float = 30.0,
        migrate: bool = True,
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"min_size={min_size!r}, max_size={max_size!r}: give 0 <= min_size <= max_size, "
                f"max_size at least 1."
            )
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("retry_timeout", retry_timeout),
            ("max_idle", max_idle),
            ("max_lifetime", max_lifetime),
        ):
            if not value > 0:
                raise ValueError(f"{name}={value!r}: give a number of seconds above 0.")
        try:
            params = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"Not a PostgreSQL connection string: {exc}") from exc
        self._dsn = dsn
        self._where = (
            f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/"
            f"{params.get('dbname', params.get('user', ''))}"
        )
        self._codec: Codec = codec if codec is not None else JsonCodec()
        self._pool_args: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "max_idle": max_idle,
            "max_lifetime": max_lifetime,
        }
        self._prepare_threshold = prepare_threshold
        self._connect_timeout = connect_timeout
        self._retry_timeout = retry_timeout
        self._migrate = migrate
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._writes: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._writer = GroupWriter(self._commit, name=repr(self))
        self._released: dict[str, anyio.Event] = {}
        self._loads = Coalescer(self._load_many, name=repr(self))
        self._claims = Coalescer(self._claim_many, name=repr(self))
        self._releases = Coalescer(self._release_many, name=repr(self))
        self._listening = False

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"  # no password, whatever the DSN holds

    @property
    def codec(self) -> Codec:
        """The codec for outputs and inputs."""
        return self._codec

    # --- connections --------------------------------------------------------------------------

    def _connection_kwargs(self) -> dict[str, Any]:
        return {"autocommit": True, "prepare_threshold": self._prepare_threshold}

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[PostgresStore]:
        """Open the pool (migrating the schema unless ``migrate=False``), run the writer.

        On exit the writer commits what is pending; then the pool closes.

        Raises:
            CheckpointError: the server cannot be reached within ``connect_timeout``, or the
                schema is behind (with ``migrate=False``) or newer than this asyncflow knows.
        """
        if self._pool is not None:
            raise RuntimeError(f"{self!r} is already open; a store is opened by one engine.")
        pool = self._new_pool("asyncflow", **self._pool_args)
        # The writer's own connection: a commit never queues behind loads for a pooled one.
        writes = self._new_pool("asyncflow-writer", min_size=1, max_size=1)
        self._writer.reset()
        try:
            try:
                await pool.open(wait=True, timeout=self._connect_timeout)
                await writes.open(wait=True, timeout=self._connect_timeout)
            except psycopg_pool.PoolTimeout as exc:
                raise CheckpointError(
                    f"Cannot connect to the checkpoint database {self._where!r} within "
                    f"{self._connect_timeout:g} s: is the server running and the DSN right? ({exc})"
                ) from exc
            self._pool, self._writes = pool, writes
            try:
                async with pool.connection() as conn:
                    missing = await schema(conn, apply=self._migrate, where=self._where)
            except psycopg.Error as exc:
                raise CheckpointError(f"{self!r}: cannot check its schema: {exc}") from exc
            if missing:
                raise CheckpointError(
                    f"The checkpoint database {self._where!r} lacks schema version "
                    f"{missing[-1].version}: apply it with `asyncflow store migrate DSN --apply`, "
                    f"or open the store with migrate=True."
                )
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer.run)
                async with anyio.create_task_group() as listener:
                    listener.start_soon(self._listen)
                    for coalescer in (self._loads, self._claims, self._releases):
                        listener.start_soon(coalescer.run)
                    await anyio.lowlevel.checkpoint()
                    try:
                        yield self
                    finally:
                        self._writer.close()
                        listener.cancel_scope.cancel()
        finally:
            self._pool = self._writes = None
            for event in self._released.values():
                event.set()
            self._released.clear()
            with anyio.move_on_after(10, shield=True):
                await pool.close()
                await writes.close()

    def _new_pool(
        self, name: str, **sizes: Any
    ) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        return psycopg_pool.AsyncConnectionPool(
            self._dsn,
            kwargs=self._connection_kwargs(),
            open=False,
            # No check= on each checkout (a round trip per use): a broken connection fails its
            # call, which _retrying runs again on a new one.
            timeout=self._connect_timeout,
            name=name,
            **sizes,
        )

    async def _retrying(
        self,
        what: str,
        fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
        *,
        writer: bool = False,
    ) -> T:
        """``await fn(conn)`` on a pooled connection, again on a new one if the connection fails.

        Only connection failures (and serialization failures, deadlocks) are retried, with a
        growing pause, until ``retry_timeout``; then, or for any other database error, a
        CheckpointError naming ``what``.
        """
        pool = self._writes if writer else self._pool
        if pool is None:
            raise CheckpointError(
                f"{self!r} is not open: checkpoints are saved while the engine is open."
            )
        deadline = time.monotonic() + self._retry_timeout
        pause = 0.05
        while True:
            try:
                async with pool.connection(timeout=max(0.1, deadline - time.monotonic())) as conn:
                    return await fn(conn)
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                if time.monotonic() + pause > deadline:
                    raise CheckpointError(
                        f"{self!r} could not {what}: the database stayed unreachable for "
                        f"{self._retry_timeout:g} s ({exc}). Check the server; saves are retried "
                        f"for retry_timeout= seconds."
                    ) from exc
                logger.warning("checkpoint database %s: %s; retrying", self._where, exc)
                await anyio.sleep(pause)
                pause = min(pause * 2, 2.0)
            except psycopg.Error as exc:
                raise CheckpointError(f"{self!r} could not {what}: {exc}") from exc

    # --- writes -------------------------------------------------------------------------------

    async def _commit(self, saves: list[Save]) -> None:
        """One transaction, one round trip: BEGIN, an upsert per table, COMMIT, pipelined.

        On a busy event loop each round trip also waits for the loop, so their number is what a
        group costs. Saves of one key in a group are written once, the last one (a key twice in
        one statement is an error); each save of the key gets that write's outcome.
        """
        runs: dict[str, tuple[Save, Sequence[str]]] = {}
        steps: dict[tuple[str, str], tuple[Save, Sequence[str]]] = {}
        for save in saves:
            record = save.record
            if isinstance(record, RunManifest):
                runs[record.run_id] = (save, manifest_row(record))
            elif record is not None:
                steps[record.run_id, record.step] = (save, step_row(record))

        def arrays(group: dict[Any, tuple[Save, Sequence[str]]]) -> list[object]:
            # Sorted by key: two processes' groups lock rows in one order, never a deadlock.
            chosen = [group[k] for k in sorted(group)]
            columns = [list(c) for c in zip(*(row for _, row in chosen), strict=True)]
            return [*columns, [s.lease.epoch if s.lease else None for s, _ in chosen]]

        async def commit(conn: psycopg.AsyncConnection[Any]) -> tuple[set[Any], set[Any]]:
            wrote_runs = wrote_steps = None
            async with conn.pipeline():
                async with conn.transaction():
                    if runs:
                        wrote_runs = await conn.execute(_UPSERT_RUNS, arrays(runs))
                    if steps:
                        wrote_steps = await conn.execute(_UPSERT_STEPS, arrays(steps))
            return (
                {r[0] for r in await wrote_runs.fetchall()} if wrote_runs else set(),
                {(r[0], r[1]) for r in await wrote_steps.fetchall()} if wrote_steps else set(),
            )

        wrote_runs, wrote_steps = await self._retrying("commit checkpoints", commit, writer=True)
        for save in saves:
            record, save.error = save.record, None
            if save.lease is None or record is None:
                continue
            key: Any = (
                record.run_id if isinstance(record, RunManifest) else (record.run_id, record.step)
            )
            if key not in (wrote_runs if isinstance(record, RunManifest) else wrote_steps):
                save.error = lease_lost(save.lease, None)

    async def create_run_if_absent(self, manifest: RunManifest, /) -> bool:
        """Record ``manifest`` only if the run has none; whether it did (atomic across engines).

        If the connection dropped as it committed, the retry finds the row: it counts as created
        when it is exactly this manifest.

        Raises:
            CheckpointError: the store is not open, or the database failed.
        """
        row = manifest_row(manifest)

        async def create(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(_INSERT_RUN, row)
            if cur.rowcount == 1:
                return True
            cur = await conn.execute(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM asyncflow_runs WHERE run_id = %s",
                (manifest.run_id,),
            )
            return tries > 0 and (await cur.fetchone()) == row

        tries = -1

        async def counted(conn: psycopg.AsyncConnection[Any]) -> bool:
            nonlocal tries
            tries += 1
            return await create(conn)

        return await self._retrying("admit a run", counted)

    async def delete_run(self, run_id: str, /) -> bool:
        """Delete a run's manifest and step checkpoints; whether any were kept.

        Its lease row stays, so the run's epochs keep growing if it is saved again.

        Raises:
            CheckpointError: the store is not open, or the database failed.
        """
        await self._writer.flush()  # a manifest saved without waiting is not left to come back

        async def delete(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                steps = await conn.execute(
                    "DELETE FROM asyncflow_steps WHERE run_id = %s", (run_id,)
                )
                run = await conn.execute("DELETE FROM asyncflow_runs WHERE run_id = %s", (run_id,))
                return steps.rowcount + run.rowcount > 0

        return await self._retrying("delete a run", delete)

    # --- leases -------------------------------------------------------------------------------

    async def claim_run(self, run_id: str, /, *, owner: str, ttl: float) -> Lease | None:
        """Take the run for ``ttl`` seconds (by the server's clock); None while another holds it.

        The same owner claiming again renews it (same epoch); an expired or released lease is
        taken with the next epoch. The lease row is locked ``FOR UPDATE SKIP LOCKED``: a run
        another engine is claiming, or writing under a stale lease, at this instant gives None
        too, and the caller tries again, as it would for a held lease.

        Raises:
            ValueError: ``ttl`` is not above 0.
            CheckpointError: the store is not open, or the database failed.
        """
        check_ttl(ttl)

        return await self._claims((run_id, owner, float(ttl)))

    async def _claim_many(
        self, asked: list[tuple[str, str, float]]
    ) -> dict[tuple[str, str, float], Lease | None]:
        by: dict[tuple[str, float], list[str]] = {}
        for run_id, owner, ttl in asked:
            by.setdefault((owner, ttl), []).append(run_id)
        got: dict[tuple[str, str, float], Lease | None] = dict.fromkeys(asked)
        for (owner, ttl), ids in by.items():
            params = {"ids": sorted(ids), "owner": owner, "ttl": ttl}

            async def claim(conn: psycopg.AsyncConnection[Any], p: dict[str, Any] = params) -> Any:
                return await (await conn.execute(_CLAIM, p)).fetchall()

            for run_id, epoch, expires_at in await self._retrying("claim runs", claim):
                got[run_id, owner, ttl] = Lease(run_id, owner, int(epoch), float(expires_at))
        return got

    async def renew_leases(self, leases: Sequence[Lease], /, *, ttl: float) -> list[Lease | None]:
        """Extend each lease by ``ttl`` seconds from now, in one statement; None for a lost one.

        Raises:
            ValueError: ``ttl`` is not above 0.
            CheckpointError: the store is not open, or the database failed.
        """
        check_ttl(ttl)
        wanted = list(leases)
        if not wanted:
            return []

        async def renew(conn: psycopg.AsyncConnection[Any]) -> dict[tuple[str, str, int], float]:
            cur = await conn.execute(
                f"UPDATE asyncflow_leases AS l SET expires_at = {_NOW} + %s "
                "FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS w(run_id, owner, epoch) "
                "WHERE l.run_id = w.run_id AND l.owner = w.owner AND l.epoch = w.epoch "
                "RETURNING l.run_id, l.owner, l.epoch, l.expires_at",
                (
                    ttl,
                    [x.run_id for x in wanted],
                    [x.owner for x in wanted],
                    [x.epoch for x in wanted],
                ),
            )
            return {(r, o, int(e)): float(x) for r, o, e, x in await cur.fetchall()}

        renewed = await self._retrying("renew leases", renew)
        out: list[Lease | None] = []
        for x in wanted:
            expires_at = renewed.get((x.run_id, x.owner, x.epoch))
            out.append(
                None if expires_at is None else Lease(x.run_id, x.owner, x.epoch, expires_at)
            )
        return out

    async def release_run(self, lease: Lease, /) -> None:
        """Give the run up at once and wake the engines waiting for it; nothing if already lost.

        Raises:
            CheckpointError: the store is not open, or the database failed.
        """
        await self._releases(lease)

    async def _release_many(self, leases: list[Lease]) -> dict[Lease, None]:
        columns = (
            [x.run_id for x in leases],
            [x.owner for x in leases],
            [x.epoch for x in leases],
            CHANNEL,
        )

        async def release(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(_RELEASE, columns)

        await self._retrying("release runs", release)
        return dict.fromkeys(leases)

    async def wait_released(self, run_id: str, /) -> None:
        """Return when a lease on ``run_id`` is released by any engine sharing the database.

        Bound the wait with ``anyio.move_on_after`` and claim again after it either way: an
        expiry is not announced, and while the listening connection is down nothing is (the
        caller's next claim is the fallback). Returns at once if the store closes.
        """
        event = self._released.get(run_id)
        if event is None:
            event = self._released[run_id] = anyio.Event()
        try:
            await event.wait()
        finally:
            if self._released.get(run_id) is event and not event.is_set():
                del self._released[run_id]

    async def _listen(self) -> None:
        """Hold a connection that LISTENs for releases; reconnect when it drops."""
        pause = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, **self._connection_kwargs(), connect_timeout=10
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening, pause = True, 0.1
                    async for note in conn.notifies():
                        event = self._released.pop(note.payload, None)
                        if event is not None:
                            event.set()
            except psycopg.Error as exc:
                logger.info("checkpoint database %s: listener down (%s)", self._where, exc)
            self._listening = False
            await anyio.sleep(pause)
            pause = min(pause * 2, 5.0)

    # --- reads --------------------------------------------------------------------------------

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        """Return the run's manifest and steps; unusable rows are reported in ``discarded``.

        Loads waiting at a moment are read together, in one query.

        Raises:
            CheckpointError: the store is not open, or the database failed.
        """
        return await self._loads(run_id)

    async def _load_many(self, ids: list[str]) -> dict[str, RunCheckpoints]:
        async def load(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            return await (await conn.execute(_LOAD, {"ids": sorted(ids)})).fetchall()

        rows = await self._retrying("load runs", load)
        runs: dict[str, Any] = {}
        steps: dict[str, list[Any]] = {run_id: [] for run_id in ids}
        for row in rows:
            if row[0] == "run":
                runs[row[1]] = row[1:]
            else:
                steps[row[1]].append(row[1:6])
        return {run_id: loaded(runs.get(run_id), steps[run_id]) for run_id in ids}

    async def list_runs(
        self, *, flow: str | None = None, status: str | None = None, since: str | None = None
    ) -> AsyncIterator[RunInfo]:
        """Yield the runs with a manifest, by run id, a page at a time; filters combine.

        Args:
            flow: only runs of this flow.
            status: only runs whose manifest has this status.
            since: only runs whose manifest was written at or after this ISO 8601 UTC time.

        Raises:
            CheckpointError: the store is not open, or the database failed.
        """

        async def page(sql: str, params: tuple[str, ...]) -> list[Any]:
            async def fetch(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
                return await (await conn.execute(sql, params)).fetchall()

            return await self._retrying("list runs", fetch)

        async for info in listing(page, "%s", flow, status, since):
            yield info


async def schema(conn: psycopg.AsyncConnection[Any], *, apply: bool, where: str) -> list[Migration]:
    """The migrations the database lacks; applied (and then none) when ``apply``.

    Raises:
        CheckpointError: the schema is newer than this asyncflow knows, or behind and not
            ``apply``.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        cur = await conn.execute("SELECT to_regclass('asyncflow_schema') IS NOT NULL")
        exists = (await cur.fetchone() or (False,))[0]
        version = 0
        if exists:
            cur = await conn.execute("SELECT max(version) FROM asyncflow_schema")
            got = await cur.fetchone()
            version = int(got[0]) if got and got[0] is not None else 0
        newest = POSTGRES[-1].version
        if version > newest:
            raise CheckpointError(
                f"The checkpoint database {where!r} is at schema version {version}, newer than "
                f"this asyncflow knows ({newest}); upgrade asyncflow to use it."
            )
        missing = [m for m in POSTGRES if m.version > version]
        if not apply:
            return missing
        if not exists:
            await conn.execute(SCHEMA_TABLE)
        for m in missing:
            for statement in m.statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO asyncflow_schema (version) VALUES (%s)", (m.version,))
    return []
