"""Per-user rate limit over a sliding window (an exact log of the window's events)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from budget.later import WriteLater, WritesLater
from budget.stores import Admit, HitRead, HotStore

MAX_REFUSED = 10_000  # users refused lately that one process remembers
COUNT_S = 1.0  # a refusal's count waits at most this long, then goes with the others'

log = logging.getLogger("pennybot.ratelimit")


class RateLimiter:
    """At most ``per_minute`` messages in any ``window_s`` seconds.

    A refusal holds until the oldest event of the user's window leaves it: a refused message is
    not counted, and other messages (here or in other processes) only add events. So once the
    store refused a user, this process refuses their next messages until then by itself
    (``refused``), and a flood costs no round trip and no planning."""

    def __init__(self, hot: HotStore, per_minute: int, window_s: float = 60.0) -> None:
        self.hot = hot
        self.limit = per_minute
        self.window_s = window_s
        self._refused: dict[str, float] = {}  # user -> when the store would let them through again

    def refused(self, user: str, now: float) -> int:
        """The whole seconds ``user`` must still wait, as the store last said; 0: ask the store."""
        until = self._refused.get(user)
        if until is None:
            return 0
        if now < until:
            return _seconds(until - now)
        del self._refused[user]
        return 0

    async def wait_time(self, user: str, now: float) -> int:
        """0 if the message may go on (and counts it), else the whole seconds to wait."""
        return self._seen(user, now, await self.hot.hit(key(user), self.limit, self.window_s, now))

    async def wait_time_and_read(
        self,
        user: str,
        now: float,
        keys: Sequence[str],
        peeks: Sequence[str] = (),
        admit: Admit | None = None,
        once: tuple[str, int] | None = None,
    ) -> HitRead:
        """``wait_time`` (as the read's ``wait``), and in the same round trip the counters ``keys``,
        the cache entries ``peeks``, the reservation ``admit`` and the once-key ``once`` (see
        ``HotStore.hit_and_get``)."""
        read = await self.hot.hit_and_get(key(user), self.limit, self.window_s, now, keys, peeks, admit, once=once)
        return read if read.repeated else read._replace(wait=self._seen(user, now, read.wait))

    def _seen(self, user: str, now: float, wait: float) -> int:
        if wait > 0:
            if user not in self._refused and len(self._refused) >= MAX_REFUSED:
                self._refused = {u: until for u, until in self._refused.items() if until > now}
                if len(self._refused) >= MAX_REFUSED:
                    del self._refused[next(iter(self._refused))]
            self._refused[user] = now + wait
        return _seconds(wait)


class Refusals(WritesLater):
    """Refused messages, counted by key (the rate_limited alert's local hour) in memory and
    written within ``flush_s`` with every other refusal's count, off the refused messages' path:
    a flood costs no round trip. A crash loses at most that long's counts; a write the store
    refuses is kept for the next."""

    def __init__(self, hot: HotStore, ttl_s: int, flush_s: float = COUNT_S) -> None:
        self.hot = hot
        self.ttl_s = ttl_s
        self._counts: dict[str, int] = {}
        self._later = WriteLater(self.flush, lambda: bool(self._counts), flush_s, "rate-limited counts", log)

    def add(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        self._later.soon()

    async def flush(self) -> None:
        """Write the counts that wait now (the alert job reads them)."""
        counts, self._counts = list(self._counts.items()), {}
        for i, (key, n) in enumerate(counts):
            try:
                await self.hot.seed_counter(key, 0, self.ttl_s)  # gives the key its lifetime; INCRBY keeps it
                await self.hot.incr(key, n)
            except BaseException:
                for unwritten, m in counts[i:]:
                    self._counts[unwritten] = self._counts.get(unwritten, 0) + m
                raise


def key(user: str) -> str:
    return f"pb:{{{user}}}:rl"


def _seconds(wait: float) -> int:
    return math.ceil(wait) if wait > 0 else 0
