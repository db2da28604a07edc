"""Alert rules: pure functions from pre-aggregated figures to zero or more alerts. No store, no I/O.

Every rule fires only when its figure is strictly *over* its threshold (strictly *under* for the
cache hit rate), so a figure exactly at a threshold is quiet; the one exception is
``budget_threshold``, which fires *at* 80 % and 95 %, as the budget gate (budget/rules.py) warns
and blocks from those points. Comparisons are exact: Decimal money, and ratios compared by
cross-multiplying (``errors > 0.05 * attempts``), never by a rounded float.

An alert's ``key`` (rule, subject, period_key, level) is what the caller fires once: once per
subject and period (a day ``2026-11-23``, a month ``2026-11``, an hour ``2026-11-23T14``), and
again if the level rises from warning to critical within the period. Global rules have the
subject ``bot``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

from budget.forecast import Forecast, hourly_median
from budget.money import ZERO, fmt_usd

BOT = "bot"

# Defaults, one place: AlertSettings and the rule functions both take them from here.
DAILY_COST = Decimal(5)
MONTHLY_COST = Decimal(100)
BUDGET_WARNING = Decimal("0.8")
BUDGET_CRITICAL = Decimal("0.95")
ERROR_RATE = Decimal("0.05")
ERROR_RATE_CRITICAL = Decimal("0.5")
ERROR_MIN_ATTEMPTS = 20
CACHE_HIT_RATE = Decimal("0.2")
CACHE_MIN_ANSWERS = 50
PREMIUM_SHARE = Decimal("0.3")
PREMIUM_MIN_COST = Decimal("0.10")
SPIKE_MULTIPLE = Decimal(3)
SPIKE_FLOOR = Decimal("0.50")
RATE_LIMITED = 20
FORECAST_SHARE = Decimal(1)


class Rule(StrEnum):
    """The rules, in the order ``evaluate`` reports them."""

    DAILY_COST = "daily_cost"
    MONTHLY_COST = "monthly_cost"
    BUDGET_THRESHOLD = "budget_threshold"
    ERROR_RATE = "error_rate"
    CACHE_HIT_RATE = "cache_hit_rate"
    PREMIUM_SHARE = "premium_share"
    HOUR_SPIKE = "hour_spike"
    RATE_LIMITED = "rate_limited"
    FORECAST_OVER_BUDGET = "forecast_over_budget"


class AlertLevel(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert. ``figures`` holds the exact numbers behind ``message`` as strings."""

    rule: Rule
    subject: str
    period_key: str
    level: AlertLevel
    message: str
    figures: dict[str, str]

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What the caller fires once: a critical after a warning in the same period is new."""
        return (self.rule, self.subject, self.period_key, self.level)


class BudgetUse(NamedTuple):
    """One budget of one subject (a user key, or ``bot``): used and limit in ``unit``."""

    subject: str
    used: Decimal
    limit: Decimal | None  # None: no limit, nothing to alert on
    period_key: str
    unit: str = "usd"  # or "tokens"


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Every threshold, with its default. Ratios are fractions (0.05 is 5 %)."""

    daily_cost_threshold: Decimal = DAILY_COST  # today's cost over $5
    monthly_cost_threshold: Decimal = MONTHLY_COST  # this month's cost over $100
    budget_warning: Decimal = BUDGET_WARNING  # at 80 % of a limit
    budget_critical: Decimal = BUDGET_CRITICAL  # at 95 % of a limit
    error_rate_threshold: Decimal = ERROR_RATE  # over 5 % of last hour's attempts failed...
    error_rate_critical: Decimal = ERROR_RATE_CRITICAL  # ...critical over 50 %
    error_min_attempts: int = ERROR_MIN_ATTEMPTS  # from 20 attempts: 1 failure in 3 is not a trend
    cache_hit_rate_threshold: Decimal = CACHE_HIT_RATE  # under 20 % of today's answers from cache
    cache_min_answers: int = CACHE_MIN_ANSWERS  # from 50 answers
    premium_share_threshold: Decimal = PREMIUM_SHARE  # over 30 % of today's cost on premium models
    premium_min_cost: Decimal = PREMIUM_MIN_COST  # from $0.10 today: one early premium call is 100 %
    spike_multiple: Decimal = SPIKE_MULTIPLE  # an hour over 3 x yesterday's median hour...
    spike_floor: Decimal = SPIKE_FLOOR  # ...and over $0.50
    rate_limited_threshold: int = RATE_LIMITED  # over 20 rate-limit hits in the last hour
    forecast_share: Decimal = FORECAST_SHARE  # projected month-end over 100 % of the monthly budget


