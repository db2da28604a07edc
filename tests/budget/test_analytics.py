from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget.analytics import TokenTotals, daily_costs, hourly_costs, monthly_costs, summarize
from budget.money import from_nano
from budget.records import AIRequest, Kind, Status
from providers.base import Usage

D = Decimal
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def row(
    user: str,
    provider: str,
    model: str,
    *,
    cost: str = "0",
    saved: str = "0",
    channel: str = "telegram",
    kind: Kind = Kind.ANSWER,
    status: Status = Status.OK,
    usage: Usage | None = None,
    tier: str | None = None,
    at: datetime = NOON,
) -> AIRequest:
    return AIRequest(
        request_id=f"{user}-{model}-{cost}-{at.isoformat()}",
        created_at=at,
        user_key=user,
        channel=channel,
        message_id="m1",
        kind=kind,
        provider=provider,
        model=model,
        status=status,
        usage=usage or Usage(),
        cost=D(cost),
        saved=D(saved),
        tier=tier,
    )


ROWS = [
    row("alice", "openai", "gpt-4.1", cost="0.006", tier="premium",
        usage=Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200, reasoning_tokens=50)),
    row("alice", "openai", "gpt-4o-mini", cost="0.00012", tier="cheap", usage=Usage(400, 100)),
    # a cache hit: no cost, the saved cost recorded
    row("bob", "anthropic", "claude-haiku-4-5", channel="whatsapp", status=Status.CACHED, saved="0.0021",
        tier="cheap"),
    # a failed attempt: no cost, an attempt but no answer
    row("bob", "anthropic", "claude-sonnet-4-5", channel="whatsapp", status=Status.ERROR, tier="premium"),
    # a summary: an attempt with a cost, not an answer
    row("carol", "openai", "gpt-4.1-mini", channel="console", kind=Kind.SUMMARY, cost="0.00152", tier="standard",
        usage=Usage(input_tokens=3000, output_tokens=200, cache_write_tokens=1000)),
    row("carol", "anthropic", "claude-sonnet-4-5", channel="console", cost="0.0114", tier="premium",
        usage=Usage(800, 600)),
    row("dave", "openai", "gpt-4o-mini", status=Status.CACHED, saved="0.00012", tier="cheap"),
    # tier unknown: left out of the premium share
    row("dave", "simulated", "gpt-4o-mini", cost="0.00009"),
]  # fmt: skip


def test_summary_of_hand_built_rows() -> None:
    s = summarize(ROWS, D("0.0075"), top=2)
    assert s.llm_cost == D("0.01913")
    assert s.fees == D("0.0075")
    assert s.total_cost == D("0.02663")
    assert (s.requests, s.answers, s.errors) == (8, 6, 1)
    assert s.tokens == TokenTotals(prompt=5200, completion=1400, cached=200, cache_write=1000, reasoning=50)
    assert s.cache_hits == 2
    assert s.cache_hit_rate == D(2) / D(6)
    assert s.saved == D("0.00222")
    assert list(s.by_provider.items()) == [
        ("anthropic", D("0.0114")),
        ("openai", D("0.00764")),
        ("simulated", D("0.00009")),
    ]
    assert list(s.by_model.items()) == [
        ("claude-sonnet-4-5", D("0.0114")),
        ("gpt-4.1", D("0.006")),
        ("gpt-4.1-mini", D("0.00152")),
        ("gpt-4o-mini", D("0.00021")),
        ("claude-haiku-4-5", D(0)),
    ]
    assert list(s.by_channel.items()) == [
        ("console", D("0.01292")),
        ("telegram", D("0.00621")),
        ("whatsapp", D(0)),
    ]
    assert list(s.by_user.items()) == [
        ("carol", D("0.01292")),
        ("alice", D("0.00612")),
        ("dave", D("0.00009")),
        ("bob", D(0)),
    ]
    assert s.active_users == 4
    assert s.cost_per_active_user == D("0.006657500")  # 0.02663 / 4, exact
    assert s.cost_per_answer == D("0.004438334")  # 0.02663 / 6 = 0.0044383333..., rounded up
    assert s.top_users == [("carol", D("0.01292")), ("alice", D("0.00612"))]
    assert s.premium_share == D("0.0174") / D("0.01904")  # premium / cost of rows with a known tier


