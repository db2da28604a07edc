"""The Supabase REST store (budget/stores/supabase_rest.py) and its SQL functions
(supabase/migrations/20261123000200_rpc.sql).

The functions run on the real Postgres in a throwaway schema. The store talks HTTP to a fake
PostgREST (tests/fakes/postgrest_server.py) that runs the same SQL there, so every assertion about
a request is about bytes that crossed a socket, and every answer came from Postgres.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget.records import (
    AIRequest,
    Answer,
    Claim,
    Conversation,
    Exchange,
    InboxItem,
    Kind,
    Landing,
    Lease,
    Spend,
    Status,
    StoredTurn,
)
from budget.stores import open_supabase
from budget.stores.supabase_rest import _AI_SELECT, SCHEMA_VERSION, SchemaNotApplied, SupabaseDatabase, SupabaseError
from providers.base import Usage
from tests.budget.test_schema import MIGRATIONS, apply, drop
from tests.fakes.postgrest_server import TEST_SERVICE_ROLE_KEY, FakePostgrestServer, PostgrestCall, Reply

T0 = datetime(2026, 11, 10, 12, tzinfo=UTC)
ISO0 = "2026-11-10T12:00:00+00:00"
KEY = TEST_SERVICE_ROLE_KEY
FUNCTIONS = [
    "pennybot_add_turns(p_user_key text, p_turns jsonb, p_now timestamp with time zone)",
    "pennybot_answer_inbox(p_channel text, p_message_id text, p_epoch integer, p_reply jsonb, p_user_key text,"
    " p_turns jsonb, p_now timestamp with time zone)",
    "pennybot_claim_inbox(p_channel text, p_message_id text, p_user_key text, p_payload jsonb,"
    " p_now timestamp with time zone, p_lease_until timestamp with time zone)",
    "pennybot_decide_inbox(p_channel text, p_message_id text, p_owner text)",
    "pennybot_fees(p_start timestamp with time zone, p_end timestamp with time zone)",
    "pennybot_finish_inbox(p_sent jsonb)",
    "pennybot_fold(p_user_key text, p_turn_ids bigint[], p_content text, p_tokens integer, p_size integer,"
    " p_now timestamp with time zone)",
    "pennybot_land_claims(p_claims jsonb, p_token text, p_lease_until timestamp with time zone)",
    "pennybot_lease_open(p_now timestamp with time zone, p_lease_until timestamp with time zone, p_limit integer,"
    " p_owner text DEFAULT NULL::text)",
    "pennybot_lock_down(IN p_routines text[], IN p_callers text[] DEFAULT ARRAY['service_role'::text])",
    "pennybot_resources(p_start timestamp with time zone, p_end timestamp with time zone)",
    "pennybot_schema_version()",
    "pennybot_set_quota(p_user_key text, p_daily_usd numeric, p_monthly_usd numeric, p_daily_tokens bigint,"
    " p_monthly_tokens bigint, p_actor text, p_now timestamp with time zone)",
    "pennybot_spend(p_user_key text, p_start timestamp with time zone, p_end timestamp with time zone)",
    "pennybot_store_answers(p_answers jsonb)",
    "pennybot_upsert_user(p_user_key text, p_channel text, p_platform_id text, p_now timestamp with time zone)",
]


def row(rid: str, cost: str, user: str = "console:a", at: datetime = T0) -> AIRequest:
    return AIRequest(
        request_id=rid,
        created_at=at,
        user_key=user,
        channel="console",
        message_id="m1",
        kind=Kind.ANSWER,
        provider="openai",
        model="gpt-4o-mini",
        status=Status.OK,
        usage=Usage(input_tokens=100, output_tokens=50, cache_read_tokens=20, reasoning_tokens=5),
        cost=Decimal(cost),
    )


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    """A throwaway schema with every migration applied."""
    name = f"pb_{uuid.uuid4().hex[:10]}"
    apply(pg_dsn, name)
    yield name
    drop(pg_dsn, name)


@pytest.fixture
def conn(pg_dsn: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"set search_path to {schema}")
        yield c


@pytest.fixture
def server(pg_dsn: str, schema: str) -> Iterator[FakePostgrestServer]:
    with FakePostgrestServer(pg_dsn, schemas=[schema]) as fake:
        yield fake


@pytest.fixture
async def store(server: FakePostgrestServer, schema: str) -> AsyncIterator[SupabaseDatabase]:
    db = SupabaseDatabase(server.root_url, KEY, schema=schema)
    yield db
    await db.aclose()


def wire(call: PostgrestCall) -> tuple[str, str, list[tuple[str, str]], str | None, Any]:
    """(method, path under /rest/v1/, query, Prefer, JSON body) of a request. ``columns`` is sorted:
    supabase-py builds it from a set, so its order changes from run to run."""
    query = [(k, ",".join(sorted(v.split(","))) if k == "columns" else v) for k, v in call.query]
    return call.method, call.path.removeprefix("/rest/v1/"), query, call.headers.get("prefer"), call.json()


def columns(*names: str) -> tuple[str, str]:
    return "columns", ",".join(sorted(f'"{n}"' for n in names))


# --- the SQL functions, on the real Postgres ----------------------------------------------------


def test_migrations_apply_twice_and_pin_each_function(pg_dsn: str) -> None:
    name = f"pb_{uuid.uuid4().hex[:10]}"
    try:
        apply(pg_dsn, name, times=2)
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            rows = c.execute(
                "select format('%%s(%%s)', proname, pg_get_function_arguments(oid)), proconfig, prosecdef,"
                " exists (select 1 from aclexplode(proacl) where grantee = 0)"  # 0: PUBLIC
                " from pg_proc where pronamespace = %s::regnamespace and proname like 'pennybot\\_%%' order by proname",
                (name,),
            ).fetchall()
    finally:
        drop(pg_dsn, name)
    assert [r[0] for r in rows] == FUNCTIONS
    for signature, config, definer, public in rows:
        assert config == [f"search_path={name}, pg_temp"], signature
        assert definer is False, signature  # the caller's rights: service_role bypasses RLS by itself
        assert public is False, signature  # EXECUTE taken from PUBLIC (service_role gets it on Supabase)
    assert any(p.name.startswith(f"{SCHEMA_VERSION}_") for p in MIGRATIONS)


def test_schema_version(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("select pennybot_schema_version()").fetchone() == (SCHEMA_VERSION,)


def test_spend_and_fees_are_exact_text(conn: psycopg.Connection[Any]) -> None:
    for rid, cost, user in [("a", "0.1", "u1"), ("b", "0.2", "u1"), ("c", "0.00000015", "u1"), ("d", "8", "u2")]:
        conn.execute(
            "insert into ai_requests (request_id, created_at, user_key, channel, kind, provider, model, status,"
            " prompt_tokens, completion_tokens, cost_usd)"
            " values (%s, %s, %s, 'c', 'answer', 'p', 'm', 'ok', 100, 50, %s)",
            (rid, T0, user, Decimal(cost)),
        )
    spend = "select * from pennybot_spend(%s, %s, %s)"
    assert conn.execute(spend, ("u1", T0, T0 + timedelta(seconds=1))).fetchall() == [("0.300000150", 450)]
    assert conn.execute(spend, (None, T0, T0 + timedelta(seconds=1))).fetchall() == [("8.300000150", 600)]
    assert conn.execute(spend, ("u1", T0 + timedelta(seconds=1), T0 + timedelta(days=1))).fetchall() == [("0", 0)]
    for message, fee in [("SM1", "0.005"), ("SM2", "0.0000001")]:
        conn.execute(
            "insert into channel_fees (created_at, channel, user_key, direction, message_id, fee_usd)"
            " values (%s, 'whatsapp', 'w', 'out', %s, %s)",
            (T0, message, Decimal(fee)),
        )
    assert conn.execute("select pennybot_fees(%s, %s)", (T0, T0 + timedelta(seconds=1))).fetchone() == ("0.005000100",)


def _add(conn: psycopg.Connection[Any], user: str, *contents: str) -> list[int]:
    turns = json.dumps([{"role": "user", "content": c, "tokens": 3, "size": len(c)} for c in contents])
    (ids,) = conn.execute("select pennybot_add_turns(%s, %s::jsonb, %s)", (user, turns, T0)).fetchone()  # type: ignore[misc]
    return list(ids)


def _messages(conn: psycopg.Connection[Any], user: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select id, role, content, folded from messages where user_key = %s order by id", (user,)
    ).fetchall()


def test_add_turns_returns_the_ids_in_order(conn: psycopg.Connection[Any]) -> None:
    ids = _add(conn, "u", "q0", "q1", "q2")
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [(i, c) for i, _, c, _ in _messages(conn, "u")] == list(zip(ids, ["q0", "q1", "q2"], strict=True))
    assert _add(conn, "u") == []


def test_fold_marks_turns_and_old_summary_and_stores_the_new_one_atomically(conn: psycopg.Connection[Any]) -> None:
    ids = _add(conn, "u", "q0", "q1", "q2", "q3")
    other = _add(conn, "someone else", "x")
    fold = "select pennybot_fold(%s, %s, %s, 4, 4, %s)"
    (s1,) = conn.execute(fold, ("u", [ids[0], ids[1], other[0]], "sum1", T0)).fetchone()  # type: ignore[misc]
    assert _messages(conn, "u") == [
        (ids[0], "user", "q0", True), (ids[1], "user", "q1", True), (ids[2], "user", "q2", False),
        (ids[3], "user", "q3", False), (s1, "summary", "sum1", False),
    ]  # fmt: skip
    assert _messages(conn, "someone else") == [(other[0], "user", "x", False)]  # another user's turn is never folded
    before = _messages(conn, "u")
    # The new summary cannot be stored (content is required): the turns and the old summary stay
    # unfolded, because the update and the insert are one transaction.
    with pytest.raises(psycopg.errors.NotNullViolation):
        conn.execute(fold, ("u", [ids[2]], None, T0))
    assert _messages(conn, "u") == before
    (s2,) = conn.execute(fold, ("u", [ids[2]], "sum2", T0)).fetchone()  # type: ignore[misc]
    assert [(i, f) for i, _, _, f in _messages(conn, "u")] == [
        (ids[0], True), (ids[1], True), (ids[2], True), (ids[3], False), (s1, True), (s2, False)
    ]  # fmt: skip


def test_claim_inbox_is_true_once_then_false(conn: psycopg.Connection[Any]) -> None:
    claim = "select pennybot_claim_inbox(%s, %s, %s, %s::jsonb, %s, %s)"
    lease = T0 + timedelta(seconds=60)
    assert conn.execute(claim, ("telegram", "42", "telegram:1", '{"text": "hi"}', T0, lease)).fetchone() == (True,)
    assert conn.execute(claim, ("telegram", "42", "telegram:1", '{"text": "again"}', T0, lease)).fetchone() == (False,)
    assert conn.execute(claim, ("whatsapp", "42", "whatsapp:+1", "{}", T0, lease)).fetchone() == (True,)
    stored = conn.execute("select channel, payload, lease_until from inbox order by channel").fetchall()
    assert stored == [("telegram", {"text": "hi"}, lease), ("whatsapp", {}, lease)]


def test_finish_inbox_marks_each_message_done_at_its_own_time(conn: psycopg.Connection[Any]) -> None:
    claim = "select pennybot_claim_inbox(%s, %s, 'u', '{}'::jsonb, %s, %s)"
    for channel, mid in (("telegram", "1"), ("telegram", "2"), ("whatsapp", "1")):
        conn.execute(claim, (channel, mid, T0, T0 + timedelta(seconds=60)))
    sent = [
        {"channel": "telegram", "message_id": "2", "at": ISO0},
        {"channel": "whatsapp", "message_id": "1", "at": "2026-11-10T12:00:03+00:00"},
        {"channel": "telegram", "message_id": "9", "at": ISO0},  # not there: nothing
    ]
    conn.execute("select pennybot_finish_inbox(%s::jsonb)", (json.dumps(sent),))
    rows = conn.execute("select channel, message_id, status, done_at from inbox order by channel, message_id")
    assert rows.fetchall() == [
        ("telegram", "1", "pending", None), ("telegram", "2", "done", T0),
        ("whatsapp", "1", "done", T0 + timedelta(seconds=3)),
    ]  # fmt: skip


def test_lease_open_takes_expired_messages_oldest_first(conn: psycopg.Connection[Any]) -> None:
    claim = "select pennybot_claim_inbox(%s, %s, 'u', %s::jsonb, %s, %s)"
    for i, at in enumerate([T0 + timedelta(seconds=2), T0, T0 + timedelta(seconds=1)]):
        conn.execute(claim, ("telegram", str(i), json.dumps({"i": i}), at, at + timedelta(seconds=10)))
    conn.execute("update inbox set status = 'answered', reply = '[\"r\"]' where message_id = '2'")
    take = "select pennybot_lease_open(%s, %s, %s)"
    assert conn.execute(take, (T0 + timedelta(seconds=5), T0 + timedelta(seconds=65), 10)).fetchone() == ([],)
    (taken,) = conn.execute(take, (T0 + timedelta(seconds=30), T0 + timedelta(seconds=90), 2)).fetchone()  # type: ignore[misc]
    assert taken == [
        {"channel": "telegram", "message_id": "1", "payload": {"i": 1}, "reply": None, "lease_epoch": 1},
        {"channel": "telegram", "message_id": "2", "payload": {"i": 2}, "reply": ["r"], "lease_epoch": 1},
    ]
    (rest,) = conn.execute(take, (T0 + timedelta(seconds=31), T0 + timedelta(seconds=91), 10)).fetchone()  # type: ignore[misc]
    assert [(t["message_id"], t["lease_epoch"]) for t in rest] == [("0", 1)]
    (again,) = conn.execute(take, (T0 + timedelta(seconds=95), T0 + timedelta(seconds=155), 10)).fetchone()  # type: ignore[misc]
    assert [(t["message_id"], t["lease_epoch"]) for t in again] == [("1", 2), ("2", 2), ("0", 2)]  # oldest first


def test_answer_inbox_stores_once_and_only_for_the_epoch_held(conn: psycopg.Connection[Any]) -> None:
    conn.execute("select pennybot_claim_inbox('telegram', '1', 'u', '{}'::jsonb, %s, %s)", (T0, T0))
    answer = "select pennybot_answer_inbox('telegram', '1', %s, %s::jsonb, 'u', %s::jsonb, %s)"
    turns = json.dumps([{"role": "user", "content": "q", "tokens": 1, "size": 1}])
    assert conn.execute(answer, (1, '["late"]', turns, T0)).fetchone() == (False,)  # not this epoch
    assert conn.execute(answer, (0, '["a"]', turns, T0)).fetchone() == (True,)
    assert conn.execute(answer, (0, '["a"]', turns, T0)).fetchone() == (True,)  # a retry: nothing twice
    assert conn.execute("select status, reply from inbox").fetchall() == [("answered", ["a"])]
    assert conn.execute("select content from messages").fetchall() == [("q",)]
    no_turns = "select pennybot_answer_inbox('telegram', '2', 0, '[]'::jsonb, null, null, null)"
    assert conn.execute(no_turns).fetchone() == (False,)  # no such message


def test_upsert_user_keeps_created_at(conn: psycopg.Connection[Any]) -> None:
    upsert = "select pennybot_upsert_user(%s, %s, %s, %s)"
    conn.execute(upsert, ("telegram:1", "telegram", "1", T0))
    conn.execute(upsert, ("telegram:1", "telegram", "1", T0 + timedelta(days=1)))
    rows = conn.execute("select created_at, last_seen_at from users").fetchall()
    assert rows == [(T0, T0 + timedelta(days=1))]


# --- the store, over HTTP ----------------------------------------------------------------------


async def test_each_method_sends_exactly_these_requests(
    store: SupabaseDatabase, server: FakePostgrestServer, schema: str
) -> None:
    await store.migrate()
    await store.record([row("a", "0.1"), row("b", "0.2"), row("c", "0.00000015")])
    assert await store.spend("console:a", T0, T0 + timedelta(seconds=1)) == Spend(300_000_150, 450)
    got = await store.requests(T0, T0 + timedelta(seconds=1), "console:a")
    assert [r.cost for r in got] == [Decimal("0.1"), Decimal("0.2"), Decimal("0.00000015")]
    assert got[0] == row("a", "0.100000000")
    await store.record_fee("whatsapp", "whatsapp:+1", "out", "SM1", Decimal("0.0000001"), T0)
    assert await store.fees(T0, T0 + timedelta(seconds=1)) == Decimal("0.000000100")
    await store.upsert_user("whatsapp:+1", "whatsapp", "+1", T0)
    await store.set_user_active("whatsapp:+1", False)
    await store.ping()
    turns = await store.add_turns("u", [("user", "q0", 3, 2), ("assistant", "a0", 4, 2)], T0)
    first = turns[0].id
    assert turns == [StoredTurn(first, "user", "q0", 3, 2), StoredTurn(first + 1, "assistant", "a0", 4, 2)]
    summary = await store.fold("u", [first], ("sum", 5, 3), T0)
    assert summary == StoredTurn(first + 2, "summary", "sum", 5, 3)
    assert await store.conversation("u") == Conversation(summary, [turns[1]])
    assert await store.reset_conversation("u") == 3
    assert await store.claim_inbox("telegram", "42", "telegram:1", {"text": "hi"}, T0, lease_s=60) is True
    assert await store.renew_lease("telegram", "42", T0 + timedelta(seconds=30), lease_s=60) is True
    assert await store.answer_inbox("telegram", "42", ["hello"]) is True
    assert await store.lease_open(T0 + timedelta(seconds=91), lease_s=60, limit=10, owner="p-1") == [
        InboxItem("telegram", "42", {"text": "hi"}, ["hello"], 1)
    ]
    assert await store.lease_holder("telegram", "42") == Lease(1, "p-1", T0 + timedelta(seconds=151))
    assert await store.open_inbox(owner="p-1") == [InboxItem("telegram", "42", {"text": "hi"}, ["hello"], 1)]
    await store.finish_inbox([("telegram", "42", T0)])
    assert await store.open_inbox() == []
    claims = [Claim("telegram", mid, "telegram:1", {"text": mid}, T0) for mid in ("42", "43")]
    assert await store.land_claims(claims, "host-a", T0 + timedelta(seconds=5), 60) == [Landing.ANSWERED, Landing.MINE]
    assert await store.decide_inbox("telegram", "43", "p-1") is True
    answer = Answer("telegram", "43", ["hey"], Exchange("telegram:1", [("user", "43", 2, 2)], T0), 0, T0)
    assert await store.store_answers([answer, Answer("telegram", "44", ["no"], None, 0, None)]) == [True, False]

    iso = ISO0
    iso1s = "2026-11-10T12:00:01+00:00"
    ai_row = {
        "user_key": "console:a", "channel": "console", "message_id": "m1", "kind": "answer", "provider": "openai",
        "model": "gpt-4o-mini", "tier": None, "complexity": None, "status": "ok", "prompt_tokens": 100,
        "completion_tokens": 50, "cached_tokens": 20, "cache_write_tokens": 0, "reasoning_tokens": 5,
        "saved_usd": "0", "latency_ms": 0, "error": None, "reason": None, "created_at": iso,
    }  # fmt: skip
    minimal, ignore = "return=minimal", "return=minimal,resolution=ignore-duplicates"
    assert [wire(c) for c in server.requests] == [
        ("POST", "rpc/pennybot_schema_version", [], None, {}),
        (
            "POST", "ai_requests", [("on_conflict", "request_id"), columns(*ai_row, "request_id", "cost_usd")],
            ignore,
            [
                ai_row | {"request_id": "a", "cost_usd": "0.1"},
                ai_row | {"request_id": "b", "cost_usd": "0.2"},
                ai_row | {"request_id": "c", "cost_usd": "0.00000015"},  # money as text: exact
            ],
        ),
        ("POST", "rpc/pennybot_spend", [], None, {"p_user_key": "console:a", "p_start": iso, "p_end": iso1s}),
        (
            "GET", "ai_requests",
            [
                ("select", _AI_SELECT), ("created_at", f"gte.{iso}"), ("created_at", f"lt.{iso1s}"),
                ("user_key", "eq.console:a"), ("order", "id.asc"), ("limit", "1000"),
            ],
            None, None,
        ),
        (
            "POST", "channel_fees",
            [
                ("on_conflict", "channel,direction,message_id"),
                columns("created_at", "channel", "user_key", "direction", "message_id", "fee_usd"),
            ],
            ignore,
            [
                {
                    "created_at": iso, "channel": "whatsapp", "user_key": "whatsapp:+1", "direction": "out",
                    "message_id": "SM1", "fee_usd": "0.0000001",
                }
            ],
        ),
        ("POST", "rpc/pennybot_fees", [], None, {"p_start": iso, "p_end": iso1s}),
        (
            "POST", "rpc/pennybot_upsert_user", [], None,
            {"p_user_key": "whatsapp:+1", "p_channel": "whatsapp", "p_platform_id": "+1", "p_now": iso},
        ),
        ("PATCH", "users", [("user_key", "eq.whatsapp:+1")], minimal, {"active": False}),
        ("POST", "rpc/pennybot_schema_version", [], None, {}),
        (
            "POST", "rpc/pennybot_add_turns", [], None,
            {
                "p_user_key": "u",
                "p_turns": [
                    {"role": "user", "content": "q0", "tokens": 3, "size": 2},
                    {"role": "assistant", "content": "a0", "tokens": 4, "size": 2},
                ],
                "p_now": iso,
            },
        ),
        (
            "POST", "rpc/pennybot_fold", [], None,
            {"p_user_key": "u", "p_turn_ids": [first], "p_content": "sum", "p_tokens": 5, "p_size": 3, "p_now": iso},
        ),
        (
            "GET", "messages",
            [
                ("select", "id,role,content,tokens,size"), ("user_key", "eq.u"), ("folded", "is.false"),
                ("order", "id.asc"), ("limit", "1000"),
            ],
            None, None,
        ),
        ("DELETE", "messages", [("user_key", "eq.u")], "return=minimal,count=exact", {}),
        (
            "POST", "rpc/pennybot_claim_inbox", [], None,
            {
                "p_channel": "telegram", "p_message_id": "42", "p_user_key": "telegram:1", "p_payload": {"text": "hi"},
                "p_now": iso, "p_lease_until": "2026-11-10T12:01:00+00:00",
            },
        ),
        (
            "PATCH", "inbox",
            [("channel", "eq.telegram"), ("message_id", "eq.42"), ("lease_epoch", "eq.0"), ("status", "neq.done")],
            "return=minimal,count=exact", {"lease_until": "2026-11-10T12:01:30+00:00"},
        ),
        (
            "POST", "rpc/pennybot_answer_inbox", [], None,
            {
                "p_channel": "telegram", "p_message_id": "42", "p_epoch": 0, "p_reply": ["hello"], "p_user_key": None,
                "p_turns": None, "p_now": None,
            },
        ),
        (
            "POST", "rpc/pennybot_lease_open", [], None,
            {
                "p_now": "2026-11-10T12:01:31+00:00", "p_lease_until": "2026-11-10T12:02:31+00:00", "p_limit": 10,
                "p_owner": "p-1",
            },
        ),
        (
            "GET", "inbox",
            [
                ("select", "lease_epoch,lease_owner,lease_until"), ("channel", "eq.telegram"),
                ("message_id", "eq.42"), ("status", "neq.done"),
            ],
            None, None,
        ),
        (
            "GET", "inbox",
            [
                ("select", "channel,message_id,payload,reply,lease_epoch"), ("status", "neq.done"),
                ("lease_owner", "eq.p-1"), ("lease_epoch", "gt.0"),
                ("order", "received_at.asc,channel.asc,message_id.asc"), ("limit", "1000"),
            ],
            None, None,
        ),
        (
            "POST", "rpc/pennybot_finish_inbox", [], None,
            {"p_sent": [{"channel": "telegram", "message_id": "42", "at": iso}]},
        ),
        (
            "GET", "inbox",
            [
                ("select", "channel,message_id,payload,reply,lease_epoch"), ("status", "neq.done"),
                ("order", "received_at.asc,channel.asc,message_id.asc"), ("limit", "1000"),
            ],
            None, None,
        ),
        (
            "POST", "rpc/pennybot_land_claims", [], None,
            {
                "p_claims": [
                    {
                        "channel": "telegram", "message_id": mid, "user_key": "telegram:1",
                        "payload": {"text": mid, "by": "host-a"}, "received_at": iso,
                    }
                    for mid in ("42", "43")
                ],  # both in one request
                "p_token": "host-a", "p_lease_until": "2026-11-10T12:01:05+00:00",
            },
        ),
        (
            "POST", "rpc/pennybot_decide_inbox", [], None,
            {"p_channel": "telegram", "p_message_id": "43", "p_owner": "p-1"},
        ),
        (
            "POST", "rpc/pennybot_store_answers", [], None,
            {
                "p_answers": [
                    {
                        "channel": "telegram", "message_id": "43", "reply": ["hey"], "epoch": 0, "done_at": iso,
                        "user_key": "telegram:1", "at": iso,
                        "turns": [{"role": "user", "content": "43", "tokens": 2, "size": 2}],
                    },
                    {"channel": "telegram", "message_id": "44", "reply": ["no"], "epoch": 0, "done_at": None},
                ],  # both in one request; 44 was never claimed
            },
        ),
    ]  # fmt: skip
    for call in server.requests:
        # The key in its two headers and nowhere else; reads name the schema in Accept-Profile,
        # writes in Content-Profile (supabase-py sends both every time).
        assert call.headers["apikey"] == KEY
        assert call.headers["authorization"] == f"Bearer {KEY}"
        assert call.headers["accept-profile"] == call.headers["content-profile"] == schema
        assert KEY not in call.path + json.dumps(call.query) + call.body.decode()
        if call.method != "GET":
            assert call.headers["content-type"] == "application/json"


async def test_rpc_bodies_are_compact_json(store: SupabaseDatabase, server: FakePostgrestServer) -> None:
    await store.spend(None, T0, T0 + timedelta(days=1))
    assert server.requests[0].body == (
        b'{"p_user_key":null,"p_start":"2026-11-10T12:00:00+00:00","p_end":"2026-11-11T12:00:00+00:00"}'
    )


async def test_numeric_is_read_as_text_because_json_numbers_become_floats(
    store: SupabaseDatabase, server: FakePostgrestServer
) -> None:
    big = "12345678901.123456789"  # numeric(20, 9) holds it; a float has 17 significant digits
    await store.record([row("a", big), row("b", "0.000000001")])
    raw = await store._client.table("ai_requests").select("cost_usd").order("id").execute()
    assert raw.data == [{"cost_usd": 12345678901.123457}, {"cost_usd": 1e-09}]  # what postgrest-py makes of it
    cast = await store._client.table("ai_requests").select("cost_usd::text").order("id").execute()
    assert cast.data == [{"cost_usd": big}, {"cost_usd": "0.000000001"}]
    assert [r.cost for r in await store.requests(T0, T0 + timedelta(seconds=1))] == [Decimal(big), Decimal("1E-9")]
    assert (await store.spend(None, T0, T0 + timedelta(seconds=1))).nanos == 12_345_678_901_123_456_790


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amounts=st.lists(st.decimals(min_value=0, max_value=1000, places=9), min_size=1, max_size=6))
async def test_money_keeps_every_nano_dollar_over_rest(store: SupabaseDatabase, amounts: list[Decimal]) -> None:
    user = f"u:{uuid.uuid4().hex}"  # one store for every example; a fresh user keeps them apart
    await store.record([row(uuid.uuid4().hex, str(c), user=user) for c in amounts])
    assert [r.cost for r in await store.requests(T0, T0 + timedelta(seconds=1), user)] == amounts
    assert (await store.spend(user, T0, T0 + timedelta(seconds=1))).nanos == int(sum(amounts) * 1_000_000_000)


async def test_reads_page_within_the_servers_max_rows(store: SupabaseDatabase, server: FakePostgrestServer) -> None:
    server.max_rows = 2  # as a project whose "Max rows" is 2: a longer page would come back cut
    small = SupabaseDatabase(server.root_url, KEY, schema=store.schema, page_size=2)
    try:
        turns = await small.add_turns("u", [("user", f"q{i}", 1, 2) for i in range(5)], T0)
        server.reset()
        assert (await small.conversation("u")).turns == turns
        assert [dict(c.query).get("id") for c in server.requests] == [None, f"gt.{turns[1].id}", f"gt.{turns[3].id}"]
        for i in range(3):
            await small.claim_inbox("telegram", str(i), "u", {}, T0 + timedelta(seconds=i))
        server.reset()
        assert [i.message_id for i in await small.open_inbox()] == ["0", "1", "2"]
        assert [dict(c.query).get("offset") for c in server.requests] == [None, "2"]
    finally:
        await small.aclose()


async def test_nothing_to_write_sends_nothing(store: SupabaseDatabase, server: FakePostgrestServer) -> None:
    await store.record([])
    assert await store.add_turns("u", [], T0) == []
    assert await store.land_claims([], "host-a", T0, 60) == []
    assert await store.store_answers([]) == []
    await store.finish_inbox([])
    assert server.requests == []


async def test_migrate_on_a_project_without_the_schema_says_how_to_apply_it(
    pg_dsn: str, server: FakePostgrestServer
) -> None:
    empty = f"pb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"create schema {empty}")
    server.expose(empty)
    db = SupabaseDatabase(server.root_url, KEY, schema=empty)
    try:
        with pytest.raises(SchemaNotApplied) as caught:
            await db.migrate()
    finally:
        await db.aclose()
        drop(pg_dsn, empty)
    message = str(caught.value)
    assert message == (
        f"The Supabase project at {server.root_url} has no pennybot schema. The REST API cannot create tables:"
        " apply supabase/migrations with `supabase db push`, or run `pennybot migrate` with DATABASE_URL set to"
        " the project's Postgres connection string, then start again."
    )
    assert KEY not in message


async def test_migrate_refuses_an_older_schema(store: SupabaseDatabase, server: FakePostgrestServer) -> None:
    server.script(Reply(200, 20261123000000))
    with pytest.raises(SchemaNotApplied, match=f"has pennybot schema 20261123000000, not {SCHEMA_VERSION}"):
        await store.migrate()
    await store.migrate()  # the real answer


async def test_a_wrong_key_is_refused_and_named_nowhere(server: FakePostgrestServer, schema: str) -> None:
    wrong = KEY[:-4] + "XXXX"
    db = SupabaseDatabase(server.root_url, wrong, schema=schema)
    try:
        with pytest.raises(SupabaseError) as caught:
            await db.spend(None, T0, T0)
    finally:
        await db.aclose()
    assert str(caught.value) == (
        "pennybot_spend failed: Invalid API key; hint: Double check your Supabase `anon` or `service_role` API key."
    )
    assert wrong not in repr(caught.value) and KEY not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_an_error_that_echoes_the_key_is_redacted(store: SupabaseDatabase, server: FakePostgrestServer) -> None:
    server.script(Reply(401, {"code": "PGRST301", "message": f"JWT {KEY} expired", "details": KEY, "hint": None}))
    with pytest.raises(SupabaseError) as caught:
        await store.claim_inbox("telegram", "1", "u", {}, T0)
    assert str(caught.value) == (
        "pennybot_claim_inbox failed (PGRST301): JWT [service role key] expired; details: [service role key]"
    )
    assert caught.value.code == "PGRST301"
    assert KEY not in repr(caught.value.args)


async def test_a_database_error_keeps_its_code(store: SupabaseDatabase, server: FakePostgrestServer) -> None:
    with pytest.raises(SupabaseError) as caught:
        await store.add_turns("u", [("robot", "x", 1, 1)], T0)
    assert caught.value.code == "23514"  # the role check constraint, as PostgREST passes it on (HTTP 400)
    assert str(caught.value).startswith('pennybot_add_turns failed (23514): new row for relation "messages" violates')


async def test_an_unreachable_project_raises_without_the_key() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    db = SupabaseDatabase(f"http://127.0.0.1:{port}", KEY, timeout=2)
    try:
        with pytest.raises(SupabaseError) as caught:
            await db.ping()
        assert str(caught.value).startswith(
            f"pennybot_schema_version failed: Supabase at http://127.0.0.1:{port} is unreachable (ConnectError"
        )
        assert KEY not in repr(caught.value)
    finally:
        await db.aclose()


async def test_open_supabase_builds_the_store_without_a_request(server: FakePostgrestServer) -> None:
    db = open_supabase(server.root_url + "/", KEY)
    try:
        assert isinstance(db, SupabaseDatabase) and db.url == server.root_url and db.schema == "public"
        assert server.requests == []
    finally:
        await db.aclose()
    with pytest.raises(ValueError, match="service role key is empty"):
        SupabaseDatabase(server.root_url, "")
