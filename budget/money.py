"""Exact money: Decimal dollars in code, integer nano-dollars in counters and SQLite."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

NANO = Decimal("0.000000001")
NANOS_PER_USD = 1_000_000_000
ZERO = Decimal(0)


def quantize(amount: Decimal) -> Decimal:
    """Round a dollar amount up to the nano-dollar: the bot never under-counts what it spends."""
    return amount.quantize(NANO, rounding=ROUND_CEILING)


def to_nano(amount: Decimal) -> int:
    """Dollars to integer nano-dollars (rounded up)."""
    return int(quantize(amount) * NANOS_PER_USD)


def from_nano(nanos: int) -> Decimal:
    """Integer nano-dollars to dollars, exactly."""
    return (Decimal(nanos) / NANOS_PER_USD).quantize(NANO)


def usd(value: str | int | Decimal) -> Decimal:
    """Parse a dollar amount given as text or integer; floats are refused."""
    if isinstance(value, float):  # pragma: no cover - guarded by the type, kept for callers without mypy
        raise TypeError("money is never a float")
    return Decimal(value)


def fmt_usd(amount: Decimal, places: int = 4) -> str:
    """Dollars for people: ``$0.0123``; tiny non-zero amounts keep up to 7 places
    (``$0.0000452``) so that a spend never shows as zero."""
    while places < 7 and 0 < abs(amount) < Decimal(1).scaleb(-places):
        places += 1
    return f"${amount.quantize(Decimal(1).scaleb(-places)):,}"
