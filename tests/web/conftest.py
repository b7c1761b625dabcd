"""The runs page's fixtures: a loopback server for an ASGI app, and Debian's Chromium."""

from __future__ import annotations

import os
import shutil
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import uvicorn

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import TaskStatus
    from playwright.async_api import Browser
    from starlette.types import ASGIApp

#: Debian's package (installed by .ci/system-deps); the tests never download a browser.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--no-first-run",
]


@asynccontextmanager
async def serve_app(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) for the block; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)

    async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        config.load()
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
            task_status.started()
            await server.main_loop()
        finally:
            with anyio.move_on_after(3, shield=True):
                await server.shutdown(sockets=[sock])
            sock.close()

    async with anyio.create_task_group() as tg:
        await tg.start(run)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from Debian, driven by playwright; skipped without it unless CI."""
    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: .ci/system-deps installs it (apt chromium).")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); CI runs this test.")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched: Any = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
