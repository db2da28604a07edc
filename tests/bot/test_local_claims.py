"""Messages claimed on their host (bot.dispatch with a journal and Redis): the webhook's claim is a
local commit, the database gets it in the background, and Redis's once-key, riding in the rate
limit's round trip, tells a redelivery to another process. No database write before the reply,
and still one reply a message, nothing lost across a crash, and the database's word when Redis
is out of reach. Real Postgres and Redis throughout."""

import asyncio
import math
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.conversations import Conversations, version_key
from bot.dispatch import Dispatcher, seen_key
from bot.turn import Inbound
from budget.journal import Journal
from budget.records import Conversation
from budget.stores.failover import FailoverHotStore
from tests.bot.test_dispatch import Recording, Spy
from tests.budget.test_schema import drop as drop_schema
from tests.conftest import Bot

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def pg_redis(pg_dsn: str) -> AsyncIterator[dict[str, str]]:
    """Postgres and Redis, shared by the dispatchers of a test as by processes."""
    from tests.budget.test_redis_store import redis_namespace

    schema = f"pb_{uuid.uuid4().hex[:10]}"
    async with redis_namespace() as redis_url:
        yield {"database_url": f"{pg_dsn}?schema={schema}", "redis_url": redis_url}
    await asyncio.to_thread(drop_schema, pg_dsn, schema)


async def paid(bot: Bot) -> list[str]:
    """The messages of the ledger's answer rows, in order (one per model call)."""
    await bot.deps.recorder.flush()
    now = bot.clock.now
    return [r.message_id or "" for r in await bot.deps.db.requests(now - timedelta(days=1), now + timedelta(days=1))]


async def test_a_message_claimed_on_its_host_is_answered_and_sent_before_the_database_has_it(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    db = bot.deps.db
    spy = Spy(db, "claim_inbox_reading", "claim_inbox", "conversation", "land_claims", "store_answers", "answer_inbox")
    journal = Journal(tmp_path / "j.db")
    at_send: list[tuple[list[str], list[str], list[str]]] = []

    class Checking(Recording):
        async def send(self, inbound: Inbound, parts: Sequence[str]) -> None:
            at_send.append((
                [i.message_id for i in await db.open_inbox()], [c.message_id for c in journal.claims()],
                [a.message_id for a in journal.kept(bot.clock.now)],
            ))  # fmt: skip
            await super().send(inbound, parts)

    dispatcher = Dispatcher(bot.pipeline, {"console": Checking()}, journal)
    spy.fail["land_claims"] = 2  # the claims' background write fails twice, then lands
    inbound = Inbound("console", "a", "a", "m-1", "what is the capital of France?")
    assert await dispatcher.claim(inbound)
    assert [c.message_id for c in journal.claims()] == ["m-1"]  # on the host, before the acknowledgement
    await dispatcher.run(inbound)
    # At the send, the database had neither the message nor its answer (the claim's write had failed
    # and was retried in the background); the journal had both.
    assert at_send == [([], ["m-1"], ["m-1"])]
    await dispatcher.marks_written()
    assert spy.fail["land_claims"] == 0 and "claim_inbox_reading" not in spy.calls and "answer_inbox" not in spy.calls
    assert spy.calls[-2:] == ["land_claims", "store_answers"]  # the claim, then the answer and its done mark
    assert journal.claims() == [] and journal.kept(bot.clock.now) == []
    assert await db.open_inbox() == []  # claimed, answered and marked done
    assert [t.role for t in (await db.conversation("console:a")).turns] == ["user", "assistant"]
    assert await paid(bot) == ["m-1"]
    # A redelivery to the same process is dropped at its webhook while the message is kept, worked on
    # or done lately here (and by Redis's once-key in another process): no second reply, no call.
    assert not await dispatcher.claim(inbound)
    await dispatcher.run(inbound)  # a run the sweep started as the mark landed: it does nothing
    await dispatcher.marks_written()
    assert len(dispatcher.repliers["console"].sent) == 1  # type: ignore[attr-defined]
    assert await paid(bot) == ["m-1"]


async def test_an_update_delivered_to_two_processes_at_once_is_answered_by_one(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    a = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "a.db"))
    b = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "b.db"))
    messages = [Inbound("console", f"u{i}", f"u{i}", f"m-{i}", f"question number {i}") for i in range(8)]
    for inbound in messages:  # each on both hosts: both journals accept it
        assert await a.claim(inbound) and await b.claim(inbound)
    await asyncio.gather(*(d.run(m) for m in messages for d in (a, b)))
    assert await a.drain(5) == 0 and await b.drain(5) == 0
    sent = [m for d in (a, b) for m, _ in d.repliers["console"].sent]  # type: ignore[attr-defined]
    assert sorted(sent) == sorted(m.message_id for m in messages)  # one reply each
    assert sorted(await paid(bot)) == sorted(m.message_id for m in messages)  # one call each
    assert await bot.deps.db.open_inbox() == []
    for inbound in messages:
        assert len((await bot.deps.db.conversation(inbound.user_key)).turns) == 2


