"""From an acknowledged webhook to a sent reply, exactly once (DESIGN invariant 4).

A message is stored before its webhook is acknowledged, leased to the process that took it: in the
inbox, or (with a network database and a hot store that dedupes) in the process's journal on its
host, and in the inbox in the background, the hot store telling a redelivery to another process.
Its replies are stored once computed (so a failure after the LLM call never pays twice) and it is
marked done once they were sent. The lease is renewed while the message is worked on. A message
whose lease ran out (its process died, or a store failed mid-way) is taken over, by one process
only, at start-up and by a periodic sweep. Each taking moves the message's lease epoch on; its
owner's writes name the epoch it holds, so a process that lost the message while still working on
it (cut off from the database for longer than the lease) stores and sends nothing. One this
process's own sweep took back is not started again here, and its writes move to the new epoch,
even when the take-over's result was lost on the way back (each taking marks the rows with its
taker: ``_taken_here`` asks the row).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextvars import Context
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.conversations import VERSION_TTL_S, Known, fresh_version, version_key
from bot.pipeline import Pipeline
from bot.stages import asks_ai, fold_after_reply, inbox_payload
from bot.turn import Inbound, Once, Turn
from budget.journal import Journal, Key
from budget.records import Answer, Claim, Conversation, Exchange, InboxItem, Landing

log = logging.getLogger("pennybot.dispatch")

MAX_READ_AHEAD = 10_000  # users with conversations kept from claims whose run has not started
SENT_TTL_S = 7 * 86_400  # how long a sent mark outlives a database outage in the hot store
SEEN_TTL_S = 2 * 86_400  # how long the hot store knows a message claimed on a host (platforms retry for a day)


def sent_key(channel: str, message_id: str) -> str:
    """The hot store's mark of a message whose replies were sent while its done mark could not be
    written (``Dispatcher._note_sent``)."""
    return f"pb:{{inbox}}:sent:{channel}:{message_id}"  # one hash tag, as every key has


def seen_key(channel: str, message_id: str) -> str:
    """The hot store's mark of a message claimed by some process on its own host (``Dispatcher.claim``)."""
    return f"pb:{{inbox}}:seen:{channel}:{message_id}"


class Replier(Protocol):
    """A channel's outbound side: sends reply parts, shows typing while the bot works."""

    name: str

    async def send(self, inbound: Inbound, parts: Sequence[str]) -> None: ...

    def typing(self, inbound: Inbound) -> contextlib.AbstractAsyncContextManager[None]: ...


