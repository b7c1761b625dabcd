"""examples/service: a signed webhook delivery and a file drop each give one summary."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.helpers import ROOT, serving, until

if TYPE_CHECKING:
    from types import ModuleType

pytestmark = pytest.mark.anyio


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "service_example", ROOT / "examples/service/service.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_serves_webhooks_and_an_inbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "0")
    service = example().make()
    out = Path("service-output")
    body = json.dumps({"name": "note", "text": "two words"}).encode()
    sig = hmac.new(b"demo-secret", body, hashlib.sha256).hexdigest()
    headers = {"x-signature-256": f"sha256={sig}", "webhook-id": "note-1"}
    async with serving(service) as url, httpx.AsyncClient() as client:
        answer = await client.post(f"{url}/documents", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        (out / "inbox" / "letter.txt").write_text("dear reader\nhello", encoding="utf-8")
        await until(lambda: len(list((out / "summaries").glob("*.json"))) == 2)
        health = await client.get(f"{url}/healthz")
        assert health.json()["status"] == "ok"
    summaries = {
        json.loads(p.read_text())["name"]: json.loads(p.read_text())
        for p in (out / "summaries").glob("*.json")
    }
    assert summaries["note"]["words"] == 2
    assert summaries["letter.txt"]["lines"] == 2
