"""Shared fixtures: asyncio is the backend (aiofiles and the scale-out engines are asyncio-only).

Two real HTTP servers on loopback, ``host_a`` on 127.0.0.2 and ``host_b`` on 127.0.0.3, act as
two different hosts; faults are dialled on them and requests are counted by them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import stamina

from asyncflow.testing import FlakyServer, serve_flaky

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory: Engine() checkpoints into ./.asyncflow by default."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def host_a() -> AsyncIterator[FlakyServer]:
    async with serve_flaky(host="127.0.0.2") as server:
        yield server


@pytest.fixture
async def host_b() -> AsyncIterator[FlakyServer]:
    async with serve_flaky(host="127.0.0.3") as server:
        yield server


@pytest.fixture
def no_waits() -> Iterator[None]:
    """Retries without backoff (up to 10 attempts: each test's own Retry caps it lower)."""
    with stamina.set_testing(True, attempts=10, cap=True):
        yield
