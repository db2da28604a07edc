"""Month-end spend forecast from a daily spend series. Pure and exact: Decimal in, Decimal out.

Method::

    projected = spent        this month's days up to today, today's partial spend included
              + rest of today  max(0, rate - today's spend so far)
              + rate x the days of the month after today

The rate comes from the *complete* days of the trailing week (today - 7 .. today - 1), which may
reach back into the previous month, so the 1st of a month already has a week behind it. A day
missing from the series on or after ``data_start`` (by default its earliest day) spent nothing,
since a GROUP BY over ai_requests has no row for a quiet day; days before it have no data.

* ``WINSORIZED`` (the default): the mean of the week after its largest day is lowered to the
  second largest. One spike day (a runaway user, a retry storm) is already counted in ``spent``;
  extrapolating it over the rest of the month is the error to avoid: a $50 day in a $1/day week
  lifts the plain 7-day mean to $8/day, the winsorized mean stays at $1. The median would also
  ignore it, but a small bot often spends on only a few days of a week, and then the median is
  zero while the money is real: on 3 days of $0.70 in 7, the median says $0/day, the winsorized
  mean says the true $0.30/day. With fewer than 3 days it is their plain mean.
* ``MEAN`` and ``MEDIAN``: the plain 7-day mean and median, for comparison.
* ``TREND`` (opt-in): a Theil-Sen line through the week (slope = median of the pairwise slopes,
  so one spike does not tilt it), extended day by day to the month's end and floored at zero;
  it needs 5 complete days and otherwise falls back to ``WINSORIZED``. It is exact on a linear
  ramp, which every level method trails by about half a week of growth, but it extrapolates a
  week's noise over up to four weeks, so it is not the default for an alert.

With no complete day at all (the bot's first day) the rate is today's spend so far, a lower
bound; an empty series forecasts zero. Rates are rounded up to the nano-dollar, as all spend is.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum

from budget.money import ZERO, quantize

WINDOW_DAYS = 7
MIN_ROBUST_DAYS = 3  # below this the plain mean of what exists
MIN_TREND_DAYS = 5


class Method(StrEnum):
    """How the daily rate was found; the last two are fallbacks, never asked for."""

    WINSORIZED = "winsorized"
    MEAN = "mean"
    MEDIAN = "median"
    TREND = "trend"
    TODAY = "today"  # no complete day yet: today's spend so far
    NONE = "none"  # empty series


@dataclass(frozen=True, slots=True)
class Forecast:
    """Spend so far this month and the projected month-end total, both in dollars."""

    spent: Decimal
    projected: Decimal
    method: Method  # the method actually used, after any fallback
    daily_rate: Decimal  # for TREND: the trend's value today
    days: int = 0  # complete days the rate was drawn from
    remaining_days: int = 0  # days of the month after today


def median(values: Sequence[Decimal]) -> Decimal:
    """The middle value, or the mean of the middle two; zero for no values."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return ZERO
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def mean(values: Sequence[Decimal]) -> Decimal:
    return sum(values, ZERO) / len(values) if values else ZERO


def winsorized_mean(values: Sequence[Decimal]) -> Decimal:
    """The mean after the largest value is lowered to the second largest (from 3 values on)."""
    if len(values) < MIN_ROBUST_DAYS:
        return mean(values)
    ordered = sorted(values)
    ordered[-1] = ordered[-2]
    return mean(ordered)


def hourly_median(costs: Iterable[Decimal], hours: int = 24) -> Decimal:
    """The median hour of a day given the costs of the hours that spent anything: the missing
    hours spent zero. ``hours`` is 23 or 25 on a day when clocks change."""
    values = list(costs)
    if len(values) > hours:
        raise ValueError(f"{len(values)} hourly costs for a day of {hours} hours")
    return median(values + [ZERO] * (hours - len(values)))


def theil_sen(points: Sequence[tuple[int, Decimal]]) -> tuple[Decimal, Decimal]:
    """A robust line through (x, y) points: (its value at x = 0, its slope)."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1 :] if x2 != x1]
    slope = median(slopes)
    return median([y - slope * x for x, y in points]), slope


def forecast_month_end(
    daily: Mapping[date, Decimal],
    today: date,
    days_in_month: int | None = None,
    *,
    method: Method = Method.WINSORIZED,
    data_start: date | None = None,
) -> Forecast:
    """Project this month's total spend from spend per calendar day (see the module docstring).

    ``daily`` may hold days of the previous month (they feed the rate, not ``spent``);
    ``days_in_month`` defaults to the length of ``today``'s month.
    """
    if days_in_month is None:
        days_in_month = calendar.monthrange(today.year, today.month)[1]
    if not 1 <= today.day <= days_in_month:
        raise ValueError(f"{today} is not within a month of {days_in_month} days")
    if method in (Method.TODAY, Method.NONE):
        raise ValueError(f"{method} is a fallback, not a method to ask for")
    month_start = today.replace(day=1)
    spent = sum((v for d, v in daily.items() if month_start <= d <= today), ZERO)
    today_spent = daily.get(today, ZERO)
    remaining = days_in_month - today.day
    if not daily:
        return Forecast(ZERO, ZERO, Method.NONE, ZERO, 0, remaining)

    start = data_start if data_start is not None else min(daily)
    window = [today - timedelta(days=k) for k in range(WINDOW_DAYS, 0, -1)]
    values = [daily.get(d, ZERO) for d in window if d >= start]
    days = len(values)

    if days == 0:
        used, rate = Method.TODAY, today_spent
    elif method is Method.TREND and days >= MIN_TREND_DAYS:
        points = [(-k, daily.get(today - timedelta(days=k), ZERO)) for k in range(days, 0, -1)]
        level, slope = theil_sen(points)
        # The line is floored at zero day by day: a falling trend ends in quiet days, not refunds.
        rate = quantize(max(level, ZERO))
        ahead = sum((quantize(max(level + slope * k, ZERO)) for k in range(1, remaining + 1)), ZERO)
        projected = spent + max(rate - today_spent, ZERO) + ahead
        return Forecast(spent, projected, Method.TREND, rate, days, remaining)
    elif method is Method.MEAN or days < MIN_ROBUST_DAYS:
        used, rate = Method.MEAN, mean(values)
    elif method is Method.MEDIAN:
        used, rate = Method.MEDIAN, median(values)
    else:
        used, rate = Method.WINSORIZED, winsorized_mean(values)

    rate = quantize(max(rate, ZERO))
    projected = spent + max(rate - today_spent, ZERO) + rate * remaining
    return Forecast(spent, projected, used, rate, days, remaining)
