"""Answers kept in a local journal before they are sent, written to the database in the background
(bot.dispatch with ``budget.journal``): one synchronous database round trip a message (the claim),
and nothing paid for or sent twice across a crash."""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.dispatch import Dispatcher
from bot.turn import Inbound
from budget.journal import Journal
from budget.records import Exchange
from tests.bot.test_dispatch import Recording, Spy, inbox_url, shared_stores
from tests.conftest import Bot

__all__ = ["inbox_url", "shared_stores"]  # fixtures
T = datetime(2026, 11, 24, 10, tzinfo=UTC)  # when a journal's sent answers are marked done


def test_the_journal_keeps_answers_with_their_exchange_and_sent_flag_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal(path)
    at = datetime(2026, 11, 24, 9, 30, 1, 123456, tzinfo=UTC)
    exchange = Exchange("telegram:7", [("user", "héllo ☃", 4, 9), ("assistant", "hi", 1, 2)], at)
    journal.put(("telegram", "1"), 0, ["part one", "part two"], exchange)
    journal.put(("telegram", "2"), 3, ["x"], None)
    journal.sent(("telegram", "1"))
    journal.close()
    reopened = Journal(path)  # after a crash: the same file
    kept = reopened.kept(T)
    assert [((j.channel, j.message_id), j.epoch, j.replies, j.done_at is not None) for j in kept] == [
        (("telegram", "1"), 0, ["part one", "part two"], True), (("telegram", "2"), 3, ["x"], False)
    ]  # fmt: skip
    assert kept[0].exchange == exchange and kept[1].exchange is None
    reopened.put(("telegram", "2"), 4, ["y"], None)  # taken over here at a new epoch: replaced
    assert [(j.epoch, j.replies) for j in reopened.kept(T)][1] == (4, ["y"])
    reopened.drop([("telegram", "1"), ("telegram", "2")])
    assert reopened.kept(T) == []


async def test_with_a_journal_the_claim_is_the_only_database_write_before_the_reply(
    make_bot: Any, inbox_url: str, tmp_path: Path
) -> None:
    bot: Bot = await make_bot(database_url=inbox_url, outbox_path=tmp_path / "ob.db")
    db = bot.deps.db
    spy = Spy(db, "claim_inbox_reading", "conversation", "answer_inbox", "finish_inbox", "store_answers")
    journal = Journal(tmp_path / "j.db")
    seen: list[tuple[list[str], list[Any]]] = []

    class Checking(Recording):
        async def send(self, inbound: Inbound, parts: Sequence[str]) -> None:
            # At the send: the database was written once (the claim), the journal has the answer;
            # its background write starts once the send awaits.
            seen.append((list(spy.calls), [j.replies for j in journal.kept(T)]))
            spy.calls.append("send")
            await super().send(inbound, parts)

    replier = Checking()
    dispatcher = Dispatcher(bot.pipeline, {"console": replier}, journal)
    for i in range(3):
        inbound = Inbound("console", "a", "a", f"m-{i}", f"question number {i}")
        assert await dispatcher.claim(inbound)
        await dispatcher.run(inbound)
        await dispatcher.marks_written()
    assert [calls[-1] for calls, _ in seen] == ["claim_inbox_reading"] * 3
    assert [kept for _, kept in seen] == [[parts] for _, parts in replier.sent]
    # Afterwards, in the background: the answer with its done mark, in one write; the next claim
    # reads the conversation with the exchange in it, so the run reads nothing more.
    assert spy.calls == ["claim_inbox_reading", "send", "store_answers"] * 3
    turns = (await db.conversation("console:a")).turns
    assert [t.content for t in turns if t.role == "user"] == [f"question number {i}" for i in range(3)]
    assert len(turns) == 6
    assert await db.open_inbox() == [] and journal.kept(T) == []


