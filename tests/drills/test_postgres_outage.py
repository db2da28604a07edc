"""Postgres stopped for 30 seconds during a run of 500 messages, then started; or hung for 10 seconds
(it keeps its connections and answers nothing: a partition that drops packets), then let go: every
message is answered once, every ai_request is in the ledger, none twice. The client redelivers an
update that did not get a 200, as Telegram does."""

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.bot.server_harness import SECRET, channel_settings, serve, until
from tests.drills.network import Partition
from tests.drills.servers import ThrowawayPostgres, ThrowawayRedis
from tests.fakes.telegram_server import FakeTelegramServer, text_update

OUTAGE_S = float(os.environ.get("PB_DRILL_OUTAGE_S", "30"))
HANG_S = float(os.environ.get("PB_DRILL_HANG_S", "10"))
USERS, PER_USER = 10, 50


@pytest.fixture
def stores() -> Iterator[tuple[ThrowawayPostgres, ThrowawayRedis]]:
    with ThrowawayPostgres() as pg, ThrowawayRedis() as r:
        yield pg, r


@pytest.mark.parametrize("fault", ["stopped", "hung"])
async def test_postgres_outage_loses_and_doubles_nothing(
    stores: tuple[ThrowawayPostgres, ThrowawayRedis], telegram_server: FakeTelegramServer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, fault: str,
) -> None:
    pg, r = stores
    partition = Partition(pg.port)  # "hung": the bot reaches Postgres through it, and it freezes
    await partition.heal()
    # A second's timeouts keep the drill short; the defaults (15 s and 10 s) behave alike, slower.
    hung_dsn = f"postgresql://postgres@127.0.0.1:{partition.port}/postgres?command_timeout=1&connect_timeout=1"
    settings = channel_settings(
        telegram_server, None, database_url=pg.dsn if fault == "stopped" else hung_dsn, redis_url=r.url,
        outbox_path=tmp_path / "outbox.db",
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

        recorder = s.runtime.built.deps.recorder  # type: ignore[attr-defined]
        outbox_failed = False  # whether the outbox tried to write to the hung database (it had rows)

        async def outage() -> None:
            nonlocal outbox_failed
            await asyncio.sleep(1.0)
            if fault == "stopped":
                pg.stop()
                await asyncio.sleep(OUTAGE_S)
                pg.start()
            else:
                partition.freeze()
                await asyncio.sleep(HANG_S)
                outbox_failed = recorder.failures > 0
                partition.thaw()

        sem = asyncio.Semaphore(10)

        async def one(i: int) -> None:
            async with sem:
                await deliver(i, i % USERS + 1, f"Question {i}: how do tides work?")
                await asyncio.sleep(0.05)

        await asyncio.gather(outage(), *(one(i) for i in range(USERS * PER_USER)))
        total = USERS * (PER_USER + 1)
        await until(lambda: len(telegram_server.sent_texts()) >= total, timeout=120)
        await until(lambda: recorder.pending() == 0, timeout=60)
        await asyncio.sleep(1.0)  # anything doubled would show by now
        now = datetime.now(UTC)
        rows = await s.runtime.built.deps.db.requests(now - timedelta(days=1), now + timedelta(days=1))
    await partition.cut()
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    if fault == "stopped":
        assert statuses.get(503, 0) > 0, statuses  # the outage was felt: refused for redelivery
    else:
        # Claims go to the host's journal, until the database's writes fail: then to the database,
        # which times out (503). The hang was felt: calls gave up on it and were retried. The outbox
        # tries only when a call is recorded during the hang: most runs, not all (a run there may
        # wait on a conversation read the hang holds up).
        assert any("(TimeoutError)" in r.getMessage() for r in caplog.records if r.name == "pennybot.dispatch")
        outbox_log = [r.getMessage() for r in caplog.records if r.name == "pennybot.outbox"]
        assert not outbox_failed or any("(TimeoutError)" in m for m in outbox_log), outbox_log
    answers = [r for r in rows if r.kind.value == "answer" and r.status.value in ("ok", "cached")]
    assert len({r.request_id for r in rows}) == len(rows)  # no row twice
    assert sorted(int(r.message_id or 0) for r in answers) == sorted(
        [*range(USERS * PER_USER), *(10_000 + u for u in range(USERS))]
    )  # every message answered exactly once
    assert len(telegram_server.sent_texts()) == total  # and replied to exactly once
