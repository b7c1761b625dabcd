"""Test utilities: a real HTTP server on loopback whose faults you dial at runtime.

:func:`serve_flaky` runs :class:`FlakyServer`, a small ASGI app, under uvicorn (install the
``testing`` extra: ``pip install "asyncflow-engine[testing]"``)::

    async with serve_flaky(host="127.0.0.2") as server:
        server.fail_next(3, status=503)
        ...  # requests to server.url
        assert server.requests == 3

The server runs on the caller's event loop, inside a task group the context manager owns. That
was chosen over a thread so that tests can steer it with plain attribute writes and anyio
primitives (:meth:`FlakyServer.wait_for_requests`, :meth:`FlakyServer.release`) without
locks or cross-thread calls; readiness is the end of uvicorn's ``startup()``, the moment its
socket listens, so there is no polling and no sleep. The price is that server and client share
one CPU core: benchmarks run it in its own process instead (``python -m asyncflow.testing``).
Different loopback addresses (``127.0.0.2``, ``127.0.0.3``) are different hosts on Linux.

Endpoints (every method, after the faults below):

- ``POST /enrich``: a JSON document in, a JSON enrichment out (``id``, ``chars``, ``words``,
  ``keywords``: the longest distinct words).
- ``/status/{code}``: answers with that status.
- anything else: 200 with a JSON echo of method, path and the request's number.

Faults, checked in this order for each request (counted first, always):
``hang`` (wait until :meth:`~FlakyServer.release` or shutdown), ``stall_body`` (the answer
stops halfway through its body until then), ``trickle`` (the body comes one byte at a time),
``latency`` (added seconds),
forced statuses from :meth:`~FlakyServer.fail_next`, ``outage`` (every request gets 503), and
``error_rate`` (a seeded share of requests gets ``error_status``). ``retry_after`` is sent as
``Retry-After`` on every fault answer when set.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import socket
import sys
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from . import _net
from .stores._conformance import check_checkpoint_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping

    from anyio.abc import TaskStatus

__all__ = [
    "MAX_ARRIVALS",
    "MAX_BODY",
    "FlakyServer",
    "check_checkpoint_store",
    "enrich",
    "serve_flaky",
]

check_checkpoint_store.__module__ = __name__  # it prints as asyncflow.testing.X

_Message = dict[str, Any]

#: Request bodies larger than this are refused with 413: nothing unbounded, even in tests.
MAX_BODY = 1 << 20
#: Arrival times kept (:attr:`FlakyServer.arrivals`), the latest ones.
MAX_ARRIVALS = 100_000
_STATUS_PATH = re.compile(r"^/status/(\d{3})$")
_WORD = re.compile(r"\w+")


class FlakyServer:
    """An ASGI app with runtime-dialled faults and request counters. See the module docstring.

    Attributes:
        url: ``http://host:port`` once served by :func:`serve_flaky`.
        requests: how many requests reached the server, faulty ones included.
        paths: the same count by path.
        peers: the client address (host, port) of every connection requests came on.
        arrivals: when each of the latest :data:`MAX_ARRIVALS` requests reached the server, as
            ``time.monotonic()`` readings, in order: for checking a client's request rate.
        outage: answer every request with 503.
        latency: seconds added before answering.
        hang: hold every request until :meth:`release` (or shutdown).
        stall_body: send each answer's headers and the first half of its body, then hold the
            rest until :meth:`release` (or shutdown): a host that fails mid-body.
        trickle: seconds between the bytes of each answer's body, sent one at a time (0: all at
            once): a host too slow for any deadline yet never silent for a read timeout.
        error_rate: the share of requests answered with ``error_status``, drawn from a
            ``random.Random(seed)`` so a run is repeatable.
        error_status: the status of ``error_rate`` answers.
        retry_after: the ``Retry-After`` header value sent on fault answers, when not ``None``.
    """

    def __init__(self, *, seed: int = 0) -> None:
        self.url = ""
        self.requests = 0
        self.paths: collections.Counter[str] = collections.Counter()
        self.peers: set[tuple[str, int]] = set()
        self.arrivals: collections.deque[float] = collections.deque(maxlen=MAX_ARRIVALS)
        self.outage = False
        self.latency = 0.0
        self.hang = False
        self.stall_body = False
        self.trickle = 0.0
        self.error_rate = 0.0
        self.error_status = 503
        self.retry_after: str | None = None
        self._rng = random.Random(seed)
        self._forced: collections.deque[tuple[int, str | None]] = collections.deque()
        self._release: anyio.Event | None = None
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._closed = False

    # -- dials --------------------------------------------------------------------------------

    def fail_next(
        self, n: int = 1, *, status: int = 503, retry_after: float | str | None = None
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After`` when given)."""
        header = None if retry_after is None else _header_value(retry_after)
        self._forced.extend([(status, header)] * n)

    def reset(self) -> None:
        """Clear every fault (hung requests are released); counters are kept."""
        self.outage = False
        self.latency = 0.0
        self.hang = False
        self.stall_body = False
        self.trickle = 0.0
        self.error_rate = 0.0
        self.retry_after = None
        self._forced.clear()
        self.release()

    def release(self) -> None:
        """Let every request held by ``hang`` or ``stall_body`` go on."""
        if self._release is not None:
            self._release.set()
            self._release = None

    def count(self, path: str) -> int:
        """How many requests reached ``path``."""
        return self.paths[path]

    async def wait_for_requests(self, n: int) -> None:
        """Return once at least ``n`` requests have reached the server (counted on arrival)."""
        if self.requests >= n:
            return
        event = anyio.Event()
        self._waiters.append((n, event))
        await event.wait()

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[_Message]],
        send: Callable[[_Message], Awaitable[None]],
    ) -> None:
        """Serve one ASGI request."""
        if scope["type"] != "http":
            return  # no lifespan or websocket support: uvicorn runs us with lifespan="off"
        path: str = scope["path"]
        self.arrivals.append(time.monotonic())
        self.requests += 1
        self.paths[path] += 1
        client = scope.get("client")
        if client is not None:
            self.peers.add((client[0], client[1]))
        if self._waiters:
            still = []
            for n, event in self._waiters:
                if self.requests >= n:
                    event.set()
                else:
                    still.append((n, event))
            self._waiters = still
        body = await _read_body(receive)
        if body is None:
            await _respond(send, 413, {"error": f"body over {MAX_BODY} bytes"})
            return
        if self.hang and not self._closed:
            await self._held()
        if self.stall_body:
            send = self._stalling(send)
        if self.trickle > 0:
            send = self._trickling(send, self.trickle)
        if self.latency > 0:
            await anyio.sleep(self.latency)
        fault = self._fault()
        if fault is not None:
            status, retry_after = fault
            headers = [] if retry_after is None else [(b"retry-after", retry_after.encode())]
            await _respond(send, status, {"error": "injected fault", "status": status}, headers)
            return
        await self._route(scope, path, body, send)

    async def _held(self) -> None:
        if self._release is None:
            self._release = anyio.Event()
        await self._release.wait()

    def _stalling(
        self, send: Callable[[_Message], Awaitable[None]]
    ) -> Callable[[_Message], Awaitable[None]]:
        async def stalled(message: _Message) -> None:
            if message["type"] != "http.response.body" or self._closed:
                await send(message)
                return
            body: bytes = message.get("body", b"")
            half = len(body) // 2
            await send({"type": "http.response.body", "body": body[:half], "more_body": True})
            if not self._closed:
                await self._held()
            await send({**message, "body": body[half:]})

        return stalled

    def _trickling(
        self, send: Callable[[_Message], Awaitable[None]], interval: float
    ) -> Callable[[_Message], Awaitable[None]]:
        async def trickled(message: _Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
                return
            body: bytes = message.get("body", b"")
            sent = 0
            while sent < len(body) and not self._closed:  # shutting down: the rest at once
                byte = body[sent : sent + 1]
                await send({"type": "http.response.body", "body": byte, "more_body": True})
                sent += 1
                await anyio.sleep(interval)
            await send({**message, "body": body[sent:]})

        return trickled

    def _fault(self) -> tuple[int, str | None] | None:
        if self._forced:
            status, header = self._forced.popleft()
            return status, header if header is not None else self.retry_after
        if self.outage:
            return 503, self.retry_after
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            return self.error_status, self.retry_after
        return None

    async def _route(
        self,
        scope: MutableMapping[str, Any],
        path: str,
        body: bytes,
        send: Callable[[_Message], Awaitable[None]],
    ) -> None:
        if (m := _STATUS_PATH.match(path)) is not None:
            status = int(m.group(1))
            await _respond(send, status, {"status": status})
            return
        if path == "/enrich":
            if scope["method"] != "POST":
                await _respond(send, 405, {"error": "POST a JSON document to /enrich"})
                return
            try:
                doc = json.loads(body)
            except ValueError:
                await _respond(send, 400, {"error": "the body is not JSON"})
                return
            await _respond(send, 200, enrich(doc))
            return
        await _respond(
            send, 200, {"method": scope["method"], "path": path, "request": self.requests}
        )

    def _close(self) -> None:
        self._closed = True
        self.release()
        for _, event in self._waiters:
            event.set()
        self._waiters.clear()


def enrich(doc: object) -> dict[str, object]:
    """The ``/enrich`` answer for a JSON document: counts and keywords of its text."""
    if isinstance(doc, dict):
        text = str(doc.get("text", ""))
        doc_id = doc.get("id")
    else:
        text, doc_id = str(doc), None
    words = _WORD.findall(text)
    keywords = sorted({w.lower() for w in words}, key=lambda w: (-len(w), w))[:5]
    return {"id": doc_id, "chars": len(text), "words": len(words), "keywords": keywords}


def _header_value(retry_after: float | str) -> str:
    if isinstance(retry_after, str):
        return retry_after
    return f"{retry_after:g}"


async def _read_body(receive: Callable[[], Awaitable[_Message]]) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(
    send: Callable[[_Message], Awaitable[None]],
    status: int,
    payload: object,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _import_uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(
            "asyncflow.testing.serve_flaky needs uvicorn, which is not installed. "
            "Install it with: pip install 'asyncflow-engine[testing]' (or pip install uvicorn)."
        ) from exc
    return uvicorn


@asynccontextmanager
async def serve_flaky(
    host: str = "127.0.0.2",
    port: int = 0,
    *,
    seed: int = 0,
    backlog: int = 4096,
    app: FlakyServer | None = None,
) -> AsyncIterator[FlakyServer]:
    """Serve a :class:`FlakyServer` on ``host:port`` for the duration of the block.

    ``port=0`` picks a free port; the URL is ``server.url``. Pass ``app`` to serve a
    :class:`FlakyServer` of your own (a subclass with more endpoints); ``seed`` is then unused. The server is listening when the
    block starts. On exit, held requests are released, connections are closed and the server
    stops (within about a second, even with requests in flight).

    Raises:
        ImportError: uvicorn is not installed.
        OSError: the address cannot be bound.
    """
    uvicorn = _import_uvicorn()
    if app is None:
        app = FlakyServer(seed=seed)
    sock = _net.listening_socket(host, port)
    bound_port = sock.getsockname()[1]
    app.url = (
        f"http://[{host}]:{bound_port}"
        if sock.family == socket.AF_INET6
        else f"http://{host}:{bound_port}"
    )
    config = uvicorn.Config(
        app,
        interface="asgi3",
        lifespan="off",
        log_config=None,  # never reconfigure the process's logging
        log_level="warning",
        access_log=False,
        backlog=backlog,
        timeout_graceful_shutdown=1,
        # uvicorn's 5 s would close a connection idle while a benchmark times its other
        # clients, racing a request sent on it ("Server disconnected without a response").
        timeout_keep_alive=75,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)

    async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await server.startup(sockets=[sock])
            task_status.started()
            await server.main_loop()
        finally:
            app._close()
            with anyio.move_on_after(3, shield=True):
                if getattr(server, "started", False):
                    await server.shutdown(sockets=[sock])
            sock.close()

    async with anyio.create_task_group() as tg:
        await tg.start(run)
        try:
            yield app
        finally:
            app._close()
            server.should_exit = True


#: How ``python -m asyncflow.testing`` names itself in its help and errors.
_PROG = "python -m asyncflow.testing"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    port = int(text) if text.isdecimal() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be a number from 0 to 65535, not {text!r}")
    return port


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=_PROG,
        description="Serve a FlakyServer until killed; print its URL once it listens.",
    )
    p.add_argument("host", nargs="?", default="127.0.0.2", help="address (default: 127.0.0.2)")
    p.add_argument("port", nargs="?", default=0, type=_port, help="port (default: 0, a free one)")
    return p


async def _serve(host: str, port: int) -> None:
    async with serve_flaky(host, port) as server:
        print(server.url, flush=True)
        await anyio.sleep_forever()


def _main(argv: list[str] | None = None) -> int:
    """Serve until killed; exit 2 with one line on stderr when the server cannot start."""
    args = _parser().parse_args(argv)
    try:
        anyio.run(_serve, args.host, args.port)
    except ImportError as exc:  # uvicorn is not installed; the message says how to install it
        message = str(exc)
    except OSError as exc:  # an address this machine cannot listen on
        message = f"cannot listen on {args.host} port {args.port}: {exc}"
    except KeyboardInterrupt:
        return 130  # Ctrl-C: the shell's status for SIGINT, without a traceback
    else:
        return 0
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main())
