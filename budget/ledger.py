"""Reserve and settle against every budget that applies (DESIGN invariant 2).

The ledger (ai_requests) is the truth; the hot store's counters are the fast path, seeded from the
ledger the first time a period's counter is needed, so a restart never hands spent money back.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from budget.money import to_nano
from budget.periods import Calendar, Period, Window
from budget.records import Quota, Spend
from budget.rules import Ladder, Meter, Scope, Thresholds, Unit
from budget.stores import Admit, Hold, HotStore

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


@dataclass(frozen=True, slots=True)
class Admission:
    """A reservation to make with the rate limit's read (``admit``), and, once made, the
    reservation it is: ``cost`` and ``tokens`` held on every meter."""

    admit: Admit
    reservation: Reservation
    cost: Decimal
    tokens: int


CounterRow = tuple[Scope, Unit, Window, str]
PlanRow = tuple[Scope, Unit, Window, str, int | None]
NO_OVERRIDE = -1  # a quota key's value when the user has no quota of that kind
QUOTA_TTL_S = 40 * 86_400  # reloaded from the database after that, or after a Redis restart


class QuotaSource(Protocol):
    async def get_quota(self, user_key: str) -> Quota | None: ...


def quota_keys(user: str) -> list[str]:
    """Daily and monthly USD (nano-dollars) and token quotas of a user, in the user's hash slot."""
    return [f"pb:{{{user}}}:quota:{unit}:{period}" for unit in ("usd", "tokens") for period in ("day", "month")]


def quota_values(quota: Quota | None) -> tuple[int, int, int, int]:
    if quota is None:
        return (NO_OVERRIDE,) * 4

    def usd(v: Decimal | None) -> int:
        return NO_OVERRIDE if v is None else to_nano(v)

    def tok(v: int | None) -> int:
        return NO_OVERRIDE if v is None else v

    return usd(quota.daily_usd), usd(quota.monthly_usd), tok(quota.daily_tokens), tok(quota.monthly_tokens)


def _nano(v: Decimal | None) -> int | None:
    return None if v is None else to_nano(v)


def counter_key(scope_id: str, unit: Unit, window: Window) -> str:
    # One hash tag per user keeps a user's keys in one Redis Cluster slot.
    return f"pb:{{{scope_id}}}:{unit.value}:{window.period.value}:{window.key}"


class BudgetUnavailable(Exception):
    """Neither the hot store nor the ledger could say what is spent: nothing may be spent."""


class Ledger(Protocol):
    """Where spend is read from to seed counters: the ledger, with rows still in flight."""

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend: ...

    async def recorded(self, request_ids: Collection[str]) -> set[str]:
        """Which of these ai_request rows a ``spend`` begun after this returns has counted."""
        ...