@dataclass(frozen=True, slots=True)
class AlertInputs:
    """The figures the rules read, aggregated by the caller. Hourly costs are keyed by the start
    of each local hour (as ``budget.analytics.hourly_costs`` gives them); hours absent spent zero."""

    day_key: str  # 2026-11-23
    month_key: str  # 2026-11
    hour_key: str  # 2026-11-23T14, the last hour
    today_cost: Decimal = ZERO
    month_cost: Decimal = ZERO
    premium_cost_today: Decimal = ZERO
    hourly_today: Mapping[datetime, Decimal] = field(default_factory=dict)
    hourly_yesterday: Mapping[datetime, Decimal] = field(default_factory=dict)
    yesterday_hours: int = 24  # 23 or 25 when clocks changed
    attempts_last_hour: int = 0
    errors_last_hour: int = 0
    cache_hits_today: int = 0
    answers_today: int = 0  # answered messages, cache hits included
    rate_limited_last_hour: int = 0
    budgets: Sequence[BudgetUse] = ()
    forecast: Forecast | None = None
    monthly_budget: Decimal | None = None  # the bot's monthly limit in dollars


def hour_period(start: datetime) -> str:
    """The period key of an hour: ``2026-11-23T14`` (local wall clock)."""
    return start.strftime("%Y-%m-%dT%H")


def _num(value: Decimal | int) -> str:
    return str(value) if isinstance(value, int) else format(value, "f")  # never 1E-9, always 0.000000001


def _pct(ratio: Decimal) -> str:
    return f"{ratio * 100:.1f}%"


def _amount(value: Decimal, unit: str) -> str:
    return fmt_usd(value) if unit == "usd" else f"{value:,} {unit}"


def _bot(rule: Rule, period_key: str, level: AlertLevel, message: str, **figures: Decimal | int) -> list[Alert]:
    return [Alert(rule, BOT, period_key, level, message, {k: _num(v) for k, v in figures.items()})]


def daily_cost(cost: Decimal, day_key: str, threshold: Decimal = DAILY_COST) -> list[Alert]:
    """Today's total cost over ``threshold``."""
    if cost <= threshold:
        return []
    message = f"Today's AI cost {fmt_usd(cost)} is over the {fmt_usd(threshold)} daily threshold ({day_key})."
    return _bot(Rule.DAILY_COST, day_key, AlertLevel.WARNING, message, cost=cost, threshold=threshold)


def monthly_cost(cost: Decimal, month_key: str, threshold: Decimal = MONTHLY_COST) -> list[Alert]:
    """This month's total cost over ``threshold``."""
    if cost <= threshold:
        return []
    message = f"This month's AI cost {fmt_usd(cost)} is over the {fmt_usd(threshold)} threshold ({month_key})."
    return _bot(Rule.MONTHLY_COST, month_key, AlertLevel.WARNING, message, cost=cost, threshold=threshold)


