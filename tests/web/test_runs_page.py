"""The runs page in a real browser: Debian's Chromium, driven by playwright, over a real store.

Screenshots are checked for content: the pixels of status colours where each step is drawn.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncflow import Context, Engine, FileStore, Flow, HostPolicy, Retry, Service
from asyncflow.web import LiveView, runs_app
from asyncflow.web._render import COLOURS
from tests.helpers import until

from .conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from playwright.async_api import Browser, Page

    from asyncflow.testing import FlakyServer

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_waits")]

SCRIPT = Path(sys.executable).parent / "asyncflow"


def docs_flow() -> Flow:
    """Fetch (HTTP through ctx.http) -> parse -> publish (fails for doc "bad") -> notify."""
    flow = Flow("docs")

    @flow.step(retry=Retry(attempts=2))
    async def fetch(url: str, ctx: Context) -> int:
        response = await ctx.http.get(url + "/doc")
        response.raise_for_status()
        return response.status_code

    @flow.step
    async def parse(fetch: int, doc: str) -> str:
        return f"{doc}:{fetch}"

    @flow.step
    async def publish(parse: str) -> str:
        if parse.startswith("bad"):
            config: dict[str, str] = {}
            try:
                config["publisher"]
            except KeyError as exc:
                raise ValueError("the publisher is not configured") from exc
        return parse

    @flow.step
    async def notify(publish: str) -> None:
        return None

    return flow


def colours(png: bytes) -> list[tuple[int, tuple[int, int, int]]]:
    """Each colour of a screenshot with how many pixels have it."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    found = image.getcolors(image.width * image.height) or []
    out: list[tuple[int, tuple[int, int, int]]] = []
    for n, px in found:
        assert isinstance(px, tuple)
        out.append((n, (int(px[0]), int(px[1]), int(px[2]))))
    return out


def rgb(png: bytes) -> tuple[int, int, int]:
    """The most common colour of an element's screenshot: its fill, not its text or edges."""
    return max(colours(png))[1]


def near(colour: tuple[int, int, int], status: str, tolerance: int = 16) -> bool:
    want = COLOURS[status].lstrip("#")
    expected = tuple(int(want[i : i + 2], 16) for i in (0, 2, 4))
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


def count(png: bytes, status: str) -> int:
    """How many pixels of the screenshot are in ``status``'s colour."""
    return sum(n for n, px in colours(png) if near(px, status, 6))


async def shot(page: Page, selector: str) -> bytes:
    return await page.locator(selector).first.screenshot()


@pytest.fixture
async def served(
    tmp_path: Path, host_a: FlakyServer, host_b: FlakyServer
) -> AsyncIterator[tuple[str, LiveView, FlakyServer]]:
    """An engine's runs on a FileStore, served live: good-1, bad-1, down-1 and a batch of two.

    host_b is down: down-1's two 503s open its circuit (fail_max=2).
    """
    view = LiveView()
    flow = docs_flow()
    host_b.outage = True
    policy = HostPolicy(fail_max=2, reset_timeout=60.0)
    async with Engine(
        store=FileStore(tmp_path / "store"), host_policy=policy, observers=[view]
    ) as engine:
        assert (await engine.run(flow, run_id="good-1", url=host_a.url, doc="good")).ok
        assert not (await engine.run(flow, run_id="bad-1", url=host_a.url, doc="bad")).ok
        assert not (await engine.run(flow, run_id="down-1", url=host_b.url, doc="x")).ok
        batch = [(f"b-{i}", {"url": host_a.url, "doc": f"b{i}"}) for i in (1, 2)]
        async for result in engine.map(flow, batch, progress=False):
            assert result.ok
        assert engine.store is not None
        async with serve_app(runs_app(engine.store, live=view, flows=[flow])) as url:
            yield url, view, host_b


