"""Shared fixtures: asyncio is the backend (aiofiles and the scale-out engines are asyncio-only)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
