"""Budget rules as pure functions: spend, limits and an estimate in, a decision out.

No store is touched here, so every edge (exactly 80 %, exactly 95 %) is tested without I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum

from budget.periods import Period, Window


class Scope(StrEnum):
    USER = "user"
    GLOBAL = "global"


class Unit(StrEnum):
    USD = "usd"  # counted in integer nano-dollars
    TOKENS = "tokens"


class Level(IntEnum):
    """Ordered so that ``max()`` of several meters gives the strictest."""

    OK = 0
    WARN = 1
    BLOCK = 2


@dataclass(frozen=True, slots=True)
class Meter:
    """One budget that applies to a message: its counter key, limit and what is used (settled
    plus reserved). ``limit`` and ``used`` are nano-dollars for USD, tokens for TOKENS."""

    scope: Scope
    period: Period
    unit: Unit
    key: str
    limit: int | None  # None: no limit configured, the counter only keeps count
    used: int
    window: Window

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


@dataclass(frozen=True, slots=True)
class Thresholds:
    warn: Decimal = Decimal("0.8")
    block: Decimal = Decimal("0.95")


def level_of(used: int, limit: int | None, thresholds: Thresholds) -> Level:
    """WARN from ``warn`` of the limit, BLOCK from ``block``; exact, since all inputs are ints
    and Decimals."""
    if limit is None:
        return Level.OK
    if limit <= 0:
        return Level.BLOCK
    if used >= thresholds.block * limit:
        return Level.BLOCK
    if used >= thresholds.warn * limit:
        return Level.WARN
    return Level.OK


@dataclass(frozen=True, slots=True)
class GateDecision:
    level: Level
    meter: Meter | None  # the meter that set the level (the strictest, nearest its limit)


def gate(meters: Sequence[Meter], thresholds: Thresholds) -> GateDecision:
    """The strictest level over every meter, and the meter that caused it."""
    worst: GateDecision = GateDecision(Level.OK, None)
    worst_ratio = Decimal(-1)
    for meter in meters:
        if meter.limit is None:
            continue
        level = level_of(meter.used, meter.limit, thresholds)
        ratio = Decimal(meter.used) / meter.limit if meter.limit > 0 else Decimal(1)
        if (level, ratio) > (worst.level, worst_ratio):
            worst, worst_ratio = GateDecision(level, meter), ratio
    return worst


def remaining(meters: Sequence[Meter], unit: Unit) -> int | None:
    """The least left over every meter of that unit; None where no such meter applies."""
    left = [r for m in meters if m.unit is unit and (r := m.remaining) is not None]
    return min(left) if left else None


def output_cap(
    *,
    input_tokens: int,
    wanted: int,
    tokens_left: int | None,
    affordable: int | None,
) -> int:
    """The max_tokens to send: what was wanted, clamped to what the token and dollar budgets
    can pay. ``affordable`` is the largest output the dollars left pay for at the chosen model."""
    cap = wanted
    if tokens_left is not None:
        cap = min(cap, tokens_left - input_tokens)
    if affordable is not None:
        cap = min(cap, affordable)
    return max(cap, 0)


class Step(IntEnum):
    """The degradation ladder on the bot's own budget: each step keeps the ones below it."""

    NORMAL = 0
    CHEAPER = 1  # cheaper models
    SHORTER = 2  # the last 4 turns only (older ones folded for free) and a 4x longer cache lifetime
    CACHE_ONLY = 3  # AI off: answers from the cache only


@dataclass(frozen=True, slots=True)
class Ladder:
    cheaper_at: Decimal = Decimal("0.8")
    shorter_at: Decimal = Decimal("0.9")
    cache_only_at: Decimal = Decimal("0.95")


def degradation(meters: Sequence[Meter], ladder: Ladder) -> tuple[Step, Meter | None]:
    """The step the bot's budget is on, from the fullest of its limited dollar meters, and that
    meter. It lifts by itself when a period resets or a limit is raised: nothing is stored."""
    step, worst, worst_ratio = Step.NORMAL, None, Decimal(-1)
    for m in meters:
        if m.scope is not Scope.GLOBAL or m.unit is not Unit.USD or m.limit is None:
            continue
        ratio = Decimal(m.used) / m.limit if m.limit > 0 else Decimal(1)
        if ratio > worst_ratio:
            worst, worst_ratio = m, ratio
    if worst is None:
        return step, None
    for at, s in (
        (ladder.cache_only_at, Step.CACHE_ONLY),
        (ladder.shorter_at, Step.SHORTER),
        (ladder.cheaper_at, Step.CHEAPER),
    ):
        if worst_ratio >= at:
            return s, worst
    return Step.NORMAL, worst