async def test_runs_table_and_live_state_in_the_browser(
    served: tuple[str, LiveView, FlakyServer], browser: Browser
) -> None:
    """The table lists each run with its status colour; hosts and batches show live state."""
    url, _, host_b = served
    page = await browser.new_page()
    await page.goto(url + "/")
    text = await page.inner_text("body")
    for run_id in ("good-1", "bad-1", "down-1", "b-1", "b-2"):
        assert run_id in text
    host = "http://127.0.0.3:" + host_b.url.rsplit(":", 1)[1]
    hosts = await page.inner_text("h2:has-text('Hosts') + table")
    assert host in hosts
    assert "closed → open" in hosts
    batches = await page.inner_text("h2:has-text('Batches') + table")
    assert "docs" in batches
    assert "2 / 2" in batches
    failed = await shot(page, "tr:has(a:text-is('bad-1')) .badge")
    assert near(rgb(failed), "failed")
    ok = await shot(page, "tr:has(a:text-is('good-1')) .badge")
    assert near(rgb(ok), "succeeded")
    circuit = await shot(page, f"tr:has(td:text-is('{host}')) .badge")
    assert near(rgb(circuit), "open")

    # Filtering by status, as a user does: choose it and submit the form.
    await page.select_option("select[name=status]", "failed")
    await page.click("button[type=submit]")
    await page.wait_for_url("**status=failed**")
    rows = await page.inner_text("table:first-of-type tbody")
    assert {line.split()[0] for line in rows.splitlines() if line.strip()} == {"bad-1", "down-1"}


async def test_a_failed_run_in_the_browser(
    served: tuple[str, LiveView, FlakyServer], browser: Browser
) -> None:
    """A run's page: steps coloured by status in the graph and timeline, the cause chain."""
    url, _, _ = served
    page = await browser.new_page()
    await page.goto(url + "/run/bad-1")
    for step, status in [
        ("fetch", "succeeded"),
        ("parse", "succeeded"),
        ("publish", "failed"),
        ("notify", "skipped"),
    ]:
        box = await shot(page, f"svg.dag g[data-step='{step}'] rect")
        assert near(rgb(box), status), (step, rgb(box))
    for step, status in [("fetch", "succeeded"), ("publish", "failed")]:
        bar = await shot(page, f"svg.gantt rect[data-step='{step}']")
        assert near(rgb(bar), status), step
    # notify never ran: no bar
    assert await page.locator("svg.gantt rect[data-step='notify']").count() == 0
    errors = "\n".join(await page.locator("h2:has-text('Errors') ~ div").all_inner_texts())
    assert "caused by ValueError: the publisher is not configured" in errors
    assert "caused by KeyError: 'publisher'" in errors
    whole = await page.screenshot(full_page=True)
    assert count(whole, "failed") > 500
    assert count(whole, "succeeded") > 500
    assert count(whole, "skipped") > 500


