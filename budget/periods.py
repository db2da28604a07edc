"""Budget periods: calendar days and months in one configured time zone (DESIGN invariant 5).

Counters are keyed by period, so a new day or month starts from zero with no reset job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Window:
    """One period: its key (``2026-11-23`` or ``2026-11``) and its bounds as aware datetimes."""

    period: Period
    key: str
    start: datetime
    end: datetime


class Calendar:
    """Maps instants to budget periods in one time zone."""

    def __init__(self, tz: str = "UTC") -> None:
        self.tz = ZoneInfo(tz)

    def window(self, period: Period, now: datetime) -> Window:
        local = now.astimezone(self.tz)
        if period is Period.DAY:
            start = local.replace(hour=0, minute=0, second=0, microsecond=0)
            # Add a day by date, not by 24 h, so DST days stay calendar days.
            nxt = start.date() + timedelta(days=1)
            end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.tz)
            return Window(period, start.strftime("%Y-%m-%d"), start, end)
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        end = datetime(year, month, 1, tzinfo=self.tz)
        return Window(period, start.strftime("%Y-%m"), start, end)
