"""``asyncflow serve`` as a real process: SIGKILL between admission and answer, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from asyncflow import FileStore
from tests.helpers import STALL, Child, statuses

if TYPE_CHECKING:
    from pathlib import Path


def start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, crash: bool = False, grace: float = 30
) -> tuple[Child, str]:
    monkeypatch.setenv("SERVICE_STORE", str(tmp_path / "runs"))
    monkeypatch.setenv("SERVICE_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("SERVICE_GRACE", str(grace))
    monkeypatch.setenv("SERVICE_CRASH", "1" if crash else "0")
    child = Child("asyncflow", "serve", "tests.service_child:make", log=tmp_path / "log")
    deadline = time.monotonic() + STALL
    while "serving on " not in (err := child.stderr()):
        assert child.alive(), err
        assert time.monotonic() < deadline, f"the service did not start: {err}"
        time.sleep(0.01)  # polling another process's output
    url = err.split("serving on ", 1)[1].split()[0]
    return child, url


def count(lines: list[str], line: str) -> int:
    return sum(ln == line for ln in lines)


async def store_statuses(tmp_path: Path) -> dict[str, str]:
    store = FileStore(tmp_path / "runs")
    async with store.open():
        return await statuses(store)


def test_sigkill_after_admission_before_the_answer_then_restart_runs_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery admitted by a process killed before it answered runs once.

    The sender saw no answer and redelivers; the restarted service has already started the
    admitted run, and answers the redelivery as a duplicate: one run, one execution.
    """
    child, url = start(tmp_path, monkeypatch, crash=True)
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{url}/docs", json={"doc": "a"}, headers={"webhook-id": "d-1"}, timeout=STALL)
    child.proc.communicate(timeout=STALL)
    assert child.proc.returncode == -signal.SIGKILL
    assert child.lines() == ["admitted webhook-docs@d-1"]
    assert anyio.run(store_statuses, tmp_path) == {"webhook-docs@d-1": "pending"}

    child, url = start(tmp_path, monkeypatch)
    child.wait_for(lambda lines: "finished webhook-docs@d-1 succeeded" in lines)
    again = httpx.post(f"{url}/docs", json={"doc": "a"}, headers={"webhook-id": "d-1"})
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    os.kill(child.proc.pid, signal.SIGTERM)
    child.finish()
    assert count(child.lines(), "exec a") == 1
    assert anyio.run(store_statuses, tmp_path) == {"webhook-docs@d-1": "succeeded"}


def test_sigterm_lets_a_run_in_flight_finish_within_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    child, url = start(tmp_path, monkeypatch)
    answer = httpx.post(f"{url}/docs", json={"doc": "slow-1"}, headers={"webhook-id": "s-1"})
    assert answer.status_code == 202
    child.wait_for(lambda lines: "exec slow-1" in lines)
    os.kill(child.proc.pid, signal.SIGTERM)
    (tmp_path / "log.release").touch()
    child.finish()
    assert "finished webhook-docs@s-1 succeeded" in child.lines()
    assert "asyncflow: stopped" in child.stderr()


def test_a_run_cancelled_by_shutdown_is_no_failure_and_resumes_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    child, url = start(tmp_path, monkeypatch, grace=0)
    assert (
        httpx.post(f"{url}/docs", json={"doc": "slow-2"}, headers={"webhook-id": "s-2"}).status_code
        == 202
    )
    child.wait_for(lambda lines: "exec slow-2" in lines)
    os.kill(child.proc.pid, signal.SIGTERM)
    child.finish()
    assert not any(ln.startswith("finished") for ln in child.lines())
    assert anyio.run(store_statuses, tmp_path) == {"webhook-docs@s-2": "running"}

    (tmp_path / "log.release").touch()
    child, _ = start(tmp_path, monkeypatch)
    child.wait_for(lambda lines: "finished webhook-docs@s-2 succeeded" in lines)
    os.kill(child.proc.pid, signal.SIGTERM)
    child.finish()
    assert anyio.run(store_statuses, tmp_path) == {"webhook-docs@s-2": "succeeded"}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.service_child:flow", "is Flow, not an asyncflow.Service"),
        ("tests.service_child", "give the service as module:attribute"),
        ("tests.no_such_module:make", "no module named"),
    ],
)
def test_serve_refuses_what_is_not_a_service_in_one_line(
    target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from asyncflow._cli import main

    assert main(["serve", target]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


def test_sigkill_between_admission_and_xack_then_restart_runs_the_entry_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """A stream entry admitted by a process killed before its XACK runs once.

    The entry stays pending; the restarted service claims it, finds its run admitted (a
    duplicate), acknowledges it, and has started that run: one run, one execution.
    """
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    entry = str(client.xadd("docs", {"doc": "r"}))
    monkeypatch.setenv("SERVICE_REDIS", redis_url)
    child, _ = start(tmp_path, monkeypatch, crash=True)
    child.proc.communicate(timeout=STALL)
    assert child.proc.returncode == -signal.SIGKILL
    assert child.lines() == [f"admitted redis-docs@{entry}"]
    assert int(client.xpending("docs", "g")["pending"]) == 1

    child, _ = start(tmp_path, monkeypatch)
    child.wait_for(lambda lines: f"finished redis-docs@{entry} succeeded" in lines)
    deadline = time.monotonic() + STALL
    while int(client.xpending("docs", "g")["pending"]):
        assert time.monotonic() < deadline, "the entry was never acknowledged"
        time.sleep(0.01)  # a state on the server
    os.kill(child.proc.pid, signal.SIGTERM)
    child.finish()
    client.close()
    assert count(child.lines(), "exec r") == 1
    assert anyio.run(store_statuses, tmp_path) == {f"redis-docs@{entry}": "succeeded"}