def test_fees_default_to_zero_and_top_defaults_to_five() -> None:
    s = summarize(ROWS)
    assert s.fees == 0
    assert s.total_cost == s.llm_cost == D("0.01913")
    assert s.cost_per_answer == D("0.003188334")  # 0.01913 / 6 rounded up
    assert len(s.top_users) == 4  # fewer users than the default five


def test_empty_rows_divide_by_nothing() -> None:
    s = summarize([], D("1.5"))
    assert (s.llm_cost, s.total_cost, s.requests, s.answers, s.errors) == (D(0), D("1.5"), 0, 0, 0)
    assert s.cache_hit_rate is None
    assert s.cost_per_active_user is None
    assert s.cost_per_answer is None
    assert s.premium_share is None
    assert s.by_user == s.by_model == s.by_provider == s.by_channel == {}
    assert s.top_users == []
    assert s.tokens == TokenTotals()


def test_only_errors_and_summaries_have_no_answers() -> None:
    rows = [
        row("u", "openai", "gpt-4.1", status=Status.ERROR),
        row("u", "openai", "gpt-4.1", kind=Kind.SUMMARY, cost="0.001"),
        row("u", "openai", "gpt-4.1", kind=Kind.SUMMARY, status=Status.ERROR),
    ]
    s = summarize(rows)
    assert (s.requests, s.answers, s.errors, s.cache_hits) == (3, 0, 2, 0)
    assert s.cache_hit_rate is None and s.cost_per_answer is None
    assert s.cost_per_active_user == D("0.001000000")
    assert s.premium_share is None  # no tier known


def test_premium_share_with_only_premium_rows_is_one() -> None:
    s = summarize([row("u", "openai", "gpt-4.1", cost="0.5", tier="premium")])
    assert s.premium_share == 1


def test_ties_are_ordered_by_name() -> None:
    rows = [row(u, "openai", "gpt-4o-mini", cost="0.01") for u in ("zoe", "amy", "max")]
    assert list(summarize(rows, top=2).by_user) == ["amy", "max", "zoe"]
    assert summarize(rows, top=2).top_users == [("amy", D("0.01")), ("max", D("0.01"))]
    assert summarize(rows, top=0).top_users == []


@pytest.mark.parametrize("fees", [D(-1), D("NaN"), D("Infinity"), 0.5])
def test_bad_fees_are_refused(fees: Decimal) -> None:
    with pytest.raises(ValueError, match="fees"):
        summarize(ROWS, fees)


def test_negative_top_is_refused() -> None:
    with pytest.raises(ValueError, match="top"):
        summarize(ROWS, top=-1)


def test_daily_costs_follow_the_time_zone() -> None:
    rows = [
        row("u", "openai", "m", cost="0.1", at=datetime(2026, 11, 23, 23, 30, tzinfo=UTC)),
        row("u", "openai", "m", cost="0.2", at=datetime(2026, 11, 24, 4, 59, tzinfo=UTC)),
        row("u", "openai", "m", cost="0.4", at=datetime(2026, 11, 24, 5, 0, tzinfo=UTC)),
        row("u", "openai", "m", cost="0.8", at=datetime(2026, 11, 20, 12, 0, tzinfo=UTC)),
    ]
    assert list(daily_costs(rows).items()) == [
        (date(2026, 11, 20), D("0.8")),
        (date(2026, 11, 23), D("0.1")),
        (date(2026, 11, 24), D("0.6")),
    ]
    # New York is UTC-5 in late November: 04:59Z is still the 23rd there
    assert list(daily_costs(rows, ZoneInfo("America/New_York")).items()) == [
        (date(2026, 11, 20), D("0.8")),
        (date(2026, 11, 23), D("0.3")),
        (date(2026, 11, 24), D("0.4")),
    ]


