"""Budget checks that outlive Redis: ``FailoverHotStore(primary, fallback)``.

Every call goes to the primary (Redis). When it fails at the connection level, that call and every
call after it go to the fallback (the Postgres hot store: slower, still exact across processes) for
``retry_after_s`` (counted from the end of the last try); then the primary is tried again, calls
waiting meanwhile, for ``probe_timeout_s`` at most: a primary that hangs (accepts, never answers)
holds them that long, not for its client's own timeout. If both fail, ``StoresUnavailable``:
budgets cannot be checked, so AI replies pause rather than spend unchecked.

The rules that keep budgets exact across a switch:

a) Counters written on the fallback during an outage are stale on the primary when it comes back
   (a network partition keeps Redis's data). Before the primary is used again they are deleted
   there, so Budget seeds them again from the ledger, which holds the outage's spend. "Written on
   the fallback" is what this process wrote and, when the fallback can list them
   (``counter_keys``), every counter of the outage there: another process's, or one left by a
   process that crashed (a new process starts with this step). The first process back does it, in
   one step that claims the outage (``CLEANED_KEY``); a later one deleting again would race the
   first one's fresh seeds. Deleting a counter also drops every open reservation's hold on it, so a
   counter seeded again is never lowered by a hold it never held.
   Likewise the fallback's counters must not outlive their outage: each outage has an epoch
   (``EPOCH_KEY`` on the fallback, moved on by the first process back), and counters on the
   fallback are named with it, so the next outage starts from fresh ones, seeded from the ledger.
b) A settle goes to the store in use. For a reservation made on the other store it adds only the
   actual amounts there, and the other store's hold goes when it expires or with (a).
c) The rate limiter, the cache, warn-once flags and plain counters follow the store in use (cache
   hit and miss counts written on the fallback are counters of the outage: deleted with (a)). A
   message's once-key (``once``, ``hit_and_get``'s ``once``) is checked on the primary only: set on
   the fallback it would not be seen by processes still on Redis, so there it goes unchecked (None,
   ``HitRead.unchecked``) and the caller asks the database (bot.dispatch).
d) Both stores failing raises ``StoresUnavailable``; for ``retry_after_s`` after that, calls raise
   it at once instead of waiting on two dead servers.

And more, so that a switch in the middle of a message loses no hold:

e) reserve and settle never create a counter on the store in use (the stores would start it at 0,
   and it would then read as seeded, forgetting the period's spend): the stores' ``seeded_only``
   refuses or leaves out a missing counter in the same atomic step as the write, since another
   process's switch may have just deleted any of them. reserve refuses a hold on a missing counter
   (the caller reads the meters again, which seeds it, and retries: bot/calls.py does); settle
   leaves it out, since the ledger it will be seeded from has the call's row (bot/calls.py
   records the row, then settles; see j). On the fallback, and with reservations to carry (f),
   reserve first reads which of its counters exist: one round trip more, off the hot path.
f) This process's reservations still open on the store it left are carried to the store in use,
   key by key as each counter exists there, before any new reservation, and at once with a move to
   the fallback (those not being settled: k): no limit check (they were admitted), same expiry, an
   id of their own. A settle then replaces each carried hold. A carry
   and the settle of one reservation never overlap; a new reservation waits for both. A
   reservation made with the rate limit's read (``hit_and_get``'s ``admit``) rides along only on
   the primary with nothing to carry; anywhere else it is declined and the caller reserves as
   usual, through the steps above.
g) The switch back waits for calls in flight on the fallback, and calls arriving meanwhile wait
   for it: nothing is written to the fallback after the keys to delete are listed.
h) A process still on the fallback sees the epoch move with its next reserve or settle, before
   either writes there: it goes back at once (instead of at the end of its own ``retry_after_s``)
   and makes that reserve or settle on the primary. On the outage's counters, which nobody reads
   any more, a reserve would miss what the others spent since, and a settle would be lost to a
   counter already seeded from a ledger without its call (tests/budget/test_failover.py). There,
   a settle adds its actual amounts where the counter exists: when the seed's sum had the call's
   row already, counted twice (a budget reached a little early, never passed).
i) A seed follows a read that found its counter missing and a ledger sum, in the caller's task
   (Budget.meters). If this process switched stores between that read and the seed, the seed is
   dropped: its sum may predate a settle that found the counter missing on the new store and was
   left out (e), so written there it would under-count. The caller reads again and seeds afresh;
   meanwhile reserve refuses the missing counter (e), so nothing is admitted unchecked.
j) A seed's sum has every call recorded before it, and a call is recorded before its settle
   begins (bot/calls.py; the outbox's record and the ledger sum's last read are each one step of
   the event loop, with the settle's or the seed's start). So a settle does not add to a counter
   that this process seeded after the settle began: the seed's sum has the call already. The
   stores say whether a seed wrote (``seed_counter`` returns it). A settle waits for this
   process's seeds of its counters sent before it began (they lack the call: it adds to what they
   wrote); one sent after it began that still lands before its write is answered after, and the
   settle then takes its amount back in one more step. Without this, a call in flight over a
   switch back counted twice (tests/budget/test_failover.py caught it in 25 runs of 30, once its
   ledger recorded the row before the settle as bot/calls.py does).

And one store for all processes, so that a partition that cuts off only some of them does not
split the budget in two:

k) A process that cannot reach the primary says so on the fallback (``DOWN_KEY``: the outage's
   epoch and the process's token), when it moves there and at each failed try of the primary,
   kept ``2 * (retry_after_s + probe_timeout_s)``. A process on the primary reads that every
   ``watch_s`` (in a task of its own, off the messages' path) and, when another process said it
   for the current outage, moves to the fallback too, carrying its open reservations (f). Before
   this, each side of such a partition counted only its own calls, for as long as it lasted. A
   process that reaches the primary stays on the fallback while another's word stands (a new
   process too): the last to say it goes back first, or anyone once it lapses, and the others
   follow it (h). A process that finds the epoch moved (h) and cannot reach the primary either
   takes up the current outage (its counters; its open holds on the past outage's counters are
   carried there, f) and says so, instead of counting where nobody reads any more.
   A counter on the fallback may have been seeded from the ledger after another's word and before
   the rows of this process's calls settled on the primary meanwhile were in it. So a process
   that moves to the fallback (joining, or cut off itself) adds there what it settled on the
   primary since the look before its last (the word, written before its process counts on the
   fallback, was not there at the earlier look, so no seed came before it); a settle still on its
   way to the primary at the move is added once it lands. Where the seed had a call, it counts
   twice (a budget reached a little early, never passed).

And across processes, so that a call left out of a missing counter is in its next seed:

l) A settle that leaves a call out of a counter missing on the store in use (e) logs the amount
   there under the call's ledger row, in the same step (``HotStore.left_out``; Budget passes the
   row, which bot/calls.py records first). The call's row may still wait in its process's outbox,
   out of the sum another process seeds the counter from, and (j) sees only this process's
   seeds. So a seed (Budget._seed) reads the counter's log, asks the ledger which of its rows it
   has (rows in the seeding process's own outbox included), sums the ledger, and adds the rest;
   the store's seed adds, in the same step, any row logged after that read, and clears the log.
   A row the ledger has is counted once; one it may lack is added (counted twice only where a row
   logged after the read was in the sum: a budget reached a little early, never passed). It costs
   one read of the logs when a message seeds counters, and a ledger lookup only when a log has
   rows, around a switch.

Limits:

- A partition that cuts off only some processes is counted on one store only once the others
  read the word (k): for up to ``watch_s`` the two sides admit calls apart (a call that comes after
  ``watch_s`` with no look waits for one, so an idle process does not start on the wrong side);
  what they spent is on one store once they move (k). Another process's calls in flight at a
  switch back are not on the primary until they settle or its next reserve carries them (f); at
  a move to the fallback they are carried with the move, where their counters exist there.
  And a reserve that read the epoch just before another process moved it is checked against the
  outage's counters, which miss what was reserved on the primary since: one round trip's window a
  process, where before (h) every reserve until the process's own retry was in it. (A settle in
  that window is lost too, but the seeds on the primary come after the move, so their sums have
  its call's row, recorded before the settle began; unless the row is still in its process's
  outbox, the (j) case below.) Each can let spend pass a limit a little: about one call a process.
- The word (k) keeps every process on the fallback for up to ``2 * (retry_after_s +
  probe_timeout_s)`` after the last process that said it stopped calling (it crashed, or has no
  messages): the fallback is exact, only slower.
- (e) once read the counters before each reserve and settle. Dropping that read (one Redis round
  trip fewer for each) first under-counted in the outage drill, 1 run in 6: the drill recorded
  each row after its settle, unlike bot/calls.py, so a seed read between the two missed a call
  left out. With the row first and rule (j), 60 drill runs of 60 are exact.
- Across processes, (j) is not known: a call recorded by one process and settled after another
  process seeded the counter from a sum that has the row counts twice (a budget reached a little
  early, never passed). Closing it needs a seed that knows which settles landed on the counter
  (a log of settled amounts with their row ids, not only of those left out as in l), not built.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextvars import Context, ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

from budget.stores.base import Admit, HitRead, Hold, HotStore

log = logging.getLogger(__name__)

T = TypeVar("T")
# Deletes counters and the holds on them, unless the outage ``epoch`` was already cleaned up there
# by another process (None: delete anyway). True if it deleted.
Deleter = Callable[[Sequence[str], "int | None"], Awaitable[bool]]

PROBE_KEY = "pb:{failover}:probe"
EPOCH_KEY = "pb:{failover}:epoch"  # on the fallback: the current outage's number
CLEANED_KEY = "pb:{failover}:cleaned"  # on the primary: the last outage cleaned up there
# On the fallback: the outage a process is on the fallback for because it cannot reach the primary,
# and which process said so last (k): ``epoch << 32 | token``, kept a little longer than its retries.
DOWN_KEY = "pb:{failover}:down"
_TOKEN_MASK = 0xFFFFFFFF
_PAST = 2  # a hold's store in ``_Open.at``: a past outage's counters on the fallback, carried like the other's (k)


# (this store's id, its switch count) at this task's last counter read: a seed that follows it in
# the same task (Budget.meters reads, sums the ledger, seeds) knows whether a switch came between.
_READ_AT: ContextVar[tuple[int, int] | None] = ContextVar("pennybot_failover_read_at", default=None)
# Set in a task whose switch back (h) just failed: its call goes on on the fallback.
_STAY: ContextVar[bool] = ContextVar("pennybot_failover_stay", default=False)


class _Behind(Exception):
    """Another process is back on the primary and cleaned it up (the fallback's epoch moved on):
    a reserve or settle here would count on counters nobody reads any more (h)."""


class StoresUnavailable(Exception):
    """Neither the hot store nor its fallback can be reached: no budget can be checked, so AI
    replies pause until one is back."""

    def __init__(self) -> None:
        super().__init__("AI replies are paused: the budget service cannot be reached right now. Try again soon.")


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a store raises when it cannot be reached, as opposed to a bug: socket errors (timeouts
    included), redis-py's connection errors and timeouts, asyncpg's lost connections, server
    shutdowns and a server out of connections."""
    found: list[type[BaseException]] = [OSError]
    try:
        from redis import exceptions as redis_errors

        found += [redis_errors.ConnectionError, redis_errors.TimeoutError]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    try:
        from asyncpg import exceptions as pg_errors

        found += [pg_errors.PostgresConnectionError, pg_errors.OperatorInterventionError]
        found += [pg_errors.TooManyConnectionsError]
    except ImportError:  # pragma: no cover - asyncpg comes with the postgres extra
        pass
    return tuple(found)


def _deleter(store: HotStore) -> Deleter:
    delete = getattr(store, "delete", None)
    if callable(delete):

        async def delete_all(keys: Sequence[str], epoch: int | None) -> bool:
            await delete(keys)  # nothing to claim the outage with: every process back deletes
            return True

        return delete_all
    from budget.stores.redis import RedisHotStore, script_source

    if isinstance(store, RedisHotStore):
        script = store.redis.register_script(script_source("delete_counters"))
        cleaned = store._k(CLEANED_KEY)

        async def delete_in_redis(keys: Sequence[str], epoch: int | None) -> bool:
            args = ["" if epoch is None else epoch, store._held_prefix]
            return bool(await script(keys=[cleaned, store._due, *(store._k(k) for k in keys)], args=args))

        return delete_in_redis
    raise TypeError(f"FailoverHotStore needs stores that can delete counters; {type(store).__name__} cannot")


@dataclass
class _Open:
    """A reservation this process made and has not settled: where each key's hold is counted."""

    amounts: dict[str, int]
    ttl_s: int
    now: float
    at: dict[str, tuple[int, str]]  # key -> (store index, the reservation id holding it there)
    carried: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # a carry and the settle never interleave


class FailoverHotStore:
    """A HotStore on ``primary`` while it answers, on ``fallback`` while it does not."""

    # The primary's, Redis's: on the fallback, during an outage, ``once`` goes unchecked (c).
    dedupes = True

    def __init__(
        self,
        primary: HotStore,
        fallback: HotStore,
        *,
        retry_after_s: float = 5.0,
        drain_timeout_s: float = 10.0,
        probe_timeout_s: float = 1.0,
        watch_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stores = (primary, fallback)
        self.retry_after_s = retry_after_s
        self._drain_timeout_s = drain_timeout_s
        # Calls wait while the primary is tried again: a hung one (it accepts, never answers) is
        # given up on after this, not after its client's own timeout.
        self._probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._delete = _deleter(primary)
        # Refuses a fallback that could not be the primary's stand-in either; deletes this process's word (k).
        self._delete_on_fallback = _deleter(fallback)
        self._errors = connection_errors()
        # Start as if an outage just ended: the first call clears what a crashed process left behind.
        self.using = 1
        self._retry_at = float("-inf")
        self._down_until = float("-inf")
        self._epoch: int | None = None  # the outage whose counters this process uses on the fallback
        self._written: set[str] = set()  # counters this process wrote on the fallback in this outage
        self._switches = 0  # moves on with every switch, either way (rule i)
        # Rule (j): a sequence of this process's settles and seeds, in the order they begin; the
        # settles under way (their numbers), and for each counter on store i the number of the first
        # seed of it written while one of them was under way.
        self._ticks = 0
        self._settling: set[int] = set()
        self._seeded_at: tuple[dict[str, int], dict[str, int]] = ({}, {})
        # Seeds of this process sent to store i and not yet answered, by counter: each set when answered.
        self._flying: tuple[dict[str, set[asyncio.Event]], dict[str, set[asyncio.Event]]] = ({}, {})
        self._open: dict[str, _Open] = {}
        self._fallback_calls = 0
        self._fallback_idle = asyncio.Event()
        self._fallback_idle.set()
        self._steady = asyncio.Event()  # cleared while switching back
        self._steady.set()
        self._lock = asyncio.Lock()
        self._announced = False  # the move to the fallback was logged
        # Rule (k): this process's word on the fallback that it cannot reach the primary, how long it
        # stands, and the watch for another's while on the primary.
        self._token = secrets.randbits(32)
        self._down_ttl_s = max(1, math.ceil(2 * (retry_after_s + probe_timeout_s)))
        self._watch_s = watch_s
        self._watch_at = float("-inf")
        self._watching: asyncio.Task[None] | None = None
        self._joined = False  # on the fallback only for another process's word
        # What this process settled on the primary since its last look for another's word began, and
        # what it is to bring to the fallback's counters: what it settled on the primary that a seed
        # there may lack (k).
        self._settled: Counter[str] = Counter()
        self._bring: Counter[str] = Counter()
        self._brought = 0

    # --- switching ---

    async def _run(self, op: Callable[[int], Awaitable[T]]) -> T:
        if self._clock() < self._down_until:
            raise StoresUnavailable()
        await self._steady.wait()
        if self.using == 0 and self._clock() >= self._watch_at:
            # Nobody looked for a while (this process was idle): this call waits for the look (k).
            idle = self._clock() >= self._watch_at + self._watch_s
            watching = self._watch()
            if idle:
                await asyncio.shield(watching)
        # The primary tried just now and not reached: a call that finds the epoch moved (h) stays.
        # (Not when reached and stayed for another's word, k: that word may have just lapsed.)
        unreached = self.using == 1 and self._clock() >= self._retry_at and not await self._switch_back()
        unreached = unreached and not self._joined
        first = self.using
        try:
            try:
                return await self._on(first, op)
            except _Behind:
                first = 1 if unreached else await self._follow()
                token = _STAY.set(first == 1)
                try:
                    return await self._on(first, op)
                finally:
                    _STAY.reset(token)
        except self._errors as exc:
            error = exc
        try:
            if first == 0:
                await self._fail_over(error)
            elif not await self._switch_back(force=True):
                raise error
            return await self._on(self.using, op)
        except self._errors as exc:
            log.error("budget stores unreachable, AI replies paused: %s", _why(exc))
            self._down_until = self._clock() + self.retry_after_s
            raise StoresUnavailable() from exc

    async def _follow(self) -> int:
        """Rule (h): a reserve or settle that found the epoch moved wrote nothing on the fallback: it
        goes to the primary, once this process is back there too (the store to use, returned). If
        the primary is out of this process's reach (a partition that cuts off only some processes:
        see Limits), it stays on the fallback."""
        return 0 if await self._switch_back(force=True) else 1

    async def _on(self, i: int, op: Callable[[int], Awaitable[T]]) -> T:
        if i == 0:
            return await op(0)
        self._fallback_calls += 1
        self._fallback_idle.clear()
        try:
            if self._epoch is None:
                self._epoch = await self._fallback_epoch()  # this process started while the primary was away
            if self._bring:
                await self._bring_over()  # brought before any call there (k)
            return await op(1)
        finally:
            self._fallback_calls -= 1
            if self._fallback_calls == 0:
                self._fallback_idle.set()

    async def _fail_over(self, error: BaseException) -> None:
        async with self._lock:
            if self.using == 1:
                return
            epoch = await self._fallback_epoch()
            await self._say_down(epoch)  # before any call of this process counts there (k)
            self._to_fallback(epoch)
            self._announce(error)
        await self._catch_up()

    def _to_fallback(self, epoch: int) -> None:
        self._epoch = epoch
        self.using = 1
        self._switches += 1
        self._forget(1)
        self._retry_at = self._clock() + self.retry_after_s
        self._joined = False
        self._bring.update(self._settled)
        self._settled = Counter()

    async def _fallback_epoch(self) -> int:
        return (await self.stores[1].get_counters([EPOCH_KEY]))[0] or 0

    def _announce(self, error: BaseException | str) -> None:
        if not self._announced:
            self._announced = True
            why = error if isinstance(error, str) else f"unreachable ({_why(error)})"
            log.warning(
                "%s %s: budgets are checked on %s, the primary is tried again every %g s",
                type(self.stores[0]).__name__, why, type(self.stores[1]).__name__, self.retry_after_s,
            )  # fmt: skip

    # --- one store for all (k) ---

    async def _say_down(self, epoch: int | None) -> None:
        """Say on the fallback that this process cannot reach the primary, for outage ``epoch`` (k)."""
        if epoch is not None:
            with contextlib.suppress(*self._errors):  # the fallback is down too: the calls find that out
                await self.stores[1].set_counters({DOWN_KEY: epoch << 32 | self._token}, self._down_ttl_s)

    async def _bring_over(self) -> None:
        """Add to the fallback's counters what this process settled on the primary since the look
        before its last (k): a seed there from the ledger may have been summed before those calls'
        rows were in it. Where the seed had them, they count twice (a budget reached a little early,
        never passed). A counter not there yet is left out (e): its seed will have them."""
        if not self._bring:
            return
        amounts, self._bring = self._bring, Counter()
        self._brought += 1
        self._written.update(amounts)
        named = {self._k(1, k): a for k, a in amounts.items()}
        try:
            await self.stores[1].settle(f"~brought:{self._token:08x}:{self._brought}", named, seeded_only=True)
        except self._errors:
            self._bring.update(amounts)  # tried again with the next call there

    async def _unsay(self) -> None:
        """A process that said it cannot reach the primary stops (k): its word, if still the one that
        stands, goes, so the others do not wait for it to lapse. (Another's said between the read and
        the delete is said again with that process's next try.)"""
        try:
            word, _ = await self._word()
            if word is not None and word & _TOKEN_MASK == self._token:
                await self._delete_on_fallback([DOWN_KEY], None)
        except Exception as error:  # shutting down: it lapses on its own
            log.debug("word on the fallback not taken back (%s)", type(error).__name__)

    async def _word(self) -> tuple[int | None, int]:
        """The word on the fallback (k), and the current outage's epoch there: one read."""
        word, epoch = await self.stores[1].get_counters([DOWN_KEY, EPOCH_KEY])
        return word, epoch or 0

    def _stay_for_another(self) -> None:
        """On the fallback for another process's word only (k): this one does not say it."""
        self._joined = True
        self._announce("reached, but another process cannot reach it")

    def _down_elsewhere(self, word: int | None, epoch: int | None) -> bool:
        """Whether another process said it cannot reach the primary, in the current outage (k)."""
        return word is not None and word >> 32 == (epoch or 0) and word & _TOKEN_MASK != self._token

    def _watch(self) -> asyncio.Task[None]:
        """Look for another process's word (k) in a task of its own, at most every ``watch_s``: not
        the message's work (its context is left behind)."""
        self._watch_at = self._clock() + self._watch_s
        if self._watching is None:
            self._watching = asyncio.get_running_loop().create_task(self._join(), context=Context())
        return self._watching

    async def _join(self) -> None:
        """Move to the fallback because another process is there, unable to reach the primary (k)."""
        try:
            async with self._lock:
                if self.using == 1:
                    return
                # Settled before this look began and after the last one's: a word written between
                # the two reads may have a seed after it that lacks them (k).
                before, self._settled = self._settled, Counter()
                try:
                    word, epoch = await self._word()
                except BaseException:
                    self._settled.update(before)
                    raise
                if not self._down_elsewhere(word, epoch):
                    return
                self._to_fallback(epoch)
                self._bring.update(before)
                self._stay_for_another()
            await self._catch_up()
        except self._errors:
            pass  # the fallback cannot be read: nobody can be counting there
        except Exception:
            log.exception("the fallback's word on the primary not read")
        finally:
            self._watching = None

    def _take_up(self, current: int) -> None:
        """Behind (h) and the primary out of reach: count on the current outage's counters, where
        the others will join, not on the past one's. Open holds there are carried over (f)."""
        self._epoch = current
        self._switches += 1
        self._forget(1)
        for held in self._open.values():
            for key, (store, rid) in list(held.at.items()):
                if store == 1:
                    held.at[key] = (_PAST, rid)

    async def _switch_back(self, *, force: bool = False) -> bool:
        async with self._lock:
            if self.using == 0:
                return True
            if not force and self._clock() < self._retry_at:
                return False  # another call just tried
            self._retry_at = self._clock() + self.retry_after_s
            self._steady.clear()
            try:
                back = await self._try_primary()
                if not back:  # counted from the end of this try: one that took long is not made again at once
                    self._retry_at = self._clock() + self.retry_after_s
                return back
            finally:
                self._steady.set()

    async def _try_primary(self) -> bool:
        try:
            await asyncio.wait_for(self._fallback_idle.wait(), self._drain_timeout_s)
        except TimeoutError:
            if not self._joined:
                await self._say_down(self._epoch)  # still here: the word stands (k)
            return False
        keys, current, word = set(self._written), None, None
        with contextlib.suppress(*self._errors):  # the fallback is down too: only this process's keys are known
            word, current = await self._word()
            listing = getattr(self.stores[1], "counter_keys", None)
            if callable(listing):
                suffix = f"#{current if self._epoch is None else self._epoch}"
                keys.update(k.removesuffix(suffix) for k in await listing() if k.endswith(suffix))
        epoch = self._epoch if self._epoch is not None else current
        try:
            async with asyncio.timeout(self._probe_timeout_s):  # TimeoutError is an OSError
                await self.stores[0].get_counters([PROBE_KEY])
            if self._down_elsewhere(word, current):  # another process cannot reach it: stay with it (k)
                self._stay_for_another()
                return False
            if keys:
                await self._delete(sorted(keys), None if epoch is None else epoch + 1)
        except self._errors as exc:
            self._joined = False
            behind = self._epoch is not None and current is not None and current > self._epoch
            await self._say_down(current if self._epoch is None or behind else self._epoch)  # before it counts (k)
            if self._epoch is None:
                self._epoch = current  # this process started while the primary was away
            elif behind and current is not None:
                self._take_up(current)  # behind, and cannot follow (h): the current outage is ours too
            self._announce(exc)
            return False
        self.using = 0
        self._joined = False
        self._switches += 1
        self._forget(0)
        self._written.clear()
        self._settled, self._bring = Counter(), Counter()  # the primary's counters are seeded again from the ledger
        if keys and epoch is not None and current is not None and current <= epoch:
            # The next outage starts with fresh counters, and the processes still there follow (h).
            with contextlib.suppress(*self._errors):
                await self.stores[1].incr(EPOCH_KEY, epoch + 1 - current)
        if self._announced:
            self._announced = False
            log.warning(
                "%s is back: budgets are checked there again; counters used meanwhile are seeded from the ledger",
                type(self.stores[0]).__name__,
            )  # fmt: skip
        return True

    # --- keys and which counters exist where ---

    def _k(self, i: int, key: str) -> str:
        """A counter's name on store ``i``: on the fallback, within the current outage."""
        return key if i == 0 else f"{key}#{self._epoch}"

    def _forget(self, i: int) -> None:
        """Rule (j)'s marks on store ``i`` from before a switch to it: its counters were deleted."""
        self._seeded_at[i].clear()

    async def _present(self, i: int, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` exist on store ``i``, asked every time: another process may have
        deleted any of them with its switch back. On the fallback, the epoch comes along (h)."""
        wanted = list(dict.fromkeys(keys))
        if i == 0:
            values = await self.stores[0].get_counters(wanted)
        else:
            *values, epoch = await self.stores[1].get_counters([*(self._k(1, k) for k in wanted), EPOCH_KEY])
            if self._epoch is not None and (epoch or 0) > self._epoch:
                self._retry_at = float("-inf")  # another process is back on the primary: follow it now
                if not _STAY.get():
                    raise _Behind()
        return {k for k, v in zip(wanted, values, strict=True) if v is not None}

    def _drop_expired(self, now: float) -> None:
        """Forget open reservations past their expiry: given back wherever they were held."""
        for rid in [rid for rid, held in self._open.items() if held.now + held.ttl_s <= now]:
            del self._open[rid]

    async def _catch_up(self) -> None:
        """After a move to the fallback, a call there (so a switch back waits for it, g): what is to
        bring is brought (``_on``), and this process's open reservations are carried at once (f),
        not with its next reserve: until then another process there would admit calls without
        them, and a call in flight could pass a limit when it settles. One being settled is left:
        its settle replaces the hold (and what it lands on the primary is brought over)."""

        async def carry(i: int) -> None:
            with contextlib.suppress(_Behind):  # another process is back already: the next call follows it (h)
                if elsewhere := self._elsewhere(i):
                    await self._carry(i, -math.inf, await self._present(i, elsewhere), settling=False)

        await self._on(1, carry)

    async def _carry(self, i: int, now: float, present: set[str], *, settling: bool = True) -> None:
        """Hold on store ``i`` what this process's open reservations hold elsewhere (rule f), those
        being settled too unless ``settling`` is false."""
        self._drop_expired(now)
        for rid, held in list(self._open.items()):
            if not any(where[0] != i and k in present for k, where in held.at.items()):
                continue
            if not settling and held.lock.locked():
                continue
            # Waits for a settle of it under way (one stuck on the store that just failed included):
            # admitting a new reservation meanwhile would not count this one's hold.
            async with held.lock:
                if self._open.get(rid) is not held:
                    continue  # settled meanwhile
                for key, amount in held.amounts.items():
                    if held.at[key][0] == i or key not in present:
                        continue
                    held.carried += 1
                    carried_id = f"{rid}~{held.carried}"
                    gone = await self.stores[i].reserve(
                        carried_id, [Hold(self._k(i, key), amount, None)], held.ttl_s, held.now, seeded_only=True
                    )
                    if gone is not None:
                        continue  # deleted since it was read: it stays held where it was
                    held.at[key] = (i, carried_id)
                    if i == 1:
                        self._written.add(key)

    # --- the HotStore protocol ---

    async def get_counters(self, keys: Sequence[str]) -> list[int | None]:
        async def on(i: int) -> list[int | None]:
            return self._read(await self.stores[i].get_counters([self._k(i, k) for k in keys]))

        return await self._run(on)

    async def hit_and_get(
        self,
        key: str,
        limit: int,
        window_s: float,
        now: float,
        keys: Sequence[str],
        peeks: Sequence[str] = (),
        admit: Admit | None = None,
        *,
        once: tuple[str, int] | None = None,
    ) -> HitRead:
        async def on(i: int) -> HitRead:
            # The reservation rides along only on the primary with nothing to carry: otherwise
            # reserve's own steps come first (e, f, h), and the caller reserves as usual. ``once``
            # goes to the primary only (c).
            ride = admit if admit is not None and i == 0 and not self._elsewhere(i) else None
            if ride is not None and len(self._open) > 256:
                self._drop_expired(now)
            named = [self._k(i, k) for k in keys]
            checked = once if i == 0 else None
            read = await self.stores[i].hit_and_get(key, limit, window_s, now, named, peeks, ride, once=checked)
            if ride is not None and read.reserved:
                self._opened(ride.reservation_id, ride.holds, ride.ttl_s, now, i)
            return read._replace(values=self._read(read.values), unchecked=once is not None and checked is None)

        return await self._run(on)

    def _elsewhere(self, i: int) -> set[str]:
        """Counters this process's open reservations hold on the store that is not ``i`` (f)."""
        return {k for held in self._open.values() for k, where in held.at.items() if where[0] != i}

    def _opened(self, reservation_id: str, holds: Sequence[Hold], ttl_s: int, now: float, i: int) -> None:
        amounts: dict[str, int] = {}
        for h in holds:
            amounts[h.key] = amounts.get(h.key, 0) + h.amount
        self._open[reservation_id] = _Open(amounts, ttl_s, now, {k: (i, reservation_id) for k in amounts})

    def _read(self, values: list[int | None]) -> list[int | None]:
        _READ_AT.set((id(self), self._switches))  # for this task's seeds (rule i)
        return values

    async def seed_counter(self, key: str, value: int, ttl_s: int, *, seen: Collection[str] | None = None) -> bool:
        self._ticks += 1  # before any await: the ledger sum ``value`` was read just now (rule j)
        tick = self._ticks
        read_at = _READ_AT.get()
        if read_at is not None and read_at[0] == id(self) and read_at[1] != self._switches:
            # Rule (i): the ledger sum was read before a switch; written now it could miss a settle
            # made meanwhile. Not written: the caller's next read finds the counter missing again.
            log.debug("seed of %s read before a switch: dropped", key)
            return False

        async def on(i: int) -> bool:
            if i == 1:
                self._written.add(key)
            answered = asyncio.Event()
            flying = self._flying[i].setdefault(key, set())
            flying.add(answered)
            try:
                wrote = await self.stores[i].seed_counter(self._k(i, key), value, ttl_s, seen=seen)
                if wrote and self._settling and min(self._settling) < tick:
                    self._seeded_at[i][key] = tick  # settles begun before it must not add what it has (j)
            finally:
                flying.discard(answered)
                if not flying:
                    self._flying[i].pop(key, None)
                answered.set()
            return wrote

        return await self._run(on)

    async def left_out(self, keys: Sequence[str]) -> list[dict[str, int]]:
        return await self._run(lambda i: self.stores[i].left_out([self._k(i, k) for k in keys]))

    async def set_counters(self, values: Mapping[str, int], ttl_s: int) -> None:
        async def on(i: int) -> None:
            if i == 1:
                self._written.update(values)
            await self.stores[i].set_counters({self._k(i, k): v for k, v in values.items()}, ttl_s)

        await self._run(on)

    async def swap_counters(self, values: Mapping[str, int], ttl_s: int) -> list[int | None]:
        if not values:
            return []

        async def on(i: int) -> list[int | None]:
            # Named and noted as set_counters's: on the fallback, values of the outage, deleted with (a).
            if i == 1:
                self._written.update(values)
            return await self.stores[i].swap_counters({self._k(i, k): v for k, v in values.items()}, ttl_s)

        return await self._run(on)

    async def reserve(
        self, reservation_id: str, holds: Sequence[Hold], ttl_s: int, now: float, *, seeded_only: bool = True
    ) -> str | None:
        async def on(i: int) -> str | None:
            if i == 1:
                self._written.update(h.key for h in holds)
            elsewhere = self._elsewhere(i)
            if elsewhere or i == 1:  # holds to carry first (f), or the epoch to watch (h): read which exist
                present = await self._present(i, [*(h.key for h in holds), *elsewhere])
                missing = [h.key for h in holds if h.key not in present]
                if missing:
                    log.debug("counter %s not seeded on the store in use: refused until meters are read", missing[0])
                    return missing[0]
                await self._carry(i, now, present)
            elif len(self._open) > 256:  # the store itself refuses a missing counter, in the same step (e)
                self._drop_expired(now)  # a lost task's reservation, now and then: not on every call
            named = [Hold(self._k(i, h.key), h.amount, h.limit) for h in holds]
            refused = await self.stores[i].reserve(reservation_id, named, ttl_s, now, seeded_only=True)
            if refused is not None:
                return holds[[h.key for h in named].index(refused)].key
            self._opened(reservation_id, holds, ttl_s, now, i)
            return None

        return await self._run(on)

    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], *, seeded_only: bool = True, row: str | None = None
    ) -> list[str]:
        self._ticks += 1  # before any await: the caller has recorded the call's row by now (rule j)
        began = self._ticks

        async def on(i: int) -> None:
            held = self._open.get(reservation_id)
            if held is None:
                await self._settle_on(i, reservation_id, actual, {}, began, row)
                return
            async with held.lock:  # never at the same time as a carry of it
                await self._settle_on(i, reservation_id, actual, held.at, began, row)
                self._open.pop(reservation_id, None)

        self._settling.add(began)
        try:
            await self._run(on)
        finally:
            self._settling.discard(began)
            self._prune_seeded_at()
        return []  # what is left out is left out on purpose (e, j): nothing for the caller to do

    def _prune_seeded_at(self) -> None:
        """Rule (j)'s marks matter only to settles begun before them."""
        for marks in self._seeded_at:
            if not self._settling:
                marks.clear()
            elif len(marks) > 1024:
                oldest = min(self._settling)
                for key in [k for k, tick in marks.items() if tick < oldest]:
                    del marks[key]

    async def _settle_on(
        self,
        i: int,
        reservation_id: str,
        actual: Mapping[str, int],
        at: Mapping[str, tuple[int, str]],
        began: int,
        row: str | None,
    ) -> None:
        """Settle on store ``i`` (rules b, e and j), one step per reservation id: each amount goes
        to the id that holds its key here; a key held on the other store, or by no reservation of
        ours, goes with the original id, which adds only the actual. A counter missing there is
        left out by the store in that same step (e), and logged under the call's ``row`` for its
        next seed (l)."""
        switches = self._switches
        if i == 1:
            self._written.update(actual)
            await self._present(1, ())  # the epoch (h): a process back on the primary is followed at once
        # A seed sent before this settle began has no call in its sum: it must land first, so the
        # settle adds to what it wrote. Whether it wrote is known once it is answered (a round trip).
        await self._answered(i, actual)
        parts: dict[str, dict[str, int]] = {rid: {} for store, rid in at.values() if store == i}
        for key, amount in actual.items():
            if self._seeded_since(i, key, began):
                continue
            store, rid = at.get(key, (i, reservation_id))
            parts.setdefault(rid if store == i else reservation_id, {})[key] = amount
        added: dict[str, int] = {}
        for rid, amounts in parts.items():
            named = {self._k(i, k): a for k, a in amounts.items()}
            left_out = await self.stores[i].settle(rid, named, seeded_only=True, row=row)
            added.update((k, a) for k, a in amounts.items() if self._k(i, k) not in left_out)
        # A seed sent after this settle began can still land before its write: then both counted
        # the call, and the settle's amount is taken back (a step more, only around a switch).
        await self._answered(i, added)
        undo = {self._k(i, k): -a for k, a in added.items() if self._seeded_since(i, k, began)}
        if undo:
            await self.stores[i].settle(f"{reservation_id}~undo", undo, seeded_only=True)
        if i == 0 and added:
            kept = {k: a for k, a in added.items() if self._k(i, k) not in undo}
            if self.using == 1:  # ended after a move to the fallback: brought there now (k)
                self._bring.update(kept)
                with contextlib.suppress(*self._errors):  # settled: not to be made again on the fallback
                    await self._catch_up()
            elif self._switches == switches:
                self._settled.update(kept)

    def _seeded_since(self, i: int, key: str, began: int) -> bool:
        """Seeded by this process since the settle numbered ``began``: the seed's sum has its call (j)."""
        return self._seeded_at[i].get(key, began) > began

    async def _answered(self, i: int, keys: Collection[str]) -> None:
        """Wait until no seed this process sent to store ``i`` of any of ``keys`` is unanswered."""
        while flying := [sent.wait() for k in keys for sent in self._flying[i].get(k, ())]:
            await asyncio.gather(*flying)

    async def hit(self, key: str, limit: int, window_s: float, now: float) -> float:
        return await self._run(lambda i: self.stores[i].hit(key, limit, window_s, now))

    async def cache_get(self, key: str, now: float, counts: tuple[str, str] | None = None) -> str | None:
        return await self._run(
            lambda i: self.stores[i].cache_get(key, now, None if counts is None else self._pair(i, counts))
        )

    async def cache_used(
        self, keys: Sequence[str], now: float, counts: tuple[str, str], hits: int, misses: int
    ) -> None:
        await self._run(lambda i: self.stores[i].cache_used(keys, now, self._pair(i, counts), hits, misses))

    def _pair(self, i: int, counts: tuple[str, str]) -> tuple[str, str]:
        return self._k(i, counts[0]), self._k(i, counts[1])

    async def cache_put(self, key: str, value: str, ttl_s: float, max_size: int, now: float) -> None:
        await self._run(lambda i: self.stores[i].cache_put(key, value, ttl_s, max_size, now))

    async def cache_clear(self) -> int:
        n = await self._run(lambda i: self.stores[i].cache_clear())
        with contextlib.suppress(*self._errors):  # the other store's entries would come back with the next switch
            await self.stores[1 - self.using].cache_clear()
        return n

    async def cache_size(self, now: float) -> int:
        return await self._run(lambda i: self.stores[i].cache_size(now))

    async def incr(self, key: str, by: int = 1) -> int:
        return await self._run(lambda i: self.stores[i].incr(self._k(i, key), by))

    async def set_once(self, key: str, ttl_s: int) -> bool:
        return await self._run(lambda i: self.stores[i].set_once(key, ttl_s))

    async def once(self, key: str, ttl_s: int) -> bool | None:
        async def on(i: int) -> bool | None:
            return await self.stores[i].once(key, ttl_s) if i == 0 else None  # (c)

        return await self._run(on)

    async def aclose(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        if self.using == 1 and not self._joined:
            await self._unsay()
        for store in self.stores:
            await store.aclose()


def _why(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
