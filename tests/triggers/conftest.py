"""A real redis-server on loopback for the RedisStream tests, started per test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A redis-server process without persistence; :meth:`restart` loses its data."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return proc
            except OSError:
                pass
            assert proc.poll() is None, (
                f"redis-server exited: {proc.stderr.read() if proc.stderr else ''!r}"
            )
            assert time.monotonic() < deadline, "redis-server did not answer PING within 30 s"
            time.sleep(0.01)  # waiting for another process to listen

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.proc = self._start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on 127.0.0.1 (skipped without one outside CI; failed under CI)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed: .ci/system-deps installs it under CI")
        pytest.skip(
            "redis-server is not installed (make system-deps, or apt-get install redis-server)"
        )
    server = RedisServer(binary, tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:<port>/0`` of a fresh redis-server."""
    return redis_server.url
