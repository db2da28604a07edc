"""From an acknowledged webhook to a sent reply, exactly once (DESIGN invariant 4).

A message is stored in the inbox before its webhook is acknowledged, leased to the process that
took it; its replies are stored once computed (so a failure after the LLM call never pays twice)
and it is marked done once they were sent. The lease is renewed while the message is worked on.
A message whose lease ran out (its process died, or a store failed mid-way) is taken over, by
one process only, at start-up and by a periodic sweep. Each taking moves the message's lease epoch
on; its owner's writes name the epoch it holds, so a process that lost the message while still
working on it (cut off from the database for longer than the lease) stores and sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from bot.pipeline import Pipeline
from bot.stages import fold_after_reply, inbox_payload
from bot.turn import Inbound, Turn
from budget.records import Conversation, Exchange

log = logging.getLogger("pennybot.dispatch")

MAX_READ_AHEAD = 10_000  # users with conversations kept from claims whose run has not started
SENT_TTL_S = 7 * 86_400  # how long a sent mark outlives a database outage in the hot store


def sent_key(channel: str, message_id: str) -> str:
    """The hot store's mark of a message whose replies were sent while its done mark could not be
    written (``Dispatcher._note_sent``)."""
    return f"pb:{{inbox}}:sent:{channel}:{message_id}"  # one hash tag, as every key has


class Replier(Protocol):
    """A channel's outbound side: sends reply parts, shows typing while the bot works."""

    name: str

    async def send(self, inbound: Inbound, parts: Sequence[str]) -> None: ...

    def typing(self, inbound: Inbound) -> contextlib.AbstractAsyncContextManager[None]: ...


