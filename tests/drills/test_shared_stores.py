"""Several bot processes on one Postgres and one Redis: one budget truth, nothing counted twice."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis

from budget.money import from_nano
from budget.periods import Calendar, Period
from budget.rules import Scope, Unit
from budget.stores import open_database
from tests.budget.test_schema import drop
from tests.conftest import Bot, require_server
from tests.drills.servers import ThrowawayRedis

ONE_MODEL = '[{"provider": "simulated", "model": "gpt-4o-mini", "tier": "cheap"}]'
ONE_MODEL_SPEC = [{"provider": "simulated", "model": "gpt-4o-mini", "tier": "cheap"}]
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def shared(pg_dsn: str) -> Iterator[tuple[str, str, str]]:
    """A fresh schema on the shared Postgres and a fresh key prefix on the shared Redis."""
    try:
        redis.Redis.from_url(REDIS).ping()
        ok = True
    except redis.ConnectionError:
        ok = False
    require_server(ok, "Redis at 127.0.0.1:6379")
    schema, prefix = f"pb_{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:10]}"
    yield f"{pg_dsn}?schema={schema}", f"{REDIS}?prefix={prefix}", prefix
    drop(pg_dsn, schema)
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        client.delete(key)


def test_two_processes_1000_messages_10_users_one_budget_truth(shared: tuple[str, str, str], tmp_path: Any) -> None:
    db_url, redis_url, prefix = shared
    user_limit, global_limit = Decimal("0.004"), Decimal("0.03")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")} | {
        "DATABASE_URL": db_url, "REDIS_URL": redis_url, "MODEL_CATALOG": ONE_MODEL,
        "USER_MONTHLY_LIMIT": str(user_limit), "GLOBAL_MONTHLY_LIMIT": str(global_limit),
        "RATE_LIMIT_PER_MINUTE": "10000", "SIMULATED_LATENCY_MS": "5", "MAX_REPLY_TOKENS": "256",
    }  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.drills.worker", "10", "50", tag],
            env=env | {"OUTBOX_PATH": str(tmp_path / f"{tag}.db")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    answered = sum(json.loads(o[0]).get("answered", 0) for o in outs)
    assert 10 <= answered < 1000

    async def check() -> None:
        db = open_database(db_url)
        now = datetime.now(UTC)
        month = Calendar().window(Period.MONTH, now)
        rows = await db.requests(month.start, month.end)
        per_user: dict[str, Decimal] = {}
        for r in rows:
            per_user[r.user_key] = per_user.get(r.user_key, Decimal(0)) + r.cost
        assert len({r.request_id for r in rows}) == len(rows)  # none twice
        assert all(spent <= user_limit for spent in per_user.values()), per_user
        total = sum(per_user.values(), Decimal(0))
        assert total <= global_limit
        # Redis counters, the ledger and the sum of ai_requests agree to the nano-dollar.
        client = redis.Redis.from_url(REDIS, decode_responses=True)
        for user, spent in per_user.items():
            key = f"{prefix}:pb:{{{user}}}:usd:month:{month.key}"
            assert from_nano(int(client.get(key) or 0)) == spent, user
            assert from_nano((await db.spend(user, month.start, month.end)).nanos) == spent
        assert from_nano(int(client.get(f"{prefix}:pb:{{global}}:usd:month:{month.key}") or 0)) == total
        # Each answered message has exactly one answer row, ok or cached (ten users ask the same questions).
        answers = [r for r in rows if r.kind.value == "answer" and r.status.value in ("ok", "cached")]
        assert len(answers) == answered
        assert len({r.message_id for r in answers}) == answered
        await db.aclose()

    asyncio.run(check())


async def test_a_redis_restart_mid_month_keeps_every_users_spend(make_bot: Any, tmp_path: Any) -> None:
    with ThrowawayRedis() as r:
        url = f"sqlite:///{tmp_path}/pb.db"
        bot: Bot = await make_bot(database_url=url, redis_url=r.url, model_catalog=[
            {"provider": "simulated", "model": "gpt-4o-mini", "tier": "cheap"}])  # fmt: skip
        for user in ("ann", "ben"):
            await bot.send(f"Hello there, I am {user}. How are you?", user=user)
        before = {u: await _month(bot, u) for u in ("console:ann", "console:ben")}
        assert all(v > 0 for v in before.values()), before
        r.stop()
        r.start()  # Redis keeps nothing on disk: every counter is gone
        assert await bot.deps.hot.get_counters([f"pb:{{console:ann}}:usd:month:{bot.clock.now:%Y-%m}"]) == [None]
        after = {u: await _month(bot, u) for u in before}
        assert after == before  # rebuilt from the ledger: nobody regains spent budget


async def _month(bot: Bot, user: str) -> int:
    meters = await bot.deps.budget.meters(user, bot.clock.now)
    return next(m.used for m in meters if m.scope is Scope.USER and m.period is Period.MONTH and m.unit is Unit.USD)


async def test_the_pipeline_on_postgres_and_redis(make_bot: Any, shared: tuple[str, str, str], tmp_path: Any) -> None:
    db_url, redis_url, _ = shared
    bot: Bot = await make_bot(database_url=db_url, redis_url=redis_url, outbox_path=tmp_path / "o.db",
                              model_catalog=[{"provider": "simulated", "model": "gpt-4o-mini", "tier": "cheap"}],
                              rate_limit_per_minute=1000, simulated_latency_ms=5,
                              user_monthly_limit=Decimal("0.002"))  # fmt: skip
    first = await bot.send("What is the capital of France?", user="zoe")
    hit = await bot.send("what is the capital of france", user="yan")
    assert first.answer is not None and hit.outcomes["cache"] == "hit"
    turns = await asyncio.gather(*(bot.send(f"Question {i}: explain tides", user="xi") for i in range(60)))
    await bot.deps.recorder.flush()
    now = bot.clock.now
    rows = await bot.deps.db.requests(now - timedelta(days=30), now + timedelta(days=1), "console:xi")
    spent = sum((r.cost for r in rows), Decimal(0))
    assert spent <= Decimal("0.002")
    answers = [r for r in rows if r.kind.value == "answer" and r.status.value == "ok"]
    assert len([t for t in turns if t.answer is not None]) == len(answers)
    assert from_nano(await _month(bot, "console:xi")) == spent


async def test_redis_down_falls_back_to_exact_counters_in_postgres(make_bot: Any, pg_dsn: str, tmp_path: Any) -> None:
    from budget.stores.failover import FailoverHotStore

    schema = f"pb_{uuid.uuid4().hex[:10]}"
    try:
        with ThrowawayRedis() as r:
            bot: Bot = await make_bot(database_url=f"{pg_dsn}?schema={schema}", redis_url=r.url,
                                      outbox_path=tmp_path / "o.db", user_monthly_limit=Decimal("0.001"),
                                      model_catalog=ONE_MODEL_SPEC)  # fmt: skip
            assert isinstance(bot.deps.hot, FailoverHotStore)
            await bot.send("Hello while Redis is up, what is a tide?", user="ivy")
            r.stop()
            turns = [await bot.send(f"Question {i} while Redis is down: why?", user="ivy") for i in range(12)]
            assert any(t.answer is not None for t in turns)  # answered within budget, not paused
            await bot.deps.recorder.flush()
            now = bot.clock.now
            rows = await bot.deps.db.requests(now - timedelta(days=30), now + timedelta(days=1), "console:ivy")
            assert sum((x.cost for x in rows), Decimal(0)) <= Decimal("0.001")
    finally:
        drop(pg_dsn, schema)
