"""Shared fixtures: asyncio is the backend (aiofiles and the scale-out engines are asyncio-only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory: Engine() checkpoints into ./.asyncflow by default."""
    monkeypatch.chdir(tmp_path)
