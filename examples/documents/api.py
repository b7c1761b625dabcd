"""A local enrichment API with faults you can dial: the "external service" of the demo.

It is :class:`asyncflow.testing.FlakyServer` (``POST /enrich``) in a process of its own, with:

- an error rate (seeded), added latency, and a share of 429 answers with ``Retry-After``;
- an outage window: from the ``outage_after``-th enrich request on, every request gets 503
  for ``outage_for`` seconds (so the outage strikes at the same point of every demo run);
- ``GET /_stats``: the requests it received (total, per path, per document id);
- ``POST /_control``: change any dial at run time, e.g. ``{"outage": false}``.

Run: ``python examples/documents/api.py --port 0 --error-rate 0.1`` prints its URL when ready.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio

from asyncflow.testing import FlakyServer, serve_flaky

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

Message = dict[str, Any]
DIALS = ("error_rate", "latency", "rate_limited", "retry_after_s", "outage_after", "outage_for")


class EnrichmentAPI(FlakyServer):
    """FlakyServer plus an outage window, 429s, per-document counts and control endpoints."""

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.rate_limited = 0.0
        self.retry_after_s = 0.2
        self.outage_after: int | None = None
        self.outage_for = 5.0
        self.outage_until = 0.0
        self.outages = 0
        self.per_doc: collections.Counter[str] = collections.Counter()

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path == "/_stats":
            await _json(send, 200, self.stats())
            return
        if scope["type"] == "http" and path == "/_control":
            body = await _body(receive)
            try:
                self.control(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                await _json(send, 400, {"error": str(exc)})
                return
            await _json(send, 200, self.stats())
            return
        if path == "/enrich":
            self._before_enrich()
        await super().__call__(scope, self._counting(receive), send)

    def _before_enrich(self) -> None:
        now = time.monotonic()
        n = self.count("/enrich") + 1
        if self.outage_after is not None and n == self.outage_after:
            self.outage_until = now + self.outage_for
            self.outages += 1
        self.outage = now < self.outage_until
        if not self.outage and self.rate_limited > 0 and self._rng.random() < self.rate_limited:
            self.fail_next(1, status=429, retry_after=self.retry_after_s)

    def _counting(
        self, receive: Callable[[], Awaitable[Message]]
    ) -> Callable[[], Awaitable[Message]]:
        async def wrapped() -> Message:
            message = await receive()
            body = message.get("body", b"")
            if body.startswith(b"{"):
                try:
                    doc_id = json.loads(body).get("id")
                except ValueError:
                    doc_id = None
                if isinstance(doc_id, str):
                    self.per_doc[doc_id] += 1
            return message

        return wrapped

    def control(self, dials: dict[str, object]) -> None:
        """Set dials by name; ``outage`` true/false starts or ends an outage now."""
        if not isinstance(dials, dict):
            raise TypeError("POST a JSON object of dials")
        for name, value in dials.items():
            if name == "outage":
                self.outage_until = time.monotonic() + self.outage_for if value else 0.0
                self.outage = bool(value)
            elif name in DIALS:
                setattr(self, name, value)
            else:
                raise ValueError(f"unknown dial {name!r}; known: outage, {', '.join(DIALS)}")

    def stats(self) -> dict[str, object]:
        """What the API has received so far."""
        return {
            "requests": self.requests,
            "enrich": self.count("/enrich"),
            "outages": self.outages,
            "outage_now": time.monotonic() < self.outage_until,
            "per_doc": dict(self.per_doc),
        }


async def _body(receive: Callable[[], Awaitable[Message]]) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _json(send: Callable[[Message], Awaitable[None]], status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def main(args: argparse.Namespace) -> None:
    app = EnrichmentAPI(seed=args.seed)
    app.control({name: getattr(args, name) for name in DIALS})
    async with serve_flaky(args.host, args.port, app=app) as server:
        print(server.url, flush=True)
        await anyio.sleep_forever()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--error-rate", dest="error_rate", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate-limited", dest="rate_limited", type=float, default=0.0)
    parser.add_argument("--retry-after", dest="retry_after_s", type=float, default=0.2)
    parser.add_argument("--outage-after", dest="outage_after", type=int, default=None)
    parser.add_argument("--outage-for", dest="outage_for", type=float, default=5.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))
