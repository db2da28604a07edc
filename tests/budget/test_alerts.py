import dataclasses
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget.alerts import (
    BOT,
    Alert,
    AlertInputs,
    AlertLevel,
    AlertSettings,
    BudgetUse,
    Rule,
    budget_threshold,
    cache_hit_rate,
    daily_cost,
    error_rate,
    evaluate,
    forecast_over_budget,
    hour_period,
    hour_spike,
    monthly_cost,
    premium_share,
    rate_limited,
)
from budget.forecast import Forecast, Method

D = Decimal
NANO = D("0.000000001")
DAY, MONTH, HOUR = "2026-11-23", "2026-11", "2026-11-23T14"
WARN, CRIT = AlertLevel.WARNING, AlertLevel.CRITICAL


def hour(h: int, day: int = 23) -> datetime:
    return datetime(2026, 11, day, h, tzinfo=UTC)


def levels(alerts: list[Alert]) -> list[AlertLevel]:
    return [a.level for a in alerts]


# --- cost thresholds: strictly over ------------------------------------------------------------


@pytest.mark.parametrize(("cost", "fires"), [(D(0), False), (D(5) - NANO, False), (D(5), False), (D(5) + NANO, True)])
def test_daily_cost_must_be_over_five_dollars(cost: Decimal, fires: bool) -> None:
    alerts = daily_cost(cost, DAY)
    assert bool(alerts) is fires
    if fires:
        (a,) = alerts
        assert (a.rule, a.subject, a.period_key, a.level) == (Rule.DAILY_COST, BOT, DAY, WARN)
        assert a.figures == {"cost": "5.000000001", "threshold": "5"}
        assert "$5.0000" in a.message and DAY in a.message


def test_daily_cost_threshold_is_configurable() -> None:
    assert daily_cost(D("0.51"), DAY, threshold=D("0.5"))
    assert not daily_cost(D("0.50"), DAY, threshold=D("0.5"))


@pytest.mark.parametrize(("cost", "fires"), [(D(100), False), (D(100) + NANO, True), (D("99.99"), False)])
def test_monthly_cost_must_be_over_a_hundred_dollars(cost: Decimal, fires: bool) -> None:
    alerts = monthly_cost(cost, MONTH)
    assert bool(alerts) is fires
    if fires:
        assert alerts[0].period_key == MONTH
        assert alerts[0].figures["cost"] == "100.000000001"
        assert "$100.0000" in alerts[0].message


# --- budgets: at 80 % and 95 %, inclusive, as the gate --------------------------------------------


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        (D(0), []),
        (D(8) - NANO, []),
        (D(8), [WARN]),
        (D("9.5") - NANO, [WARN]),
        (D("9.5"), [CRIT]),
        (D(12), [CRIT]),
    ],
)
def test_budget_threshold_at_exactly_80_and_95_percent(used: Decimal, expected: list[AlertLevel]) -> None:
    assert levels(budget_threshold([BudgetUse("telegram:42", used, D(10), MONTH)])) == expected


def test_budget_threshold_message_and_figures() -> None:
    (a,) = budget_threshold([BudgetUse(BOT, D("13.50"), D(15), MONTH)])
    assert (a.rule, a.subject, a.period_key, a.level) == (Rule.BUDGET_THRESHOLD, BOT, MONTH, WARN)
    assert a.message == "The bot has used 90.0% of the 2026-11 budget: $13.5000 of $15.0000 (alert at 80.0%)."
    assert a.figures == {"used": "13.50", "limit": "15", "share": "0.9", "threshold": "0.8", "unit": "usd"}
    (t,) = budget_threshold([BudgetUse("u1", D(9600), D(10000), DAY, "tokens")])
    assert "9,600 tokens of 10,000 tokens" in t.message and t.level is CRIT


def test_budget_threshold_skips_no_limit_and_zero_limit() -> None:
    assert budget_threshold([BudgetUse("u", D(10**6), None, MONTH), BudgetUse("v", D(0), D(0), MONTH)]) == []


