from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from asyncflow import (
    Engine,
    Event,
    Flow,
    Service,
    TriggerDuplicate,
    TriggerInvalid,
    TriggerRejected,
)
from asyncflow.triggers import Webhook
from tests.helpers import serving, statuses, until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

SECRET = b"s3cret"
STANDARD = "whsec_" + base64.b64encode(b"standard-key-0123456789").decode()


def doc_flow(done: list[str], gate: anyio.Event | None = None) -> Flow:
    flow = Flow("docs")

    @flow.step
    async def ingest(doc: str) -> str:
        if gate is not None:
            await gate.wait()
        done.append(doc)
        return doc.upper()

    return flow


def signed(body: bytes, delivery: str) -> dict[str, str]:
    sig = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return {
        "x-signature-256": f"sha256={sig}",
        "webhook-id": delivery,
        "content-type": "application/json",
    }


def standard(body: bytes, delivery: str, stamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if stamp is None else stamp)
    key = base64.b64decode(STANDARD.removeprefix("whsec_"))
    sig = base64.b64encode(
        hmac.new(key, f"{delivery}.{ts}.".encode() + body, hashlib.sha256).digest()
    )
    return {
        "webhook-id": delivery,
        "webhook-timestamp": ts,
        "webhook-signature": f"v1,bad v1,{sig.decode()}",
    }


