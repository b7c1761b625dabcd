"""Context: what a step knows; its HTTP client is there inside an engine, clearly absent outside."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from asyncflow import AsyncflowError, Context, Engine, Flow

if TYPE_CHECKING:
    import httpx

pytestmark = pytest.mark.anyio


async def test_inside_an_engine_ctx_http_is_the_engines_client() -> None:
    """A step reads ctx.http without checking for None: it is the engine's own client."""
    flow = Flow("ctx")
    seen: list[httpx.AsyncClient] = []

    @flow.step
    async def a(ctx: Context) -> None:
        seen.append(ctx.http)

    async with Engine(store=None) as engine:
        (await engine.run(flow)).raise_for_status()
        assert seen == [engine.http]


def test_outside_an_engine_ctx_http_says_there_is_no_client() -> None:
    """A Context built by hand, without a client, raises a clear error instead of giving None."""
    ctx = Context(run_id="r", step="fetch")
    with pytest.raises(AsyncflowError, match=r"Step 'fetch' has no HTTP client"):
        _ = ctx.http
