"""The whole bill's CPU and memory: what each process used, stored window by window, never twice."""

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.usage import UsageRecorder
from budget.records import ResourceUse
from budget.stores import Database, open_database
from tests.bot.server_harness import serve

T0 = datetime(2026, 11, 10, 12, tzinfo=UTC)


class Ticks:
    """The process's CPU time, monotonic time and RSS, moved by the test."""

    def __init__(self) -> None:
        self.cpu, self.mono, self.rss, self.now = 10.0, 100.0, 50_000_000, T0

    def advance(self, seconds: float, cpu: float, rss: int | None = None) -> None:
        self.mono += seconds
        self.cpu += cpu
        self.now += timedelta(seconds=seconds)
        if rss is not None:
            self.rss = rss

    def recorder(self, db: Any) -> UsageRecorder:
        return UsageRecorder(
            db, lambda: self.now, process="host:42",
            cpu_time=lambda: self.cpu, monotonic=lambda: self.mono, rss=lambda: self.rss,
        )  # fmt: skip


class Flaky:
    """The real SQLite database, with its record_resources failing while ``down`` (a stand-in for
    a database that is away: the outage drills cover real ones; here only the retry logic is in
    question)."""

    def __init__(self, db: Database) -> None:
        self.db, self.down, self.calls = db, False, 0

    async def record_resources(self, *args: Any) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("database away")
        await self.db.record_resources(*args)


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    store = open_database(f"sqlite:///{tmp_path}/pb.db")
    await store.migrate()
    yield store
    await store.aclose()


async def test_a_window_holds_the_cpu_used_and_the_memory_held_over_time(db: Database) -> None:
    t = Ticks()
    usage = t.recorder(db)
    t.advance(5, cpu=0.25)
    usage.sample()  # 50 MB for 5 s
    t.advance(10, cpu=0.5, rss=80_000_000)  # sampled at the end: 80 MB for those 10 s
    assert await usage.record() == 1
    assert await db.resources(T0, T0 + timedelta(minutes=1)) == ResourceUse(750_000, 250_000_000 + 800_000_000)
    t.advance(60, cpu=1.000001)
    await usage.record()
    assert await db.resources(T0, T0 + timedelta(hours=1)) == ResourceUse(1_750_001, 1_050_000_000 + 4_800_000_000)
    # only windows that end inside the range count
    assert await db.resources(T0 + timedelta(seconds=16), T0 + timedelta(hours=1)) == ResourceUse(
        1_000_001, 4_800_000_000
    )


async def test_windows_wait_while_the_database_is_away_and_are_stored_once(db: Database) -> None:
    t, flaky = Ticks(), Flaky(db)
    usage = t.recorder(flaky)
    flaky.down = True
    for _ in range(3):
        t.advance(60, cpu=1)
        assert await usage.record() == 0
    assert len(usage.pending) == 3 and flaky.calls == 3  # one try a round: the first failure stops it
    flaky.down = False
    t.advance(60, cpu=1)
    assert await usage.record() == 4
    assert usage.pending == []
    assert await db.resources(T0, T0 + timedelta(hours=1)) == ResourceUse(4_000_000, 4 * 60 * 50_000_000)
    # a window stored before, written again (its commit's answer was lost), is not counted twice
    await db.record_resources("host:42", T0, T0 + timedelta(seconds=60), 1_000_000, 60 * 50_000_000)
    assert (await db.resources(T0, T0 + timedelta(hours=1))).cpu_us == 4_000_000


async def test_prices_are_per_core_hour_and_per_gib_hour() -> None:
    used = ResourceUse(cpu_us=5_400_000_000, memory_byte_seconds=3 * 2**30 * 1800)  # 1.5 core-hours, 1.5 GiB-hours
    assert used.cost(Decimal("0.04"), Decimal("0.006")) == (Decimal("0.06"), Decimal("0.009"))
    # rounded up to the nano-dollar: a third of a microsecond's price is never billed as zero
    assert ResourceUse(cpu_us=1).cost(Decimal("0.000001"), Decimal(0)) == (Decimal("0.000000001"), Decimal(0))


async def test_the_server_records_what_it_used_at_shutdown(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pb.db"
    async with serve(database_url=url, redis_url="memory://") as served:
        for _ in range(3):
            assert (await served.http.get("/healthz")).status_code == 200
        await asyncio.sleep(0)
    db = open_database(url)
    sql = "select process, cpu_us, memory_byte_seconds from resource_usage"
    rows: Sequence[Any] = db._db.execute(sql).fetchall()  # type: ignore[attr-defined]
    await db.aclose()
    assert len(rows) == 1
    process, cpu_us, byte_seconds = rows[0]
    assert process.endswith(f":{os.getpid()}")
    assert cpu_us > 0 and byte_seconds > 0