async def test_a_redelivery_redis_forgot_is_dropped_by_the_databases_word_before_it_is_paid(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    a = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "a.db"))
    b = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "b.db"))
    inbound = Inbound("console", "u", "u", "m-1", "a question")
    assert await a.claim(inbound)
    await a.run(inbound)
    await a.marks_written()
    async with aioredis.Redis.from_url(REDIS_URL) as raw:  # Redis lost the once-key (a restart, say)
        prefix = pg_redis["redis_url"].split("prefix=")[1]
        assert await raw.delete(f"{prefix}:{seen_key('console', 'm-1')}") == 1
    assert await b.claim(inbound)  # the platform sent it again, to another process
    await b.marks_written()  # its claim landed: the database had it answered
    await b.run(inbound)
    assert b.repliers["console"].sent == []  # type: ignore[attr-defined]
    assert await paid(bot) == ["m-1"]
    assert await bot.deps.db.open_inbox() == []


async def test_with_redis_out_of_reach_the_database_tells_a_redelivery(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    # Redis and the hot store's Postgres fallback both failing, the database up: each run waits for
    # its claim's write and goes on only if the database gave it the message. (The outage is the hot
    # store's methods failing: the fallback lives in the shared Postgres, which no test may stop.)
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    hot = bot.deps.hot

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("hot store down")

    a = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "a.db"))
    b = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "b.db"))
    hot.hit_and_get = hot.set_once = hot.once = down  # type: ignore[method-assign]
    first, second = Inbound("console", "u", "u", "m-1", "a question"), Inbound("console", "u", "u", "m-2", "", "photo")
    for inbound in (first, second):
        assert await a.claim(inbound)
    await a.marks_written()
    for inbound in (first, second):  # delivered again, to B, after A's claims landed
        assert await b.claim(inbound)
    await asyncio.gather(*(d.run(m) for m in (first, second) for d in (a, b)))
    assert await a.drain(5) == 0 and await b.drain(5) == 0
    assert sorted(m for m, _ in a.repliers["console"].sent) == ["m-1", "m-2"]  # type: ignore[attr-defined]
    assert b.repliers["console"].sent == []  # type: ignore[attr-defined]
    assert await paid(bot) == ["m-1"]
    assert await bot.deps.db.open_inbox() == []


async def test_claims_a_crash_left_in_the_journal_are_stored_and_answered_once(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    # Acknowledged, claimed on the host, and the process died before the database had the claims
    # (their write kept failing): at the restart they are written first, and this process's sweep
    # takes them over at once and answers them.
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    spy = Spy(bot.deps.db, "land_claims", "claim_inbox_reading")
    path = tmp_path / "j.db"
    crashed = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(path))
    spy.fail["land_claims"] = 1_000
    messages = [Inbound("console", "u", "u", f"m-{i}", f"question {i}") for i in range(2)]
    assert await crashed.claim(messages[0])
    await asyncio.sleep(0.02)  # the write failed: the next claim goes to the database, synchronously
    assert await crashed.claim(messages[1])
    assert spy.calls == ["land_claims", "claim_inbox_reading"]
    for task in list(crashed._tasks):  # the crash, before any run
        task.cancel()
    await asyncio.sleep(0)
    assert [c.message_id for c in Journal(path).claims()] == ["m-0"]
    spy.fail["land_claims"] = 0
    replier = Recording()
    restarted = Dispatcher(bot.pipeline, {"console": replier}, Journal(path))
    assert await restarted.resume() == 1  # m-0, written with its lease run out; m-1's still runs
    assert await restarted.drain(5) == 0
    assert [m for m, _ in replier.sent] == ["m-0"]
    assert Journal(path).claims() == []
    bot.clock.advance(seconds=61)
    assert await restarted.resume() == 1  # m-1, in the database since its webhook
    assert await restarted.drain(5) == 0
    assert [m for m, _ in replier.sent] == ["m-0", "m-1"]
    assert sorted(await paid(bot)) == ["m-0", "m-1"]
    assert await bot.deps.db.open_inbox() == []