async def test_a_message_near_the_end_of_its_lease_is_stored_in_the_database_before_it_is_sent(
    make_bot: Any, tmp_path: Path
) -> None:
    # With less than a third of the lease left, another process could take the message over before
    # the background write lands: the replies are stored first, fenced by the lease's epoch.
    bot: Bot = await make_bot(simulated_latency_ms=200)
    db = bot.deps.db
    spy = Spy(db, "answer_inbox")
    journal = Journal(tmp_path / "j.db")
    dispatcher = Dispatcher(bot.pipeline, {"console": Recording()}, journal)
    quick, slow = Inbound("console", "a", "a", "quick", "hi"), Inbound("console", "b", "b", "slow", "hello")
    assert await dispatcher.claim(quick) and await dispatcher.claim(slow)
    run = asyncio.create_task(dispatcher.run(slow))
    await asyncio.sleep(0.05)  # the model call is under way
    bot.clock.advance(seconds=40.5)  # INBOX_LEASE_S=60: 19.5 s left, under a third
    await run
    assert spy.calls == ["answer_inbox"] and journal.kept(T) == []
    await dispatcher.run(quick)  # claimed at the same time, answered at the same moment: 19.5 s left too
    assert spy.calls == ["answer_inbox", "answer_inbox"]
    await dispatcher.marks_written()
    assert await db.open_inbox() == []


async def test_answers_a_crash_left_in_the_journal_are_stored_and_neither_paid_nor_sent_again(
    shared_stores: dict[str, str], make_bot: Any, tmp_path: Path
) -> None:
    # The process answered two messages and sent one, and crashed before the database had either
    # (its background write kept failing). At the restart, the journal's answers are written before
    # any message is taken over: the sent one is marked done, the other is sent from the database.
    bot: Bot = await make_bot(**shared_stores, outbox_path=tmp_path / "ob.db")
    db = bot.deps.db
    spy = Spy(db, "store_answers")
    path = tmp_path / "j.db"
    before = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(path))

    class Failing(Recording):
        async def send(self, inbound: Inbound, parts: Sequence[str]) -> None:
            if inbound.message_id == "unsent":
                raise ConnectionError("the platform is down")
            await super().send(inbound, parts)

    spy.fail["store_answers"] = 1_000  # the background write fails, however often it is retried
    crashed = Dispatcher(bot.pipeline, {"console": Failing()}, Journal(path))
    sent, unsent = Inbound("console", "u", "u", "sent", "first question"), Inbound("console", "v", "v", "unsent", "q")
    for inbound in (sent, unsent):
        assert await crashed.claim(inbound)
        await crashed.run(inbound)
    assert [m for m, _ in crashed.repliers["console"].sent] == ["sent"]  # type: ignore[attr-defined]
    await asyncio.sleep(0.02)
    for task in list(crashed._tasks):  # the crash: its writer dies with it
        task.cancel()
    await asyncio.sleep(0)
    kept = Journal(path).kept(T)
    assert [(j.message_id, j.done_at) for j in kept] == [("sent", T), ("unsent", None)]
    spy.fail["store_answers"] = 0
    replier = Recording()
    restarted = Dispatcher(bot.pipeline, {"console": replier}, Journal(path))
    assert await restarted.resume() == 0  # stored; the leases still run
    assert Journal(path).kept(T) == []
    assert [i.message_id for i in await db.open_inbox()] == ["unsent"]  # the sent one is done
    bot.clock.advance(seconds=61)
    assert await restarted.resume() == 1
    await restarted.drain(5)
    assert [m for m, _ in replier.sent] == ["unsent"]  # its stored replies, not a new answer
    await bot.deps.recorder.flush()
    now = bot.clock.now
    rows = await db.requests(now - timedelta(days=1), now + timedelta(days=1))
    assert sorted(r.message_id for r in rows) == ["sent", "unsent"]  # each paid once
    assert await db.open_inbox() == []
    for user, question in (("console:u", "first question"), ("console:v", "q")):
        turns = (await db.conversation(user)).turns
        assert (turns[0].role, turns[0].content) == ("user", question) and len(turns) == 2
    assert before.journal is not None and before.journal.kept(T) == []


