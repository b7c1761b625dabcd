"""Webhook: an HTTP endpoint in the Service's app; each verified delivery is admitted once."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any, TypeAlias

from asyncflow._hooks import validate_traceparent

from ._base import STOPPING, Intake, Outcome, Trigger, default_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from asyncflow._flow import Flow

    from ._base import Route

__all__ = ["Webhook"]

#: Default largest body accepted (bytes); larger ones answer 413.
DEFAULT_MAX_BODY = 1 << 20
#: Standard Webhooks: how far webhook-timestamp may be from now, in seconds.
DEFAULT_TOLERANCE = 300.0

Send: TypeAlias = "Callable[[dict[str, Any]], Awaitable[None]]"


class Webhook(Trigger):
    """An HTTP ``POST`` endpoint at ``path``: each verified delivery becomes one run.

    Verification runs on the raw body, in constant time; give exactly one of:

    - ``standard_secret``: the `Standard Webhooks <https://www.standardwebhooks.com>`_ scheme
      (``webhook-id``, ``webhook-timestamp`` within ``tolerance`` seconds, ``webhook-signature``
      ``v1,<base64 HMAC-SHA256>``); the secret as its issuer gives it (``whsec_...``).
    - ``secret``: an HMAC-SHA256 of the body in ``signature_header``, as hex, optionally
      prefixed ``sha256=`` (GitHub's form).
    - ``token``: a bearer token in ``Authorization: Bearer <token>``.
    - ``insecure=True``: no verification (a private network, tests).

    The delivery's key, hence its run id, is the ``id_header`` value (``webhook-id`` by
    default), or the SHA-256 of the body when a delivery has none: a redelivery is a duplicate.

    Answers: 202 ``{"run_id", "status": "admitted"}``; 200 with ``"duplicate"`` for a delivery
    seen before; 400 for a body that is not JSON or inputs the flow refuses (with the reason);
    401 for a bad or missing signature (nothing admitted); 413 for a body over ``max_body``;
    429 with ``Retry-After`` when the runs in flight are at their bound; 503 while the service
    is stopping or when the store fails (the sender should retry).

    Args:
        path: the route, e.g. ``"/documents"``.
        flow: the flow each delivery runs.
        inputs: the run inputs from the parsed JSON body; by default the body itself (an object).
        name: the trigger's name (default ``webhook-<path>``).
    """

    kind = "webhook"

    def __init__(
        self,
        path: str,
        flow: Flow,
        *,
        secret: str | bytes | None = None,
        standard_secret: str | None = None,
        token: str | None = None,
        insecure: bool = False,
        inputs: Callable[[Any], Mapping[str, object]] | None = None,
        name: str | None = None,
        signature_header: str = "x-signature-256",
        id_header: str = "webhook-id",
        max_body: int = DEFAULT_MAX_BODY,
        tolerance: float = DEFAULT_TOLERANCE,
        max_in_flight: int | None = None,
    ) -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"Webhook path {path!r}: give a path starting with '/'.")
        given = [
            n
            for n, v in (("secret", secret), ("standard_secret", standard_secret), ("token", token))
            if v
        ]
        if len(given) > 1:
            raise ValueError(f"Webhook {path}: give one of {', '.join(given)}, not several.")
        if not given and not insecure:
            raise ValueError(
                f"Webhook {path} has no verification: give secret= (HMAC-SHA256), "
                f"standard_secret= (Standard Webhooks) or token= (bearer); or insecure=True "
                f"to accept unsigned deliveries."
            )
        if not isinstance(max_body, int) or max_body < 1:
            raise ValueError(f"max_body={max_body!r}: give the largest body in bytes (at least 1).")
        super().__init__(
            flow, name=name or default_name("webhook", path), max_in_flight=max_in_flight
        )
        self.path = path
        self._hmac_key = secret.encode() if isinstance(secret, str) else secret
        self._standard_key = _standard_key(standard_secret) if standard_secret else None
        self._token = token.encode() if token else None
        self._inputs = inputs
        self._signature_header = signature_header.lower().encode("latin-1")
        self._id_header = id_header.lower().encode("latin-1")
        self.max_body = max_body
        self.tolerance = tolerance

    def routes(self, intake: Intake, /) -> Sequence[Route]:
        """The one ``POST`` route at :attr:`path`."""
        return [(self.path, ("POST",), _Endpoint(self, intake))]

    def verify(
        self, headers: Mapping[bytes, bytes], body: bytes, *, now: float | None = None
    ) -> str:
        """Check one delivery's signature; return ``""`` when good, else why it is not."""
        if self._standard_key is not None:
            return self._verify_standard(headers, body, time.time() if now is None else now)
        if self._hmac_key is not None:
            given = headers.get(self._signature_header, b"").strip()
            if given.startswith(b"sha256="):
                given = given[7:]
            expected = hmac.new(self._hmac_key, body, hashlib.sha256).hexdigest().encode()
            if not given:
                return f"missing {self._signature_header.decode()} header"
            return "" if hmac.compare_digest(given.lower(), expected) else "signature mismatch"
        if self._token is not None:
            auth = headers.get(b"authorization", b"")
            scheme, _, credentials = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not credentials:
                return "missing bearer token"
            return "" if hmac.compare_digest(credentials.strip(), self._token) else "wrong token"
        return ""

    def _verify_standard(self, headers: Mapping[bytes, bytes], body: bytes, now: float) -> str:
        assert self._standard_key is not None
        msg_id = headers.get(b"webhook-id")
        stamp = headers.get(b"webhook-timestamp")
        signatures = headers.get(b"webhook-signature")
        if not msg_id or not stamp or not signatures:
            return "missing webhook-id, webhook-timestamp or webhook-signature header"
        try:
            sent = int(stamp)
        except ValueError:
            return "webhook-timestamp is not a whole number of seconds"
        if abs(now - sent) > self.tolerance:
            return f"webhook-timestamp is more than {self.tolerance:g} s from now"
        signed = msg_id + b"." + stamp + b"." + body
        expected = base64.b64encode(hmac.new(self._standard_key, signed, hashlib.sha256).digest())
        good = False
        for item in signatures.split():
            version, _, sig = item.partition(b",")
            # Every candidate is compared, so the time taken does not say which one matched.
            good |= version == b"v1" and hmac.compare_digest(sig, expected)
        return "" if good else "signature mismatch"

    def inputs_of(self, body: object) -> Mapping[str, object]:
        """The run inputs of a parsed body (raises on a body the mapping refuses)."""
        if self._inputs is not None:
            result = self._inputs(body)
        else:
            result = body  # type: ignore[assignment]  # checked just below
        if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
            raise ValueError(
                "the inputs are not an object of named values"
                + ("" if self._inputs else ": send a JSON object, or give Webhook(inputs=...)")
            )
        return result


