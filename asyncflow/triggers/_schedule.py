"""Cron expressions in a time zone, with one DST rule: the one place that knows cronsim.

cronsim (Debian cron's dialect: 5 fields, or 6 with seconds first) enumerates *wall* times,
naive, with no time zone; this module turns them into instants:

- a wall time that does not exist (skipped by a spring-forward) fires once, at the first valid
  instant after it: the transition itself (several skipped wall times give that one instant);
- a wall time that exists twice (repeated by a fall-back) fires once, at its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Schedule"]


class Schedule:
    """The instants (aware, UTC) at which ``expr`` fires in time zone ``tz``.

    Raises:
        ValueError: ``expr`` is not a cron expression, or ``tz`` is not an IANA zone name.
    """

    __slots__ = ("expr", "tz", "zone")

    def __init__(self, expr: str, tz: str = "UTC") -> None:
        fields = expr.split() if isinstance(expr, str) else []
        if len(fields) not in (5, 6):
            raise ValueError(
                f"Cron expression {expr!r} has {len(fields)} fields: give 5 (minute hour "
                f"day-of-month month day-of-week) or 6 (seconds first)."
            )
        try:
            CronSim(expr, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"Cron expression {expr!r} is not valid: {exc}.") from exc
        try:
            self.zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"Time zone {tz!r} is unknown: give an IANA name such as 'Europe/Paris' or "
                f"'UTC' (install the tzdata package where the system has no zone database)."
            ) from exc
        self.expr = expr
        self.tz = tz

    def __repr__(self) -> str:
        return f"Schedule({self.expr!r}, tz={self.tz!r})"

    def next_after(self, instant: datetime, /) -> datetime:
        """The first instant strictly after ``instant`` (aware) at which the schedule fires."""
        instant = instant.astimezone(UTC)
        wall = instant.astimezone(self.zone).replace(tzinfo=None)
        # No wall time before `wall` maps after `instant`. In a repeated hour's second pass,
        # the wall times after `wall` there map (first occurrence) before it: skipped below.
        for candidate in CronSim(self.expr, wall):
            fired = self.instant_of(candidate)
            if fired > instant:
                return fired
        raise ValueError(f"{self!r} never fires after {instant.isoformat()}.")

    def between(self, start: datetime, end: datetime, /) -> Iterator[datetime]:
        """Each instant in ``(start, end]``, in order."""
        t = start
        while True:
            t = self.next_after(t)
            if t > end:
                return
            yield t

    def instant_of(self, wall: datetime, /) -> datetime:
        """The instant (UTC) a naive wall time fires at, by the module's DST rule."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        utc = first.astimezone(UTC)
        if utc.astimezone(self.zone).replace(tzinfo=None) == wall:
            return utc  # exists; when repeated, fold=0 is its first occurrence
        # Skipped: fold=0 reads it with the offset before the gap (an instant after the gap),
        # fold=1 with the one after (an instant before it). The transition lies between.
        low = int(wall.replace(tzinfo=self.zone, fold=1).timestamp())
        high = int(utc.timestamp())
        after = first.utcoffset()
        while high - low > 1:  # transitions fall on whole seconds
            mid = (low + high) // 2
            if datetime.fromtimestamp(mid, self.zone).utcoffset() == after:
                low = mid
            else:
                high = mid
        return datetime.fromtimestamp(high, UTC)
