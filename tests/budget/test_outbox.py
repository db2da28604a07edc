"""The durable outbox: rows wait while the ledger is down and land exactly once when it is back."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget.outbox import OutboxRecorder, decode, encode
from budget.records import AIRequest, Kind, Spend, Status
from budget.stores import open_database
from providers.base import Usage
from tests.drills.servers import ThrowawayPostgres

T0 = datetime(2026, 11, 10, 12, tzinfo=UTC)


def row(i: int, cost: str = "0.000123456", user: str = "console:a") -> AIRequest:
    return AIRequest(
        request_id=f"r{i}", created_at=T0 + timedelta(seconds=i), user_key=user, channel="console",
        message_id=f"m{i}", kind=Kind.ANSWER, provider="openai", model="gpt-4o-mini", status=Status.OK,
        usage=Usage(input_tokens=10, output_tokens=5, cache_read_tokens=2), cost=Decimal(cost),
    )  # fmt: skip


@given(
    st.decimals(min_value=0, max_value=1000, places=9),
    st.integers(0, 10**6),
    st.sampled_from(list(Status)),
    st.none() | st.text(max_size=50),
)
def test_encoding_round_trips_exactly(cost: Decimal, tokens: int, status: Status, error: str | None) -> None:
    r = AIRequest(
        request_id=uuid.uuid4().hex, created_at=T0, user_key="u", channel="c", message_id=None, kind=Kind.SUMMARY,
        provider="p", model="m", status=status, usage=Usage(tokens, tokens // 2, tokens // 3, 1, 1, 7), cost=cost,
        saved=cost, latency_ms=5, tier="cheap", complexity="simple", error=error, reason="why",
    )  # fmt: skip
    assert decode(encode(r)) == r


async def test_rows_reach_the_ledger_and_spend_counts_them_before(tmp_path: Path) -> None:
    db = open_database("memory://")
    await db.migrate()
    out = OutboxRecorder(db, tmp_path / "outbox.db")
    await out.record([row(1), row(2, user="console:b")])
    spend = await out.spend("console:a", T0, T0 + timedelta(days=1))
    assert (spend.nanos, spend.tokens) == (123_456, 15)
    await out.aclose()
    assert [r.request_id for r in await db.requests(T0, T0 + timedelta(days=1))] == ["r1", "r2"]
    assert (await db.spend(None, T0, T0 + timedelta(days=1))).nanos == 246_912


async def test_recorded_finds_rows_waiting_here_and_rows_in_the_ledger(tmp_path: Path) -> None:
    db = open_database("memory://")
    await db.migrate()
    await db.record([row(1)])  # landed from elsewhere: another process's outbox
    out = OutboxRecorder(db, tmp_path / "outbox.db")
    out.start = lambda: None  # type: ignore[method-assign]  # no flush: row 2 waits here
    await out.record([row(2)])
    assert out.pending() == 1
    assert await out.recorded(["r1", "r2", "r3"]) == {"r1", "r2"}
    assert await out.recorded([]) == set()
    assert await out.flush() == 1
    assert await out.recorded(["r2"]) == {"r2"}
    await out.aclose()


async def flushed_out(out: OutboxRecorder) -> None:
    for _ in range(500):
        if out.pending() == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the outbox was not flushed in 5 s")


async def test_a_row_flushed_while_spend_reads_the_ledger_is_counted_once_at_least(tmp_path: Path) -> None:
    # A seed's ledger read can take its snapshot before a flush commits and finish after the flush
    # deleted the rows from the outbox: before, those rows counted nowhere and the seeded counter
    # under-counted. The snapshot is modelled by reading the real ledger, then waiting for the flush.
    db = open_database("memory://")
    await db.migrate()
    out = OutboxRecorder(db, tmp_path / "outbox.db")
    flushed = asyncio.Event()
    read = db.spend

    async def read_then_wait(user_key: str | None, start: datetime, end: datetime) -> Spend:
        snapshot = await read(user_key, start, end)
        await flushed.wait()
        return snapshot

    db.spend = read_then_wait  # type: ignore[method-assign]
    try:
        spend = asyncio.create_task(out.spend(None, T0, T0 + timedelta(days=1)))
        await asyncio.sleep(0)  # its snapshot is taken: the ledger has no row
        await out.record([row(1)])  # the flusher writes it to the ledger in the background
        await flushed_out(out)
        flushed.set()
        assert (await spend).nanos == 123_456  # in neither the snapshot nor the outbox's waiting rows
        db.spend = read  # type: ignore[method-assign]
        assert (await out.spend(None, T0, T0 + timedelta(days=1))).nanos == 123_456  # not twice once read
        await out.record([row(2)])
        await flushed_out(out)  # no spend reading now: the flushed rows go
        assert out._local.execute("select count(*) from outbox").fetchone() == (0,)
    finally:
        flushed.set()
    await out.aclose()


@pytest.fixture
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as pg:
        yield pg


async def test_a_postgres_outage_loses_and_doubles_nothing(tmp_path: Path, throwaway_pg: ThrowawayPostgres) -> None:
    db = open_database(throwaway_pg.dsn)
    await db.migrate()
    out = OutboxRecorder(db, tmp_path / "outbox.db", interval_s=0.01)
    await out.record([row(i) for i in range(50)])
    await out.flush()
    throwaway_pg.stop()
    await out.record([row(i) for i in range(50, 300)])
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises while the server is down
        await out.flush()
    assert out.pending() == 250
    throwaway_pg.start()
    await out.record([row(i) for i in range(250, 300)])  # a retried write of rows already waiting
    assert await out.flush() == 250
    rows = await db.requests(T0, T0 + timedelta(days=1))
    assert [r.request_id for r in rows] == [f"r{i}" for i in range(300)]
    assert (await db.spend("console:a", T0, T0 + timedelta(days=1))).nanos == 300 * 123_456
    await out.aclose()
    await db.aclose()


async def test_rows_left_at_shutdown_are_written_at_the_next_start(
    tmp_path: Path, throwaway_pg: ThrowawayPostgres
) -> None:
    db = open_database(throwaway_pg.dsn)
    await db.migrate()
    throwaway_pg.stop()
    out = OutboxRecorder(db, tmp_path / "outbox.db")
    await out.record([row(i) for i in range(10)])
    await out.aclose()  # the ledger is down: the rows stay in the file
    await db.aclose()
    throwaway_pg.start()
    db2 = open_database(throwaway_pg.dsn)
    again = OutboxRecorder(db2, tmp_path / "outbox.db")
    assert again.pending() == 10
    assert await again.flush() == 10
    assert len(await db2.requests(T0, T0 + timedelta(days=1))) == 10
    await again.aclose()
    await db2.aclose()
