from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from asyncflow import Engine, Flow, Service

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine
    from pathlib import Path

pytestmark = pytest.mark.anyio


def _flow() -> Flow:
    flow = Flow("echo")

    @flow.step
    async def echo(doc: str) -> str:
        return doc

    return flow


async def _plain(
    scope: dict[str, object], receive: object, send: Callable[..., Coroutine[object, object, None]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": f"mounted {scope['path']}".encode()})


async def test_healthz_and_mount_answer_over_http(tmp_path: Path) -> None:
    """/healthz says ok while the service runs; an app mounted at /extra answers under it."""
    service = Service(Engine(store=tmp_path / "runs"), port=0)
    service.mount("/extra", _plain)
    async with httpx.AsyncClient() as client:
        ready: list[str] = []
        import anyio

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: service.serve(ready=ready.append))
            from tests.helpers import until

            await until(lambda: bool(ready))
            health = await client.get(f"{ready[0]}/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
            extra = await client.get(f"{ready[0]}/extra/page")
            assert extra.text == "mounted /extra/page"
            tg.cancel_scope.cancel()


def test_mount_refuses_a_path_taken_or_root() -> None:
    service = Service(Engine(store=None))
    service.mount("/runs", _plain)
    with pytest.raises(ValueError, match="already mounted"):
        service.mount("/runs", _plain)
    with pytest.raises(ValueError, match="not '/'"):
        service.mount("/", _plain)


async def test_the_app_mounts_into_a_users_starlette_app_with_its_lifespan(tmp_path: Path) -> None:
    """The README's recipe: Mount("/hooks", service.app), the service entered in the lifespan."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.routing import Mount

    from asyncflow.triggers import Webhook

    done: list[str] = []
    flow = Flow("docs")

    @flow.step
    async def ingest(doc: str) -> str:
        done.append(doc)
        return doc

    service = Service(
        Engine(store=tmp_path / "runs"), triggers=[Webhook("/docs", flow, insecure=True)]
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service:
            yield

    app = Starlette(routes=[Mount("/hooks", app=service.app)], lifespan=lifespan)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            answer = await client.post(
                "/hooks/docs", json={"doc": "m"}, headers={"webhook-id": "m"}
            )
            assert answer.status_code == 202, answer.text
            assert (await client.get("/hooks/healthz")).json()["status"] == "ok"
            await service.wait_idle()
    assert done == ["m"]