async def inputs(*bots: Bot) -> dict[str, int]:
    """The input tokens of the ledger's rows, by message: how much history each prompt carried."""
    for bot in bots:
        await bot.deps.recorder.flush()
    now = bots[0].clock.now
    rows = await bots[0].deps.db.requests(now - timedelta(days=1), now + timedelta(days=1))
    return {r.message_id or "": r.usage.input_tokens for r in rows}


async def handled(dispatcher: Dispatcher, inbound: Inbound) -> None:
    assert await dispatcher.claim(inbound)
    await dispatcher.run(inbound)
    await dispatcher.marks_written()


async def test_a_users_next_messages_run_on_the_process_copy_of_the_conversation(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    # The first message reads the conversation (the copy is new); the next ones run on the copy,
    # which has each exchange as soon as it is journaled, checked by the version Redis holds.
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    spy = Spy(bot.deps.db, "conversation", "claim_inbox_reading", "answer_inbox")
    dispatcher = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "j.db"))
    texts = ["my name is Ada and I like tea", "what do I like?", "and my name?"]
    for i, text in enumerate(texts):
        await handled(dispatcher, Inbound("console", "a", "a", f"m-{i}", text))
    assert spy.calls == ["conversation"]  # one read, for the first message
    sizes = await inputs(bot)
    assert sizes["m-0"] < sizes["m-1"] < sizes["m-2"]  # each prompt carried the exchanges before it
    turns = (await bot.deps.db.conversation("console:a")).turns
    assert [t.content for t in turns if t.role == "user"] == texts


async def test_a_change_another_process_made_is_seen_by_the_version_and_read_again(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    spy = Spy(bot.deps.db, "conversation")
    a = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "a.db"))
    b_bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob-b.db")  # another process: its own copies
    b_spy = Spy(b_bot.deps.db, "conversation")
    b = Dispatcher(b_bot.pipeline, {"console": Recording()}, Journal(tmp_path / "b.db"))
    await handled(a, Inbound("console", "u", "u", "m-1", "my name is Ada"))
    await handled(b, Inbound("console", "u", "u", "m-2", "I live in Paris"))
    await handled(a, Inbound("console", "u", "u", "m-3", "where do I live?"))  # A's copy lacks m-2: read again
    await handled(a, Inbound("console", "u", "u", "m-4", "and my name?"))  # the copy read is good again
    assert spy.calls == ["conversation", "conversation"] and b_spy.calls == ["conversation"]
    sizes = await inputs(bot, b_bot)
    # Each with every exchange before it: one more question and answer each time, tens of tokens
    # (m-3's prompt, built on the conversation read again, not on the copy it began with).
    assert all(sizes[f"m-{i + 1}"] - sizes[f"m-{i}"] > 50 for i in (1, 2, 3)), sizes
    # A reset on B: A's copy is not used again (its version is gone), the history is empty.
    await handled(b, Inbound("console", "u", "u", "m-5", "/reset"))
    await handled(a, Inbound("console", "u", "u", "m-6", "my name is Ada"))
    assert spy.calls == ["conversation"] * 3
    # m-1's answer, cached (it was made with no history), serves m-6: only a conversation with no
    # history is served from the cache for a message that is not self-contained.
    assert (await inputs(bot, b_bot))["m-6"] == 0


async def test_a_change_another_process_makes_while_this_one_writes_its_own_drops_this_ones_copy(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    # A's exchange is on its way to the database when B changes the conversation and sets its
    # version. A's new version then replaces B's, not the one A's copy had: A's copy lacks B's
    # exchange, so it is dropped, and A's next message reads the conversation again.
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    b_bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob-b.db")
    a = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "a.db"))
    b = Dispatcher(b_bot.pipeline, {"console": Recording()}, Journal(tmp_path / "b.db"))
    await handled(a, Inbound("console", "u", "u", "m-1", "my name is Ada"))
    gate, store = asyncio.Event(), bot.deps.db.store_answers

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await store(*args, **kwargs)

    bot.deps.db.store_answers = held
    spy = Spy(bot.deps.db, "conversation")
    m3 = Inbound("console", "u", "u", "m-3", "I live in Paris")
    assert await a.claim(m3)
    await a.run(m3)  # sent; its exchange waits at the gate
    await handled(b, Inbound("console", "u", "u", "m-4", "I work as an engineer"))
    gate.set()
    await a.marks_written()
    await handled(a, Inbound("console", "u", "u", "m-5", "what is my job?"))
    assert spy.calls == ["conversation"]  # the copy was dropped: read again
    sizes = await inputs(bot, b_bot)
    assert sizes["m-5"] > sizes["m-4"] > sizes["m-1"] and sizes["m-5"] > sizes["m-3"]


