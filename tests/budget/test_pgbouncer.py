"""The Postgres store behind a real pgbouncer in transaction mode (Supabase's pooler)."""

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from benchmarks import roundtrips
from budget.records import AIRequest, Kind, Status
from budget.stores import open_database
from budget.stores.postgres import PostgresDatabase
from providers.base import Usage
from tests.budget.test_schema import drop
from tests.conftest import require_server
from tests.drills.servers import PgBouncer

T0 = datetime(2026, 11, 10, 12, tzinfo=UTC)


@pytest.fixture
def bouncer(pg_dsn: str) -> Iterator[PgBouncer]:
    require_server(shutil.which("pgbouncer") is not None, "pgbouncer (Debian package, scripts/test.sh installs it)")
    with PgBouncer() as b:
        yield b


async def test_the_store_works_through_a_transaction_mode_pooler(bouncer: PgBouncer, pg_dsn: str) -> None:
    schema = f"pb_{uuid.uuid4().hex[:10]}"
    # A pooler on a port of its own (not 6543 or 6432) is declared in the URL.
    db = open_database(f"{bouncer.dsn}?schema={schema}&statement_cache=off")
    try:
        await db.migrate()
        await db.migrate()

        async def one(i: int) -> None:
            await db.record([AIRequest(
                request_id=f"r{i}", created_at=T0, user_key=f"u{i % 5}", channel="c", message_id=str(i),
                kind=Kind.ANSWER, provider="openai", model="gpt-4o-mini", status=Status.OK,
                usage=Usage(10, 5), cost=Decimal("0.000000123"),
            )])  # fmt: skip
            await db.spend(f"u{i % 5}", T0, T0 + timedelta(days=1))
            assert await db.claim_inbox("telegram", str(i), f"u{i % 5}", {"i": i}, T0)
            turns = await db.add_turns(f"u{i % 5}", [("user", f"q{i}", 2, 2)], T0)
            await db.fold(f"u{i % 5}", [turns[0].id], (f"s{i}", 2, 2), T0)

        # 200 concurrent operations through a pool of 5 server connections: with server-side
        # prepared statements cached, transaction mode would fail here.
        await asyncio.gather(*(one(i) for i in range(200)))
        assert (await db.spend(None, T0, T0 + timedelta(days=1))).nanos == 200 * 123
        assert len(await db.requests(T0, T0 + timedelta(days=1))) == 200
    finally:
        await db.aclose()
        drop(pg_dsn, schema)


async def test_through_the_pooler_statements_are_not_cached_and_connections_not_reset(
    bouncer: PgBouncer, pg_dsn: str
) -> None:
    schema = f"pb_{uuid.uuid4().hex[:10]}"
    uninstall = roundtrips.install()  # before the pool exists: it wraps each new connection
    db = PostgresDatabase(f"{bouncer.dsn}?schema={schema}&statement_cache=off", max_size=1)
    try:
        assert not db.statement_cache
        await db.migrate()
        await db.claim_inbox("telegram", "0", "u", {}, T0)
        roundtrips.TALLY.active = True
        roundtrips.TALLY.begin(1)
        await db.claim_inbox("telegram", "1", "u", {}, T0)
        counted = roundtrips.TALLY.end()
    finally:
        roundtrips.TALLY.active = False
        roundtrips.TALLY.events.clear()
        uninstall()
        await db.aclose()
        drop(pg_dsn, schema)
    # Prepared again every time (it would not outlive pgbouncer's transaction), and no reset query.
    assert sorted(label for _, label in counted.labels.elements()) == [
        "bind_execute: insert inbox",
        "prepare: insert inbox",
    ]
