"""``asyncflow store migrate TARGET [--apply]``: print, or apply, what a database's schema lacks."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from asyncflow._errors import CheckpointError

from .migrations import SCHEMA_TABLE, SQLITE, Migration
from .sqlite import migrate as migrate_sqlite

if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["is_postgres", "migrate_command"]


def is_postgres(target: str) -> bool:
    """Whether ``target`` is a PostgreSQL DSN (a URL, or libpq ``key=value`` text), not a file."""
    return bool(re.match(r"postgres(ql)?://", target)) or "=" in target.split("/")[0]


def _sqlite_missing(path: Path) -> tuple[int, list[Migration]]:
    if not path.exists():
        return 0, list(SQLITE)
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT max(version) FROM asyncflow_schema").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            row = None
    version = int(row[0]) if row and row[0] is not None else 0
    return version, [m for m in SQLITE if m.version > version]


async def _postgres(dsn: str, apply: bool) -> list[Migration]:
    import psycopg

    from asyncflow.stores._sql.postgres import schema

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        missing = await schema(conn, apply=False, where=dsn)
        if apply and missing:
            await schema(conn, apply=True, where=dsn)
        return missing


def migrate_command(target: str, *, apply: bool, out: TextIO) -> int:
    """Print the migrations ``target`` lacks as SQL, or apply them with ``apply``; exit status.

    Raises:
        CheckpointError: the database cannot be reached or read, or is newer than this asyncflow.
    """
    try:
        if is_postgres(target):
            missing = anyio.run(_postgres, target, apply)
        else:
            path = Path(target)
            _, missing = _sqlite_missing(path)
            if apply and missing:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, isolation_level=None)
                try:
                    migrate_sqlite(conn, SQLITE, target)
                finally:
                    conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise CheckpointError(f"Cannot migrate {target!r}: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise CheckpointError(f"Cannot migrate the database: {exc}") from exc
        raise
    newest = SQLITE[-1].version
    if not missing:
        print(f"-- the schema is up to date (version {newest}); nothing to apply", file=out)
    elif apply:
        for m in missing:
            print(f"-- applied schema version {m.version}: {m.description}", file=out)
    else:
        print(f"BEGIN;\n{SCHEMA_TABLE};", file=out)
        for m in missing:
            print(m.text(), file=out)
        print("COMMIT;\n-- not applied: run again with --apply to apply these", file=out)
    return 0
