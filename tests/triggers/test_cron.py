from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncflow import Engine, Event, Flow, ScheduleLag, Service, TriggerRejected
from asyncflow.triggers import Cron
from tests.helpers import statuses, until

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


class FakeClock:
    """Wall time moved by the test; ``deadline`` is what a sleeper waits for (None: nobody)."""

    def __init__(self, iso: str) -> None:
        self.t = datetime.fromisoformat(iso).timestamp()
        self.deadline: float | None = None
        self._moved = anyio.Event()

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float, /) -> None:
        while self.t < deadline:
            self.deadline = deadline
            await self._moved.wait()
        self.deadline = None

    def set(self, iso: str) -> None:
        self.t = datetime.fromisoformat(iso).timestamp()
        self._moved.set()
        self._moved = anyio.Event()

    def waits_for(self, iso: str) -> bool:
        return self.deadline == datetime.fromisoformat(iso).timestamp()


def tick_flow(ran: list[str], gate: anyio.Event | None = None) -> Flow:
    flow = Flow("report")

    @flow.step
    async def report(tick: str) -> str:
        if gate is not None:
            await gate.wait()
        ran.append(tick)
        return tick

    return flow


def cron(flow: Flow, clock: FakeClock, **options: object) -> Cron:
    return Cron(
        "*/5 * * * *",
        flow,
        tz="Europe/Paris",
        inputs=lambda tick: {"tick": tick.isoformat()},
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


def rid(hhmm: str) -> str:
    return f"cron-report@20261201T{hhmm}00Z"


@pytest.mark.parametrize(
    ("options", "caught_up"),
    [
        ({}, ["1100"]),
        ({"catchup": "latest"}, ["1100"]),
        (
            {"catchup": "all", "overlap": "allow"},
            [f"{h}{m:02d}" for h, m in [(10, m) for m in range(10, 60, 5)] + [(11, 0)]],
        ),
        ({"catchup": "all", "max_catchup": 3, "overlap": "allow"}, ["1050", "1055", "1100"]),
        ({"catchup": "all", "window": 12 * 60.0, "overlap": "buffer_one"}, ["1055", "1100"]),
        ({"catchup": "none"}, []),
    ],
    ids=["default", "latest", "all", "all-max-3", "all-window", "none"],
)
async def test_a_restart_after_downtime_catches_up_by_the_policy(
    tmp_path: Path, options: dict[str, object], caught_up: list[str]
) -> None:
    """After an hour down, the stored watermark and the catch-up policy pick the ticks to run.

    Ticks are admitted on time first; at the restart, the missed ones are handled in one step.
    """
    ran: list[str] = []
    clock = FakeClock("2026-12-01T10:02:00+00:00")
    events: list[Event] = []
    first = Service(
        Engine(store=tmp_path / "runs", observers=[events.append]),
        triggers=[cron(tick_flow(ran), clock, **options)],
    )
    async with first:
        await until(lambda: clock.waits_for("2026-12-01T10:05:00+00:00"))
        clock.set("2026-12-01T10:05:01+00:00")
        await until(lambda: len(ran) == 1)
        await until(lambda: clock.waits_for("2026-12-01T10:10:00+00:00"))
    assert ran == ["2026-12-01T11:05:00+01:00"]
    lags = [e for e in events if isinstance(e, ScheduleLag)]
    assert [(e.run_id, e.lag) for e in lags] == [(rid("1005"), 1.0)]

    clock.set("2026-12-01T11:02:00+00:00")
    engine = Engine(store=tmp_path / "runs")
    async with Service(engine, triggers=[cron(tick_flow(ran), clock, **options)]):
        await until(lambda: clock.waits_for("2026-12-01T11:05:00+00:00"))
        assert engine.store is not None
        await until(lambda: len(ran) == 1 + len(caught_up))
        runs = await statuses(engine.store)
    assert sorted(r for r in runs if "@" in r) == sorted([rid("1005"), *map(rid, caught_up)])


async def test_a_tick_while_the_previous_run_runs_is_skipped_by_default(tmp_path: Path) -> None:
    ran: list[str] = []
    gate = anyio.Event()
    clock = FakeClock("2026-12-01T10:02:00+00:00")
    events: list[Event] = []
    engine = Engine(store=tmp_path / "runs", observers=[events.append])
    async with Service(engine, triggers=[cron(tick_flow(ran, gate), clock)]) as service:
        clock.set("2026-12-01T10:05:00+00:00")
        await until(lambda: service.statistics()["in_flight"] == 1)
        await until(lambda: clock.waits_for("2026-12-01T10:10:00+00:00"))
        clock.set("2026-12-01T10:10:00+00:00")
        await until(lambda: any(isinstance(e, TriggerRejected) for e in events))
        gate.set()
        await until(lambda: not service.statistics()["in_flight"])
    assert ran == ["2026-12-01T11:05:00+01:00"]
    rejected = [e for e in events if isinstance(e, TriggerRejected)]
    assert [(e.run_id, e.reason) for e in rejected] == [
        (rid("1010"), "overlap: the previous run is still running")
    ]


async def test_buffer_one_runs_the_tick_after_the_previous_run(tmp_path: Path) -> None:
    ran: list[str] = []
    gate = anyio.Event()
    clock = FakeClock("2026-12-01T10:02:00+00:00")
    engine = Engine(store=tmp_path / "runs")
    async with Service(
        engine, triggers=[cron(tick_flow(ran, gate), clock, overlap="buffer_one")]
    ) as service:
        clock.set("2026-12-01T10:05:00+00:00")
        await until(lambda: service.statistics()["in_flight"] == 1)
        await until(lambda: clock.waits_for("2026-12-01T10:10:00+00:00"))
        clock.set("2026-12-01T10:10:00+00:00")
        await anyio.wait_all_tasks_blocked()
        assert engine.store is not None
        assert rid("1010") not in await statuses(engine.store)
        gate.set()
        await until(lambda: len(ran) == 2)
    assert ran == ["2026-12-01T11:05:00+01:00", "2026-12-01T11:10:00+01:00"]


def test_bad_policies_are_refused() -> None:
    flow = tick_flow([])
    with pytest.raises(ValueError, match="catchup="):
        Cron("* * * * *", flow, catchup="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overlap="):
        Cron("* * * * *", flow, overlap="queue")  # type: ignore[arg-type]
    assert Cron("* * * * *", flow).name == "cron-report"
    _ = UTC


async def test_jitter_delays_the_start_but_keeps_the_ticks_run_id(tmp_path: Path) -> None:
    ran: list[str] = []
    clock = FakeClock("2026-12-01T10:02:00+00:00")
    tick = datetime.fromisoformat("2026-12-01T10:05:00+00:00").timestamp()
    engine = Engine(store=tmp_path / "runs")
    async with Service(engine, triggers=[cron(tick_flow(ran), clock, jitter=30.0)]):
        await until(lambda: clock.deadline is not None)
        assert clock.deadline is not None
        assert tick <= clock.deadline <= tick + 30.0
        clock.set("2026-12-01T10:05:31+00:00")
        await until(lambda: len(ran) == 1)
        assert engine.store is not None
        assert rid("1005") in await statuses(engine.store)
