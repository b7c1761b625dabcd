from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asyncflow import Engine, Flow, Service
from asyncflow.triggers import NewFiles
from asyncflow.triggers._files import Settler
from tests.helpers import statuses, until

pytestmark = pytest.mark.anyio


def read_flow(seen: list[str]) -> Flow:
    flow = Flow("inbox")

    @flow.step
    async def read(path: str) -> int:
        text = await anyio.Path(path).read_text()
        seen.append(f"{Path(path).name}={text}")
        return len(text)

    return flow


def counts(service: Service) -> dict[str, int]:
    triggers = service.statistics()["triggers"]
    assert isinstance(triggers, dict)
    found: dict[str, int] = triggers["files-inbox"]
    return found


def test_a_file_settles_only_after_staying_unchanged() -> None:
    """Still growing: not ready; unchanged for `settle` seconds since the last change: ready once."""
    settler = Settler(1.0)
    p = Path("a.txt")
    assert settler.observe({p: (10, 1)}, now=0.0) == []
    assert settler.observe({p: (20, 2)}, now=0.6) == []  # written more
    assert settler.observe({p: (20, 2)}, now=1.5) == []  # 0.9 s since the last change
    assert settler.next_check(1.5) == pytest.approx(0.1)
    assert settler.observe({p: (20, 2)}, now=1.6) == [(p, (20, 2))]
    settler.claimed(p, (20, 2))
    assert settler.observe({p: (20, 2)}, now=9.0) == []
    assert settler.next_check(9.0) is None
    assert settler.observe({p: (25, 3)}, now=10.0) == []  # written again: a new event
    assert settler.observe({p: (25, 3)}, now=11.0) == [(p, (25, 3))]
    assert settler.observe({}, now=12.0) == []  # gone


@pytest.mark.parametrize("polling", [None, 0.02], ids=["watchfiles", "polling"])
async def test_files_are_admitted_once_across_a_restart(
    tmp_path: Path, polling: float | None
) -> None:
    """Each file runs once: there at start, written later, renamed in, written while down.

    A partial name (``.part``) is ignored by the pattern; the restart finds the old files
    again and counts them as duplicates.
    """
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "before.txt").write_text("b")
    seen: list[str] = []

    def service() -> Service:
        trigger = NewFiles(inbox, read_flow(seen), pattern="*.txt", settle=0.05, polling=polling)
        return Service(Engine(store=tmp_path / "runs"), triggers=[trigger])

    async with service():
        await until(lambda: seen == ["before.txt=b"])
        (inbox / "later.txt").write_text("l")
        await until(lambda: len(seen) == 2)
        (inbox / "moved.txt.part").write_text("m")
        await anyio.Path(inbox / "moved.txt.part").rename(inbox / "moved.txt")
        await until(lambda: len(seen) == 3)
    (inbox / "down.txt").write_text("d")
    engine_service = service()
    async with engine_service:
        await until(lambda: len(seen) == 4)
        await until(lambda: counts(engine_service)["duplicate"] == 3)
    assert sorted(seen) == ["before.txt=b", "down.txt=d", "later.txt=l", "moved.txt=m"]
    store = engine_service.engine.store
    assert store is not None
    async with store.open():
        runs = await statuses(store)
    assert len([r for r in runs if r.startswith("files-inbox@")]) == 4


async def test_two_services_on_one_folder_run_each_file_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(20):
        (inbox / f"{i}.txt").write_text(str(i))
    seen: list[str] = []

    def service() -> Service:
        trigger = NewFiles(inbox, read_flow(seen), settle=0.0, polling=0.02)
        return Service(Engine(store=tmp_path / "runs"), triggers=[trigger])

    one, two = service(), service()
    async with one, two:
        await until(lambda: len(seen) >= 20)
        await until(lambda: counts(one)["admitted"] + counts(two)["admitted"] == 20)
        await until(lambda: counts(one)["duplicate"] + counts(two)["duplicate"] == 20)
    assert sorted(seen) == sorted(f"{i}.txt={i}" for i in range(20))


def test_a_missing_folder_is_reported_when_the_service_starts(tmp_path: Path) -> None:
    trigger = NewFiles(tmp_path / "nope", read_flow([]))

    async def start() -> None:
        async with Service(Engine(store=tmp_path / "runs"), triggers=[trigger]):
            pass

    with pytest.raises(FileNotFoundError, match="create it"):
        anyio.run(start)