def budget_threshold(
    uses: Iterable[BudgetUse], warning: Decimal = BUDGET_WARNING, critical: Decimal = BUDGET_CRITICAL
) -> list[Alert]:
    """Each subject's budget at ``warning`` (80 %) or ``critical`` (95 %) of its limit, inclusive.
    One alert per subject and period, at the highest level any of its budgets reached (a dollar
    and a token budget of one month are one alert). No limit, or a limit of zero (a block set on
    purpose, not a threshold reached), never alerts."""
    best: dict[tuple[str, str], tuple[bool, Decimal, str, Decimal, BudgetUse]] = {}
    for use in uses:
        if use.limit is None or use.limit <= 0 or use.used < min(warning, critical) * use.limit:
            continue
        # Ranked by level, then by how near the limit, then by unit so input order never matters.
        rank = (use.used >= critical * use.limit, use.used / use.limit, use.unit, use.limit, use)
        slot = (use.subject, use.period_key)
        if slot not in best or rank[:4] > best[slot][:4]:
            best[slot] = rank
    alerts = []
    for (subject, period_key), (is_critical, ratio, unit, limit, use) in sorted(best.items(), key=lambda kv: kv[0]):
        level, bar = (AlertLevel.CRITICAL, critical) if is_critical else (AlertLevel.WARNING, warning)
        who = "The bot" if subject == BOT else subject
        message = (
            f"{who} has used {_pct(ratio)} of the {period_key} budget: {_amount(use.used, unit)} of "
            f"{_amount(limit, unit)} (alert at {_pct(bar)})."
        )
        figures = {
            "used": _num(use.used),
            "limit": _num(limit),
            "share": _num(ratio.normalize()),
            "threshold": _num(bar),
        }
        alerts.append(Alert(Rule.BUDGET_THRESHOLD, subject, period_key, level, message, figures | {"unit": unit}))
    return alerts


def error_rate(
    attempts: int,
    errors: int,
    hour_key: str,
    threshold: Decimal = ERROR_RATE,
    critical: Decimal = ERROR_RATE_CRITICAL,
    min_attempts: int = ERROR_MIN_ATTEMPTS,
) -> list[Alert]:
    """Failed share of the last hour's AI call attempts over ``threshold`` (critical over
    ``critical``), once there were at least ``min_attempts`` attempts."""
    if attempts < max(min_attempts, 1) or errors <= threshold * attempts:
        return []
    level = AlertLevel.CRITICAL if errors > critical * attempts else AlertLevel.WARNING
    message = (
        f"{errors} of {attempts} AI call attempts failed in the hour {hour_key} "
        f"({_pct(Decimal(errors) / attempts)}, threshold {_pct(threshold)})."
    )
    return _bot(Rule.ERROR_RATE, hour_key, level, message, errors=errors, attempts=attempts, threshold=threshold)


def cache_hit_rate(
    hits: int, answers: int, day_key: str, threshold: Decimal = CACHE_HIT_RATE, min_answers: int = CACHE_MIN_ANSWERS
) -> list[Alert]:
    """Cache hits under ``threshold`` of today's answers, once there were ``min_answers``."""
    if answers < max(min_answers, 1) or hits >= threshold * answers:
        return []
    message = (
        f"Only {hits} of {answers} answers came from the cache on {day_key} "
        f"({_pct(Decimal(hits) / answers)}, threshold {_pct(threshold)})."
    )
    return _bot(
        Rule.CACHE_HIT_RATE, day_key, AlertLevel.WARNING, message, hits=hits, answers=answers, threshold=threshold
    )


def premium_share(
    premium_cost: Decimal,
    total_cost: Decimal,
    day_key: str,
    threshold: Decimal = PREMIUM_SHARE,
    min_cost: Decimal = PREMIUM_MIN_COST,
) -> list[Alert]:
    """Premium-tier models over ``threshold`` of today's cost, once today cost ``min_cost``."""
    if total_cost <= 0 or total_cost < min_cost or premium_cost <= threshold * total_cost:
        return []
    message = (
        f"Premium models cost {fmt_usd(premium_cost)} of today's {fmt_usd(total_cost)} on {day_key} "
        f"({_pct(premium_cost / total_cost)}, threshold {_pct(threshold)})."
    )
    figures = {"premium_cost": premium_cost, "total_cost": total_cost, "threshold": threshold}
    return _bot(Rule.PREMIUM_SHARE, day_key, AlertLevel.WARNING, message, **figures)


