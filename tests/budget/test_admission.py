"""The answer's reservation made with the rate limit's read (``Budget.admission`` and
``hit_get.lua``), against a real Redis: it is made exactly where the budget gate, the ladder and
``reserve`` would let the message through as it is, and nowhere else."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget.ledger import NO_OVERRIDE, Admission, Budget, Limits, quota_keys
from budget.money import from_nano
from budget.periods import Calendar
from budget.records import Spend
from budget.rules import Ladder, Level, Scope, Step, Thresholds, Unit, degradation, gate
from budget.stores.redis import RedisHotStore

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
USER = "telegram:42"
TTL = 600


class NoLedger:
    """Every counter is set by the test: a ledger sum would be a bug here."""

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend:
        raise AssertionError("no counter should be missing")


def budget_on(hot: RedisHotStore, limits: Limits) -> Budget:
    return Budget(hot, NoLedger(), Calendar("UTC"), limits, TTL)


_limit = st.one_of(st.none(), st.integers(0, 2_000_000))
_share = st.sampled_from([Decimal("0.5"), Decimal("0.8"), Decimal("0.9"), Decimal("0.95"), Decimal(1)])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limits=st.tuples(_limit, _limit, _limit, _limit, _limit, _limit),
    cost=st.integers(0, 400_000),
    tokens=st.integers(0, 400_000),
    shares=st.tuples(_share, _share, _share),
    quota=st.sampled_from([NO_OVERRIDE, NO_OVERRIDE, NO_OVERRIDE, 1_000_000, None]),
    exempt=st.sampled_from([False, False, False, True]),
    data=st.data(),
)
async def test_the_reservation_rides_along_exactly_where_the_gate_and_ladder_pass_as_is(
    store: RedisHotStore,
    limits: tuple[int | None, ...],
    cost: int,
    tokens: int,
    shares: tuple[Decimal, Decimal, Decimal],
    quota: int | None,
    exempt: bool,
    data: st.DataObject,
) -> None:
    warn = min(shares[:2])
    used = []
    for i, limit in enumerate(limits):  # mostly on the edges: a threshold's, and the limit's for the hold
        share, amount = (warn if i < 4 else shares[2]), (tokens if i in (2, 3) else cost)
        edges = [] if limit is None else [math.ceil(share * limit), limit - amount]
        pick = st.sampled_from(edges).flatmap(lambda e: st.integers(max(e - 2, 0), max(e + 1, 0)))
        anywhere = st.integers(0, 2_200_000)
        used.append(data.draw(st.one_of(pick, pick, anywhere) if edges else anywhere))
    hot = store
    usd = [None if n is None else from_nano(n) for n in (limits[0], limits[1], limits[4], limits[5])]
    budget = budget_on(hot, Limits(usd[0], usd[1], limits[2], limits[3], usd[2], usd[3]))
    block = max(shares[:2])
    thresholds, ladder = Thresholds(warn, block), Ladder(shares[2], Decimal(1), Decimal(1))
    keys = budget.counter_keys(USER, NOW)
    await hot.set_counters(dict(zip(keys, used, strict=True)), TTL)
    quotas = quota_keys(USER)
    if quota is None:
        await hot.redis.delete(*(hot._k(k) for k in quotas))  # not loaded yet
    else:
        await hot.set_counters(dict.fromkeys(quotas, quota), TTL)

    admission = budget.admission(
        USER, NOW, exempt=exempt, cost=from_nano(cost), tokens=tokens, thresholds=thresholds, ladder=ladder
    )
    admit = admission.admit if admission else None
    read = await hot.hit_and_get("pb:{t}:rl", 10_000, 60, NOW.timestamp(), keys + quotas, (), admit)

    # What the slow path decides from the same read: the gate, the ladder, then reserve's limits.
    meters = await budget.meters(USER, NOW, exempt=exempt, read=[*read.values[:6], *[quota or NO_OVERRIDE] * 4])
    as_is = (
        quota == NO_OVERRIDE
        and gate([m for m in meters if m.scope is Scope.USER], thresholds).level is Level.OK
        and degradation(meters, ladder)[0] is Step.NORMAL
        and all(m.limit is None or m.used + (cost if m.unit is Unit.USD else tokens) <= m.limit for m in meters)
    )
    assert read.reserved is as_is
    assert admission is not None or not as_is
    after = await hot.get_counters(keys)
    held = [(cost if unit is Unit.USD else tokens) if as_is else 0 for unit in [m.unit for m in meters]]
    assert after == [u + h for u, h in zip(used, held, strict=True)]
    if admission is not None and read.reserved:
        await budget.release(admission.reservation)
        assert await hot.get_counters(keys) == list(used)


async def test_no_reservation_when_rate_limited_served_from_cache_or_not_seeded(store: RedisHotStore) -> None:
    hot = store
    budget = budget_on(hot, Limits())
    keys, quotas = budget.counter_keys(USER, NOW), quota_keys(USER)
    await hot.set_counters(dict.fromkeys(quotas, NO_OVERRIDE), TTL)
    now = NOW.timestamp()

    def admission(unless: str | None = None) -> Admission:
        made = budget.admission(
            USER, NOW, exempt=False, cost=Decimal("0.001"), tokens=100, thresholds=Thresholds(), ladder=Ladder(),
            unless=unless,
        )  # fmt: skip
        assert made is not None
        return made

    first = admission()
    read = await hot.hit_and_get("pb:{t}:rl", 1, 60, now, keys + quotas, (), first.admit)
    assert not read.reserved  # the counters are not seeded: the gate's read seeds them, then reserve
    await hot.set_counters(dict.fromkeys(keys, 0), TTL)
    assert not (await hot.hit_and_get("pb:{t}:rl", 1, 60, now, keys + quotas, (), first.admit)).reserved  # limited
    await hot.cache_put("pb:{cache}:a:1", "cached", 60, 10, now)
    served = admission(unless="pb:{cache}:a:1")
    read = await hot.hit_and_get("pb:{t}:u2", 1, 60, now, keys + quotas, ["pb:{cache}:a:1"], served.admit)
    assert (read.reserved, read.peeked) == (False, ["cached"])
    assert await hot.get_counters(keys) == [0] * 6
    made = admission(unless="pb:{cache}:a:2")
    for rl in ("pb:{t}:u3", "pb:{t}:u4"):  # the second is a retry of the first's round trip: held once
        assert (await hot.hit_and_get(rl, 1, 60, now, keys + quotas, ["pb:{cache}:a:2"], made.admit)).reserved
    assert await hot.get_counters(keys) == [1_000_000, 1_000_000, 100, 100, 1_000_000, 1_000_000]
    await budget.settle(made.reservation, Decimal("0.0004"), 60)
    assert await hot.get_counters(keys) == [400_000, 400_000, 60, 60, 400_000, 400_000]