def test_budget_threshold_fires_the_highest_level_per_subject_and_period() -> None:
    uses = [
        BudgetUse("u", D("0.85"), D(1), MONTH),  # usd: warning
        BudgetUse("u", D(970), D(1000), MONTH, "tokens"),  # tokens: critical, same month
        BudgetUse("u", D("0.81"), D(1), DAY),  # another period: its own alert
        BudgetUse("v", D("0.1"), D(1), MONTH),
    ]
    alerts = budget_threshold(uses)
    assert [(a.subject, a.period_key, a.level) for a in alerts] == [("u", MONTH, CRIT), ("u", DAY, WARN)]
    assert alerts[0].figures["unit"] == "tokens"
    assert budget_threshold(reversed(uses)) == alerts


def test_custom_budget_levels() -> None:
    use = [BudgetUse("u", D("0.5"), D(1), MONTH)]
    assert levels(budget_threshold(use, warning=D("0.5"), critical=D("0.9"))) == [WARN]
    assert levels(budget_threshold(use, warning=D("0.3"), critical=D("0.5"))) == [CRIT]


# --- error rate: over 5 % of at least 20 attempts -------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "errors", "expected"),
    [
        (0, 0, []),
        (19, 19, []),  # under the minimum sample, however bad
        (20, 1, []),  # exactly 5 %
        (20, 2, [WARN]),
        (100, 5, []),
        (100, 6, [WARN]),
        (100, 50, [WARN]),  # exactly 50 %: not over the critical line
        (100, 51, [CRIT]),
    ],
)
def test_error_rate_edges(attempts: int, errors: int, expected: list[AlertLevel]) -> None:
    assert levels(error_rate(attempts, errors, HOUR)) == expected


def test_error_rate_minimum_sample_is_configurable_and_message_has_the_figures() -> None:
    assert error_rate(5, 1, HOUR, min_attempts=5)
    (a,) = error_rate(40, 3, HOUR)
    assert a.period_key == HOUR
    assert a.message == "3 of 40 AI call attempts failed in the hour 2026-11-23T14 (7.5%, threshold 5.0%)."
    assert a.figures == {"errors": "3", "attempts": "40", "threshold": "0.05"}


# --- cache hit rate: under 20 % of at least 50 answers -------------------------------------------


@pytest.mark.parametrize(
    ("hits", "answers", "fires"),
    [(0, 0, False), (0, 49, False), (10, 50, False), (9, 50, True), (0, 50, True), (20, 100, False), (19, 100, True)],
)
def test_cache_hit_rate_edges(hits: int, answers: int, fires: bool) -> None:
    assert bool(cache_hit_rate(hits, answers, DAY)) is fires


def test_cache_hit_rate_message() -> None:
    (a,) = cache_hit_rate(9, 50, DAY)
    assert "9 of 50" in a.message and "18.0%" in a.message and "20.0%" in a.message
    assert (a.period_key, a.figures["hits"], a.figures["answers"]) == (DAY, "9", "50")


# --- premium share: over 30 % of a day that cost at least $0.10 -----------------------------------


@pytest.mark.parametrize(
    ("premium", "total", "fires"),
    [
        (D("0.3"), D(1), False),  # exactly 30 %
        (D("0.3") + NANO, D(1), True),
        (D("0.1") - NANO, D("0.1") - NANO, False),  # all premium, but under the minimum day
        (D("0.1"), D("0.1"), True),
        (D(0), D(0), False),
    ],
)
def test_premium_share_edges(premium: Decimal, total: Decimal, fires: bool) -> None:
    assert bool(premium_share(premium, total, DAY)) is fires


def test_premium_share_message() -> None:
    (a,) = premium_share(D("1.2"), D(3), DAY)
    assert a.message == "Premium models cost $1.2000 of today's $3.0000 on 2026-11-23 (40.0%, threshold 30.0%)."


# --- hour spike: over 3 x yesterday's median hour AND over $0.50 ---------------------------------


def yesterday(cost: str) -> dict[datetime, Decimal]:
    return {hour(h, 22): D(cost) for h in range(24)}


