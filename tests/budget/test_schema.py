"""The SQLite schema mirrors supabase/migrations (the one source of truth), on a real Postgres."""

import sqlite3
import uuid
from importlib import resources
from pathlib import Path

import psycopg

MIGRATIONS = sorted(Path(__file__).parents[2].joinpath("supabase/migrations").glob("*.sql"))

# Tables with no SQLite twin, and why.
POSTGRES_ONLY = {
    table: "the Postgres hot store (budget/stores/pg_hot.py) behind the Redis failover; an SQLite"
    " deployment is one process and keeps its hot store in memory (budget/stores/memory.py)"
    for table in ("hot_cache", "hot_counters", "hot_events", "hot_left_out", "hot_reservations")
}


def sqlite_columns() -> dict[str, dict[str, str]]:
    db = sqlite3.connect(":memory:")
    db.executescript(resources.files("budget.stores").joinpath("sqlite_schema.sql").read_text())
    tables = [
        r[0] for r in db.execute("select name from sqlite_master where type='table' and name not like 'sqlite_%'")
    ]
    return {t: {r[1]: r[2].lower() for r in db.execute(f"pragma table_info({t})")} for t in tables}


def postgres_columns(dsn: str, schema: str) -> dict[str, dict[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select table_name, column_name, data_type from information_schema.columns where table_schema = %s",
            (schema,),
        ).fetchall()
    out: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        out.setdefault(table, {})[column] = kind
    return out


def apply(dsn: str, schema: str, times: int = 1) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
        conn.execute(f"set search_path to {schema}")
        for _ in range(times):
            for path in MIGRATIONS:
                conn.execute(path.read_text())  # type: ignore[call-overload]


def drop(dsn: str, schema: str) -> None:
    """Drop a test's schema. Called from an async fixture, run it in a thread (``asyncio.to_thread``):
    a transaction a bot of the test left open on the loop must be able to finish, or this waits
    on its locks for ever, the loop with it (seen after a failed assertion left a run mid-flight).
    The lock timeout turns any such wait into an error."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set lock_timeout = '15s'")
        conn.execute(f"drop schema if exists {schema} cascade")


def test_sqlite_and_postgres_schemas_agree(pg_dsn: str) -> None:
    schema = f"pb_{uuid.uuid4().hex[:8]}"
    try:
        apply(pg_dsn, schema)
        pg = postgres_columns(pg_dsn, schema)
    finally:
        drop(pg_dsn, schema)
    lite = sqlite_columns()
    assert sorted(POSTGRES_ONLY) == sorted(t for t in pg if t.startswith("hot_"))
    shared = {t: c for t, c in pg.items() if t not in POSTGRES_ONLY}
    assert (
        sorted(shared)
        == sorted(lite)
        == [
            "ai_requests",
            "alerts",
            "audit_log",
            "channel_fees",
            "inbox",
            "messages",
            "quotas",
            "resource_usage",
            "users",
        ]
    )
    for table, columns in shared.items():
        # Money: NUMERIC *_usd in Postgres is integer nano-dollars *_nano in SQLite.
        expected = {
            (c.removesuffix("_usd") + "_nano" if kind == "numeric" else c): ("integer" if kind == "numeric" else kind)
            for c, kind in columns.items()
        }
        assert sorted(expected) == sorted(lite[table]), table
        for column, kind in expected.items():
            if kind == "integer":
                assert lite[table][column] == "integer", (table, column)
        assert all(k != "real" for k in lite[table].values())


def test_migrations_apply_twice_and_enable_rls_without_supabase_roles(pg_dsn: str) -> None:
    schema = f"pb_{uuid.uuid4().hex[:8]}"
    try:
        apply(pg_dsn, schema, times=2)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            rls = conn.execute(
                "select relname, relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relkind = 'r'",
                (schema,),
            ).fetchall()
    finally:
        drop(pg_dsn, schema)
    assert len(rls) == 9 + len(POSTGRES_ONLY)
    assert all(enabled for _, enabled in rls)


def test_money_columns_are_exact_numeric(pg_dsn: str) -> None:
    schema = f"pb_{uuid.uuid4().hex[:8]}"
    try:
        apply(pg_dsn, schema)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"set search_path to {schema}")
            conn.execute(
                "insert into ai_requests (request_id, user_key, channel, kind, provider, model, status, cost_usd)"
                " values ('a','u','c','answer','p','m','ok',0.1), ('b','u','c','answer','p','m','ok',0.2),"
                " ('c','u','c','answer','p','m','ok',0.00000015)"
            )
            total = conn.execute("select sum(cost_usd)::text from ai_requests").fetchone()
    finally:
        drop(pg_dsn, schema)
    assert total == ("0.300000150",)


def test_every_table_and_column_has_a_comment(pg_dsn: str) -> None:
    schema = f"pb_{uuid.uuid4().hex[:8]}"
    try:
        apply(pg_dsn, schema)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            missing = conn.execute(
                "select c.relname || coalesce('.' || a.attname, '') from pg_class c"
                " join pg_namespace n on n.oid = c.relnamespace"
                " left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
                " where n.nspname = %s and c.relkind = 'r'"
                " and obj_description(c.oid) is not null"  # tables that have a comment: check their columns
                " and col_description(c.oid, a.attnum) is null",
                (schema,),
            ).fetchall()
            tables = conn.execute(
                "select relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relkind = 'r' and obj_description(c.oid) is null",
                (schema,),
            ).fetchall()
    finally:
        drop(pg_dsn, schema)
    assert tables == []
    assert missing == []
