from datetime import UTC, datetime

from budget.periods import Calendar, Period


def test_utc_day_and_month() -> None:
    cal = Calendar("UTC")
    now = datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC)
    day = cal.window(Period.DAY, now)
    month = cal.window(Period.MONTH, now)
    assert (day.key, day.start.isoformat(), day.end.isoformat()) == (
        "2026-11-23",
        "2026-11-23T00:00:00+00:00",
        "2026-11-24T00:00:00+00:00",
    )
    assert (month.key, month.end.isoformat()) == ("2026-11", "2026-12-01T00:00:00+00:00")


def test_december_rolls_into_the_next_year() -> None:
    month = Calendar().window(Period.MONTH, datetime(2026, 12, 31, 12, tzinfo=UTC))
    assert (month.key, month.end.isoformat()) == ("2026-12", "2027-01-01T00:00:00+00:00")


def test_a_configured_zone_moves_the_boundary() -> None:
    cal = Calendar("America/New_York")
    # 03:00 UTC on the 1st is still the 31st of October in New York.
    now = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    assert cal.window(Period.DAY, now).key == "2026-10-31"
    assert cal.window(Period.MONTH, now).key == "2026-10"


def test_dst_day_is_a_calendar_day() -> None:
    cal = Calendar("Europe/Berlin")
    day = cal.window(Period.DAY, datetime(2026, 10, 25, 12, tzinfo=UTC))  # clocks go back: 25 h
    # Same-zone subtraction is wall-clock in Python; the stores compare UTC instants.
    assert (day.end.astimezone(UTC) - day.start.astimezone(UTC)).total_seconds() == 25 * 3600