class Dispatcher:
    """Accepts inbound messages, runs them in the background and tracks them for shutdown."""

    def __init__(
        self, pipeline: Pipeline, repliers: Mapping[str, Replier], journal: Journal | None = None
    ) -> None:
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
        # Messages whose done mark was written here lately (the newest ``MAX_READ_AHEAD``). A sweep
        # can take one over as its mark lands (the database was back after a hang: the take-over
        # committed first, the mark came back before the run it starts began); that run finds it
        # here and does nothing, where it would send the stored replies again.
        self._done: dict[Key, None] = {}
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
        # This process's take-overs under way: a write refused because one of them moved the epoch
        # can come back before its result does (``_taken_here``).
        self._takings: set[asyncio.Future[None]] = set()
        # This process's name on the rows its sweep takes over: a take-over whose result was lost
        # (the commit ran, the reply never came) is found by it (``_taken_here``), and so are the
        # messages it took that no run here works on: the next sweep runs them (``resume``).
        self.owner = uuid.uuid4().hex
        self._lost_taking = False  # a take-over failed, its result unknown
        self.adopted = 0  # messages whose take-over by this process's sweep was learnt from the row
        self.taken_over = 0  # messages another process took from this one while it worked on them
        # When the lease this process holds of each message it claimed or took runs out, as far as it
        # knows (claim, take-over, renewal): it may send an answer kept only in the journal until then.
        self._leases: dict[Key, datetime] = {}
        # With a journal (a network database's: ``Deps.journal``), answers are kept in it before
        # they are sent, and written to the database in the background (``_write_marks``), before
        # their done marks. Without one, each is written to the database before it is sent.
        self.journal = journal
        self._journaled: dict[Key, tuple[list[str], Exchange | None]] = {}
        self._recovered = self.journal is None  # what a crash left in the journal is written first
        # Users with an exchange computed here and not in the database yet, and when each user's
        # conversation last changed (a count of changes): a claim's read of a conversation that was
        # changing is not kept, its run reads it again once the change is stored.
        self._unstored_users: dict[str, int] = {}
        self._changes = 0
        self._changed: dict[str, int] = {}
        self._forgotten = 0  # the newest change of the users dropped from ``_changed``
        self._landed: asyncio.Event | None = None  # set when a user's changes are stored, for a run waiting
        # With a journal and a hot store that checks a once-key in the rate limit's round trip, a
        # webhook's message is claimed on this host (the journal) before it is acknowledged, and in
        # the database in the background (``_land``), before any answer of it: the database's word
        # on each claim, for a run that needs it (the hot store was out of reach).
        deps = pipeline.deps
        self._local_claims = journal is not None and deps.hot.dedupes and deps.settings.inbox_local_claims
        self._claims: dict[Key, Claim] = {}  # claimed here, not in the database yet
        self._landings: dict[Key, asyncio.Future[Landing]] = {}
        self._unchecked: set[Key] = set()  # claimed here, not yet checked against other processes' claims
        # With a network database, users' conversations as this process knows them: a message claimed
        # here runs on its user's copy, checked in the rate limit's round trip (``bot.conversations``).
        # Every change this process makes to a conversation sets a new version, in the background.
        self._copies = pipeline.deps.conversations
        self._bump: set[str] = set()  # users whose conversation this process changed: a new version

    @property
    def db(self) -> Any:
        return self.pipeline.deps.db

    @property
    def lease_s(self) -> float:
        return float(self.pipeline.deps.settings.inbox_lease_s)

    async def claim(self, inbound: Inbound, payload: dict[str, Any] | None = None) -> bool:
        """Store the message, leased to this process; False if this platform message was seen
        before (drop it). With local claims (a journal, a hot store that dedupes), on this host
        (``_claim_here``), unless the database is failing: then in it, as without."""
        deps = self.pipeline.deps
        body = inbox_payload(inbound) | (payload or {})
        user, key, now = inbound.user_key, (inbound.channel, inbound.message_id), deps.clock()
        if self._local_claims and not self.mark_failures:  # else (the database is failing) in it, now
            return self._claim_here(Claim(*key, user, body, now))
        began, settled = self._changes, user not in self._unstored_users
        # The conversation comes back with the claim (one round trip where the store can): the
        # message's run needs it next.
        conversation = await deps.db.claim_inbox_reading(*key, user, body, now, self.lease_s)
        if conversation is None:
            return False
        self._leased(key, now)
        if not settled or self._changed_since(user, began):
            return True  # the conversation changed meanwhile: the run reads it again
        if user not in self._read and len(self._read) >= MAX_READ_AHEAD:
            del self._read[next(iter(self._read))]  # runs that never came (an update no handler took)
        self._read.setdefault(user, {})[key] = conversation
        return True

    def _leased(self, key: Key, now: datetime) -> None:
        if len(self._leases) >= MAX_READ_AHEAD:
            del self._leases[next(iter(self._leases))]  # its run, if it comes, stores before it sends
        self._leases[key] = now + timedelta(seconds=self.lease_s)

    def _claim_here(self, claim: Claim) -> bool:
        """Claim a message on this host: committed to the journal (so the webhook can be acknowledged),
        written to the database in the background. A redelivery to this process while the message
        is kept, worked on or done lately here is dropped now; one to another process, by its run or
        by this one's (``Once``)."""
        assert self.journal is not None
        key = (claim.channel, claim.message_id)
        if key in self._working or key in self._done or key in self._claims or not self.journal.claim(claim):
            return False
        self._claims[key] = claim
        self._landings[key] = asyncio.get_running_loop().create_future()
        self._unchecked.add(key)
        self._leased(key, claim.received_at)  # the database's lease starts later: this errs early
        self._write_soon()
        return True

    async def _mine(self, key: Key) -> bool:
        """Whether the database gave this process the message, once its claim is written there: for
        a run that could not check Redis's once-key (out of reach, or the hot store on its
        fallback). Its claim must be the first written (``Landing.MINE``), and it must win the row
        (``_won``): a process that reached Redis may have won the once-key with a claim written
        later (``_decide``). Another's claim, answered or not, is left to it (or to a sweep, once
        its lease runs out)."""
        landing = self._landings.get(key)
        if landing is None:  # forgotten here (taken over meanwhile)
            return False
        self._write_soon()
        landed = await self._heard(landing)
        if landed is None:  # the database is down too: a sweep answers it once its claim is in
            log.warning("message %s:%s not checked for a redelivery; left to the sweep", *key)
        return landed is Landing.MINE and await self._won(key)

    async def _decide(self, key: Key) -> bool:
        """Whether a run that won the message's once-key in Redis answers it: yes if its claim was
        the first written to the database (``Landing.MINE``); if another's was (a redelivery to a
        process that lost the once-key, or to one that could not see it and goes by the database:
        ``_mine``), only if it wins the row (``_won``), which that process must win too. Its claim
        was written in the background, long before the model answered, except where the model is
        instant: waited for then. While the database is failing it goes on (a process that goes
        by the database cannot win the row then either)."""
        landing = self._landings.get(key)
        if landing is None:  # forgotten here (taken over meanwhile): its writes are fenced by the epoch
            return True
        if not landing.done() and self.mark_failures:
            return True
        landed = await self._heard(landing)  # its write is under way (``_write_marks`` runs while claims wait)
        return landed in (None, Landing.MINE) or (landed is Landing.PENDING and await self._won(key))

    async def _heard(self, landing: asyncio.Future[Landing]) -> Landing | None:
        """What the database said of a claim, waited for a third of the lease at most (None: nothing)."""
        try:
            async with asyncio.timeout(self.lease_s / 3):
                return await asyncio.shield(landing)
        except TimeoutError:
            return None

    async def _decided(self, key: Key) -> bool | None:
        """``_decide``, if the claim's write has answered (None: not yet)."""
        landing = self._landings.get(key)
        return await self._decide(key) if landing is None or landing.done() else None

    async def _won(self, key: Key) -> bool:
        """Whether this process wins the row of a message two processes may each think theirs
        (``Database.decide_inbox``); if the database cannot say, the message is left to a sweep."""
        try:
            won: bool = await self.db.decide_inbox(*key, self.owner)
        except Exception as error:
            log.warning("message %s:%s not decided (%s); left to the sweep", *key, type(error).__name__)
            return False
        if not won:
            log.info("message %s:%s is another process's: its claim was first, and it won the row", *key)
        return won

    async def _conversation(self, user: str) -> Conversation:
        """The user's conversation, for a message claimed here (no claim read it), with every exchange
        computed here in it: read again once if one was computed during the read."""
        for attempt in range(2):
            if user in self._unstored_users:
                await self._until_stored(user)
            began = self._changes
            conversation: Conversation = await self.db.conversation(user)
            if attempt or not self._changed_since(user, began):
                break
        return conversation

    def _changed_since(self, user: str, began: int) -> bool:
        """Whether the user's conversation changed here after change number ``began`` (a forgotten
        user counts as changed at the newest forgotten change: it errs toward reading again)."""
        return self._changed.get(user, self._forgotten) > began

    def _changing(self, user: str) -> None:
        """A user's conversation is about to change here (an exchange to store)."""
        self._unstored_users[user] = self._unstored_users.get(user, 0) + 1
        self._changes += 1
        self._changed.pop(user, None)
        self._changed[user] = self._changes  # the newest last
        if len(self._changed) > MAX_READ_AHEAD:
            self._forgotten = self._changed.pop(next(iter(self._changed)))

    def _changed_now(self, user: str) -> None:
        """The change is stored (or given up): reads of the conversation see it from now on."""
        left = self._unstored_users.pop(user) - 1
        if left:
            self._unstored_users[user] = left
        elif self._landed is not None:
            self._landed.set()
            self._landed = None

    async def _until_stored(self, user: str) -> None:
        """Wait, for a third of the lease at most, until the user's exchanges computed here are in
        the database, so the run that reads the conversation next sees them."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.lease_s / 3):
                while user in self._unstored_users:
                    if self._landed is None:
                        self._landed = asyncio.Event()
                    await self._landed.wait()

    def _holds(self, key: Key) -> bool:
        """Whether this process surely holds the message's lease for a while yet (a third of the lease
        to spare, for the hosts' clocks): no other process can take it over before its reply is out."""
        if key in self._claims:  # not in the database yet: no other process can take it
            return True
        until = self._leases.get(key)
        return until is not None and self.pipeline.deps.clock() < until - timedelta(seconds=self.lease_s / 3)

    def spawn(self, work: Coroutine[Any, Any, None], *, own_context: bool = False) -> asyncio.Task[None]:
        """Run ``work`` in the background, tracked for ``drain``; with ``own_context``, in a context of
        its own rather than a copy of the caller's (work of the dispatcher's, not of the message
        that happened to start it)."""
        task = asyncio.create_task(work, context=Context() if own_context else None)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self, inbound: Inbound, replies: list[str] | None = None) -> None:
        """Answer a claimed message (or re-send its stored replies) and mark it done."""
        replier = self.repliers[inbound.channel]
        key = (inbound.channel, inbound.message_id)
        if key in self._working:
            return
        if key in self._done:
            log.info("message %s:%s was marked done here as a sweep took it over; not sent again", *key)
            self._forget(key)  # what the take-over held of it
            return
        self._working.add(key)
        stop_renewing = self._hold_lease(inbound)
        turn: Turn | None = None
        user = inbound.user_key
        try:
            replies = self._answered.get(key, replies)
            if replies is None:
                once = None
                read = self._read.get(user, {}).pop(key, None)
                if self._answered_elsewhere(key):  # known before the model is paid
                    self._redelivered(key)
                    return
                known: tuple[Known, int] | None = None  # the copy the run begins from, and its edits then
                known_at = None
                if key in self._unchecked:
                    self._unchecked.discard(key)
                    once = Once(seen_key(*key), SEEN_TTL_S, lambda: self._mine(key), lambda: self._decided(key))
                    if asks_ai(inbound):
                        read, known, known_at = await self._known(user)
                elif read is None and user in self._unstored_users:
                    await self._until_stored(user)
                try:
                    async with replier.typing(inbound):
                        turn = await self.pipeline.handle(
                            inbound, claimed=True, conversation=read, once=once, known_at=known_at
                        )
                finally:
                    self._read.pop(user, None)  # read before this answer: stale now
                if turn.repeated or self._answered_elsewhere(key) or (turn.once_won and not await self._decide(key)):
                    self._redelivered(key)
                    return
                self._copied(turn, known)
                replies = self._answered[key] = turn.replies
                self._unstored[key] = turn.exchange
            if key in self._unstored:
                if self.journal is not None and self._holds(key):
                    self._store(key, replies)
                elif not await self._store_now(key, replies):
                    return  # taken over by another process meanwhile: it answers and sends
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

    async def _known(
        self, user: str
    ) -> tuple[Conversation, tuple[Known, int] | None, tuple[str, int | None] | None]:
        """The conversation for a message claimed here: this process's copy, with the version the
        rate limit's round trip is to check; or, with none, read (the version first, so a change
        made after it shows as another version)."""
        if self._copies is None:
            return await self._conversation(user), None, None
        known = self._copies.get(user)
        if known is not None:
            return known.conversation, (known, known.edits), (version_key(user), known.version)
        try:
            (version,) = await self.pipeline.deps.hot.get_counters([version_key(user)])
        except Exception:
            version = None  # checked as stale next time
        conversation = await self._conversation(user)
        known = self._copies.put_new(user, version, conversation)
        return conversation, None if known is None else (known, known.edits), None

    def _copied(self, turn: Turn, known: tuple[Known, int] | None) -> None:
        """After a run: its user's copy read again (another version was found), and a fold made
        (the database changed: a new version follows)."""
        if self._copies is None:
            return
        if known is not None and turn.stale:
            if turn.conversation is None:  # the run ended before it read the conversation again
                self._copies.drop(turn.user)
            else:
                self._copies.put(turn.user, turn.version, turn.conversation, began=known)
        if turn.folded:
            self._changed_here(turn.user)

    def _changed_here(self, user: str) -> None:
        """This process changed the user's conversation in the database: a new version, soon."""
        if self._copies is not None:
            self._bump.add(user)
            self._write_soon()

    def _redelivered(self, key: Key) -> None:
        log.info("message %s:%s was delivered before, to this process or another; dropped", *key)
        self._forget(key)

    def _answered_elsewhere(self, key: Key) -> bool:
        """A message claimed here that the database had, answered, before (known only if its claim
        was written by now: the hot store's once-key is the check that counts, this one catches a
        redelivery it forgot)."""
        landing = self._landings.get(key)
        return landing is not None and landing.done() and landing.result() is Landing.ANSWERED

    def _store(self, key: Key, replies: list[str]) -> None:
        """Keep the replies, and the exchange with them, in the local journal before they are sent;
        they reach the database in the background. Only while the lease surely holds (``_holds``)."""
        assert self.journal is not None
        exchange = self._unstored.pop(key)
        self.journal.put(key, self._epochs.get(key, 0), replies, exchange)
        if exchange is not None and exchange.turns:
            self._changing(exchange.user_key)
            if self._copies is not None:
                self._copies.add(exchange)  # the user's next message here has it at once
        self._journaled[key] = (replies, exchange)
        self._write_soon()

    async def _store_now(self, key: Key, replies: list[str]) -> bool:
        """Store the replies before they are sent, and the exchange with them, in one write to the
        database: refused if another process took the message over meanwhile (``_taken_over``)."""
        exchange = self._unstored[key]
        user = exchange.user_key if exchange is not None and exchange.turns else None
        if user is not None:
            self._changing(user)
        try:
            while not await self.db.answer_inbox(*key, replies, exchange, epoch := self._epochs.get(key, 0)):
                if not await self._taken_here(key, epoch):  # else at the epoch this process's sweep took
                    self._taken_over(key)
                    return False
        finally:
            if user is not None:
                self._changed_now(user)
        del self._unstored[key]
        if user is not None and self._copies is not None:
            assert exchange is not None
            self._copies.add(exchange)
            self._changed_here(user)
        return True

    async def _taken_here(self, key: Key, epoch: int) -> bool:
        """A write of the message at ``epoch`` was refused: whether this process's own sweep took the
        message over meanwhile (its lease ran out under the run), so the write is to be made again at
        the epoch held now. The refusal can come back before the take-over's result: waited for.
        And the result can be lost (the take-over committed, its reply never came): the row says who
        took it, and an epoch this process took is adopted here."""
        if self._takings:
            await asyncio.wait(set(self._takings))
        if key in self._epochs and self._epochs[key] != epoch:
            return True
        held = await self.db.lease_holder(*key)
        if held is None or held.owner != self.owner or held.epoch == epoch:
            return False
        log.warning(
            "message %s:%s was taken over by this process's sweep, whose result was lost; its writes go on"
            " at epoch %d", *key, held.epoch,
        )  # fmt: skip
        self.adopted += 1
        self._hold(key, held.epoch, held.until)
        return True

    def _hold(self, key: Key, epoch: int, until: datetime | None) -> None:
        """This process's sweep took the message over at ``epoch``, its lease running to ``until``."""
        self._epochs[key] = epoch
        if until is not None:
            self._leases[key] = until
        if key in self._journaled:  # its answer waits for the database here: at the new epoch
            assert self.journal is not None
            self.journal.put(key, epoch, *self._journaled[key])

    def _taken_over(self, key: tuple[str, str]) -> None:
        """Forget a message another process took over: its answer here was paid for (the ledger
        has the row), but only the new owner's replies are stored and sent. (One sent here from the
        journal while the database was out of reach may be sent again by its new owner.)"""
        self.taken_over += 1
        log.warning(
            "message %s:%s was taken over by another process after its lease ran out; %s", *key,
            "its reply was sent here and may be sent again" if key in self._sent else "not sent here",
        )  # fmt: skip
        self._unstored.pop(key, None)
        self._marks.pop(key, None)
        self._forget(key)

    def _mark_done(self, key: tuple[str, str]) -> None:
        """Queue the done mark of a message whose replies were sent. The reply is out: nothing
        the user sees waits on the mark, and the marks of messages sent close together share one
        write. Until its mark is written the message stays in ``_working`` and ``_sent`` here, so
        a sweep of this process never sends it again; a crash before the write re-sends its stored
        replies after the restart, as a crash between the send and the write always could."""
        self._marks[key] = self.pipeline.deps.clock()
        if self.journal is not None:
            self.journal.sent(key)  # a restart then only marks it done (no row: stored before it was sent)
        self._write_soon()

    def _write_soon(self) -> None:
        if self._marking is None:
            self._marking = self.spawn(self._write_marks(), own_context=True)  # every message's writes

    async def _write_marks(self) -> None:
        """Write every journaled answer with the done mark of those sent, then every other waiting
        done mark, in one call each, until none waits; retried with a growing pause while the
        database is down."""
        try:
            while self._claims or self._journaled or self._marks or self._bump:
                batch: dict[Key, datetime] = {}
                try:
                    # Claims first, and again after each write: a run may wait for its claim's word
                    # (``_decide``), never for more than the one write under way.
                    await self._land_waiting()
                    if self._journaled:
                        await self._write_answers()
                        await self._land_waiting()
                    batch = {key: at for key, at in self._marks.items() if key not in self._journaled}
                    if batch:
                        await self.db.finish_inbox([(channel, mid, at) for (channel, mid), at in batch.items()])
                except Exception as error:
                    self.mark_failures += 1
                    if self.mark_failures in (1, 10) or self.mark_failures % 100 == 0:
                        log.warning(
                            "claims, answers and done marks not written (%s); %d wait", type(error).__name__,
                            len(self._claims.keys() | self._journaled.keys() | self._marks.keys()),
                        )  # fmt: skip
                    await self._note_sent(dict(self._marks))
                    await asyncio.sleep(min(0.05 * 2**self.mark_failures, 5.0))
                    continue
                self.mark_failures = 0
                for key in batch:
                    self._finished(key)
                self._unkeep(list(batch))
                if self._bump:
                    await self._new_versions()
        finally:
            self._marking = None

    async def _new_versions(self) -> None:
        """Set a new version for each user whose conversation this process changed, in one round trip,
        swapped for the one before: a copy here of the version replaced stays good. Not retried: a
        version not set leaves other processes' copies trusted for ``MAX_AGE_S`` at most."""
        assert self._copies is not None
        users, self._bump = list(self._bump), set()
        versions = {user: fresh_version() for user in users}
        try:
            before = await self.pipeline.deps.hot.swap_counters(
                {version_key(user): v for user, v in versions.items()}, VERSION_TTL_S
            )
        except Exception as error:
            log.warning("conversation versions not set (%s) for %d users", type(error).__name__, len(users))
            for user in users:
                self._copies.drop(user)
            return
        for user, old in zip(users, before, strict=True):
            self._copies.swapped(user, old, versions[user])

    def _finished(self, key: Key) -> None:
        """A message's done mark is written: it is done here, and remembered a while (``_done``)."""
        del self._marks[key]
        self._forget(key)
        self._done[key] = None
        if len(self._done) > MAX_READ_AHEAD:
            del self._done[next(iter(self._done))]

    def _forget(self, key: Key) -> None:
        """A message is done here (marked done, another process took it over, or a redelivery)."""
        self._landings.pop(key, None)
        self._unchecked.discard(key)
        self._answered.pop(key, None)
        self._sent.discard(key)
        self._noted.discard(key)
        self._working.discard(key)
        self._epochs.pop(key, None)
        self._leases.pop(key, None)

    def _unkeep(self, keys: Sequence[Key]) -> None:
        """Drop these messages' answers from the journal: the database has them, or they are not ours."""
        if self.journal is not None and keys:
            self.journal.drop(keys)

    async def _land_waiting(self) -> None:
        if self._claims:
            await self._land()

    async def _land(self) -> None:
        """Write the messages claimed here to the database, in one call: each leased to this process
        from now, unless another claim of it is there already (the database's word, for the runs)."""
        assert self.journal is not None
        claims = list(self._claims.values())
        landings = await self.db.land_claims(claims, self.journal.token, self.pipeline.deps.clock(), self.lease_s)
        keys = [(claim.channel, claim.message_id) for claim in claims]
        for key, landing in zip(keys, landings, strict=True):
            del self._claims[key]
            waiting = self._landings.get(key)
            if waiting is not None and not waiting.done():
                waiting.set_result(landing)
        self.journal.landed(keys)

    async def _write_answers(self) -> None:
        """Write the journaled answers to the database, each at the lease epoch held now (a take-over
        by this process's own sweep moves it on), with the done mark of those sent. One refused was
        taken over by another process while the database was out of reach: its new owner answers
        it, and this one forgets it. One refused because this process's own sweep took it meanwhile
        (``_taken_here``) is written again in the next round, at its new epoch."""
        answers = [
            Answer(*key, replies, exchange, self._epochs.get(key, 0), self._marks.get(key))
            for key, (replies, exchange) in self._journaled.items()
            if key not in self._claims  # claimed during the claims' write: next round, after its claim
        ]
        stored = await self.db.store_answers(answers)
        again = {
            (a.channel, a.message_id) for a, mine in zip(answers, stored, strict=True)
            if not mine and await self._taken_here((a.channel, a.message_id), a.epoch)
        }  # fmt: skip
        done: list[Key] = []
        for answer, mine in zip(answers, stored, strict=True):
            key = (answer.channel, answer.message_id)
            if key in again:  # taken over by this process's sweep: the next round writes it at its epoch
                continue
            del self._journaled[key]
            if answer.exchange is not None and answer.exchange.turns:
                self._changed_now(answer.exchange.user_key)
                if mine:
                    self._changed_here(answer.exchange.user_key)
                elif self._copies is not None:
                    self._copies.drop(answer.exchange.user_key)  # it has the exchange refused
            if not mine:
                self._taken_over(key)
                done.append(key)
            elif answer.done_at is not None:
                self._finished(key)
                done.append(key)
        self._unkeep(done)

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
        """Which of these messages a process sent before it could write their answers or done marks."""
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
            self._changed_here(turn.user)
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
                now = deps.clock()
                epoch = self._epochs.get(key, 0)
                if key not in self._claims:  # else not in the database yet: nothing to renew
                    if await deps.db.renew_lease(*key, now, self.lease_s, epoch):
                        if key in self._leases:
                            self._leases[key] = now + timedelta(seconds=self.lease_s)
                    elif not await self._taken_here(key, epoch):
                        return
            await asyncio.sleep(self.lease_s / 3)

    async def resume(self) -> int:
        """Take over messages whose lease ran out: re-run those with no answer yet, re-send those
        answered, except those the hot store says were sent (``_note_sent``). Each is taken by one
        process only. The first time, what a crash left in the journal is written before. After a
        take-over that failed, the messages it may have taken (the commit ran, its reply never
        came) are found by this process's mark and run too, rather than a lease later."""
        deps = self.pipeline.deps
        if not self._recovered:
            await self._recover()
        now = deps.clock()
        taking = asyncio.get_running_loop().create_future()
        self._takings.add(taking)
        found: list[InboxItem] = []
        try:
            try:
                taken = await deps.db.lease_open(now, self.lease_s, owner=self.owner)
            except Exception:
                self._lost_taking = True
                raise
            items = [item for item in taken if item.channel in self.repliers]
            for item in items:
                # Taken at a new epoch: a run of it still going here (its lease ran out under it)
                # writes with this one, and the process it was taken from is fenced off.
                self._hold((item.channel, item.message_id), item.epoch, now + timedelta(seconds=self.lease_s))
            if self._lost_taking:
                # One with a run still going here is left to it: its refused write finds the epoch.
                # Their lease's end is not known here: their answers go to the database before they
                # are sent, fenced by the epoch, never from the journal alone (``_holds``).
                busy = {(i.channel, i.message_id) for i in taken} | self._working
                found = [
                    i for i in await deps.db.open_inbox(owner=self.owner)
                    if (i.channel, i.message_id) not in busy and i.channel in self.repliers
                ]  # fmt: skip
                if found:
                    log.warning("%d messages a take-over whose result was lost took are run now", len(found))
                for item in found:
                    self._hold((item.channel, item.message_id), item.epoch, None)
                items += found
                self._lost_taking = False
        finally:
            self._takings.discard(taking)
            taking.set_result(None)
        keys = [(item.channel, item.message_id) for item in items]
        sent = await self._sent_elsewhere([key for key in keys if key not in self._sent])
        for item, key in zip(items, keys, strict=True):
            replies = item.replies
            if key in sent:  # its replies are out: the run only marks it done
                log.info("message %s:%s was sent before the database went down; marked done, not sent again", *key)
                self._sent.add(key)
                self.not_resent += 1
                if replies is None:  # sent from a journal elsewhere: its exchange is that process's to store
                    replies = []
            p = item.payload
            inbound = Inbound(
                item.channel, p["chat_id"], p["user_id"], item.message_id, p["text"], p.get("kind", "text")
            )
            self.spawn(self.run(inbound, replies))
        return len(taken) + len(found)

    async def _recover(self) -> None:
        """Write the answers a crash of this process left in its journal, before any message is
        taken over: those sent are marked done, the others are re-sent from the database, and none
        is paid for again. One another process took over meanwhile is its own (the write is fenced)."""
        assert self.journal is not None
        now = self.pipeline.deps.clock()
        claims = self.journal.claims()
        if claims:  # leased out already: this sweep takes over those that are this process's
            landings = await self.db.land_claims(claims, self.journal.token, now - timedelta(seconds=1), 0)
            self.journal.landed([(c.channel, c.message_id) for c in claims])
            log.warning(
                "%d messages the last run claimed are stored in the inbox: %d of them were claimed elsewhere too",
                len(claims), sum(1 for landing in landings if landing is not Landing.MINE),
            )  # fmt: skip
        kept = self.journal.kept(now)
        if kept:
            stored = await self.db.store_answers(kept)
            self.journal.drop([(a.channel, a.message_id) for a in kept])
            for answer, mine in zip(kept, stored, strict=True):
                if mine and answer.exchange is not None and answer.exchange.turns:
                    self._changed_here(answer.exchange.user_key)
            sent = sum(1 for a, mine in zip(kept, stored, strict=True) if mine and a.done_at is not None)
            log.warning(
                "%d answers the last run kept in its journal are stored: %d were sent, %d taken over elsewhere",
                len(kept), sent, stored.count(False),
            )  # fmt: skip
        self._recovered = True

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
