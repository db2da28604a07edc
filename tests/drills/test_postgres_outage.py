"""Postgres stopped for 30 seconds during a run of 500 messages, then started: every message is
answered once, every ai_request is in the ledger, none twice. The client redelivers an update
that did not get a 200, as Telegram does."""

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.bot.server_harness import SECRET, channel_settings, serve, until
from tests.drills.servers import ThrowawayPostgres, ThrowawayRedis
from tests.fakes.telegram_server import FakeTelegramServer, text_update

OUTAGE_S = float(os.environ.get("PB_DRILL_OUTAGE_S", "30"))
USERS, PER_USER = 10, 50


@pytest.fixture
def stores() -> Iterator[tuple[ThrowawayPostgres, ThrowawayRedis]]:
    with ThrowawayPostgres() as pg, ThrowawayRedis() as r:
        yield pg, r


async def test_postgres_outage_loses_and_doubles_nothing(
    stores: tuple[ThrowawayPostgres, ThrowawayRedis], telegram_server: FakeTelegramServer, tmp_path: Path
) -> None:
    pg, r = stores
    settings = channel_settings(
        telegram_server, None, database_url=pg.dsn, redis_url=r.url, outbox_path=tmp_path / "outbox.db",
        rate_limit_per_minute=10_000, simulated_latency_ms=20, inbox_lease_s=2, inbox_sweep_s=0.5,
        model_catalog=[{"provider": "simulated", "model": "gpt-4o-mini", "tier": "cheap"}],
    )  # fmt: skip
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    async with serve(**settings) as s:
        statuses: dict[int, int] = {}

        async def deliver(update_id: int, user: int, text: str) -> None:
            update = text_update(update_id, user, user, text)
            while True:  # Telegram keeps redelivering until it gets a 200
                try:
                    code = (await s.http.post("/webhook/telegram", json=update, headers=headers)).status_code
                except Exception:
                    code = 0
                statuses[code] = statuses.get(code, 0) + 1
                if code == 200:
                    return
                await asyncio.sleep(0.2)

        # Every user once before the outage, so their budget counters live in Redis.
        await asyncio.gather(*(deliver(10_000 + u, u + 1, f"Hello, I am user {u}.") for u in range(USERS)))
        await until(lambda: len(telegram_server.sent_texts()) == USERS)

        async def outage() -> None:
            await asyncio.sleep(1.0)
            pg.stop()
            await asyncio.sleep(OUTAGE_S)
            pg.start()

        sem = asyncio.Semaphore(10)

        async def one(i: int) -> None:
            async with sem:
                await deliver(i, i % USERS + 1, f"Question {i}: how do tides work?")
                await asyncio.sleep(0.05)

        await asyncio.gather(outage(), *(one(i) for i in range(USERS * PER_USER)))
        total = USERS * (PER_USER + 1)
        await until(lambda: len(telegram_server.sent_texts()) >= total, timeout=120)
        await until(lambda: s.runtime.built.deps.recorder.pending() == 0, timeout=60)  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)  # anything doubled would show by now
        now = datetime.now(UTC)
        rows = await s.runtime.built.deps.db.requests(now - timedelta(days=1), now + timedelta(days=1))
    assert statuses.get(503, 0) > 0, statuses  # the outage was felt: refused for redelivery
    assert set(statuses) <= {200, 503}, statuses  # and never a 500
    answers = [r for r in rows if r.kind.value == "answer" and r.status.value in ("ok", "cached")]
    assert len({r.request_id for r in rows}) == len(rows)  # no row twice
    assert sorted(int(r.message_id or 0) for r in answers) == sorted(
        [*range(USERS * PER_USER), *(10_000 + u for u in range(USERS))]
    )  # every message answered exactly once
    assert len(telegram_server.sent_texts()) == total  # and replied to exactly once