async def settled(dispatcher: Dispatcher) -> None:
    """Every task of the dispatcher done: writes, and folds after replies."""
    while dispatcher._tasks:
        await asyncio.wait(set(dispatcher._tasks))


async def test_a_fold_on_the_copy_finds_its_turns_in_the_database_and_the_copy_follows_it(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    # The copy's turns came from this process (the conversation was empty when first read): they
    # have no database ids. The fold after the 11th reply reads them back for their ids, folds the
    # oldest 10, and the copy takes the summary: the 12th message runs on it, reading nothing.
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    db = bot.deps.db
    spy = Spy(db, "conversation", "fold")
    dispatcher = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "j.db"))
    for i in range(12):
        await handled(dispatcher, Inbound("console", "a", "a", f"m-{i}", f"tell me fact number {i} about the sea"))
        await settled(dispatcher)
    assert spy.calls == ["conversation", "conversation", "fold"]  # the first read; the fold's ids, and the fold
    conversation = await db.conversation("console:a")
    assert conversation.summary is not None and len(conversation.turns) == 14  # 10 kept, 2 exchanges since
    copy = bot.deps.conversations.get("console:a")  # type: ignore[union-attr]
    assert copy is not None and copy.conversation.summary == conversation.summary
    assert [(t.role, t.content) for t in copy.conversation.turns] == [(t.role, t.content) for t in conversation.turns]


async def test_a_fold_after_the_reply_sets_a_new_version(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    # Other processes' copies must not keep the turns folded away: the fold, in the background after
    # the reply, is followed by a new version of its own.
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db")
    dispatcher = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "j.db"))
    gate, fold = asyncio.Event(), bot.deps.db.fold

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await fold(*args, **kwargs)

    bot.deps.db.fold = held
    key = f"{pg_redis['redis_url'].split('prefix=')[1]}:{version_key('console:a')}"
    async with aioredis.Redis.from_url(REDIS_URL) as raw:
        for i in range(11):  # the 11th reply puts off a fold of the oldest 10 turns
            await handled(dispatcher, Inbound("console", "a", "a", f"m-{i}", f"tell me fact number {i} about the sea"))
        before = await raw.get(key)
        gate.set()
        await settled(dispatcher)
        assert before is not None and await raw.get(key) not in (None, before)
    assert (await bot.deps.db.conversation("console:a")).summary is not None


async def test_with_local_claims_off_the_claim_is_the_databases_and_reads_the_conversation(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db", inbox_local_claims=False)
    spy = Spy(bot.deps.db, "claim_inbox_reading", "land_claims", "conversation")
    journal = Journal(tmp_path / "j.db")
    dispatcher = Dispatcher(bot.pipeline, {"console": Recording()}, journal)
    for i in range(2):
        inbound = Inbound("console", "a", "a", f"m-{i}", f"question {i}")
        assert await dispatcher.claim(inbound)
        assert journal.claims() == []
        await dispatcher.run(inbound)
        await dispatcher.marks_written()
    assert spy.calls == ["claim_inbox_reading"] * 2
    assert await bot.deps.db.open_inbox() == []


def test_two_runs_that_found_no_copy_keep_none_of_theirs() -> None:
    # Two messages of a user at once, each read the conversation: the second to come back cannot
    # tell whether the first's copy has an exchange it lacks, so neither copy is kept.
    copies = Conversations()
    assert copies.put_new("u", 7, Conversation(None, [])) is not None
    assert copies.put_new("u", 7, Conversation(None, [])) is None
    assert copies.get("u") is None


async def test_a_redelivery_the_database_names_during_the_run_is_not_sent(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    # Redis forgot the once-key and B's claim lands only while B's model call runs: the answer is
    # paid (the ledger has both calls) but not stored or sent; the first answer stands.
    bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob.db", simulated_latency_ms=200)
    b_bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob-b.db", simulated_latency_ms=200)
    a = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "a.db"))
    b = Dispatcher(b_bot.pipeline, {"console": Recording()}, Journal(tmp_path / "b.db"))
    inbound = Inbound("console", "u", "u", "m-1", "a question")
    await handled(a, inbound)
    async with aioredis.Redis.from_url(REDIS_URL) as raw:
        assert await raw.delete(f"{pg_redis['redis_url'].split('prefix=')[1]}:{seen_key('console', 'm-1')}") == 1
    gate, land = asyncio.Event(), b_bot.deps.db.land_claims

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await land(*args, **kwargs)

    b_bot.deps.db.land_claims = held
    assert await b.claim(inbound)
    run = asyncio.create_task(b.run(inbound))
    await asyncio.sleep(0.1)  # B's model call is under way
    gate.set()
    await run
    await settled(b)
    assert b.repliers["console"].sent == []  # type: ignore[attr-defined]
    assert len(a.repliers["console"].sent) == 1  # type: ignore[attr-defined]
    await b_bot.deps.recorder.flush()  # B's row goes through B's own outbox
    assert sorted(await paid(bot)) == ["m-1", "m-1"]
    assert len((await bot.deps.db.conversation("console:u")).turns) == 2


