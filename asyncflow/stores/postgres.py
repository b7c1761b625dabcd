"""PostgresStore: checkpoints in PostgreSQL, shared by engines on many machines.

Needs the extra: ``pip install 'asyncflow-engine[postgres]'`` (psycopg 3 and its pool). Its own
module, so ``import asyncflow.stores`` (and a star-import of it) never needs the extra.
"""

from __future__ import annotations

from asyncflow.stores._sql.postgres import PostgresStore

__all__ = ["PostgresStore"]

PostgresStore.__module__ = __name__