def hour_spike(
    today: Mapping[datetime, Decimal],
    yesterday: Mapping[datetime, Decimal],
    yesterday_hours: int = 24,
    multiple: Decimal = SPIKE_MULTIPLE,
    floor: Decimal = SPIKE_FLOOR,
) -> list[Alert]:
    """Each hour of today that cost over ``multiple`` x yesterday's median hour *and* over
    ``floor``: the floor keeps a quiet bot (median hour $0) from alerting on every busy hour."""
    typical = hourly_median(yesterday.values(), yesterday_hours)
    alerts = []
    for start in sorted(today):
        cost = today[start]
        if cost > multiple * typical and cost > floor:
            key = hour_period(start)
            message = (
                f"The hour {key} cost {fmt_usd(cost)}, over {multiple} x yesterday's median hour "
                f"({fmt_usd(typical)}) and over {fmt_usd(floor)}."
            )
            figures = {"cost": cost, "median": typical, "multiple": multiple, "floor": floor}
            alerts += _bot(Rule.HOUR_SPIKE, key, AlertLevel.WARNING, message, **figures)
    return alerts


def rate_limited(count: int, hour_key: str, threshold: int = RATE_LIMITED) -> list[Alert]:
    """More than ``threshold`` messages turned away by the rate limiter in the last hour."""
    if count <= threshold:
        return []
    message = f"{count} messages were rate-limited in the hour {hour_key} (threshold {threshold})."
    return _bot(Rule.RATE_LIMITED, hour_key, AlertLevel.WARNING, message, count=count, threshold=threshold)


def forecast_over_budget(
    forecast: Forecast | None, budget: Decimal | None, month_key: str, share: Decimal = FORECAST_SHARE
) -> list[Alert]:
    """The projected month-end spend (budget/forecast.py) over ``share`` of the monthly budget."""
    if forecast is None or budget is None or forecast.projected <= share * budget:
        return []
    message = (
        f"Spend is on course for {fmt_usd(forecast.projected)} by the end of {month_key}, over the "
        f"{fmt_usd(budget)} monthly budget ({fmt_usd(forecast.spent)} so far, {fmt_usd(forecast.daily_rate)} a day)."
    )
    figures = {
        "projected": forecast.projected,
        "budget": budget,
        "spent": forecast.spent,
        "daily_rate": forecast.daily_rate,
        "share": share,
    }
    return _bot(Rule.FORECAST_OVER_BUDGET, month_key, AlertLevel.WARNING, message, **figures)


def evaluate(inputs: AlertInputs, settings: AlertSettings) -> list[Alert]:
    """Every rule over ``inputs``: in ``Rule`` order, and within a rule by subject and period."""
    s, i = settings, inputs
    return [
        *daily_cost(i.today_cost, i.day_key, s.daily_cost_threshold),
        *monthly_cost(i.month_cost, i.month_key, s.monthly_cost_threshold),
        *budget_threshold(i.budgets, s.budget_warning, s.budget_critical),
        *error_rate(
            i.attempts_last_hour,
            i.errors_last_hour,
            i.hour_key,
            s.error_rate_threshold,
            s.error_rate_critical,
            s.error_min_attempts,
        ),
        *cache_hit_rate(
            i.cache_hits_today, i.answers_today, i.day_key, s.cache_hit_rate_threshold, s.cache_min_answers
        ),
        *premium_share(i.premium_cost_today, i.today_cost, i.day_key, s.premium_share_threshold, s.premium_min_cost),
        *hour_spike(i.hourly_today, i.hourly_yesterday, i.yesterday_hours, s.spike_multiple, s.spike_floor),
        *rate_limited(i.rate_limited_last_hour, i.hour_key, s.rate_limited_threshold),
        *forecast_over_budget(i.forecast, i.monthly_budget, i.month_key, s.forecast_share),
    ]