class Budget:
    """Meters, reservations and settlement over a hot store, seeded from the ledger."""

    def __init__(
        self,
        hot: HotStore,
        ledger: Ledger,
        calendar: Calendar,
        limits: Limits,
        reservation_ttl_s: int,
        quotas: QuotaSource | None = None,
    ) -> None:
        self.hot = hot
        self.ledger = ledger
        self.calendar = calendar
        self.limits = limits
        # In nano-dollars once, not per message: (user day, month USD, day, month tokens), (bot day, month).
        self._user_limits = (
            _nano(limits.user_daily_usd), _nano(limits.user_monthly_usd),
            limits.user_daily_tokens, limits.user_monthly_tokens,
        )  # fmt: skip
        self._global_limits: list[int | None] = [_nano(limits.global_daily_usd), _nano(limits.global_monthly_usd)]
        self.reservation_ttl_s = reservation_ttl_s
        self.quotas = quotas
        self._last_rows: tuple[str, datetime, tuple[CounterRow, ...]] | None = None

    def _counters(self, user: str, now: datetime) -> tuple[CounterRow, ...]:
        """Every counter that applies to a user now: the user's four (dollars and tokens, day and
        month; token counters are kept for everyone, so a token quota can start any time), then
        the bot's two. A message asks three times (the rate limit's keys, its reservation, the
        gate's meters), at one ``now``: the last answer is kept."""
        last = self._last_rows
        if last is not None and last[0] == user and last[1] == now:
            return last[2]
        day = self.calendar.window(Period.DAY, now)
        month = self.calendar.window(Period.MONTH, now)
        rows = tuple(
            (Scope.USER, unit, w, counter_key(user, unit, w))
            for unit, w in ((Unit.USD, day), (Unit.USD, month), (Unit.TOKENS, day), (Unit.TOKENS, month))
        ) + tuple((Scope.GLOBAL, Unit.USD, w, counter_key(GLOBAL, Unit.USD, w)) for w in (day, month))
        self._last_rows = (user, now, rows)
        return rows

    def _limits(self, exempt: bool, quota: Sequence[int | None]) -> list[int | None]:
        """The limits of ``_counters``' rows, in their order: a user's quota (where set) over the
        configured one; none of the user's own when exempt."""
        own: list[int | None] = [None] * 4
        if not exempt:
            own = [d if q is None or q == NO_OVERRIDE else q for d, q in zip(self._user_limits, quota, strict=True)]
        return own + self._global_limits

    def counter_keys(self, user: str, now: datetime) -> list[str]:
        """The counters ``meters`` reads (before the user's ``quota_keys``), for a caller that
        reads them together with something else in one round trip (the rate limit)."""
        return [row[3] for row in self._counters(user, now)]

    async def meters(
        self, user: str, now: datetime, *, exempt: bool = False, read: Sequence[int | None] | None = None
    ) -> list[Meter]:
        """Every budget that applies to a user now, with what is used (settled plus reserved);
        ``read``: the values of ``counter_keys`` then ``quota_keys``, read already. Raises
        BudgetUnavailable when the stores cannot tell."""
        try:
            return await self._meters(user, now, exempt, read)
        except BudgetUnavailable:
            raise
        except Exception as error:
            raise BudgetUnavailable(f"budget stores unreachable: {type(error).__name__}") from error

    async def _meters(self, user: str, now: datetime, exempt: bool, read: Sequence[int | None] | None) -> list[Meter]:
        # One read for the counters and the user's quota, which lives beside them in the hot store.
        rows = self._counters(user, now)
        keys = [row[3] for row in rows]
        values = list(read) if read is not None else await self.hot.get_counters(keys + quota_keys(user))
        counters, quota = values[: len(keys)], values[len(keys) :]
        if any(q is None for q in quota):
            quota = await self._load_quota(user)
        plan = [(*row, limit) for row, limit in zip(rows, self._limits(exempt, quota), strict=True)]
        if any(v is None for v in counters):
            await self._seed([p for p, v in zip(plan, counters, strict=True) if v is None], user)
            counters = await self.hot.get_counters(keys)
        return [
            Meter(scope, w.period, unit, key, limit, v or 0, w)
            for (scope, unit, w, key, limit), v in zip(plan, counters, strict=True)
        ]

    async def _load_quota(self, user: str) -> list[int | None]:
        """A user's quota from the database, into the hot store (once per user, or after a restart)."""
        quota = await self.quotas.get_quota(user) if self.quotas is not None else None
        values = quota_values(quota)
        for key, value in zip(quota_keys(user), values, strict=True):
            await self.hot.seed_counter(key, value, QUOTA_TTL_S)  # a concurrent admin change wins
        return list(values)

    async def apply_quota(self, quota: Quota) -> None:
        """Make a changed quota count at once, on every process sharing the hot store."""
        await self.hot.set_counters(
            dict(zip(quota_keys(quota.user_key), quota_values(quota), strict=True)), QUOTA_TTL_S
        )

    async def _seed(self, missing: Sequence[PlanRow], user: str) -> None:
        # What settles left out of these counters while they did not exist, by ledger row: such a
        # row may still be in its process's outbox, out of the sum. Read before the ledger is asked,
        # so a row it has by then is in the sum read after it; the others are added.
        logs = await self.hot.left_out([row[3] for row in missing])
        rows = set().union(*logs)
        found = await self.ledger.recorded(rows) if rows else set()  # one lookup for every counter's log
        for (scope, unit, window, key, _), logged in zip(missing, logs, strict=True):
            spend = await self.ledger.spend(user if scope is Scope.USER else None, window.start, window.end)
            value = (spend.nanos if unit is Unit.USD else spend.tokens) + sum(
                amount for row, amount in logged.items() if row not in found
            )
            ttl = int((window.end - window.start).total_seconds()) + 86_400
            await self.hot.seed_counter(key, value, ttl, seen=logged.keys())

    def admission(
        self,
        user: str,
        now: datetime,
        *,
        exempt: bool,
        cost: Decimal,
        tokens: int,
        thresholds: Thresholds,
        ladder: Ladder,
        unless: str | None = None,
    ) -> Admission | None:
        """A reservation of ``cost`` and ``tokens`` on the conditions under which the budget gate
        and the ladder let the message through as it is, and ``reserve`` would hold it: the user
        has no quota of their own (the configured limits apply), every meter exists, each of the
        user's is under the warning threshold and each of the bot's under the ladder's first step
        (``budget.rules``: exact, integer bounds), and each hold fits its limit. None when no
        counter could meet them. ``meters`` then ``reserve`` give the same outcome, a round trip
        later."""
        rows = self._counters(user, now)
        nanos = to_nano(cost)
        holds: list[Hold] = []
        ceilings: list[int | None] = []
        for (scope, unit, _, key), limit in zip(rows, self._limits(exempt, (NO_OVERRIDE,) * 4), strict=True):
            amount = nanos if unit is Unit.USD else tokens
            holds.append(Hold(key, amount, limit))
            if limit is None:
                ceilings.append(None)
                continue
            share = min(thresholds.warn, thresholds.block) if scope is Scope.USER else ladder.cheaper_at
            ceiling = min(limit - amount, math.ceil(share * limit) - 1)  # used < share * limit, in integers
            if limit <= 0 or ceiling < 0:
                return None
            ceilings.append(ceiling)
        rid = uuid.uuid4().hex
        admit = Admit(
            rid, holds, ceilings, self.reservation_ttl_s, dict.fromkeys(quota_keys(user), NO_OVERRIDE), unless
        )
        return Admission(admit, Reservation(rid, tuple((row[3], row[1]) for row in rows)), cost, tokens)

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

    async def settle(self, reservation: Reservation, cost: Decimal, tokens: int, *, row: str | None = None) -> None:
        """Replace the held worst case by what the call really cost (zero for a failed call);
        ``row``: the call's ai_request row, recorded before (for a counter deleted meanwhile:
        ``HotStore.left_out``)."""
        nanos = to_nano(cost)
        amounts = {k: nanos if u is Unit.USD else tokens for k, u in reservation.keys}
        await self.hot.settle(reservation.id, amounts, row=row)

    async def release(self, reservation: Reservation) -> None:
        await self.settle(reservation, Decimal(0), 0)