class Dispatcher:
    """Accepts inbound messages, runs them in the background and tracks them for shutdown."""

    def __init__(self, pipeline: Pipeline, repliers: Mapping[str, Replier]) -> None:
        self.pipeline = pipeline
        self.repliers = dict(repliers)
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = True
        # What this process computed or sent but could not record while the database was down:
        # the sweep then re-sends or only marks done, and never pays for an answer twice.
        self._answered: dict[tuple[str, str], list[str]] = {}
        self._sent: set[tuple[str, str]] = set()
        # Messages this process is working on now. A lease can run out under it (the database was
        # down, so it could not be renewed); the sweep must not then start the same message again
        # here, which would answer, pay and reply twice.
        self._working: set[tuple[str, str]] = set()
        # What the claim read of each claimed message's conversation, by user, for its run to use;
        # dropped once another message of the user finished here (it changed the conversation).
        self._read: dict[str, dict[tuple[str, str], Conversation]] = {}
        # Exchanges computed here whose write (with the replies) failed: retried by the sweep.
        self._unstored: dict[tuple[str, str], Exchange | None] = {}
        self._folding: set[str] = set()  # users whose conversation is being folded after a reply
        # Sent messages whose done mark is not written yet, with when they were sent: one task
        # writes every waiting mark at once, off the messages' path (``_write_marks``).
        self._marks: dict[tuple[str, str], datetime] = {}
        self._marking: asyncio.Task[None] | None = None
        self.mark_failures = 0
        self._noted: set[tuple[str, str]] = set()  # waiting marks whose sending the hot store knows
        self.not_resent = 0  # answered messages a sweep took over and found sent already: marked done only
        # The lease epoch this process holds of each message its sweep took over (a claimed one
        # is at 0): named in the writes, which another process's taking fences off.
        self._epochs: dict[tuple[str, str], int] = {}
        self.taken_over = 0  # messages another process took from this one while it worked on them

    @property
    def db(self) -> Any:
        return self.pipeline.deps.db

    @property
    def lease_s(self) -> float:
        return float(self.pipeline.deps.settings.inbox_lease_s)

    async def claim(self, inbound: Inbound, payload: dict[str, Any] | None = None) -> bool:
        """Store the message, leased to this process; False if this platform message was seen
        before (drop it)."""
        deps = self.pipeline.deps
        body = inbox_payload(inbound) | (payload or {})
        # The conversation comes back with the claim (one round trip where the store can): the
        # message's run needs it next.
        conversation = await deps.db.claim_inbox_reading(
            inbound.channel, inbound.message_id, inbound.user_key, body, deps.clock(), self.lease_s
        )
        if conversation is None:
            return False
        if inbound.user_key not in self._read and len(self._read) >= MAX_READ_AHEAD:
            del self._read[next(iter(self._read))]  # runs that never came (an update no handler took)
        self._read.setdefault(inbound.user_key, {})[(inbound.channel, inbound.message_id)] = conversation
        return True

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background, tracked for ``drain``."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self, inbound: Inbound, replies: list[str] | None = None) -> None:
        """Answer a claimed message (or re-send its stored replies) and mark it done."""
        deps = self.pipeline.deps
        replier = self.repliers[inbound.channel]
        key = (inbound.channel, inbound.message_id)
        if key in self._working:
            return
        self._working.add(key)
        stop_renewing = self._hold_lease(inbound)
        turn: Turn | None = None
        try:
            replies = self._answered.get(key, replies)
            if replies is None:
                read = self._read.get(inbound.user_key, {}).pop(key, None)
                try:
                    async with replier.typing(inbound):
                        turn = await self.pipeline.handle(inbound, claimed=True, conversation=read)
                finally:
                    self._read.pop(inbound.user_key, None)  # read before this answer: stale now
                replies = self._answered[key] = turn.replies
                self._unstored[key] = turn.exchange
            if key in self._unstored:
                # The replies before they are sent, and the exchange with them, in one write: refused
                # if another process took the message over meanwhile; it answers and sends.
                epoch = self._epochs.get(key, 0)
                if not await deps.db.answer_inbox(*key, replies, self._unstored[key], epoch):
                    self._taken_over(key)
                    return
                del self._unstored[key]
            if replies and key not in self._sent:
                await replier.send(inbound, replies)
                self._sent.add(key)
            self._mark_done(key)
            if turn is not None and turn.fold_later and turn.user not in self._folding:
                self._folding.add(turn.user)
                self.spawn(self._fold(turn))
        except Exception:
            # Left open in the inbox: once its lease runs out, a sweep here or elsewhere finishes it.
            log.exception("message %s:%s failed; it stays in the inbox", inbound.channel, inbound.message_id)
        finally:
            stop_renewing()
            if key not in self._marks:  # else it is worked on until its mark is written
                self._working.discard(key)

    def _taken_over(self, key: tuple[str, str]) -> None:
        """Forget a message another process took over: its answer here was paid for (the ledger
        has the row), but only the new owner's replies are stored and sent."""
        self.taken_over += 1
        log.warning("message %s:%s was taken over by another process after its lease ran out; not sent here", *key)
        for held in (self._answered, self._unstored, self._epochs):
            held.pop(key, None)

    def _mark_done(self, key: tuple[str, str]) -> None:
        """Queue the done mark of a message whose replies were sent. The reply is out: nothing
        the user sees waits on the mark, and the marks of messages sent close together share one
        write. Until its mark is written the message stays in ``_working`` and ``_sent`` here, so
        a sweep of this process never sends it again; a crash before the write re-sends its stored
        replies after the restart, as a crash between the send and the write always could."""
        self._marks[key] = self.pipeline.deps.clock()
        if self._marking is None:
            self._marking = self.spawn(self._write_marks())

    async def _write_marks(self) -> None:
        """Write every waiting done mark in one call, until none waits; retried with a growing
        pause while the database is down."""
        try:
            while self._marks:
                batch = dict(self._marks)
                try:
                    await self.db.finish_inbox([(channel, mid, at) for (channel, mid), at in batch.items()])
                except Exception as error:
                    self.mark_failures += 1
                    if self.mark_failures in (1, 10) or self.mark_failures % 100 == 0:
                        log.warning("done marks not written (%s); %d wait", type(error).__name__, len(self._marks))
                    await self._note_sent(batch)
                    await asyncio.sleep(min(0.05 * 2**self.mark_failures, 5.0))
                    continue
                self.mark_failures = 0
                for key in batch:
                    del self._marks[key]
                    self._answered.pop(key, None)
                    self._sent.discard(key)
                    self._noted.discard(key)
                    self._working.discard(key)
                    self._epochs.pop(key, None)
        finally:
            self._marking = None

    async def _note_sent(self, batch: Mapping[tuple[str, str], datetime]) -> None:
        """The database is down, with replies sent and their done marks waiting: say so in the hot
        store, once a message, in one write. The outage can outlast the leases; another process's
        sweep then takes these messages over with their stored replies, and looks there before it
        sends them again (``resume``). Nothing is written while the database is up."""
        fresh = [key for key in batch if key not in self._noted]
        if not fresh:
            return
        try:
            await self.pipeline.deps.hot.set_counters({sent_key(*key): 1 for key in fresh}, SENT_TTL_S)
        except Exception as error:  # the hot store is down too: a sweep elsewhere may send them again
            log.warning("sent marks not kept (%s); %d messages may be sent twice", type(error).__name__, len(fresh))
            return
        self._noted.update(fresh)

    async def _sent_elsewhere(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these answered messages a process sent before it could write their done marks."""
        if not keys:
            return set()
        try:
            marks = await self.pipeline.deps.hot.get_counters([sent_key(*key) for key in keys])
        except Exception as error:  # unknown: sent again, as a crash after a send always could be
            log.warning("sent marks not read (%s); stored replies are sent again", type(error).__name__)
            return set()
        return {key for key, mark in zip(keys, marks, strict=True) if mark}

    async def marks_written(self) -> None:
        """Wait until the done marks queued so far are written (tests, shutdown)."""
        while self._marking is not None:
            await asyncio.shield(self._marking)

    async def _fold(self, turn: Turn) -> None:
        """Fold the old turns the message put off, now that its reply is out: a fold that fails
        is left for the user's next message, which finds the turns still there."""
        try:
            await fold_after_reply(turn)
        except Exception as error:
            log.warning("conversation not folded (%s); the next message tries again", type(error).__name__)
        finally:
            self._folding.discard(turn.user)
            self._read.pop(turn.user, None)  # read before the fold: stale now

    def _hold_lease(self, inbound: Inbound) -> Callable[[], None]:
        """Hold the message's lease while it is worked on, so no other process takes it over: a
        timer, and a renewing task only for a message still worked on a third of the way into its
        lease (most are done long before). Returns what stops it."""
        loop = asyncio.get_running_loop()
        renewing: list[asyncio.Task[None]] = []
        timer = loop.call_later(self.lease_s / 3, lambda: renewing.append(loop.create_task(self._renew(inbound))))

        def stop() -> None:
            timer.cancel()
            for task in renewing:
                task.cancel()

        return stop

    async def _renew(self, inbound: Inbound) -> None:
        """Renew the lease every third of it; stop once another process took the message over
        (the answer's write then tells the run)."""
        deps = self.pipeline.deps
        key = (inbound.channel, inbound.message_id)
        while True:
            with contextlib.suppress(Exception):
                if not await deps.db.renew_lease(*key, deps.clock(), self.lease_s, self._epochs.get(key, 0)):
                    return
            await asyncio.sleep(self.lease_s / 3)

    async def resume(self) -> int:
        """Take over messages whose lease ran out: re-run those with no answer yet, re-send those
        answered, except those the hot store says were sent (``_note_sent``). Each is taken by one
        process only."""
        deps = self.pipeline.deps
        items = await deps.db.lease_open(deps.clock(), self.lease_s)
        answered = [(i.channel, i.message_id) for i in items if i.replies is not None and i.channel in self.repliers]
        sent = await self._sent_elsewhere([key for key in answered if key not in self._sent])
        for item in items:
            if item.channel not in self.repliers:
                continue
            key = (item.channel, item.message_id)
            # Taken at a new epoch: a run of it still going here (its lease ran out under it)
            # writes with this one, and the process it was taken from is fenced off.
            self._epochs[key] = item.epoch
            if key in sent:  # its replies are out: the run only marks it done
                log.info("message %s:%s was sent before the database went down; marked done, not sent again", *key)
                self._sent.add(key)
                self.not_resent += 1
            p = item.payload
            inbound = Inbound(
                item.channel, p["chat_id"], p["user_id"], item.message_id, p["text"], p.get("kind", "text")
            )
            self.spawn(self.run(inbound, item.replies))
        return len(items)

    async def sweep(self, every_s: float) -> None:
        """Run until cancelled: take over messages whose lease ran out."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.resume()
            except Exception as error:  # the store is down: try again next round
                log.warning("inbox sweep failed: %s", type(error).__name__)

    async def drain(self, timeout_s: float) -> int:
        """Stop accepting; wait up to ``timeout_s`` for in-flight messages. Returns how many were
        still running (they stay in the inbox and are finished when their lease runs out), done
        marks not written included."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tasks:  # a message that finishes queues its done mark, which may start a task
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(deadline - loop.time(), 0))
            if pending:
                marks = len(self._marks)
                for task in pending:
                    task.cancel()
                return len(pending - {self._marking}) + marks
        return 0
