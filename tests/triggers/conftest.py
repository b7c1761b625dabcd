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


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """``redis://127.0.0.1:<port>/0`` of a fresh redis-server, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed: .ci/system-deps installs it under CI")
        pytest.skip(
            "redis-server is not installed (make system-deps, or apt-get install redis-server)"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert proc.poll() is None, (
                f"redis-server exited: {proc.stderr.read() if proc.stderr else ''!r}"
            )
            assert time.monotonic() < deadline, "redis-server did not answer PING within 30 s"
            time.sleep(0.01)  # waiting for another process to listen
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
