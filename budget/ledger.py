"""Reserve and settle against every budget that applies (DESIGN invariant 2).

The ledger (ai_requests) is the truth; the hot store's counters are the fast path, seeded from the
ledger the first time a period's counter is needed, so a restart never hands spent money back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from budget.money import to_nano
from budget.periods import Calendar, Period, Window
from budget.records import Spend
from budget.rules import Meter, Scope, Unit
from budget.stores import Hold, HotStore

GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Limits:
    """The budgets of one user and of the bot; None means no limit of that kind."""

    user_daily_usd: Decimal | None = None
    user_monthly_usd: Decimal | None = Decimal(10)
    user_daily_tokens: int | None = None
    user_monthly_tokens: int | None = None
    global_daily_usd: Decimal | None = None
    global_monthly_usd: Decimal | None = Decimal(100)


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    keys: tuple[tuple[str, Unit], ...]


def counter_key(scope_id: str, unit: Unit, window: Window) -> str:
    # One hash tag per user keeps a user's keys in one Redis Cluster slot.
    return f"pb:{{{scope_id}}}:{unit.value}:{window.period.value}:{window.key}"


class BudgetUnavailable(Exception):
    """Neither the hot store nor the ledger could say what is spent: nothing may be spent."""


class Ledger(Protocol):
    """Where spend is read from to seed counters: the ledger, with rows still in flight."""

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend: ...


class Budget:
    """Meters, reservations and settlement over a hot store, seeded from the ledger."""

    def __init__(
        self, hot: HotStore, ledger: Ledger, calendar: Calendar, limits: Limits, reservation_ttl_s: int
    ) -> None:
        self.hot = hot
        self.ledger = ledger
        self.calendar = calendar
        self.limits = limits
        self.reservation_ttl_s = reservation_ttl_s

    def _plan(self, user: str, now: datetime, exempt: bool) -> list[tuple[Scope, Unit, Window, str, int | None]]:
        lim = self.limits
        day = self.calendar.window(Period.DAY, now)
        month = self.calendar.window(Period.MONTH, now)

        def nano(v: Decimal | None) -> int | None:
            return None if v is None else to_nano(v)

        user_limits: list[tuple[Unit, Window, int | None]] = [
            (Unit.USD, day, nano(lim.user_daily_usd)),
            (Unit.USD, month, nano(lim.user_monthly_usd)),
        ]
        if lim.user_daily_tokens is not None or lim.user_monthly_tokens is not None:
            user_limits += [(Unit.TOKENS, day, lim.user_daily_tokens), (Unit.TOKENS, month, lim.user_monthly_tokens)]
        plan = [
            (Scope.USER, unit, w, counter_key(user, unit, w), None if exempt else limit)
            for unit, w, limit in user_limits
        ]
        plan += [
            (Scope.GLOBAL, Unit.USD, w, counter_key(GLOBAL, Unit.USD, w), nano(limit))
            for w, limit in ((day, lim.global_daily_usd), (month, lim.global_monthly_usd))
        ]
        return plan

    async def meters(self, user: str, now: datetime, *, exempt: bool = False) -> list[Meter]:
        """Every budget that applies to a user now, with what is used (settled plus reserved).
        Raises BudgetUnavailable when the stores cannot tell."""
        try:
            return await self._meters(user, now, exempt)
        except BudgetUnavailable:
            raise
        except Exception as error:
            raise BudgetUnavailable(f"budget stores unreachable: {type(error).__name__}") from error

    async def _meters(self, user: str, now: datetime, exempt: bool) -> list[Meter]:
        plan = self._plan(user, now, exempt)
        values = await self.hot.get_counters([p[3] for p in plan])
        if any(v is None for v in values):
            await self._seed([p for p, v in zip(plan, values, strict=True) if v is None], user)
            values = await self.hot.get_counters([p[3] for p in plan])
        return [
            Meter(scope, w.period, unit, key, limit, v or 0, w)
            for (scope, unit, w, key, limit), v in zip(plan, values, strict=True)
        ]

    async def _seed(self, missing: Sequence[tuple[Scope, Unit, Window, str, int | None]], user: str) -> None:
        for scope, unit, window, key, _ in missing:
            spend = await self.ledger.spend(user if scope is Scope.USER else None, window.start, window.end)
            value = spend.nanos if unit is Unit.USD else spend.tokens
            ttl = int((window.end - window.start).total_seconds()) + 86_400
            await self.hot.seed_counter(key, value, ttl)

    async def reserve(self, meters: Sequence[Meter], cost: Decimal, tokens: int, now: datetime) -> Reservation | None:
        """Hold a worst-case cost and token count on every meter at once; None if any refuses."""
        rid = uuid.uuid4().hex
        nanos = to_nano(cost)
        holds = [Hold(m.key, nanos if m.unit is Unit.USD else tokens, m.limit) for m in meters]
        try:
            refused = await self.hot.reserve(rid, holds, self.reservation_ttl_s, now.timestamp())
        except Exception as error:
            raise BudgetUnavailable(f"budget stores unreachable: {type(error).__name__}") from error
        if refused is not None:
            return None
        return Reservation(rid, tuple((m.key, m.unit) for m in meters))

    async def settle(self, reservation: Reservation, cost: Decimal, tokens: int) -> None:
        """Replace the held worst case by what the call really cost (zero for a failed call)."""
        nanos = to_nano(cost)
        await self.hot.settle(reservation.id, {k: nanos if u is Unit.USD else tokens for k, u in reservation.keys})

    async def release(self, reservation: Reservation) -> None:
        await self.settle(reservation, Decimal(0), 0)
