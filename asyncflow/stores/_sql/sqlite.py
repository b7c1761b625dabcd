"""SqliteStore: checkpoints in one SQLite file, shared by the processes of one machine.

The file is in WAL mode, so readers never wait for the writer. Each process has one writer
connection, driven by one writer task through one thread: the saves waiting at a moment are
written in one ``BEGIN IMMEDIATE`` transaction (group commit), with ``synchronous=FULL`` so a
save returns only once its commit is on disk. Other processes' writers wait for the lock up to
``busy_timeout``. Loads and listings use reader connections on their own threads.

Why FULL rather than NORMAL plus a checkpoint policy: in WAL mode NORMAL does not sync at commit,
so an acknowledged save can be lost with the machine (not with the process), and making each
acknowledged save durable under NORMAL would take a checkpoint, which syncs the database file as
well as the WAL, per group. benchmarks/bench_stores.py measures both.

Why the standard ``sqlite3`` module on threads of the store's own, not aiosqlite: a group's
transaction is many statements (a fencing check and an upsert per save, claims), and aiosqlite
makes one thread trip per statement, about 100 us each here; a whole transaction done in one trip
costs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio

from asyncflow._codec import Codec, JsonCodec
from asyncflow._errors import CheckpointError
from asyncflow.stores._base import Lease, RunCheckpoints, RunInfo, RunManifest

from .common import (
    RUN_COLUMNS,
    STEP_COLUMNS,
    Fencing,
    GroupSaving,
    GroupWriter,
    Save,
    check_ttl,
    claimed,
    listing,
    loaded,
    manifest_row,
    step_row,
)
from .migrations import SCHEMA_TABLE, SQLITE, Migration

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Callable, Sequence

T = TypeVar("T")

__all__ = ["SqliteStore"]

_UPSERT_RUN = (
    f"INSERT INTO asyncflow_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * 9)}) "
    f"ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS[1:])
)
_INSERT_RUN = (
    f"INSERT INTO asyncflow_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * 9)}) "
    f"ON CONFLICT (run_id) DO NOTHING"
)
_UPSERT_STEP = (
    f"INSERT INTO asyncflow_steps ({', '.join(STEP_COLUMNS)}) VALUES (?, ?, ?, ?, ?) "
    f"ON CONFLICT (run_id, step) DO UPDATE SET fingerprint = excluded.fingerprint, "
    f"digest = excluded.digest, output = excluded.output"
)


class SqliteStore(GroupSaving):
    """Checkpoints in one SQLite file: several processes of one machine share it.

    Every save is durable when it returns (``synchronous=FULL``) and saves waiting at once share
    one commit. Runs are claimed with leases whose expiry is this machine's clock; a save under
    a lease that another process took over is refused with :class:`~asyncflow.LeaseLostError`.

    Keep the file on a local disk: SQLite's locking is not reliable on network filesystems
    (NFS, SMB), where two processes could both write; use :class:`PostgresStore` across
    machines.

    Args:
        path: the database file; created, with its schema, on first open.
        codec: turns outputs and inputs into JSON text; :class:`~asyncflow.JsonCodec` by default.
        busy_timeout: the longest wait, in seconds, for another process's write transaction.
        synchronous: ``"FULL"`` (durable per save) or ``"NORMAL"`` (a save survives the
            process, not a power loss: faster, weaker).
        readers: reader connections (threads) for loads and listings.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        busy_timeout: float = 30.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        readers: int = 2,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous={synchronous!r}: give 'FULL' or 'NORMAL'.")
        if not busy_timeout > 0:
            raise ValueError(f"busy_timeout={busy_timeout!r}: give a number of seconds above 0.")
        if readers < 1:
            raise ValueError(f"readers={readers!r}: give at least 1.")
        self._path = Path(path)
        self._codec: Codec = codec if codec is not None else JsonCodec()
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._readers = readers
        self._writer_pool: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._writer = GroupWriter(self._commit, name=repr(self))

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"

    @property
    def codec(self) -> Codec:
        """The codec for outputs and inputs."""
        return self._codec

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # --- connections and threads ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,  # transactions are begun and ended explicitly
            check_same_thread=False,  # made on the thread that uses it; closed from another
        )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise CheckpointError(
                    f"{self!r}: SQLite would not use WAL mode (it reports {mode!r}); keep the "
                    f"file on a local disk, not a network filesystem or a read-only one."
                )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        pool = self._reader_pool
        if pool is None:
            raise self._closed()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, lambda: fn(self._reader()))
        except sqlite3.Error as exc:
            raise CheckpointError(f"{self!r} could not be read: {exc}") from exc

    async def _in_writer(self, fn: Callable[[], T]) -> T:
        assert self._writer_pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, fn)

    def _closed(self) -> CheckpointError:
        return CheckpointError(
            f"{self!r} is not open: checkpoints are saved while the engine is open."
        )

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SqliteStore]:
        """Open the database (creating it and its schema), run the writer for the block.

        On exit the writer commits what is pending; then the connections close.

        Raises:
            CheckpointError: the file cannot be opened or is not an asyncflow database, or its
                schema is newer than this version of asyncflow knows.
        """
        if self._writer_pool is not None:
            raise RuntimeError(f"{self!r} is already open; a store is opened by one engine.")
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="asyncflow-sqlite-w")
        self._reader_pool = ThreadPoolExecutor(
            self._readers, thread_name_prefix="asyncflow-sqlite-r"
        )
        self._local = threading.local()
        self._writer.reset()
        try:
            try:
                self._conn = await self._in_writer(self._open_writer)
            except (OSError, sqlite3.Error) as exc:
                raise CheckpointError(
                    f"Cannot use the SQLite checkpoint database {str(self._path)!r}: {exc}. "
                    f"Check that its folder exists and is writable, on a local disk."
                ) from exc
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer.run)
                await anyio.lowlevel.checkpoint()  # the writer is running before any save
                try:
                    yield self
                finally:
                    self._writer.close()
        finally:
            pools = (self._writer_pool, self._reader_pool)
            self._writer_pool = self._reader_pool = None
            conn, self._conn = self._conn, None
            with self._conns_lock:
                conns, self._reader_conns = self._reader_conns, []
            if conn is not None:
                conns.append(conn)
            for pool in pools:
                pool.shutdown(wait=True)
            for c in conns:
                c.close()

    def _open_writer(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            migrate(conn, SQLITE, str(self._path))
        except BaseException:
            conn.close()
            raise
        return conn

    # --- writes -------------------------------------------------------------------------------

    async def _commit(self, saves: list[Save]) -> None:
        await self._in_writer(lambda: self._commit_sync(saves))

    def _commit_sync(self, saves: list[Save]) -> None:
        """One transaction for a group, in order: jobs, and saves with their fencing checks."""
        conn = self._conn
        assert conn is not None
        fencing = Fencing()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for save in saves:
                if save.job is not None:
                    try:
                        save.result = save.job(conn)
                    except (ValueError, CheckpointError) as exc:
                        save.error = exc
                    continue
                record = save.record
                assert record is not None
                if fencing.refused(save, functools.partial(_epoch, conn)):
                    continue
                if isinstance(record, RunManifest):
                    conn.execute(_UPSERT_RUN, manifest_row(record))
                else:
                    conn.execute(_UPSERT_STEP, step_row(record))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def create_run_if_absent(self, manifest: RunManifest, /) -> bool:
        """Record ``manifest`` only if the run has none; whether it did (atomic across processes).

        Raises:
            CheckpointError: the store is not open, or the database failed.
        """

        def create(conn: sqlite3.Connection) -> bool:
            return conn.execute(_INSERT_RUN, manifest_row(manifest)).rowcount == 1

        return bool(await self._writer.do(create))

    async def delete_run(self, run_id: str, /) -> bool:
        """Delete a run's manifest and step checkpoints; whether any were kept.

        Its lease row stays, so the run's epochs keep growing if it is saved again.

        Raises:
            CheckpointError: the store is not open, or the database failed.
        """

        def delete(conn: sqlite3.Connection) -> bool:
            steps = conn.execute("DELETE FROM asyncflow_steps WHERE run_id = ?", (run_id,))
            run = conn.execute("DELETE FROM asyncflow_runs WHERE run_id = ?", (run_id,))
            return steps.rowcount + run.rowcount > 0

        return bool(await self._writer.do(delete))

    # --- leases -------------------------------------------------------------------------------

    async def claim_run(self, run_id: str, /, *, owner: str, ttl: float) -> Lease | None:
        """Take the run for ``ttl`` seconds; None while another owner's lease is unexpired.

        The same owner claiming again renews it (same epoch); an expired or released lease is
        taken with the next epoch. Expiry is by this machine's clock.

        Raises:
            ValueError: ``ttl`` is not above 0.
            CheckpointError: the store is not open, or the database failed.
        """
        check_ttl(ttl)

        def claim(conn: sqlite3.Connection) -> Lease | None:
            row = conn.execute(
                "SELECT owner, epoch, expires_at FROM asyncflow_leases WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            lease = claimed(row, run_id, owner, ttl, time.time())
            if lease is not None:
                conn.execute(
                    "INSERT INTO asyncflow_leases (run_id, owner, epoch, expires_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET owner = "
                    "excluded.owner, epoch = excluded.epoch, expires_at = excluded.expires_at",
                    (run_id, owner, lease.epoch, lease.expires_at),
                )
            return lease

        result = await self._writer.do(claim)
        assert result is None or isinstance(result, Lease)
        return result

    async def renew_leases(self, leases: Sequence[Lease], /, *, ttl: float) -> list[Lease | None]:
        """Extend each lease by ``ttl`` seconds from now, in one transaction; None for a lost one.

        Raises:
            ValueError: ``ttl`` is not above 0.
            CheckpointError: the store is not open, or the database failed.
        """
        check_ttl(ttl)
        wanted = list(leases)

        def renew(conn: sqlite3.Connection) -> list[Lease | None]:
            expires_at = time.time() + ttl
            out: list[Lease | None] = []
            for lease in wanted:
                n = conn.execute(
                    "UPDATE asyncflow_leases SET expires_at = ? "
                    "WHERE run_id = ? AND owner = ? AND epoch = ?",
                    (expires_at, lease.run_id, lease.owner, lease.epoch),
                ).rowcount
                out.append(Lease(lease.run_id, lease.owner, lease.epoch, expires_at) if n else None)
            return out

        if not wanted:
            return []
        result = await self._writer.do(renew)
        assert isinstance(result, list)
        return result

    async def release_run(self, lease: Lease, /) -> None:
        """Give the run up at once so another owner can take it; nothing if already lost.

        Raises:
            CheckpointError: the store is not open, or the database failed.
        """

        def release(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE asyncflow_leases SET owner = '', expires_at = 0 "
                "WHERE run_id = ? AND owner = ? AND epoch = ?",
                (lease.run_id, lease.owner, lease.epoch),
            )

        await self._writer.do(release)

    # --- reads --------------------------------------------------------------------------------

    async def load_run(self, run_id: str, /) -> RunCheckpoints:
        """Return the run's manifest and steps; unusable rows are reported in ``discarded``.

        Raises:
            CheckpointError: the store is not open, or the database failed.
        """
        self._check_open()

        def load(conn: sqlite3.Connection) -> RunCheckpoints:
            conn.execute("BEGIN")  # one snapshot for both reads
            try:
                run = conn.execute(
                    f"SELECT {', '.join(RUN_COLUMNS)} FROM asyncflow_runs WHERE run_id = ?",
                    (run_id,),
                ).fetchone()
                rows = conn.execute(
                    f"SELECT {', '.join(STEP_COLUMNS)} FROM asyncflow_steps WHERE run_id = ?",
                    (run_id,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return loaded(run, rows)

        return await self._read(load)

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
        self._check_open()

        async def page(sql: str, params: tuple[str, ...]) -> list[Any]:
            return await self._read(functools.partial(_page, sql=sql, params=params))

        async for info in listing(page, "?", flow, status, since):
            yield info

    def _check_open(self) -> None:
        if self._reader_pool is None:
            raise self._closed()


def _page(conn: sqlite3.Connection, *, sql: str, params: tuple[str, ...]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _epoch(conn: sqlite3.Connection, run_id: str) -> int:
    row = conn.execute("SELECT epoch FROM asyncflow_leases WHERE run_id = ?", (run_id,)).fetchone()
    return int(row[0]) if row is not None else 0


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...], name: str) -> int:
    """Bring the database to the newest schema, in one write transaction; the version it is at.

    Raises:
        CheckpointError: the database's schema is newer than these migrations.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(SCHEMA_TABLE)
        row = conn.execute("SELECT max(version) FROM asyncflow_schema").fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        newest = migrations[-1].version
        if version > newest:
            raise CheckpointError(
                f"The checkpoint database {name!r} is at schema version {version}, newer than "
                f"this asyncflow knows ({newest}); upgrade asyncflow to use it."
            )
        for m in migrations:
            if m.version > version:
                for statement in m.statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO asyncflow_schema (version) VALUES (?)", (m.version,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return newest