def _standard_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error as exc:
        raise ValueError(
            "standard_secret is not a Standard Webhooks secret (whsec_ then base64): " + str(exc)
        ) from exc


class _Endpoint:
    """The raw ASGI endpoint of one webhook (no per-request Starlette objects: it is hot)."""

    __slots__ = ("_hook", "_intake")

    def __init__(self, hook: Webhook, intake: Intake) -> None:
        self._hook = hook
        self._intake = intake

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Send) -> None:
        hook = self._hook
        if not self._intake.accepting:
            await _answer(send, 503, {"error": "the service is stopping; retry later"}, retry=5)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > hook.max_body:
            await _answer(send, 413, {"error": f"body over {hook.max_body} bytes"})
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > hook.max_body:
                await _answer(send, 413, {"error": f"body over {hook.max_body} bytes"})
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = hook.verify(headers, body)
        key = headers.get(hook._id_header)
        key_text = key.decode("latin-1") if key else "sha256-" + hashlib.sha256(body).hexdigest()
        if problem:
            self._intake.refuse(key_text, Outcome.REJECTED, f"unauthorized: {problem}")
            await _answer(send, 401, {"error": problem}, auth=hook._token is not None)
            return
        try:
            inputs = hook.inputs_of(json.loads(body))
        except json.JSONDecodeError as exc:
            reason = f"the body is not JSON: {exc}"
        except Exception as exc:  # the user's inputs= refused the body: the sender's fault
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        else:
            reason = ""
        if reason:
            self._intake.refuse(key_text, Outcome.INVALID, reason)
            await _answer(send, 400, {"error": reason})
            return
        try:
            admission = await self._intake.admit(
                key_text, inputs, wait=False, traceparent=_traceparent(headers)
            )
        except Exception as exc:  # the store failed: nothing admitted, the sender retries
            await _answer(send, 503, {"error": f"could not admit: {exc}"}, retry=5)
            return
        outcome = admission.outcome
        if outcome is Outcome.ADMITTED:
            await _answer(send, 202, {"run_id": admission.run_id, "status": "admitted"})
        elif outcome is Outcome.DUPLICATE:
            await _answer(send, 200, {"run_id": admission.run_id, "status": "duplicate"})
        elif outcome is Outcome.INVALID:
            await _answer(send, 400, {"error": admission.reason, "run_id": admission.run_id})
        elif admission.reason == STOPPING:
            await _answer(send, 503, {"error": admission.reason}, retry=5)
        else:
            await _answer(send, 429, {"error": admission.reason}, retry=1)


def _traceparent(headers: Mapping[bytes, bytes]) -> str | None:
    """The request's W3C trace context; one that is malformed is ignored, as the spec says."""
    raw = headers.get(b"traceparent")
    if not raw:
        return None
    try:
        return validate_traceparent(raw.decode("latin-1"))
    except ValueError:
        return None


async def _answer(
    send: Send, status: int, payload: dict[str, object], *, retry: int = 0, auth: bool = False
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry:
        headers.append((b"retry-after", str(retry).encode()))
    if auth:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