@pytest.mark.parametrize(
    ("median", "cost", "fires"),
    [
        ("1", "3", False),  # exactly 3 x the median
        ("1", "3.000000001", True),
        ("1", "2.9", False),  # far over the floor, not a spike
        ("0", "0.5", False),  # quiet yesterday: exactly the floor
        ("0", "0.500000001", True),
        ("0.1", "0.45", False),  # 4.5 x the median, under the floor
        ("0.1", "0.51", True),
    ],
)
def test_hour_spike_needs_both_conditions(median: str, cost: str, fires: bool) -> None:
    assert bool(hour_spike({hour(14): D(cost)}, yesterday(median))) is fires


def test_hour_spike_silent_hours_of_yesterday_count_as_zero() -> None:
    busy_half = {hour(h, 22): D(2) for h in range(11)}  # 11 of 24 hours spent: the median hour is 0
    assert hour_spike({hour(14): D("0.6")}, busy_half)
    busy_half[hour(11, 22)] = D(2)  # 12 of 24: the median is 1
    assert not hour_spike({hour(14): D("0.6")}, busy_half)
    assert hour_spike({hour(2): D("3.1")}, {hour(h, 22): D(1) for h in range(23)}, yesterday_hours=23)


def test_hour_spike_fires_per_hour_keyed_by_the_hour() -> None:
    today = {hour(16): D(9), hour(9): D(7), hour(10): D("0.1")}
    alerts = hour_spike(today, yesterday("1"))
    assert [a.period_key for a in alerts] == ["2026-11-23T09", "2026-11-23T16"]
    assert alerts[0].figures == {"cost": "7", "median": "1", "multiple": "3", "floor": "0.50"}
    assert "$7.0000" in alerts[0].message and "$1.0000" in alerts[0].message
    assert hour_period(hour(9)) == "2026-11-23T09"


# --- rate limited and forecast -------------------------------------------------------------------


@pytest.mark.parametrize(("count", "fires"), [(0, False), (20, False), (21, True)])
def test_rate_limited_must_be_over_twenty(count: int, fires: bool) -> None:
    alerts = rate_limited(count, HOUR)
    assert bool(alerts) is fires
    if fires:
        assert alerts[0].period_key == HOUR and "21" in alerts[0].message


def forecast(projected: Decimal) -> Forecast:
    return Forecast(D(40), projected, Method.WINSORIZED, D("3.5"), 7, 10)


@pytest.mark.parametrize(("projected", "fires"), [(D(100), False), (D(100) + NANO, True), (D(0), False)])
def test_forecast_over_budget_must_be_over_the_budget(projected: Decimal, fires: bool) -> None:
    alerts = forecast_over_budget(forecast(projected), D(100), MONTH)
    assert bool(alerts) is fires
    if fires:
        (a,) = alerts
        assert (a.rule, a.period_key) == (Rule.FORECAST_OVER_BUDGET, MONTH)
        assert "$100.0000" in a.message and "$40.0000" in a.message and "$3.5000" in a.message
        assert a.figures["projected"] == "100.000000001"


def test_forecast_over_budget_needs_a_budget_and_a_forecast_and_takes_a_share() -> None:
    assert not forecast_over_budget(None, D(100), MONTH)
    assert not forecast_over_budget(forecast(D(500)), None, MONTH)
    assert forecast_over_budget(forecast(D(91)), D(100), MONTH, share=D("0.9"))


def test_a_critical_after_a_warning_is_a_new_key() -> None:
    (warn,) = budget_threshold([BudgetUse("u", D("0.8"), D(1), MONTH)])
    (crit,) = budget_threshold([BudgetUse("u", D("0.96"), D(1), MONTH)])
    assert warn.key != crit.key
    assert warn.key[:3] == crit.key[:3] == (Rule.BUDGET_THRESHOLD, "u", MONTH)


# --- evaluate ------------------------------------------------------------------------------------