async def test_a_journaled_reply_sent_before_a_long_outage_is_not_answered_again_by_the_process_that_takes_it(
    shared_stores: dict[str, str], make_bot: Any, tmp_path: Path
) -> None:
    # A sent its reply from the journal, and the database went down before it had the answer, for
    # longer than the lease. B's sweep takes the message over with no stored reply; A noted the
    # sending in the hot store, so B only marks it done (no second answer, no second reply), and
    # A's write, once the database is back, is refused: the message is B's now.
    bot: Bot = await make_bot(**shared_stores, outbox_path=tmp_path / "ob.db")
    db = bot.deps.db
    spy = Spy(db, "store_answers")
    replier_a, replier_b = Recording(), Recording()
    a = Dispatcher(bot.pipeline, {"console": replier_a}, Journal(tmp_path / "a.db"))
    b = Dispatcher(bot.pipeline, {"console": replier_b}, Journal(tmp_path / "b.db"))
    spy.fail["store_answers"] = 1_000
    inbound = Inbound("console", "u", "u", "m-1", "a question")
    assert await a.claim(inbound)
    await a.run(inbound)
    assert [m for m, _ in replier_a.sent] == ["m-1"]
    await asyncio.sleep(0.02)  # A's first write failed, and it noted the sending
    bot.clock.advance(seconds=61)
    spy.fail["store_answers"] = 0  # the database is back; B's sweep comes before A's retry
    assert await b.resume() == 1
    assert await b.drain(5) == 0 and await a.drain(5) == 0
    assert replier_b.sent == [] and b.not_resent == 1 and a.taken_over == 1
    assert await db.open_inbox() == []
    await bot.deps.recorder.flush()
    now = bot.clock.now
    assert [r.message_id for r in await db.requests(now - timedelta(days=1), now + timedelta(days=1))] == ["m-1"]
    assert a.journal is not None and a.journal.kept(T) == []


async def test_a_users_next_message_claimed_before_the_last_exchange_is_stored_waits_for_it(
    make_bot: Any, inbox_url: str, tmp_path: Path
) -> None:
    # The second message's claim reads the conversation while the first's exchange is still on
    # its way to the database: that read is not used; the run waits for the write and reads again,
    # so the second prompt carries the first exchange.
    bot: Bot = await make_bot(database_url=inbox_url, outbox_path=tmp_path / "ob.db")
    db = bot.deps.db
    spy = Spy(db, "claim_inbox_reading", "store_answers", "conversation")
    stored = asyncio.Event()
    answer = db.store_answers

    async def slow_answer(*args: Any, **kwargs: Any) -> Any:
        await stored.wait()
        return await answer(*args, **kwargs)

    db.store_answers = slow_answer
    dispatcher = Dispatcher(bot.pipeline, {"console": Recording()}, Journal(tmp_path / "j.db"))
    first, second = Inbound("console", "a", "a", "m-1", "my name is Ada"), Inbound("console", "a", "a", "m-2", "who?")
    assert await dispatcher.claim(first)
    await dispatcher.run(first)  # sent; its write waits
    assert await dispatcher.claim(second)
    run = asyncio.create_task(dispatcher.run(second))
    await asyncio.sleep(0.05)
    assert not run.done()  # waiting for the first exchange to be stored
    stored.set()
    await run
    await dispatcher.marks_written()
    # The second claim's read is not used: the conversation is read again once the write is in.
    assert spy.calls == ["claim_inbox_reading"] * 2 + ["store_answers", "conversation", "store_answers"]
    turns = (await db.conversation("console:a")).turns
    assert [t.content for t in turns if t.role == "user"] == ["my name is Ada", "who?"]
    rows = await db.requests(bot.clock.now - timedelta(days=1), bot.clock.now + timedelta(days=1))
    assert [r.message_id for r in rows] == ["m-1", "m-2"]
    assert rows[1].usage.input_tokens > rows[0].usage.input_tokens + 10  # the first exchange too