async def test_a_running_run_shows_its_running_step(tmp_path: Path) -> None:
    """While a run waits in a step, its page shows the step running and reloads itself."""
    view = LiveView()
    flow = Flow("slow")
    release = anyio.Event()

    @flow.step
    async def first() -> int:
        return 1

    @flow.step
    async def wait(first: int) -> int:
        await release.wait()
        return first

    async with (
        Engine(store=FileStore(tmp_path / "s"), observers=[view]) as engine,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(lambda: engine.run(flow, run_id="slow-1"))
        await until(lambda: "wait" in getattr(view.runs.get("slow-1"), "steps", {}))
        assert engine.store is not None
        async with (
            serve_app(runs_app(engine.store, live=view, refresh=2)) as url,
            httpx.AsyncClient() as client,
        ):
            page = (await client.get(url + "/run/slow-1")).text
            index = (await client.get(url + "/")).text
        release.set()
    assert '<meta http-equiv="refresh" content="2">' in page
    assert 'data-step="wait"' in page
    assert f"background:{COLOURS['running']}" in page
    assert "Step details are written when the run ends" in page
    assert "slow-1" in index.split("Running now", 1)[1]


async def test_mounted_under_a_prefix_links_stay_inside_it(
    served: tuple[str, LiveView, FlakyServer],
) -> None:
    """Mounted at /runs (as the Service does), every link points under /runs."""
    url, view, _ = served
    async with httpx.AsyncClient() as client:
        page = (await client.get(url + "/")).text
    assert 'href="http://127.0.0.1:' in page
    store = FileStore(Path("mounted"))
    async with store.open():
        outer = Starlette(routes=[Mount("/runs", app=runs_app(store, live=view))])
        async with serve_app(outer) as base, httpx.AsyncClient() as client:
            index = await client.get(base + "/runs/")
            missing = await client.get(base + "/runs/run/nope")
    assert index.status_code == 200
    assert "No runs yet." in index.text
    assert missing.status_code == 404
    assert f'href="{base}/runs/"' in missing.text


def test_asyncflow_web_serves_a_store(tmp_path: Path) -> None:
    """`asyncflow web` serves the store: filters, a corrupt run file, nearest ids of a typo."""
    (tmp_path / "f.py").write_text(
        "from asyncflow import Flow\nflow = Flow('cli')\n\n\n@flow.step\nasync def one(n: int) -> int:\n"
        "    if n > 9:\n        raise ValueError('too big')\n    return n\n",
        encoding="utf-8",
    )
    for n, run_id in ((1, "good-1"), (10, "bad-1")):
        subprocess.run(
            [str(SCRIPT), "run", "f.py:flow", f"n={n}", "--run-id", run_id],
            cwd=tmp_path,
            capture_output=True,
            check=False,
            timeout=60,
        )
    (tmp_path / ".asyncflow" / "broken.json").write_text('{"format": "asyncflow.run", ', "utf-8")
    with subprocess.Popen(
        [str(SCRIPT), "web", "--port", "0", "--flow", "f.py:flow"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert line.startswith("asyncflow: the runs page is at http://"), line
            base = line.split(" at ", 1)[1].split("/ ", 1)[0]
            with httpx.Client(base_url=base) as client:
                index = client.get("/").text
                failed = client.get("/", params={"status": "failed"}).text
                corrupt = client.get("/", params={"status": "corrupt"}).text
                bad_since = client.get("/", params={"since": "yesterday"}).text
                typo = client.get("/run/bad-2")
                run = client.get("/run/bad-1").text
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert all(i in index for i in ("good-1", "bad-1", "broken"))
    assert "bad-1" in failed
    assert "good-1" not in failed
    assert "broken" in corrupt
    assert "unreadable" in corrupt
    assert "good-1" not in corrupt
    assert "--since &#x27;yesterday&#x27;" in bad_since
    assert typo.status_code == 404
    assert "Did you mean" in typo.text
    assert "bad-1</a>" in typo.text
    assert "caused by ValueError: too big" in run
    assert 'data-step="one"' in run


def test_asyncflow_web_refuses_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    """A --store that is not a store is a usage error naming it; nothing is served."""
    (tmp_path / "plain").mkdir()
    out = subprocess.run(
        [str(SCRIPT), "web", "--store", "plain", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 2
    assert "'plain' is not an asyncflow store" in out.stderr


async def test_the_service_mounts_the_runs_page_at_runs(tmp_path: Path) -> None:
    """Mounted in a Service at /runs, the page lists the runs its engine ran, live."""
    view = LiveView()
    engine = Engine(store=tmp_path / "runs", observers=[view])
    assert engine.store is not None
    service = Service(engine, port=0)
    service.mount("/runs", runs_app(engine.store, live=view))
    flow = Flow("served")

    @flow.step
    async def one() -> int:
        return 1

    ready: list[str] = []
    async with anyio.create_task_group() as tg, httpx.AsyncClient() as client:
        tg.start_soon(lambda: service.serve(ready=ready.append))
        await until(lambda: bool(ready))
        assert (await engine.run(flow, run_id="served-1")).ok
        index = await client.get(f"{ready[0]}/runs/")
        run = await client.get(f"{ready[0]}/runs/run/served-1")
        tg.cancel_scope.cancel()
    assert index.status_code == 200
    assert f'href="{ready[0]}/runs/run/served-1"' in index.text
    assert run.status_code == 200
    assert f"background:{COLOURS['succeeded']}" in run.text