def everything() -> AlertInputs:
    """Inputs on which every rule fires."""
    return AlertInputs(
        day_key=DAY,
        month_key=MONTH,
        hour_key=HOUR,
        today_cost=D(6),
        month_cost=D(120),
        premium_cost_today=D(3),
        hourly_today={hour(15): D(2), hour(13): D(4)},
        hourly_yesterday=yesterday("0.1"),
        attempts_last_hour=40,
        errors_last_hour=30,
        cache_hits_today=5,
        answers_today=60,
        rate_limited_last_hour=25,
        budgets=[
            BudgetUse(BOT, D(120), D(125), MONTH),
            BudgetUse("u2", D(9), D(10), DAY),
            BudgetUse("u1", D(1), D(1), DAY),
        ],
        forecast=forecast(D(180)),
        monthly_budget=D(125),
    )


def test_evaluate_runs_every_rule_in_a_stable_order() -> None:
    alerts = evaluate(everything(), AlertSettings())
    assert [(a.rule, a.subject, a.period_key) for a in alerts] == [
        (Rule.DAILY_COST, BOT, DAY),
        (Rule.MONTHLY_COST, BOT, MONTH),
        (Rule.BUDGET_THRESHOLD, BOT, MONTH),
        (Rule.BUDGET_THRESHOLD, "u1", DAY),
        (Rule.BUDGET_THRESHOLD, "u2", DAY),
        (Rule.ERROR_RATE, BOT, HOUR),
        (Rule.CACHE_HIT_RATE, BOT, DAY),
        (Rule.PREMIUM_SHARE, BOT, DAY),
        (Rule.HOUR_SPIKE, BOT, "2026-11-23T13"),
        (Rule.HOUR_SPIKE, BOT, "2026-11-23T15"),
        (Rule.RATE_LIMITED, BOT, HOUR),
        (Rule.FORECAST_OVER_BUDGET, BOT, MONTH),
    ]
    assert {a.rule for a in alerts} == set(Rule)
    assert len({a.key for a in alerts}) == len(alerts)
    assert all(a.message and a.figures for a in alerts)


def test_evaluate_order_does_not_depend_on_input_order() -> None:
    base = everything()
    budgets = list(base.budgets)
    random.Random(7).shuffle(budgets)
    shuffled = dataclasses.replace(
        base,
        budgets=budgets[::-1],
        hourly_today=dict(reversed(list(base.hourly_today.items()))),
        hourly_yesterday=dict(reversed(list(base.hourly_yesterday.items()))),
    )
    assert evaluate(shuffled, AlertSettings()) == evaluate(base, AlertSettings())


def test_evaluate_is_quiet_on_a_calm_day() -> None:
    calm = AlertInputs(DAY, MONTH, HOUR, today_cost=D("0.4"), month_cost=D(9), attempts_last_hour=100)
    assert evaluate(calm, AlertSettings()) == []


def test_evaluate_reads_the_settings() -> None:
    calm = AlertInputs(DAY, MONTH, HOUR, today_cost=D("0.4"))
    assert [a.rule for a in evaluate(calm, AlertSettings(daily_cost_threshold=D("0.3")))] == [Rule.DAILY_COST]


# --- invariant: a quieter setting never adds an alert nor raises a level ---------------------------

money = st.decimals(min_value=0, max_value=200, places=3)
count = st.integers(min_value=0, max_value=200)
nudge = st.decimals(min_value=0, max_value=2, places=3)


@st.composite
def inputs(draw: st.DrawFn) -> AlertInputs:
    limits = st.one_of(st.none(), st.decimals(min_value=0, max_value=50, places=2))
    uses = draw(
        st.lists(
            st.builds(BudgetUse, st.sampled_from(["u1", "u2", BOT]), money, limits, st.sampled_from([DAY, MONTH])),
            max_size=6,
        )
    )
    today_cost = draw(money)
    attempts = draw(count)
    answers = draw(count)
    hours = st.dictionaries(st.integers(min_value=0, max_value=23), st.decimals(min_value=0, max_value=5, places=3))
    return AlertInputs(
        DAY,
        MONTH,
        HOUR,
        today_cost=today_cost,
        month_cost=draw(money),
        premium_cost_today=draw(st.decimals(min_value=0, max_value=today_cost, places=3)),
        hourly_today={hour(h): c for h, c in draw(hours).items()},
        hourly_yesterday={hour(h, 22): c for h, c in draw(hours).items()},
        attempts_last_hour=attempts,
        errors_last_hour=draw(st.integers(min_value=0, max_value=attempts)),
        cache_hits_today=draw(st.integers(min_value=0, max_value=answers)),
        answers_today=answers,
        rate_limited_last_hour=draw(count),
        budgets=uses,
        forecast=forecast(draw(money)),
        monthly_budget=draw(st.one_of(st.none(), money)),
    )


