"""The inbox's life cycle through the Dispatcher, in process."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from bot.dispatch import Dispatcher
from bot.turn import Inbound
from tests.conftest import Bot


class Recording:
    name = "console"

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str]]] = []

    async def send(self, inbound: Inbound, parts: Sequence[str]) -> None:
        self.sent.append((inbound.message_id, list(parts)))

    @contextlib.asynccontextmanager
    async def typing(self, inbound: Inbound) -> AsyncIterator[None]:
        yield


async def test_answered_but_unsent_replies_are_resent_without_a_new_call(make_bot: Any) -> None:
    bot: Bot = await make_bot()
    replier = Recording()
    dispatcher = Dispatcher(bot.pipeline, {"console": replier})
    db = bot.deps.db
    # A previous life: one message answered but not sent, one not even answered.
    answered = Inbound("console", "a", "a", "m-1", "first")
    pending = Inbound("console", "a", "a", "m-2", "second question")
    assert await dispatcher.claim(answered) and await dispatcher.claim(pending)
    await db.answer_inbox("console", "m-1", ["the stored reply"])
    assert await dispatcher.resume() == 0  # still leased to their (dead) owner
    bot.clock.advance(seconds=61)  # the lease (INBOX_LEASE_S=60) ran out
    assert await dispatcher.resume() == 2
    await dispatcher.drain(5)
    sent = dict(replier.sent)
    assert sent["m-1"] == ["the stored reply"]
    assert len(sent["m-2"]) == 1 and sent["m-2"][0].startswith('[simulated] You asked: "second question"')
    assert len(replier.sent) == 2
    now = bot.clock.now
    rows = await bot.deps.db.requests(now.replace(day=1), now.replace(day=28))
    assert [r.message_id for r in rows] == ["m-2"]  # only the unanswered one was sent to a model
    assert await db.open_inbox() == []


async def test_drain_reports_messages_still_running(make_bot: Any) -> None:
    bot: Bot = await make_bot(simulated_latency_ms=2000)
    dispatcher = Dispatcher(bot.pipeline, {"console": Recording()})
    inbound = Inbound("console", "a", "a", "slow", "a slow one")
    assert await dispatcher.claim(inbound)
    dispatcher.spawn(dispatcher.run(inbound))
    assert await dispatcher.drain(0.05) == 1
    assert not dispatcher.accepting
    assert [i.message_id for i in await bot.deps.db.open_inbox()] == ["slow"]  # finished after the restart


async def test_a_message_whose_lease_ran_out_while_this_process_works_on_it_is_not_started_twice(
    make_bot: Any,
) -> None:
    # The lease can run out under a running message (the database was down, so it was not renewed);
    # the sweep takes it back, but this process is still on it: one answer, one call, one reply.
    bot: Bot = await make_bot(simulated_latency_ms=300)
    replier = Recording()
    dispatcher = Dispatcher(bot.pipeline, {"console": replier})
    inbound = Inbound("console", "a", "a", "busy", "a question that takes a while")
    assert await dispatcher.claim(inbound)
    dispatcher.spawn(dispatcher.run(inbound))
    await asyncio.sleep(0.05)  # the model call is under way
    bot.clock.advance(seconds=61)  # INBOX_LEASE_S=60 ran out, unrenewed
    assert await dispatcher.resume() == 1  # taken back from the store...
    assert await dispatcher.drain(5) == 0
    assert [m for m, _ in replier.sent] == ["busy"]  # ...but answered and sent once
    now = bot.clock.now
    rows = await bot.deps.db.requests(now - timedelta(days=1), now + timedelta(days=1))
    assert [r.message_id for r in rows] == ["busy"]
    assert await bot.deps.db.open_inbox() == []


async def test_replies_are_stored_before_they_are_sent_and_done_only_after(make_bot: Any) -> None:
    # Why answer_inbox and finish_inbox stay two writes around the send: one write before it would
    # lose the replies in a crash before the send; one after it would pay again after a crash
    # between the send and the write.
    bot: Bot = await make_bot()
    db = bot.deps.db
    seen: list[list[Any]] = []

    class Checking(Recording):
        async def send(self, inbound: Inbound, parts: Sequence[str]) -> None:
            seen.append(await db.open_inbox())
            await super().send(inbound, parts)

    dispatcher = Dispatcher(bot.pipeline, {"console": Checking()})
    inbound = Inbound("console", "a", "a", "m-1", "a question")
    assert await dispatcher.claim(inbound)
    await dispatcher.run(inbound)
    [[item]] = seen
    assert item.message_id == "m-1" and item.replies and item.replies[0].startswith("[simulated]")
    assert await db.open_inbox() == []