async def test_a_signed_delivery_runs_once_and_a_replay_is_a_duplicate(tmp_path: Path) -> None:
    """202 with the run id; the same delivery id again answers 200 'duplicate' and runs nothing."""
    done: list[str] = []
    events: list[Event] = []
    engine = Engine(store=tmp_path / "runs", observers=[events.append])
    service = Service(engine, triggers=[Webhook("/docs", doc_flow(done), secret=SECRET)], port=0)
    body = json.dumps({"doc": "a"}).encode()
    async with serving(service) as url, httpx.AsyncClient() as client:
        first = await client.post(f"{url}/docs", content=body, headers=signed(body, "d-1"))
        assert first.status_code == 202, first.text
        run_id = first.json()["run_id"]
        assert run_id == "webhook-docs@d-1"
        await until(lambda: done == ["a"])
        again = await client.post(f"{url}/docs", content=body, headers=signed(body, "d-1"))
        assert again.status_code == 200
        assert again.json() == {"run_id": run_id, "status": "duplicate"}
        assert engine.store is not None
        await until(lambda: not service.statistics()["in_flight"])
        assert await statuses(engine.store) == {run_id: "succeeded"}
    assert done == ["a"]
    assert [e for e in events if isinstance(e, TriggerDuplicate)] != []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-signature-256": "sha256=" + "0" * 64},
        {"x-signature-256": "sha256=" + hmac.new(b"other", b"{}", hashlib.sha256).hexdigest()},
    ],
    ids=["missing", "zeros", "other-key"],
)
async def test_a_bad_signature_answers_401_and_admits_nothing(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    done: list[str] = []
    events: list[Event] = []
    engine = Engine(store=tmp_path / "runs", observers=[events.append])
    service = Service(engine, triggers=[Webhook("/docs", doc_flow(done), secret=SECRET)], port=0)
    async with serving(service) as url, httpx.AsyncClient() as client:
        answer = await client.post(f"{url}/docs", content=b'{"doc": "a"}', headers=headers)
        assert answer.status_code == 401
        assert engine.store is not None
        assert await statuses(engine.store) == {}
    assert done == []
    assert [type(e) for e in events] == [TriggerRejected]


async def test_standard_webhooks_verify_signature_and_timestamp(tmp_path: Path) -> None:
    """A good Standard Webhooks delivery is admitted; one 10 minutes old answers 401."""
    done: list[str] = []
    hook = Webhook("/std", doc_flow(done), standard_secret=STANDARD)
    service = Service(Engine(store=tmp_path / "runs"), triggers=[hook], port=0)
    body = b'{"doc": "s"}'
    async with serving(service) as url, httpx.AsyncClient() as client:
        stale = await client.post(
            f"{url}/std", content=body, headers=standard(body, "m1", int(time.time()) - 600)
        )
        assert stale.status_code == 401
        assert "timestamp" in stale.json()["error"]
        forged = await client.post(
            f"{url}/std", content=b'{"doc": "x"}', headers=standard(body, "m1")
        )
        assert forged.status_code == 401
        good = await client.post(f"{url}/std", content=body, headers=standard(body, "m1"))
        assert good.status_code == 202, good.text
        await until(lambda: done == ["s"])


async def test_bearer_token(tmp_path: Path) -> None:
    done: list[str] = []
    hook = Webhook("/t", doc_flow(done), token="tok-1")
    service = Service(Engine(store=tmp_path / "runs"), triggers=[hook], port=0)
    async with serving(service) as url, httpx.AsyncClient() as client:
        bad = await client.post(
            f"{url}/t", json={"doc": "b"}, headers={"authorization": "Bearer nope"}
        )
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"] == "Bearer"
        good = await client.post(
            f"{url}/t", json={"doc": "b"}, headers={"authorization": "Bearer tok-1"}
        )
        assert good.status_code == 202
        await until(lambda: done == ["b"])


async def test_oversized_malformed_and_wrong_inputs_are_refused_with_a_reason(
    tmp_path: Path,
) -> None:
    done: list[str] = []
    events: list[Event] = []
    hook = Webhook("/docs", doc_flow(done), insecure=True, max_body=100)
    engine = Engine(store=tmp_path / "runs", observers=[events.append])
    service = Service(engine, triggers=[hook], port=0)
    async with serving(service) as url, httpx.AsyncClient() as client:
        big = await client.post(f"{url}/docs", content=b"x" * 101)
        assert big.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"y" * 30

        streamed = await client.post(f"{url}/docs", content=chunks())  # no content-length
        assert streamed.status_code == 413
        broken = await client.post(f"{url}/docs", content=b'{"doc": ')
        assert broken.status_code == 400
        assert "not JSON" in broken.json()["error"]
        listed = await client.post(f"{url}/docs", content=b"[1, 2]")
        assert listed.status_code == 400
        assert "JSON object" in listed.json()["error"]
        wrong = await client.post(f"{url}/docs", json={"document": "a"})
        assert wrong.status_code == 400
        assert "doc" in wrong.json()["error"]
        assert engine.store is not None
        assert await statuses(engine.store) == {}
    assert done == []
    assert sum(isinstance(e, TriggerInvalid) for e in events) == 3


async def test_a_flood_past_the_bound_answers_429_with_retry_after(tmp_path: Path) -> None:
    """Two runs may be in flight; a third delivery is refused until one finishes."""
    done: list[str] = []
    gate = anyio.Event()
    hook = Webhook("/docs", doc_flow(done, gate), insecure=True, max_in_flight=2)
    engine = Engine(store=tmp_path / "runs")
    service = Service(engine, triggers=[hook], port=0)
    async with serving(service) as url, httpx.AsyncClient() as client:
        answers = [
            await client.post(f"{url}/docs", json={"doc": d}, headers={"webhook-id": d})
            for d in ("a", "b", "c", "d")
        ]
        assert [a.status_code for a in answers] == [202, 202, 429, 429]
        assert answers[2].headers["retry-after"] == "1"
        gate.set()
        await until(lambda: sorted(done) == ["a", "b"])
        await until(lambda: not service.statistics()["in_flight"])
        retried = await client.post(f"{url}/docs", json={"doc": "c"}, headers={"webhook-id": "c"})
        assert retried.status_code == 202
        await until(lambda: sorted(done) == ["a", "b", "c"])


async def test_a_stopped_service_answers_503(tmp_path: Path) -> None:
    hook = Webhook("/docs", doc_flow([]), insecure=True)
    service = Service(Engine(store=tmp_path / "runs"), triggers=[hook])
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        answer = await client.post("/docs", json={"doc": "a"})
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        health = await client.get("/healthz")
        assert health.status_code == 503


def test_a_webhook_without_verification_is_refused_unless_insecure() -> None:
    with pytest.raises(ValueError, match="no verification"):
        Webhook("/x", doc_flow([]))
    with pytest.raises(ValueError, match="not several"):
        Webhook("/x", doc_flow([]), secret="a", token="b")


async def test_refused_deliveries_are_logged_by_the_log_observer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad signature is an INFO line (the sender may retry); a malformed body a WARNING."""
    from asyncflow.observe import LogObserver

    engine = Engine(store=tmp_path / "runs", observers=[LogObserver()])
    service = Service(engine, triggers=[Webhook("/docs", doc_flow([]), secret=SECRET)], port=0)
    caplog.set_level(logging.INFO, logger="asyncflow")
    body = b"{broken"
    async with serving(service) as url, httpx.AsyncClient() as client:
        assert (await client.post(f"{url}/docs", content=b"{}")).status_code == 401
        assert (
            await client.post(f"{url}/docs", content=body, headers=signed(body, "x"))
        ).status_code == 400
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "asyncflow"]
    assert [level for level, _ in lines] == [logging.INFO, logging.WARNING]
    assert "rejected: unauthorized: missing x-signature-256 header" in lines[0][1]
    assert "invalid: the body is not JSON" in lines[1][1]


async def test_an_inputs_function_that_raises_answers_400_with_its_error(tmp_path: Path) -> None:
    hook = Webhook("/docs", doc_flow([]), insecure=True, inputs=lambda body: {"doc": body["text"]})
    service = Service(Engine(store=tmp_path / "runs"), triggers=[hook], port=0)
    async with serving(service) as url, httpx.AsyncClient() as client:
        answer = await client.post(f"{url}/docs", json={"other": 1})
    assert answer.status_code == 400
    assert answer.json() == {"error": "KeyError: 'text'"}


async def test_a_deliverys_traceparent_is_kept_with_its_run_and_a_malformed_one_ignored(
    tmp_path: Path,
) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    gate = anyio.Event()  # the runs wait: the pending manifests are what is checked
    hook = Webhook("/docs", doc_flow([], gate), insecure=True)
    engine = Engine(store=tmp_path / "runs")
    async with (
        serving(Service(engine, triggers=[hook], port=0)) as url,
        httpx.AsyncClient() as client,
    ):
        for delivery, header in (("t-1", parent), ("t-2", "not-a-trace")):
            headers = {"webhook-id": delivery, "traceparent": header}
            answer = await client.post(f"{url}/docs", json={"doc": delivery}, headers=headers)
            assert answer.status_code == 202
        assert engine.store is not None
        kept = [(await engine.store.load_run(f"webhook-docs@{d}")).manifest for d in ("t-1", "t-2")]
        gate.set()
    assert kept[0] is not None
    assert parent in kept[0].details
    assert kept[1] is not None
    assert "not-a-trace" not in kept[1].details