def test_hourly_costs_keep_the_repeated_hour_of_a_dst_change_apart() -> None:
    ny = ZoneInfo("America/New_York")
    # 2026-11-01: clocks go back at 02:00 EDT, so 01:00-02:00 local happens twice
    rows = [
        row("u", "openai", "m", cost="0.1", at=datetime(2026, 11, 1, 5, 10, tzinfo=UTC)),  # 01:10 EDT
        row("u", "openai", "m", cost="0.2", at=datetime(2026, 11, 1, 5, 50, tzinfo=UTC)),  # 01:50 EDT
        row("u", "openai", "m", cost="0.4", at=datetime(2026, 11, 1, 6, 20, tzinfo=UTC)),  # 01:20 EST
        row("u", "openai", "m", cost="0.8", at=datetime(2026, 11, 1, 7, 0, tzinfo=UTC)),  # 02:00 EST
    ]
    edt, est = timezone(timedelta(hours=-4)), timezone(timedelta(hours=-5))
    assert list(hourly_costs(rows, ny).items()) == [
        (datetime(2026, 11, 1, 1, tzinfo=edt), D("0.3")),
        (datetime(2026, 11, 1, 1, tzinfo=est), D("0.4")),
        (datetime(2026, 11, 1, 2, tzinfo=est), D("0.8")),
    ]
    assert next(iter(hourly_costs(rows).items())) == (datetime(2026, 11, 1, 5, tzinfo=UTC), D("0.3"))


def test_monthly_costs_are_keyed_by_the_first_day() -> None:
    rows = [
        row("u", "openai", "m", cost="1", at=datetime(2026, 10, 31, 23, 0, tzinfo=UTC)),
        row("u", "openai", "m", cost="2", at=datetime(2026, 11, 1, 0, 0, tzinfo=UTC)),
    ]
    assert monthly_costs(rows) == {date(2026, 10, 1): D(1), date(2026, 11, 1): D(2)}
    assert monthly_costs(rows, ZoneInfo("Europe/Berlin")) == {date(2026, 11, 1): D(3)}


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        daily_costs([row("u", "openai", "m", at=datetime(2026, 11, 1, 12))])


_rows = st.builds(
    row,
    st.sampled_from(["ann", "ben", "cy", "dee"]),
    st.sampled_from(["openai", "anthropic", "simulated"]),
    st.sampled_from(["gpt-4o-mini", "gpt-4.1", "claude-haiku-4-5"]),
    cost=st.integers(0, 10**12).map(lambda n: str(from_nano(n))),
    channel=st.sampled_from(["telegram", "whatsapp", "console"]),
    kind=st.sampled_from(Kind),
    status=st.sampled_from(Status),
    tier=st.sampled_from([None, "cheap", "standard", "premium"]),
    at=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)),
)


@given(st.lists(_rows, max_size=40), st.integers(0, 10**9).map(from_nano))
def test_every_breakdown_sums_to_the_total(rows: list[AIRequest], fees: Decimal) -> None:
    s = summarize(rows, fees)
    assert s.total_cost == s.llm_cost + fees
    for breakdown in (s.by_provider, s.by_model, s.by_user, s.by_channel):
        assert sum(breakdown.values(), D(0)) == s.llm_cost
        costs = list(breakdown.values())
        assert costs == sorted(costs, reverse=True)
    for series in (daily_costs(rows), hourly_costs(rows), monthly_costs(rows, ZoneInfo("Asia/Kolkata"))):
        assert sum(series.values(), D(0)) == s.llm_cost
    assert s.answers + s.errors <= s.requests
    assert s.cache_hits <= s.answers
