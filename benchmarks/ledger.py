"""The budget check against ledger size: 1 thousand, 100 thousand and 1 million ai_request rows.

The ledger (Postgres, its own schema) is filled with rows spread over the current month for 1,000
users, then pennybot's budget check (``Budget.meters``: every user and bot meter, from the hot
store's counters) is timed beside the naive check a bot without counters makes on every message:
sum the month's rows of the user, and of everyone for the bot's own budget.

Three figures for pennybot:
- warm: the counters are in Redis (every message but the first of a user after a Redis loss);
- cold, per user: the user's counters are gone (Redis lost them) and are seeded from the ledger;
- cold, first: the first message after a Redis loss, which also seeds the bot's global counters.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from benchmarks.results import PG_DSN, REDIS_URL, console, progress, summary_ms
from benchmarks.stores import BenchStores, servers_up

USERS = 1000


@dataclass(frozen=True)
class Sizes:
    rows: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    warm_checks: int = 2000
    cold_users: int = 100
    naive_user_checks: int = 1000
    naive_global_checks: int = 30

    @classmethod
    def quick(cls) -> Sizes:
        return cls(rows=(1_000, 10_000), warm_checks=200, cold_users=20, naive_user_checks=100, naive_global_checks=5)


FILL = """
insert into {s}ai_requests (request_id, created_at, user_key, channel, message_id, kind, provider, model, tier,
    complexity, status, prompt_tokens, completion_tokens, cost_usd, latency_ms)
select 'bench-' || i, $1::timestamptz + (($2::timestamptz - $1::timestamptz) * ((i * 7919) % $4) / $4),
    'telegram:' || (i % {users}), 'telegram', i::text, 'answer', 'openai', 'gpt-4o-mini', 'cheap', 'simple', 'ok',
    200 + i % 300, 40 + i % 200, (0.000030 + (i % 1000) * 0.000000123)::numeric(20, 9), 300
from generate_series($3::bigint, $4::bigint) as i
"""


async def _fill(conn: Any, schema: str, start: datetime, end: datetime, first: int, last: int) -> None:
    await conn.execute(FILL.format(s=f'"{schema}".', users=USERS), start, end, first, last)
    await conn.execute(f'analyze "{schema}".ai_requests')


async def _forget_counters(stores: BenchStores) -> None:
    """A Redis loss, for this benchmark's keys only."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{stores.prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
    finally:
        await client.aclose()


async def measure(stores: BenchStores, deps: Any, conn: Any, size: int, sizes: Sizes, now: datetime) -> dict[str, Any]:
    budget = deps.budget
    month = deps.calendar.window(_month(), now)
    rng = random.Random(size)
    sample = list(dict.fromkeys(f"telegram:{rng.randrange(USERS)}" for _ in range(sizes.cold_users)))
    out: dict[str, Any] = {"rows": size}
    with progress() as bar:
        task = bar.add_task(
            f"{size:,} rows",
            total=3 + len(sample) + sizes.warm_checks + sizes.naive_user_checks + sizes.naive_global_checks,
        )
        cold_first = []
        for _ in range(3):
            await _forget_counters(stores)
            start = time.perf_counter_ns()
            await budget.meters(sample[0], now)
            cold_first.append(time.perf_counter_ns() - start)
            bar.advance(task)
        out["pennybot_cold_first_ms"] = summary_ms(cold_first)
        cold = []
        for user in sample[1:]:
            start = time.perf_counter_ns()
            await budget.meters(user, now)
            cold.append(time.perf_counter_ns() - start)
            bar.advance(task)
        out["pennybot_cold_per_user_ms"] = summary_ms(cold)
        warm = []
        for i in range(sizes.warm_checks):
            start = time.perf_counter_ns()
            await budget.meters(sample[i % len(sample)], now)
            warm.append(time.perf_counter_ns() - start)
            bar.advance(task)
        out["pennybot_warm_ms"] = summary_ms(warm)
        user_sql = (
            f'select coalesce(sum(cost_usd), 0) from "{stores.schema}".ai_requests'
            " where user_key = $1 and created_at >= $2 and created_at < $3"
        )
        global_sql = (
            f'select coalesce(sum(cost_usd), 0) from "{stores.schema}".ai_requests'
            " where created_at >= $1 and created_at < $2"
        )
        naive_user = []
        for i in range(sizes.naive_user_checks):
            start = time.perf_counter_ns()
            await conn.fetchval(user_sql, sample[i % len(sample)], month.start, month.end)
            naive_user.append(time.perf_counter_ns() - start)
            bar.advance(task)
        out["naive_user_sum_ms"] = summary_ms(naive_user)
        naive_global = []
        for _ in range(sizes.naive_global_checks):
            start = time.perf_counter_ns()
            await conn.fetchval(global_sql, month.start, month.end)
            naive_global.append(time.perf_counter_ns() - start)
            bar.advance(task)
        out["naive_global_sum_ms"] = summary_ms(naive_global)
    return out


def _month() -> Any:
    from budget.periods import Period

    return Period.MONTH


async def run(sizes: Sizes) -> dict[str, Any]:
    import asyncpg

    from bot.factory import build, close
    from bot.settings import load_settings
    from budget.periods import Calendar, Period

    down = await servers_up("pg_redis")
    if down:
        console.print(f"[yellow]ledger: skipped, {down} is down")
        return {"skipped": down}
    results: dict[str, Any] = {"sizes": sizes.__dict__, "users": USERS, "by_rows": []}
    now = datetime.now(UTC)
    month = Calendar().window(Period.MONTH, now)
    async with BenchStores("pg_redis") as stores:
        settings = load_settings(
            None, **stores.settings(openai_api_key=None, anthropic_api_key=None, model_catalog=None)
        )
        built = build(settings)
        await built.deps.db.migrate()
        conn = await asyncpg.connect(PG_DSN)
        try:
            filled = 0
            for size in sizes.rows:
                console.print(f"ledger: filling ai_requests to {size:,} rows")
                started = time.perf_counter()
                await _fill(conn, stores.schema, month.start, now, filled + 1, size)
                filled = size
                console.print(f"ledger: filled in {time.perf_counter() - started:.1f} s")
                results["by_rows"].append(await measure(stores, built.deps, conn, size, sizes, now))
        finally:
            await conn.close()
            await close(built.deps)
    rows: Sequence[dict[str, Any]] = results["by_rows"]
    first, last = rows[0], rows[-1]
    results["ratio_largest_to_smallest"] = {
        key: round(last[key]["p50"] / first[key]["p50"], 2)
        for key in ("pennybot_warm_ms", "pennybot_cold_per_user_ms", "pennybot_cold_first_ms", "naive_user_sum_ms",
                    "naive_global_sum_ms")
    }  # fmt: skip
    return results
