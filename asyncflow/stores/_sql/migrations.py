"""The SQL stores' schema, as numbered migrations per database.

A database records the version it is at in ``asyncflow_schema``; a store applies the migrations
above it, in order, each in the transaction that bumps the version (SQLite at open; Postgres at
open unless ``migrate=False``, or by ``asyncflow store migrate DSN --apply``). A migration is
never edited once released: a change of schema is a new one appended here.

Tables (the same in both):

- ``asyncflow_runs``: one row per run with a manifest; ``failed_steps`` is a JSON array,
  ``details`` the manifest's opaque JSON text. Indexed for the listing filters (flow, status,
  updated_at).
- ``asyncflow_steps``: one row per succeeded step, keyed (run_id, step); output is codec text.
- ``asyncflow_leases``: one row per run ever claimed: owner, epoch (the fencing token) and
  expiry in seconds since the epoch by the database's clock. It outlives ``delete_run`` so
  epochs never go down.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

__all__ = ["POSTGRES", "SCHEMA_TABLE", "SQLITE", "Migration"]

#: The table that records the version a database is at (one row per migration applied).
SCHEMA_TABLE = "CREATE TABLE IF NOT EXISTS asyncflow_schema (version INTEGER NOT NULL)"


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: the version it brings the database to, and its statements."""

    version: int
    description: str
    statements: tuple[str, ...]

    def text(self) -> str:
        """The migration as a SQL script people can read (what ``store migrate`` prints)."""
        body = "".join(f"{textwrap.dedent(s).strip()};\n" for s in self.statements)
        return (
            f"-- asyncflow schema version {self.version}: {self.description}\n{body}"
            f"INSERT INTO asyncflow_schema (version) VALUES ({self.version});\n"
        )


def _tables(real: str) -> tuple[str, ...]:
    return (
        """
        CREATE TABLE asyncflow_runs (
            run_id TEXT PRIMARY KEY,
            flow TEXT NOT NULL,
            flow_fingerprint TEXT NOT NULL,
            inputs TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            failed_steps TEXT NOT NULL DEFAULT '[]',
            details TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX asyncflow_runs_flow ON asyncflow_runs (flow, updated_at)",
        "CREATE INDEX asyncflow_runs_status ON asyncflow_runs (status, updated_at)",
        "CREATE INDEX asyncflow_runs_updated ON asyncflow_runs (updated_at)",
        """
        CREATE TABLE asyncflow_steps (
            run_id TEXT NOT NULL,
            step TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            digest TEXT NOT NULL,
            output TEXT NOT NULL,
            PRIMARY KEY (run_id, step)
        )""",
        f"""
        CREATE TABLE asyncflow_leases (
            run_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            epoch BIGINT NOT NULL,
            expires_at {real} NOT NULL
        )""",
    )


SQLITE: tuple[Migration, ...] = (Migration(1, "runs, steps and leases", _tables("REAL")),)
POSTGRES: tuple[Migration, ...] = (
    Migration(1, "runs, steps and leases", _tables("DOUBLE PRECISION")),
)
