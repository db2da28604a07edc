"""One contract for every database URL (SQLite file and memory now; Postgres joins later)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from benchmarks import roundtrips
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
    ResourceUse,
    Spend,
    Status,
)
from budget.stores import Database, open_database
from budget.stores.pg_hot import PostgresHotStore
from budget.stores.postgres import PostgresDatabase, _split_url, uses_statement_cache
from budget.stores.supabase_rest import SupabaseDatabase
from providers.base import Usage
from tests.budget.test_schema import apply as apply_schema
from tests.budget.test_schema import drop as drop_schema
from tests.drills.network import Partition, Tarpit
from tests.fakes.postgrest_server import TEST_SERVICE_ROLE_KEY, FakePostgrestServer

T0 = datetime(2026, 11, 10, 12, tzinfo=UTC)


@pytest.fixture(params=["sqlite-file", "memory", "postgresql", "supabase"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    schema = None
    server = None
    if request.param == "supabase":
        # Supabase's REST API, as a fake PostgREST running the same SQL on the real Postgres, in a
        # throwaway schema the migrations were applied to (the REST store cannot apply them).
        schema = f"pb_{uuid.uuid4().hex[:10]}"
        apply_schema(request.getfixturevalue("pg_dsn"), schema)
        server = FakePostgrestServer(request.getfixturevalue("pg_dsn"), schemas=[schema]).start()
        store: Database = SupabaseDatabase(server.root_url, TEST_SERVICE_ROLE_KEY, schema=schema)
    elif request.param == "postgresql":
        schema = f"pb_{uuid.uuid4().hex[:10]}"
        store = open_database(f"{request.getfixturevalue('pg_dsn')}?schema={schema}")
    else:
        store = open_database(f"sqlite:///{tmp_path}/pb.db" if request.param == "sqlite-file" else "memory://")
    await store.migrate()
    await store.migrate()  # twice changes nothing
    yield store
    await store.aclose()
    if server:
        server.stop()
    if schema:
        await asyncio.to_thread(drop_schema, request.getfixturevalue("pg_dsn"), schema)


def row(rid: str, cost: str, user: str = "console:a", at: datetime = T0, **kw: object) -> AIRequest:
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
        **kw,  # type: ignore[arg-type]
    )


async def test_money_sums_exactly(db: Database) -> None:
    # As REAL these would come back as 0.30000015...; the store keeps nano-dollars.
    await db.record([row("a", "0.1"), row("b", "0.2"), row("c", "0.00000015")])
    spend = await db.spend("console:a", T0, T0 + timedelta(seconds=1))
    assert spend.nanos == 300_000_150
    assert spend.tokens == 450


async def test_record_is_idempotent_per_request_id(db: Database) -> None:
    await db.record([row("a", "0.5")])
    await db.record([row("a", "0.5"), row("b", "0.25")])
    rows = await db.requests(T0, T0 + timedelta(days=1))
    assert [r.request_id for r in rows] == ["a", "b"]
    assert rows[0].cost == Decimal("0.500000000")
    assert rows[0].usage == Usage(input_tokens=100, output_tokens=50, cache_read_tokens=20, reasoning_tokens=5)


async def test_spend_respects_bounds_and_user(db: Database) -> None:
    await db.record(
        [
            row("a", "1", at=T0 - timedelta(microseconds=1)),
            row("b", "2", at=T0),
            row("c", "4", at=T0 + timedelta(hours=1)),
            row("d", "8", user="console:b"),
        ]
    )
    assert (await db.spend("console:a", T0, T0 + timedelta(hours=1))).nanos == 2_000_000_000
    assert (await db.spend(None, T0, T0 + timedelta(days=1))).nanos == 14_000_000_000


async def test_recorded_names_the_rows_the_ledger_holds(db: Database) -> None:
    # A seed asks it about rows settles left out of a missing counter (Budget._seed).
    await db.record([row("a", "1"), row("b", "2", user="console:b")])
    assert await db.recorded(["b", "x", "a"]) == {"a", "b"}
    assert await db.recorded(["x"]) == set()
    assert await db.recorded([]) == set()


async def test_conversation_fold_keeps_every_turn_somewhere(db: Database) -> None:
    turns = await db.add_turns("u", [("user", f"q{i}", 3, 2) for i in range(5)], T0)
    assert [t.content for t in turns] == [f"q{i}" for i in range(5)]
    s1 = await db.fold("u", [turns[0].id, turns[1].id], ("sum1", 4, 4), T0)
    conv = await db.conversation("u")
    assert conv.summary == s1
    assert [t.content for t in conv.turns] == ["q2", "q3", "q4"]
    await db.fold("u", [turns[2].id], ("sum2", 4, 4), T0)
    conv = await db.conversation("u")
    assert conv.summary is not None and conv.summary.content == "sum2"
    assert [t.content for t in conv.turns] == ["q3", "q4"]
    assert await db.reset_conversation("u") == 7
    assert (await db.conversation("u")).turns == []


async def test_inbox_claims_each_message_once(db: Database) -> None:
    assert await db.claim_inbox("telegram", "42", "telegram:1", {"text": "hi"}, T0) is True
    assert await db.claim_inbox("telegram", "42", "telegram:1", {"text": "hi"}, T0) is False
    assert await db.claim_inbox("whatsapp", "42", "whatsapp:+1", {"text": "hi"}, T0) is True
    await db.answer_inbox("whatsapp", "42", ["hello", "there"])
    await db.finish_inbox([("telegram", "42", T0)])
    assert await db.open_inbox() == [InboxItem("whatsapp", "42", {"text": "hi"}, ["hello", "there"])]
    await db.finish_inbox([("whatsapp", "42", T0)])
    assert await db.open_inbox() == []


async def test_messages_are_marked_done_together(db: Database) -> None:
    for channel, mid in [("telegram", "1"), ("telegram", "2"), ("whatsapp", "1")]:
        assert await db.claim_inbox(channel, mid, f"{channel}:u", {"text": "hi"}, T0)
    await db.finish_inbox([])  # nothing to mark: no error
    await db.finish_inbox([("telegram", "1", T0), ("whatsapp", "1", T0 + timedelta(seconds=1)), ("telegram", "9", T0)])
    assert [(i.channel, i.message_id) for i in await db.open_inbox()] == [("telegram", "2")]


async def test_a_claim_reads_the_conversation_in_the_same_step(db: Database) -> None:
    turns = await db.add_turns("telegram:1", [("user", "q0", 3, 2), ("assistant", "a0", 4, 2)], T0)
    summary = await db.fold("telegram:1", [turns[0].id], ("s", 5, 1), T0)
    await db.add_turns("telegram:2", [("user", "someone else's", 1, 1)], T0)
    conv = await db.claim_inbox_reading("telegram", "42", "telegram:1", {"text": "hi"}, T0)
    assert conv is not None and conv.summary == summary and conv.turns == [turns[1]]
    assert await db.claim_inbox_reading("telegram", "42", "telegram:1", {"text": "hi"}, T0) is None
    assert await db.claim_inbox("telegram", "42", "telegram:1", {"text": "hi"}, T0) is False
    fresh = await db.claim_inbox_reading("whatsapp", "7", "whatsapp:+1", {"text": "yo"}, T0, lease_s=5)
    assert fresh == Conversation(None, [])
    assert await db.open_inbox() == [
        InboxItem("telegram", "42", {"text": "hi"}, None), InboxItem("whatsapp", "7", {"text": "yo"}, None)
    ]  # fmt: skip
    bot_later = T0 + timedelta(seconds=6)
    assert [i.message_id for i in await db.lease_open(bot_later, 60)] == ["7"]  # its lease was 5 s


async def test_the_replies_and_the_exchange_are_stored_in_one_step(db: Database) -> None:
    assert await db.claim_inbox("telegram", "42", "telegram:1", {"text": "q"}, T0)
    await db.add_turns("telegram:1", [("user", "before", 1, 1)], T0)
    exchange = Exchange("telegram:1", (("user", "q", 1, 1), ("assistant", "a", 2, 1)), T0)
    assert await db.answer_inbox("telegram", "42", ["a"], exchange) is True
    assert await db.open_inbox() == [InboxItem("telegram", "42", {"text": "q"}, ["a"])]
    conv = await db.conversation("telegram:1")
    assert [(t.role, t.content, t.tokens) for t in conv.turns] == [
        ("user", "before", 1), ("user", "q", 1), ("assistant", "a", 2)
    ]  # fmt: skip
    assert conv.turns[0].id < conv.turns[1].id < conv.turns[2].id
    # Written again (its commit's reply was lost, so the dispatcher retries): stored, nothing twice.
    assert await db.answer_inbox("telegram", "42", ["a"], exchange) is True
    assert await db.open_inbox() == [InboxItem("telegram", "42", {"text": "q"}, ["a"])]
    assert len((await db.conversation("telegram:1")).turns) == 3
    assert await db.claim_inbox("telegram", "43", "telegram:1", {"text": "q2"}, T0)
    assert await db.answer_inbox("telegram", "43", ["b"], None) is True  # no exchange: the replies alone
    assert (await db.open_inbox())[1].replies == ["b"]
    assert len((await db.conversation("telegram:1")).turns) == 3


async def test_a_refused_exchange_is_stored_once_when_the_answer_is_written_again(db: Database) -> None:
    assert await db.claim_inbox("telegram", "42", "telegram:1", {"text": "q"}, T0)
    bad = Exchange("telegram:1", (("user", "q", 1, 1), ("assistant", None, 1, 1)), T0)  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"(?i)null"):
        await db.answer_inbox("telegram", "42", ["a"], bad)
    # One statement (Postgres), transaction (SQLite) or SQL function (REST): nothing stored.
    assert await db.open_inbox() == [InboxItem("telegram", "42", {"text": "q"}, None)]
    assert (await db.conversation("telegram:1")).turns == []
    good = Exchange("telegram:1", (("user", "q", 1, 1), ("assistant", "a", 1, 1)), T0)
    assert await db.answer_inbox("telegram", "42", ["a"], good) is True  # the dispatcher's retry
    assert [t.content for t in (await db.conversation("telegram:1")).turns] == ["q", "a"]
    assert await db.open_inbox() == [InboxItem("telegram", "42", {"text": "q"}, ["a"])]


async def test_a_message_taken_over_fences_off_its_old_owner(db: Database) -> None:
    # Process A claimed it (epoch 0) and was cut off for longer than the lease; B's sweep takes it.
    assert await db.claim_inbox("telegram", "42", "telegram:1", {"text": "q"}, T0, lease_s=60)
    assert await db.renew_lease("telegram", "42", T0 + timedelta(seconds=10), lease_s=60) is True
    [taken] = await db.lease_open(T0 + timedelta(seconds=71), lease_s=60)
    assert taken == InboxItem("telegram", "42", {"text": "q"}, None, 1)
    late = T0 + timedelta(seconds=80)
    assert await db.renew_lease("telegram", "42", late, lease_s=60) is False  # A's renewal: not A's now
    assert await db.renew_lease("telegram", "42", late, lease_s=60, epoch=1) is True
    a = Exchange("telegram:1", (("user", "q", 1, 1), ("assistant", "from A", 2, 1)), T0)
    assert await db.answer_inbox("telegram", "42", ["from A"], a) is False  # A must not send
    assert await db.open_inbox() == [InboxItem("telegram", "42", {"text": "q"}, None, 1)]
    assert (await db.conversation("telegram:1")).turns == []
    b = Exchange("telegram:1", (("user", "q", 1, 1), ("assistant", "from B", 2, 1)), T0)
    assert await db.answer_inbox("telegram", "42", ["from B"], b, epoch=1) is True
    assert await db.answer_inbox("telegram", "42", ["from A"], a) is False
    assert await db.open_inbox() == [InboxItem("telegram", "42", {"text": "q"}, ["from B"], 1)]
    assert [t.content for t in (await db.conversation("telegram:1")).turns] == ["q", "from B"]
    # B's lease runs out in turn (B died after storing): C takes it at epoch 2, with B's replies.
    assert await db.lease_open(late + timedelta(seconds=59), lease_s=60) == []
    assert await db.lease_open(late + timedelta(seconds=61), lease_s=60) == [
        InboxItem("telegram", "42", {"text": "q"}, ["from B"], 2)
    ]
    assert await db.answer_inbox("telegram", "43", ["no such message"], None) is False
    await db.finish_inbox([("telegram", "42", late)])
    assert await db.renew_lease("telegram", "42", late, lease_s=60, epoch=2) is False  # done


async def test_a_take_over_marks_its_owner_so_a_taker_whose_reply_was_lost_finds_its_epoch(db: Database) -> None:
    assert await db.claim_inbox("telegram", "42", "telegram:1", {"text": "q"}, T0, lease_s=60)
    assert await db.lease_holder("telegram", "42") == Lease(0, None, T0 + timedelta(seconds=60))  # as claimed
    assert await db.lease_holder("telegram", "43") is None
    # Process P's sweep takes it over; say the commit's reply never reached P: the row knows.
    assert len(await db.lease_open(T0 + timedelta(seconds=61), lease_s=60, owner="p")) == 1
    assert await db.lease_holder("telegram", "42") == Lease(1, "p", T0 + timedelta(seconds=121))
    # And the open messages P's take-overs hold, for P to run without waiting for the lease.
    assert await db.claim_inbox("telegram", "44", "telegram:2", {"text": "r"}, T0 + timedelta(seconds=62), lease_s=120)
    assert await db.open_inbox(owner="p") == [InboxItem("telegram", "42", {"text": "q"}, None, 1)]
    assert [i.message_id for i in await db.open_inbox()] == ["42", "44"]
    assert await db.open_inbox(owner="q") == []
    assert await db.renew_lease("telegram", "42", T0 + timedelta(seconds=70), lease_s=60, epoch=1) is True
    assert await db.lease_holder("telegram", "42") == Lease(1, "p", T0 + timedelta(seconds=130))
    # Q takes it next: its mark replaces P's, with the epoch.
    [taken] = await db.lease_open(T0 + timedelta(seconds=131), lease_s=60, owner="q")
    assert taken.epoch == 2
    assert await db.lease_holder("telegram", "42") == Lease(2, "q", T0 + timedelta(seconds=191))
    assert await db.open_inbox(owner="p") == []
    assert await db.answer_inbox("telegram", "42", ["a"], None, epoch=2) is True
    assert await db.open_inbox(owner="q") == [InboxItem("telegram", "42", {"text": "q"}, ["a"], 2)]
    assert await db.lease_holder("telegram", "42") == Lease(2, "q", T0 + timedelta(seconds=191))  # answered, not done
    await db.finish_inbox([("telegram", "42", T0 + timedelta(seconds=140))])
    assert await db.lease_holder("telegram", "42") is None  # done: nobody's to hold
    assert await db.open_inbox(owner="q") == []


async def test_many_answers_and_the_done_marks_of_those_sent_are_stored_in_one_write(db: Database) -> None:
    # A journal's answers reach the database in one write: sent ones done at once, unsent ones
    # answered (to be re-sent), one stored before only marked done, one taken over refused.
    for mid in ("1", "2", "3", "4"):
        assert await db.claim_inbox("telegram", mid, f"telegram:{mid}", {"text": mid}, T0, lease_s=60)
    assert await db.answer_inbox("telegram", "3", ["three"], None) is True  # stored before the send
    assert len(await db.lease_open(T0 + timedelta(seconds=61), lease_s=60)) == 4  # all now at epoch 1
    done = T0 + timedelta(seconds=62)

    def exchange(user: str, reply: str) -> Exchange:
        return Exchange(user, (("user", "q", 1, 1), ("assistant", reply, 2, 1)), T0)

    answers = [
        Answer("telegram", "1", ["one", "and more"], exchange("telegram:1", "one"), 1, done),
        Answer("telegram", "2", ["two"], exchange("telegram:2", "two"), 1, None),
        Answer("telegram", "3", ["three"], None, 1, done),
        Answer("telegram", "4", ["four"], exchange("telegram:4", "four"), 0, done),  # epoch 0: not its own
        Answer("telegram", "5", ["five"], None, 0, done),  # no such message
    ]
    assert await db.store_answers(answers) == [True, True, True, False, False]
    assert sorted(await db.open_inbox(), key=lambda i: i.message_id) == [
        InboxItem("telegram", "2", {"text": "2"}, ["two"], 1), InboxItem("telegram", "4", {"text": "4"}, None, 1)
    ]  # fmt: skip
    for user, contents in (("telegram:1", ["q", "one"]), ("telegram:2", ["q", "two"]), ("telegram:4", [])):
        assert [t.content for t in (await db.conversation(user)).turns] == contents
    # Written again (its commit's reply was lost): nothing twice; message 2, sent since, is done now.
    again = [answers[0], Answer("telegram", "2", ["two"], exchange("telegram:2", "two"), 1, done)]
    assert await db.store_answers(again) == [True, True]
    assert await db.open_inbox() == [InboxItem("telegram", "4", {"text": "4"}, None, 1)]
    assert len((await db.conversation("telegram:1")).turns) == len((await db.conversation("telegram:2")).turns) == 2
    assert await db.store_answers([]) == []


async def test_claims_from_a_journal_land_in_one_write_each_once(db: Database) -> None:
    # Received on this host at T0, T0 + 1 s, T0 + 2 s; written to the database in the background at
    # T0 + 5 s: received when they came, leased from when they landed.
    now, lease = T0 + timedelta(seconds=5), 60
    claims = [Claim("telegram", str(i), f"u{i}", {"text": f"q{i}"}, T0 + timedelta(seconds=i)) for i in range(3)]
    assert await db.land_claims(claims, "host-a", now, lease) == [Landing.MINE] * 3
    assert await db.open_inbox() == [
        InboxItem("telegram", str(i), {"text": f"q{i}", "by": "host-a"}, None) for i in range(3)
    ]
    # Written again (its commit's reply was lost): nothing twice, and still this host's.
    assert await db.land_claims(claims, "host-a", now, lease) == [Landing.MINE] * 3
    assert len(await db.open_inbox()) == 3
    # Leased until now + lease, at epoch 0: not from when each was received.
    assert await db.lease_open(now + timedelta(seconds=lease - 1), lease) == []
    taken = await db.lease_open(now + timedelta(seconds=lease + 1), lease)
    assert taken == [InboxItem("telegram", str(i), {"text": f"q{i}", "by": "host-a"}, None, 1) for i in range(3)]
    assert await db.land_claims([], "host-a", now, lease) == []


async def test_a_claim_landing_after_another_claimants_says_how_far_that_one_got(db: Database) -> None:
    # Before the journal's write: 1 claimed by a webhook (no token), 2 answered, 3 answered and
    # sent, 4 done without a stored answer; 5 landed by host B; 6 is new.
    for mid in ("1", "2", "3", "4"):
        assert await db.claim_inbox("telegram", mid, f"telegram:{mid}", {"text": mid}, T0)
    assert await db.answer_inbox("telegram", "2", ["two"]) is True
    assert await db.store_answers([Answer("telegram", "3", ["three"], None, 0, T0)]) == [True]
    await db.finish_inbox([("telegram", "4", T0)])
    b = Claim("telegram", "5", "telegram:5", {"text": "5"}, T0)
    assert await db.land_claims([b], "host-b", T0, 60) == [Landing.MINE]
    claims = [Claim("telegram", mid, f"telegram:{mid}", {"text": "mine?"}, T0) for mid in "123456"]
    assert await db.land_claims(claims, "host-a", T0, 60) == [
        Landing.PENDING, Landing.ANSWERED, Landing.ANSWERED, Landing.ANSWERED, Landing.PENDING, Landing.MINE
    ]  # fmt: skip
    # The rows there before are untouched: their payload, claimant and answers are theirs.
    assert sorted(await db.open_inbox(), key=lambda i: i.message_id) == [
        InboxItem("telegram", "1", {"text": "1"}, None), InboxItem("telegram", "2", {"text": "2"}, ["two"]),
        InboxItem("telegram", "5", {"text": "5", "by": "host-b"}, None),
        InboxItem("telegram", "6", {"text": "mine?", "by": "host-a"}, None),
    ]  # fmt: skip
    # Its own claim, answered since, delivered to it again: a redelivery, not a retried write.
    assert await db.store_answers([Answer("telegram", "6", ["six"], None, 0, T0)]) == [True]
    assert await db.land_claims(claims[5:], "host-a", T0, 60) == [Landing.ANSWERED]


async def test_a_message_two_processes_may_each_think_theirs_is_given_to_one(db: Database) -> None:
    # 1 and 2 claimed from host A's journal; 3 claimed straight in the database (a webhook, no
    # journal); 4 from the journal and answered; 5 from the journal and taken over.
    claims = [Claim("telegram", mid, f"telegram:{mid}", {"text": mid}, T0) for mid in ("1", "2", "4")]
    assert await db.land_claims(claims, "host-a", T0, 60) == [Landing.MINE] * 3
    assert await db.claim_inbox("telegram", "3", "telegram:3", {"text": "3"}, T0)
    assert await db.answer_inbox("telegram", "4", ["four"]) is True
    late = Claim("telegram", "5", "telegram:5", {"text": "5"}, T0)
    assert await db.land_claims([late], "host-a", T0 - timedelta(seconds=120), 60) == [Landing.MINE]
    assert [i.message_id for i in await db.lease_open(T0, lease_s=60, owner="r")] == ["5"]
    # The first to ask gets it, a retry of its call too; the other process never does.
    assert await db.decide_inbox("telegram", "1", "p") is True
    assert await db.decide_inbox("telegram", "1", "q") is False
    assert await db.decide_inbox("telegram", "1", "p") is True
    assert await db.lease_holder("telegram", "1") == Lease(0, "p", T0 + timedelta(seconds=60))
    assert await db.open_inbox(owner="p") == []  # a decided claim is no take-over of p's
    assert await db.decide_inbox("telegram", "2", "q") is True
    # Not for a message claimed straight in the database (its claimant's), one answered, one
    # taken over (its taker's), or one that is not there.
    for mid in ("3", "4", "5", "6"):
        assert await db.decide_inbox("telegram", mid, "p") is False, mid
    # The winner's answer is stored as any other at epoch 0; then nobody wins it.
    assert await db.answer_inbox("telegram", "1", ["one"]) is True
    assert await db.decide_inbox("telegram", "1", "p") is False


@pytest.mark.parametrize("made_before", ["fencing", "owners"])
async def test_a_sqlite_file_from_before_the_fencing_or_the_owners_gets_its_columns(
    tmp_path: Path, made_before: str
) -> None:
    import sqlite3
    from importlib import resources

    schema = resources.files("budget.stores").joinpath("sqlite_schema.sql").read_text()
    old = schema.replace("    lease_owner text,\n", "")
    if made_before == "fencing":
        old = old.replace("    lease_epoch integer not null default 0,\n", "")
    assert "lease_owner" not in old and ("lease_epoch" in old) is (made_before == "owners")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.executescript(old)
        conn.execute(
            "insert into inbox (channel, message_id, user_key, payload, received_at)"
            " values ('telegram', '1', 'u', '{}', '2026-11-01T00:00:00+00:00')"
        )
    store = open_database(f"sqlite:///{tmp_path}/old.db")
    await store.migrate()
    await store.migrate()
    assert await store.lease_open(T0, lease_s=60, owner="p") == [InboxItem("telegram", "1", {}, None, 1)]
    assert await store.lease_holder("telegram", "1") == Lease(1, "p", T0 + timedelta(seconds=60))
    await store.aclose()


async def test_users_upsert(db: Database) -> None:
    await db.upsert_user("telegram:1", "telegram", "1", T0)
    await db.upsert_user("telegram:1", "telegram", "1", T0 + timedelta(days=1))


async def test_channel_fees_count_once_and_sum_exactly(db: Database) -> None:
    for _ in range(2):
        await db.record_fee("whatsapp", "whatsapp:+1", "in", "SM1", Decimal("0.005"), T0)
    await db.record_fee("whatsapp", "whatsapp:+1", "out", "SM1", Decimal("0.005"), T0)
    await db.record_fee("whatsapp", "whatsapp:+1", "out", "SM2", Decimal("0.0000001"), T0)
    assert await db.fees(T0, T0 + timedelta(seconds=1)) == Decimal("0.010000100")
    await db.upsert_user("whatsapp:+1", "whatsapp", "+1", T0)
    await db.set_user_active("whatsapp:+1", False)
    await db.ping()


async def test_leases_give_each_open_message_to_one_owner(db: Database) -> None:
    for i in range(4):
        assert await db.claim_inbox("telegram", str(i), "telegram:1", {"i": i}, T0, lease_s=60)
    await db.finish_inbox([("telegram", "3", T0)])
    assert await db.lease_open(T0 + timedelta(seconds=59), lease_s=60) == []  # all still leased
    await db.renew_lease("telegram", "0", T0 + timedelta(seconds=50), lease_s=60)  # its owner is alive
    taken = await db.lease_open(T0 + timedelta(seconds=61), lease_s=60)
    assert [t.message_id for t in taken] == ["1", "2"]
    assert await db.lease_open(T0 + timedelta(seconds=62), lease_s=60) == []  # taken: nobody else gets them
    later = await db.lease_open(T0 + timedelta(seconds=200), lease_s=60)
    assert [t.message_id for t in later] == ["0", "1", "2"]


async def test_two_sweeps_at_once_take_disjoint_messages(db: Database) -> None:
    import asyncio

    for i in range(40):
        await db.claim_inbox("telegram", f"s{i}", "telegram:1", {}, T0, lease_s=1)
    a, b = await asyncio.gather(*(db.lease_open(T0 + timedelta(seconds=5), lease_s=60, limit=25) for _ in range(2)))
    ids_a, ids_b = {t.message_id for t in a}, {t.message_id for t in b}
    assert not ids_a & ids_b
    assert len(ids_a | ids_b) == 40


async def test_quotas_are_set_audited_and_read_back_exactly(db: Database) -> None:
    from budget.records import Quota

    assert await db.get_quota("telegram:1") is None
    first = Quota("telegram:1", daily_usd=Decimal("0.5"), monthly_usd=None, daily_tokens=None, monthly_tokens=90_000)
    assert await db.set_quota(first, "telegram:99", T0) is None
    assert await db.get_quota("telegram:1") == Quota("telegram:1", Decimal("0.500000000"), None, None, 90_000)
    second = Quota("telegram:1", monthly_usd=Decimal("12.000000001"))
    old = await db.set_quota(second, "api", T0 + timedelta(seconds=1))
    assert old == Quota("telegram:1", Decimal("0.500000000"), None, None, 90_000)
    assert (await db.get_quota("telegram:1")) == Quota("telegram:1", None, Decimal("12.000000001"), None, None)
    entries = await db.audit_entries(T0 - timedelta(days=1))
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("api", "quota.set", "telegram:1"), ("telegram:99", "quota.set", "telegram:1")]  # fmt: skip
    assert Decimal(entries[0].details["after"]["monthly_usd"]) == Decimal("12.000000001")
    assert Decimal(entries[0].details["before"]["daily_usd"]) == Decimal("0.5")
    await db.audit("telegram:5", "command.refused", None, {"command": "/stats"}, T0 + timedelta(seconds=2))
    assert (await db.audit_entries(T0 - timedelta(days=1)))[0].details == {"command": "/stats"}


async def test_alerts_fire_once_per_rule_subject_period_and_level(db: Database) -> None:
    from budget.records import StoredAlert

    a = StoredAlert("daily_cost", "bot", "2026-11-10", "warning", "Daily cost $5.01 is over $5.00", T0)
    assert await db.add_alert(a) is True
    assert await db.add_alert(a) is False
    assert await db.add_alert(StoredAlert("daily_cost", "bot", "2026-11-10", "critical", "x", T0)) is True
    assert await db.add_alert(StoredAlert("daily_cost", "bot", "2026-11-11", "warning", "y", T0 + timedelta(days=1)))
    got = await db.alerts(T0 - timedelta(days=1))
    assert [(x.period_key, x.level) for x in got] == [
        ("2026-11-11", "warning"), ("2026-11-10", "critical"), ("2026-11-10", "warning")]  # fmt: skip
    assert got[-1].message == "Daily cost $5.01 is over $5.00"


async def test_known_users_and_retention(db: Database) -> None:
    assert not await db.known_user("console:a")
    await db.record([row("old", "1", at=T0 - timedelta(days=100)), row("new", "2")])
    await db.add_turns("console:a", [("user", "old", 1, 3)], T0 - timedelta(days=100))
    await db.add_turns("console:a", [("user", "new", 1, 3)], T0)
    assert await db.known_user("console:a")
    assert await db.purge_before(T0 - timedelta(days=90)) == (1, 1)
    assert [r.request_id for r in await db.requests(T0 - timedelta(days=200), T0 + timedelta(days=1))] == ["new"]


async def test_resource_usage_is_stored_once_per_window_and_summed_exactly(db: Database) -> None:
    big = 2**40 * 3600  # a TiB held for an hour: past 32 bits, inside 64
    await db.record_resources("h:1", T0, T0 + timedelta(minutes=1), 1_234_567, big)
    await db.record_resources("h:1", T0, T0 + timedelta(minutes=1), 1_234_567, big)  # retried: once
    await db.record_resources("h:2", T0, T0 + timedelta(minutes=1), 1, 2)
    await db.record_resources("h:1", T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), 3, 4)
    assert await db.resources(T0, T0 + timedelta(minutes=2)) == ResourceUse(1_234_568, big + 2)
    assert await db.resources(T0, T0 + timedelta(minutes=3)) == ResourceUse(1_234_571, big + 6)
    assert await db.resources(T0 + timedelta(hours=1), T0 + timedelta(hours=2)) == ResourceUse()
    await db.purge_before(T0 + timedelta(minutes=1, seconds=30))
    assert await db.resources(T0, T0 + timedelta(minutes=3)) == ResourceUse(3, 4)


async def test_turns_come_back_with_rising_ids_in_the_order_given(db: Database) -> None:
    assert await db.add_turns("u", [], T0) == []
    turns = await db.add_turns("u", [("user", "q", 1, 1), ("assistant", "a", 2, 3), ("user", "q2", 4, 5)], T0)
    assert [(t.role, t.content, t.tokens, t.size) for t in turns] == [
        ("user", "q", 1, 1), ("assistant", "a", 2, 3), ("user", "q2", 4, 5),
    ]  # fmt: skip
    assert turns[0].id < turns[1].id < turns[2].id
    assert (await db.conversation("u")).turns == turns


# ---- Postgres: round trips per call ----


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[tuple[PostgresDatabase, roundtrips.Tally]]:
    """A Postgres store on a direct connection (one pooled connection), its exchanges counted."""
    uninstall = roundtrips.install()  # before the pool exists: it wraps each new connection
    schema = f"pb_{uuid.uuid4().hex[:10]}"
    store = PostgresDatabase(f"{pg_dsn}?schema={schema}", max_size=1)
    try:
        await store.migrate()
        roundtrips.TALLY.events.clear()
        roundtrips.TALLY.active = True
        yield store, roundtrips.TALLY
    finally:
        roundtrips.TALLY.active = False
        roundtrips.TALLY.events.clear()
        uninstall()
        await store.aclose()
        drop_schema(pg_dsn, schema)


async def test_each_hot_path_call_is_one_round_trip_on_a_direct_connection(
    pg: tuple[PostgresDatabase, roundtrips.Tally],
) -> None:
    db, tally = pg
    assert db.statement_cache

    async def message(i: int) -> None:
        conv = await db.claim_inbox_reading("telegram", str(i), "u", {"text": "hi"}, T0)
        assert conv is not None
        await db.fold("u", [t.id for t in conv.turns[:2]], (f"s{i}", 1, 1), T0)
        exchange = Exchange("u", (("user", f"q{i}", 1, 1), ("assistant", f"a{i}", 1, 1)), T0)
        await db.answer_inbox("telegram", str(i), [f"a{i}"], exchange)
        await db.finish_inbox([("telegram", str(i), T0)])

    await message(0)  # each statement is prepared once per connection, then cached
    tally.begin(1)
    await message(1)
    counted = tally.end()
    # One bind-and-execute each: no prepare (the statement cache), no begin or commit (one
    # statement each), no reset query when the connection goes back to the pool. The claim reads
    # the conversation, the answer stores the exchange: three exchanges a message, four on a fold.
    assert sorted(label for _, label in counted.labels.elements()) == [
        "bind_execute: update inbox", "bind_execute: with claimed", "bind_execute: with folded",
        "bind_execute: with stored",
    ]  # fmt: skip
    conv = await db.conversation("u")
    assert conv.summary is not None and conv.summary.content == "s1"
    assert [t.content for t in conv.turns] == ["q1", "a1"]  # q0, a0 folded
    assert await db.claim_inbox_reading("telegram", "1", "u", {}, T0) is None


async def test_a_batch_of_claims_lands_in_one_round_trip(pg: tuple[PostgresDatabase, roundtrips.Tally]) -> None:
    db, tally = pg
    claims = [Claim("telegram", str(i), "u", {"text": f"q{i}"}, T0) for i in range(50)]
    assert await db.land_claims(claims[:1], "host-a", T0, 60) == [Landing.MINE]  # prepared once, then cached
    tally.begin(1)
    assert await db.land_claims(claims, "host-a", T0, 60) == [Landing.MINE] * 50
    counted = tally.end()
    assert list(counted.labels.elements()) == [("postgres", "bind_execute: with claims")]
    tally.begin(2)
    assert await db.land_claims([], "host-a", T0, 60) == []
    assert list(tally.end().labels.elements()) == []


async def test_turns_are_stored_all_or_none_and_the_connection_stays_usable(
    pg: tuple[PostgresDatabase, roundtrips.Tally],
) -> None:
    db, _ = pg
    with pytest.raises(asyncpg.CheckViolationError):
        await db.add_turns("u", [("user", "kept?", 1, 1), ("nobody", "refused", 1, 1)], T0)
    assert (await db.conversation("u")).turns == []
    # The pool's one connection, back from a failed statement with no reset query, works on.
    assert [t.content for t in await db.add_turns("u", [("user", "q", 1, 1)], T0)] == ["q"]


async def test_a_failed_transaction_is_rolled_back_before_the_connection_is_reused(
    pg: tuple[PostgresDatabase, roundtrips.Tally],
) -> None:
    db, _ = pg
    pool = await db._conn_pool()
    async with pool.acquire() as conn:
        await conn.execute("begin")  # left open, as a bug would leave it
        await conn.execute(f'insert into "{db.schema}".users (user_key, channel, platform_id) values ($1, $2, $3)',
                           "u", "console", "u")  # fmt: skip
    # asyncpg still rolls back on release, even with the reset query skipped.
    assert await db.known_user("u") is False
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()


@pytest.mark.parametrize(
    ("url", "cached"),
    [
        ("postgresql://u@127.0.0.1:5432/db", True),
        ("postgresql://u@127.0.0.1/db", True),
        ("postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres", True),  # session mode
        ("postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres", False),  # transaction
        ("postgresql://u@bouncer:6432/db?schema=s", False),
        ("postgresql://u@h1:5432,h2:6543/db", False),
        ("postgresql://u@[::1]:6543/db", False),
        ("postgresql://u@h/db?port=6432", False),
        ("postgresql://u@h:7000/db?statement_cache=off", False),
        ("postgresql://u@h:6543/db?statement_cache=on", True),
    ],
)
def test_the_statement_cache_is_off_behind_a_transaction_mode_pooler(url: str, cached: bool) -> None:
    assert uses_statement_cache(url) is cached
    assert PostgresDatabase(url).statement_cache is cached


def test_the_statement_cache_switch_is_checked_and_never_reaches_the_server() -> None:
    with pytest.raises(ValueError, match="on or off"):
        uses_statement_cache("postgresql://u@h/db?statement_cache=maybe")
    # Taken out of the URL for asyncpg (it would send it as a server setting), by the hot store too.
    assert _split_url("postgresql://u@h/db?statement_cache=off&schema=s&sslmode=require") == (
        "postgresql://u@h/db?sslmode=require", "s",
    )  # fmt: skip


# ---- Postgres: one that hangs ----


def test_the_timeouts_come_from_the_url_are_checked_and_never_reach_the_server() -> None:
    db = PostgresDatabase("postgresql://u@h/db")
    assert (db.connect_timeout, db.command_timeout) == (10.0, 15.0)  # asyncpg's own: 60 s and none
    db = PostgresDatabase("postgresql://u@h/db?command_timeout=2.5&connect_timeout=4&schema=s")
    assert (db.connect_timeout, db.command_timeout) == (4.0, 2.5)
    assert _split_url("postgresql://u@h/db?command_timeout=2.5&connect_timeout=4&sslmode=require") == (
        "postgresql://u@h/db?sslmode=require", None,
    )  # fmt: skip
    for bad in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(ValueError, match="command_timeout must be a number of seconds above 0"):
            PostgresDatabase(f"postgresql://u@h/db?command_timeout={bad}")
    with pytest.raises(ValueError, match="connect_timeout must be"):
        PostgresDatabase("postgresql://u@h/db?connect_timeout=0")
    # The budget's Postgres store takes them out of the URL too, and keeps its own shorter ones.
    hot = PostgresHotStore("postgresql://u@h/db?command_timeout=60&connect_timeout=30")
    assert (hot._pool.connect_timeout, hot._pool.command_timeout) == (5.0, 10.0)
    assert "timeout" not in hot._dsn


@pytest.fixture
async def frozen_pg(pg_dsn: str) -> AsyncIterator[tuple[Partition, str]]:
    """A proxy in front of the shared Postgres that can freeze (nothing through, connections kept),
    and the URL of a fresh schema behind it, with command and connect timeouts of 0.5 s."""
    partition = Partition(urlsplit(pg_dsn).port or 5432)
    await partition.heal()
    schema = f"pb_{uuid.uuid4().hex[:10]}"
    url = urlunsplit(urlsplit(pg_dsn)._replace(netloc=f"postgres@127.0.0.1:{partition.port}"))
    try:
        yield partition, f"{url}?schema={schema}&command_timeout=0.5&connect_timeout=0.5"
    finally:
        partition.thaw()
        await partition.cut()
        drop_schema(pg_dsn, schema)


async def test_a_postgres_that_hangs_holds_a_call_for_the_command_timeout_and_a_retried_write_counts_once(
    frozen_pg: tuple[Partition, str],
) -> None:
    partition, url = frozen_pg
    db = PostgresDatabase(url)
    try:
        await db.migrate()  # through the proxy, as any client
        await db.record([row("a", "0.000001")])
        partition.freeze()
        # The first call's statement times out, and so does asyncpg's cancel of it: 2 × 0.5 s. The
        # connection goes, and the next call's connect times out (0.5 s). asyncpg's own defaults
        # would have held the first call for ever.
        calls = [(db.spend(None, T0, T0 + timedelta(days=1)), 1.0), (db.record([row("b", "0.000002")]), 0.5)]
        for call, least in calls:
            started = time.perf_counter()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(5):  # else a regression would hang the suite
                    await call
            assert least <= time.perf_counter() - started < least + 1.0
        partition.thaw()
        # The write that timed out may still land (its bytes were on their way): the outbox retries
        # it, and the row counts once.
        await db.record([row("b", "0.000002")])
        assert await db.spend(None, T0, T0 + timedelta(days=1)) == Spend(3_000, 300)
    finally:
        await db.aclose()


async def test_behind_a_hung_connection_a_call_waits_for_the_pool_no_longer_than_the_command_timeout(
    frozen_pg: tuple[Partition, str],
) -> None:
    partition, url = frozen_pg
    db = PostgresDatabase(url, max_size=1)
    try:
        await db.migrate()
        partition.freeze()
        held = asyncio.create_task(db.spend(None, T0, T0 + timedelta(days=1)))  # the only connection, for 1 s
        await asyncio.sleep(0.05)
        # A read, which starts no lease: it gives up on the pool after 0.5 s. asyncpg's pool would
        # have waited for the held connection (1 s), then for a new one's connect (0.5 s more).
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await db.requests(T0, T0 + timedelta(days=1))
        assert 0.45 <= time.perf_counter() - started < 0.9
        with pytest.raises(TimeoutError):
            await held
    finally:
        partition.thaw()
        await db.aclose()


async def test_a_postgres_that_never_answers_a_connect_fails_it_after_the_connect_timeout() -> None:
    async with Tarpit() as tarpit:
        db = PostgresDatabase(f"postgresql://u@127.0.0.1:{tarpit.port}/db?connect_timeout=0.5")
        for _ in range(2):  # no pool is kept from a failed connect: the next call tries again
            started = time.perf_counter()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(5):  # asyncpg's own connect timeout is 60 s
                    await db.spend(None, T0, T0 + timedelta(days=1))
            assert 0.5 <= time.perf_counter() - started < 2.0
        assert tarpit.accepted == 2
        await db.aclose()


async def test_a_migration_waits_for_another_process_migrating_longer_than_the_command_timeout(
    pg_dsn: str,
) -> None:
    schema = f"pb_{uuid.uuid4().hex[:10]}"
    db = PostgresDatabase(f"{pg_dsn}?schema={schema}&command_timeout=0.2")
    other = await asyncpg.connect(pg_dsn)
    try:
        async with other.transaction():  # another process's migration, 0.6 s long
            await other.execute("select pg_advisory_xact_lock($1)", 0x70656E6E79)
            waiting = asyncio.create_task(db.migrate())
            await asyncio.sleep(0.6)
            assert not waiting.done()
        await waiting
        assert await db.spend(None, T0, T0 + timedelta(days=1)) == Spend(0, 0)
    finally:
        await other.close()
        await db.aclose()
        drop_schema(pg_dsn, schema)