def dead_redis_url(redis_url: str) -> str:
    """``redis_url`` with a port nothing listens on: a process cut off from Redis (its hot store
    fails over to Postgres), while the others reach it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return redis_url.replace("127.0.0.1:6379", f"127.0.0.1:{port}")


async def two_sides(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path, *, watching: bool = False, **settings: Any
) -> tuple[Bot, Bot]:
    """Two processes: A reaches Redis; B does not (its hot store runs on the Postgres fallback), so
    the once-keys A sets in Redis are never seen by B. Unless ``watching``, A never reads B's word
    that it cannot reach Redis (rule k in budget/stores/failover.py, once a second): these tests
    hold the window before A moves its budget checks to Postgres too, for as long as they take."""
    a_bot: Bot = await make_bot(**pg_redis, outbox_path=tmp_path / "ob-a.db", **settings)
    hot = a_bot.deps.hot
    assert isinstance(hot, FailoverHotStore)
    if not watching:
        hot._watch_at = math.inf
    await hot.get_counters(["pb:{u:v}:probe"])  # a process starts as after an outage: on Redis before B says a word
    assert hot.using == 0
    b_bot: Bot = await make_bot(
        database_url=pg_redis["database_url"], redis_url=dead_redis_url(pg_redis["redis_url"]),
        outbox_path=tmp_path / "ob-b.db", **settings,
    )  # fmt: skip
    return a_bot, b_bot


async def sent_by(*dispatchers: Dispatcher) -> list[list[str]]:
    for d in dispatchers:
        assert await d.drain(5) == 0
    return [sorted(m for m, _ in d.repliers["console"].sent) for d in dispatchers]  # type: ignore[attr-defined]


async def test_a_process_on_redis_counts_on_postgres_too_once_a_process_cut_off_from_redis_says_so(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    # Rule (k), through the bots as built: B's first message moves it to Postgres, where it says it
    # cannot reach Redis; A, on Redis, reads that within a second and moves its budget checks there
    # too. From then on both go by the database for a redelivery (neither checks a once-key).
    a_bot, b_bot = await two_sides(make_bot, pg_redis, tmp_path, watching=True)
    a = Dispatcher(a_bot.pipeline, {"console": Recording()}, Journal(tmp_path / "a.db"))
    b = Dispatcher(b_bot.pipeline, {"console": Recording()}, Journal(tmp_path / "b.db"))
    hot, cut_off = a_bot.deps.hot, b_bot.deps.hot
    assert isinstance(hot, FailoverHotStore) and isinstance(cut_off, FailoverHotStore)
    first = Inbound("console", "u", "u", "m-1", "a question")
    assert await b.claim(first)
    await b.run(first)
    assert cut_off.using == 1
    async with asyncio.timeout(5):
        while hot.using == 0:  # A's calls look for the word, at most once a second
            await hot.get_counters(["pb:{u:v}:probe"])
            await asyncio.sleep(0.05)
    again = Inbound("console", "v", "v", "m-2", "another question")
    for d in (a, b):
        assert await d.claim(again)
        await d.marks_written()
    await asyncio.gather(a.run(again), b.run(again))
    answered = await sent_by(a, b)
    assert answered == [["m-2"], ["m-1"]]  # A's claim was written first: A's, by the database
    await b_bot.deps.recorder.flush()
    await a_bot.deps.recorder.flush()
    assert sorted(await paid(a_bot)) == ["m-1", "m-2"]  # one model call each


@pytest.mark.parametrize(
    ("landed_first", "runs"),
    [("on_redis", "together"), ("on_fallback", "on_redis_first"), ("on_fallback", "on_fallback_first")],
)
async def test_an_update_delivered_to_a_process_on_redis_and_one_on_the_fallback_is_answered_once(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path, landed_first: str, runs: str
) -> None:
    # The inbox row decides: the first claim written there is its claimant's (Landing.MINE), and
    # where two runs could each think the message theirs (A won the once-key, B's claim came first)
    # the one that wins the row (decide_inbox) answers; the other is dropped before its model call
    # (both claims were written by then). One reply and one model call a message, for a question
    # and a photo (a reply with no model), whichever claim was written first and whichever runs first.
    a_bot, b_bot = await two_sides(make_bot, pg_redis, tmp_path)
    a = Dispatcher(a_bot.pipeline, {"console": Recording()}, Journal(tmp_path / "a.db"))
    b = Dispatcher(b_bot.pipeline, {"console": Recording()}, Journal(tmp_path / "b.db"))
    messages = [Inbound("console", "u", "u", "m-1", "a question"), Inbound("console", "v", "v", "m-2", "", "photo")]
    first, second = (a, b) if landed_first == "on_redis" else (b, a)
    for d in (first, second):
        for inbound in messages:
            assert await d.claim(inbound)
        await d.marks_written()
    if runs == "together":
        await asyncio.gather(*(d.run(m) for m in messages for d in (a, b)))
    else:
        for d in (a, b) if runs == "on_redis_first" else (b, a):
            for inbound in messages:
                await d.run(inbound)
    answered = await sent_by(a, b)
    # The claim written first answers when its process runs first or won the once-key; else the
    # process that runs first wins the row.
    winner = 0 if landed_first == "on_redis" or runs == "on_redis_first" else 1
    assert answered[winner] == ["m-1", "m-2"] and answered[1 - winner] == [], answered
    await b_bot.deps.recorder.flush()
    assert await paid(a_bot) == ["m-1"]  # one model call
    assert await a_bot.deps.db.open_inbox() == []
    assert len((await a_bot.deps.db.conversation("console:u")).turns) == 2


async def test_a_run_on_redis_whose_claim_is_written_during_its_model_call_asks_the_row_before_it_sends(
    make_bot: Any, pg_redis: dict[str, str], tmp_path: Path
) -> None:
    # B (cut off from Redis) claimed the message first, won the row and is waiting for its model.
    # A won the once-key in Redis, but its claim's write answers only while its own model call
    # runs (pending: B's): the row, B's, is asked before A keeps or sends anything. A's call is paid
    # (the ledger has both calls), its answer neither stored nor sent.
    a_bot, b_bot = await two_sides(make_bot, pg_redis, tmp_path, simulated_latency_ms=200)
    a = Dispatcher(a_bot.pipeline, {"console": Recording()}, Journal(tmp_path / "a.db"))
    b = Dispatcher(b_bot.pipeline, {"console": Recording()}, Journal(tmp_path / "b.db"))
    inbound = Inbound("console", "u", "u", "m-1", "a question")
    assert await b.claim(inbound)
    await b.marks_written()
    decided, decide = asyncio.Event(), b_bot.deps.db.decide_inbox

    async def deciding(*args: Any, **kwargs: Any) -> Any:
        won = await decide(*args, **kwargs)
        decided.set()
        return won

    b_bot.deps.db.decide_inbox = deciding
    b_run = asyncio.create_task(b.run(inbound))
    async with asyncio.timeout(5):
        await decided.wait()  # B won the row; its model call is under way
    gate, land = asyncio.Event(), a_bot.deps.db.land_claims

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await land(*args, **kwargs)

    a_bot.deps.db.land_claims = held
    spy = Spy(a_bot.deps.db, "decide_inbox", "store_answers", "answer_inbox")
    assert await a.claim(inbound)
    run = asyncio.create_task(a.run(inbound))
    await asyncio.sleep(0.05)  # A's model call is under way
    gate.set()
    await asyncio.gather(run, b_run)
    assert await sent_by(a, b) == [[], ["m-1"]]
    assert spy.calls == ["decide_inbox"]  # refused: B had the row
    await b_bot.deps.recorder.flush()
    await a_bot.deps.recorder.flush()
    assert await paid(a_bot) == ["m-1", "m-1"]
    assert len((await a_bot.deps.db.conversation("console:u")).turns) == 2