@st.composite
def quieter(draw: st.DrawFn, s: AlertSettings) -> AlertSettings:
    """Every threshold moved, by any amount including none, in the direction that alerts less."""

    def up(v: Decimal) -> Decimal:
        return v + draw(nudge)

    return AlertSettings(
        daily_cost_threshold=up(s.daily_cost_threshold),
        monthly_cost_threshold=up(s.monthly_cost_threshold),
        budget_warning=up(s.budget_warning),
        budget_critical=up(s.budget_critical),
        error_rate_threshold=up(s.error_rate_threshold),
        error_rate_critical=up(s.error_rate_critical),
        error_min_attempts=s.error_min_attempts + draw(st.integers(0, 50)),
        cache_hit_rate_threshold=max(s.cache_hit_rate_threshold - draw(nudge), D(0)),
        cache_min_answers=s.cache_min_answers + draw(st.integers(0, 50)),
        premium_share_threshold=up(s.premium_share_threshold),
        premium_min_cost=up(s.premium_min_cost),
        spike_multiple=up(s.spike_multiple),
        spike_floor=up(s.spike_floor),
        rate_limited_threshold=s.rate_limited_threshold + draw(st.integers(0, 50)),
        forecast_share=up(s.forecast_share),
    )


@st.composite
def settings(draw: st.DrawFn) -> AlertSettings:
    ratio = st.decimals(min_value=0, max_value=1, places=3)
    return AlertSettings(
        daily_cost_threshold=draw(money),
        monthly_cost_threshold=draw(money),
        budget_warning=draw(ratio),
        budget_critical=draw(ratio),
        error_rate_threshold=draw(ratio),
        error_rate_critical=draw(ratio),
        error_min_attempts=draw(st.integers(0, 60)),
        cache_hit_rate_threshold=draw(ratio),
        cache_min_answers=draw(st.integers(0, 60)),
        premium_share_threshold=draw(ratio),
        premium_min_cost=draw(st.decimals(min_value=0, max_value=1, places=2)),
        spike_multiple=draw(st.decimals(min_value=0, max_value=5, places=1)),
        spike_floor=draw(st.decimals(min_value=0, max_value=2, places=2)),
        rate_limited_threshold=draw(count),
        forecast_share=draw(st.decimals(min_value=0, max_value=2, places=2)),
    )


@given(inputs(), settings(), st.data())
def test_a_quieter_setting_never_adds_an_alert_nor_raises_a_level(
    given_inputs: AlertInputs, base: AlertSettings, data: st.DataObject
) -> None:
    strict = data.draw(quieter(base))
    loud = {a.key[:3]: a.level for a in evaluate(given_inputs, base)}
    quiet = {a.key[:3]: a.level for a in evaluate(given_inputs, strict)}
    assert quiet.keys() <= loud.keys()
    rank = {WARN: 0, CRIT: 1}
    assert all(rank[level] <= rank[loud[k]] for k, level in quiet.items())


@given(st.decimals(min_value=0, max_value=20, places=9), st.decimals(min_value=0, max_value=5, places=9))
def test_more_budget_used_never_lowers_the_level(used: Decimal, more: Decimal) -> None:
    rank = {WARN: 1, CRIT: 2}
    before = [rank[a.level] for a in budget_threshold([BudgetUse("u", used, D(10), MONTH)])] or [0]
    after = [rank[a.level] for a in budget_threshold([BudgetUse("u", used + more, D(10), MONTH)])] or [0]
    assert after >= before
