"""Store fixtures: one real PostgreSQL server for the session, a new database per test."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest

from tests.servers import Postgres, started_postgres

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    with started_postgres() as server:
        yield server


@pytest.fixture
def new_database(postgres_server: Postgres) -> Callable[[], str]:
    """Makes an empty database on the session's server and returns its DSN."""
    return lambda: postgres_server.create_database(f"t{next(_databases)}")
