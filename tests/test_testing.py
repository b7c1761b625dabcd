from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from asyncflow.testing import MAX_BODY, enrich, serve_flaky

if TYPE_CHECKING:
    import subprocess

    from asyncflow.testing import FlakyServer

pytestmark = pytest.mark.anyio


async def test_two_servers_are_two_hosts_with_their_own_counters(
    host_a: FlakyServer, host_b: FlakyServer
) -> None:
    """127.0.0.2 and 127.0.0.3 serve separately; each counts its own requests, by path."""
    assert host_a.url.startswith("http://127.0.0.2:")
    assert host_b.url.startswith("http://127.0.0.3:")
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            await client.get(host_a.url + "/one")
        await client.get(host_a.url + "/two")
        await client.get(host_b.url + "/one")
    assert (host_a.requests, host_a.count("/one"), host_a.count("/two")) == (4, 3, 1)
    assert (host_b.requests, host_b.count("/one")) == (1, 1)


async def test_faults_are_dialled_at_runtime(host_a: FlakyServer) -> None:
    """fail_next, outage and /status/{code} answer as asked, Retry-After included."""
    async with httpx.AsyncClient(base_url=host_a.url) as client:
        host_a.fail_next(2, status=429, retry_after=7)
        first = await client.get("/x")
        assert (first.status_code, first.headers["retry-after"]) == (429, "7")
        assert (await client.get("/x")).status_code == 429
        assert (await client.get("/x")).status_code == 200
        host_a.outage = True
        assert (await client.get("/x")).status_code == 503
        host_a.reset()
        assert (await client.get("/status/418")).status_code == 418


async def test_error_rate_is_seeded_and_repeatable() -> None:
    """The same seed gives the same sequence of failures."""
    runs = []
    for _ in range(2):
        async with serve_flaky(host="127.0.0.2", seed=42) as server:
            server.error_rate = 0.5
            async with httpx.AsyncClient(base_url=server.url) as client:
                runs.append([(await client.get("/r")).status_code for _ in range(20)])
    assert runs[0] == runs[1]
    assert 0 < runs[0].count(503) < 20


async def test_hang_holds_requests_until_released(host_a: FlakyServer) -> None:
    """A hung request is counted on arrival and answered after release()."""
    host_a.hang = True
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=host_a.url) as client:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                statuses.append((await client.get("/held")).status_code)

            tg.start_soon(call)
            await host_a.wait_for_requests(1)
            assert statuses == []
            host_a.reset()
    assert statuses == [200]


async def test_enrich_endpoint(host_a: FlakyServer) -> None:
    """POST /enrich takes a JSON document and returns its enrichment."""
    async with httpx.AsyncClient(base_url=host_a.url) as client:
        response = await client.post("/enrich", json={"id": 7, "text": "Reliable async flows"})
        assert response.json() == enrich({"id": 7, "text": "Reliable async flows"})
        assert response.json()["words"] == 3
        assert (await client.get("/enrich")).status_code == 405
        assert (await client.post("/enrich", content=b"{not json")).status_code == 400
        assert (await client.post("/enrich", content=b"x" * (MAX_BODY + 1))).status_code == 413


async def test_missing_uvicorn_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ImportError, match=r"pip install 'asyncflow-engine\[testing\]'"):
        async with serve_flaky():
            pass


async def test_stall_body_holds_the_second_half_until_release(host_a: FlakyServer) -> None:
    """Headers and half the body arrive; the rest waits for release()."""
    host_a.stall_body = True
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=1.0)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(host_a.url + "/stalled")
        async with client.stream("GET", host_a.url + "/released") as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            first = await chunks.__anext__()
            host_a.release()
            rest = b"".join([chunk async for chunk in chunks])
        assert b'"path": "/released"' in first + rest
        assert first
        assert rest


async def test_trickle_sends_the_body_one_byte_at_a_time(host_a: FlakyServer) -> None:
    """Headers at once, then the body in pieces (one-byte sends); all of it arrives."""
    host_a.trickle = 0.001
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", host_a.url + "/trickled") as response,
    ):
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert len(chunks) > 1  # not all at once (sends a millisecond apart may still coalesce)
    assert b'"path": "/trickled"' in b"".join(chunks)


async def serve_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m asyncflow.testing ARGS``, to its end."""
    command = [sys.executable, "-m", "asyncflow.testing", *args]
    with anyio.fail_after(30):
        return await anyio.run_process(command, check=False)


async def test_command_line_help_prints_usage() -> None:
    """``--help`` is help, not a host name: usage on stdout, exit 0, nothing served."""
    out = await serve_command("--help")
    assert out.returncode == 0
    assert out.stdout.decode().startswith("usage: python -m asyncflow.testing [-h] [host] [port]")
    assert out.stderr == b""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["127.0.0.2", "http"], "argument port: port must be a number from 0 to 65535, not 'http'"),
        (["127.0.0.2", "65536"], "not '65536'"),
        (["127.0.0.2", "0", "more"], "unrecognized arguments: more"),
        (["--seed", "1"], "unrecognized arguments: --seed"),
        # TEST-NET-1: an address of no interface here, so it cannot be bound.
        (["192.0.2.1"], "cannot listen on 192.0.2.1 port 0: [Errno"),
    ],
    ids=[
        "port-not-a-number",
        "port-too-large",
        "extra-argument",
        "unknown-option",
        "no-such-address",
    ],
)
async def test_command_line_misuse_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    """A wrong command line or an address that cannot be bound: one line on stderr, exit 2."""
    out = await serve_command(*args)
    assert out.returncode == 2
    assert out.stdout == b""
    error = out.stderr.decode()
    assert error.startswith("python -m asyncflow.testing: error: ")
    assert says in error
    assert error.count("\n") == 1


async def test_command_line_serves_until_interrupted() -> None:
    """The URL once the server listens; it answers; Ctrl-C ends it with 130, no traceback."""
    command = [sys.executable, "-m", "asyncflow.testing", "127.0.0.2"]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None
        line = b""
        with anyio.fail_after(30):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive()
            url = line.decode().strip()
            assert url.startswith("http://127.0.0.2:")
            async with httpx.AsyncClient() as client:
                assert (await client.get(url + "/ping")).json()["path"] == "/ping"
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
            assert process.stderr is not None
            assert [chunk async for chunk in process.stderr] == []
