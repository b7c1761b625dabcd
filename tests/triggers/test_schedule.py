"""The cron schedule's DST rule, checked against a brute-force oracle minute by minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from asyncflow.triggers._schedule import Schedule

ZONES = ["Europe/Paris", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe"]
YEARS = range(2024, 2029)


def transitions(zone: ZoneInfo) -> list[datetime]:
    """Every instant in YEARS where the zone's UTC offset changes (to the second)."""
    found = []
    t = datetime(YEARS[0], 1, 1, tzinfo=UTC)
    end = datetime(YEARS[-1] + 1, 1, 1, tzinfo=UTC)
    while t < end:
        nxt = t + timedelta(hours=1)
        if t.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            low, high = int(t.timestamp()), int(nxt.timestamp())
            before = t.astimezone(zone).utcoffset()
            while high - low > 1:
                mid = (low + high) // 2
                if datetime.fromtimestamp(mid, zone).utcoffset() == before:
                    low = mid
                else:
                    high = mid
            found.append(datetime.fromtimestamp(high, UTC))
        t = nxt
    return found


def matches(expr: str, wall: datetime) -> bool:
    """Oracle for the expressions used here: 'M H * * *' with M, H a number, '*' or '*/n'."""

    def field(text: str, value: int) -> bool:
        if text == "*":
            return True
        if text.startswith("*/"):
            return value % int(text[2:]) == 0
        return value == int(text)

    minute, hour = expr.split()[:2]
    return wall.second == 0 and field(minute, wall.minute) and field(hour, wall.hour)


def oracle(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Minute by minute in UTC, the instants that fire.

    A minute fires when its wall time matches and this is the wall time's first occurrence,
    or when it ends a gap holding a matching wall time.
    """
    fires = []
    u = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while u <= end:
        local = u.astimezone(zone)
        wall = local.replace(tzinfo=None)
        first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC) == u
        fire = matches(expr, wall) and first
        before = (u - timedelta(minutes=1)).astimezone(zone)
        gap = local.utcoffset() - before.utcoffset()  # type: ignore[operator]
        if gap > timedelta(0):  # u is the first minute after a spring-forward
            skipped = before.replace(tzinfo=None) + timedelta(minutes=1)
            while skipped < wall:
                fire = fire or matches(expr, skipped)
                skipped += timedelta(minutes=1)
        if fire:
            fires.append(u)
        u += timedelta(minutes=1)
    return fires


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize(
    "expr", ["30 2 * * *", "*/15 * * * *", "0 * * * *", "45 1 * * *", "0 3 * * *"]
)
def test_every_dst_transition_fires_as_the_oracle_says(zone_name: str, expr: str) -> None:
    """Around every transition of 5 years, the schedule fires as the oracle says.

    Skipped wall times fire once at the transition, repeated ones once at their first
    occurrence, nothing else moves.
    """
    zone = ZoneInfo(zone_name)
    schedule = Schedule(expr, zone_name)
    found = transitions(zone)
    assert len(found) == 2 * len(YEARS)
    for t in found:
        start, end = t - timedelta(hours=6), t + timedelta(hours=6)
        assert list(schedule.between(start, end)) == oracle(expr, zone, start, end), t


@pytest.mark.parametrize("zone_name", ZONES)
def test_a_daily_time_fires_once_every_local_day_for_years(zone_name: str) -> None:
    schedule = Schedule("30 2 * * *", zone_name)
    zone = ZoneInfo(zone_name)
    start = datetime(YEARS[0], 1, 1, tzinfo=zone)
    end = datetime(YEARS[-1] + 1, 1, 1, tzinfo=zone)
    fires = list(schedule.between(start, end))
    days = [f.astimezone(zone).date() for f in fires]
    assert len(days) == len(set(days)) == (end.date() - start.date()).days


def test_six_fields_have_seconds_first() -> None:
    schedule = Schedule("*/20 * * * * *")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert list(schedule.between(start, start + timedelta(minutes=1))) == [
        start + timedelta(seconds=s) for s in (20, 40, 60)
    ]


@pytest.mark.parametrize(
    ("expr", "tz", "message"),
    [
        ("* * *", "UTC", "has 3 fields"),
        ("61 * * * *", "UTC", "not valid"),
        ("* * * * *", "Mars/Olympus", "unknown"),
    ],
)
def test_bad_expressions_and_zones_say_what_is_wrong(expr: str, tz: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule(expr, tz)
