from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget.periods import Calendar, Period
from budget.rules import Level, Meter, Scope, Thresholds, Unit, gate, level_of, output_cap, remaining

T = Thresholds()
WINDOW = Calendar().window(Period.MONTH, datetime(2026, 11, 5, tzinfo=UTC))


def meter(used: int, limit: int | None, scope: Scope = Scope.USER, unit: Unit = Unit.USD) -> Meter:
    return Meter(scope, Period.MONTH, unit, f"k{scope}{unit}{used}", limit, used, WINDOW)


@pytest.mark.parametrize(
    ("used", "level"),
    [
        (0, Level.OK),
        (799_999, Level.OK),
        (800_000, Level.WARN),
        (949_999, Level.WARN),
        (950_000, Level.BLOCK),
        (1_000_000, Level.BLOCK),
        (2_000_000, Level.BLOCK),
    ],
)
def test_thresholds_exactly_at_80_and_95_percent(used: int, level: Level) -> None:
    assert level_of(used, 1_000_000, T) is level


def test_no_limit_is_always_ok_and_zero_limit_always_blocks() -> None:
    assert level_of(10**15, None, T) is Level.OK
    assert level_of(0, 0, T) is Level.BLOCK


def test_custom_thresholds() -> None:
    t = Thresholds(Decimal("0.5"), Decimal("0.9"))
    assert [level_of(u, 10, t) for u in (4, 5, 8, 9)] == [Level.OK, Level.WARN, Level.WARN, Level.BLOCK]


def test_gate_takes_the_strictest_meter_and_names_it() -> None:
    user = meter(500, 1000)  # 50 %
    glob = meter(850, 1000, Scope.GLOBAL)  # 85 %: warn
    decision = gate([user, glob, meter(10**9, None)], T)
    assert decision.level is Level.WARN
    assert decision.meter is glob
    blocked = meter(960, 1000)
    assert gate([glob, blocked], T).meter is blocked


def test_gate_with_only_unlimited_meters_is_ok() -> None:
    assert gate([meter(5, None)], T).level is Level.OK


def test_remaining_is_the_least_left_of_a_unit() -> None:
    ms = [meter(300, 1000), meter(100, 500, Scope.GLOBAL), meter(0, 50, unit=Unit.TOKENS), meter(1, None)]
    assert remaining(ms, Unit.USD) == 400
    assert remaining(ms, Unit.TOKENS) == 50
    assert remaining([meter(1, None)], Unit.USD) is None
    assert remaining([meter(2000, 1000)], Unit.USD) == 0


def test_output_cap_clamps_to_tokens_and_dollars() -> None:
    assert output_cap(input_tokens=100, wanted=1024, tokens_left=None, affordable=None) == 1024
    assert output_cap(input_tokens=100, wanted=1024, tokens_left=600, affordable=None) == 500
    assert output_cap(input_tokens=100, wanted=1024, tokens_left=600, affordable=300) == 300
    assert output_cap(input_tokens=700, wanted=1024, tokens_left=600, affordable=None) == 0


@given(st.integers(0, 10**12), st.integers(1, 10**12))
def test_level_is_monotonic_in_spend(used: int, limit: int) -> None:
    assert level_of(used, limit, T) <= level_of(used + 1, limit, T)


def test_the_degradation_ladder_step_by_step() -> None:
    from budget.rules import Ladder, Step, degradation

    ladder = Ladder()

    def at(used: int, limit: int | None = 1_000) -> Step:
        return degradation([meter(used, limit, Scope.GLOBAL), meter(999, 1000)], ladder)[0]

    assert [at(u) for u in (0, 799, 800, 899, 900, 949, 950, 2000)] == [
        Step.NORMAL, Step.NORMAL, Step.CHEAPER, Step.CHEAPER, Step.SHORTER, Step.SHORTER, Step.CACHE_ONLY,
        Step.CACHE_ONLY,
    ]  # fmt: skip
    assert at(5, None) is Step.NORMAL  # no bot budget: no ladder
    assert at(950, 2000) is Step.NORMAL  # a raised budget lifts it
    # the user's own meters never move the bot's ladder
    assert degradation([meter(999, 1000)], ladder) == (Step.NORMAL, None)
