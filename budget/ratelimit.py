"""Per-user rate limit over a sliding window (an exact log of the window's events)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from budget.stores import Admit, HitRead, HotStore


class RateLimiter:
    """At most ``per_minute`` messages in any ``window_s`` seconds."""

    def __init__(self, hot: HotStore, per_minute: int, window_s: float = 60.0) -> None:
        self.hot = hot
        self.limit = per_minute
        self.window_s = window_s

    async def wait_time(self, user: str, now: float) -> int:
        """0 if the message may go on (and counts it), else the whole seconds to wait."""
        return _seconds(await self.hot.hit(key(user), self.limit, self.window_s, now))

    async def wait_time_and_read(
        self, user: str, now: float, keys: Sequence[str], peeks: Sequence[str] = (), admit: Admit | None = None
    ) -> HitRead:
        """``wait_time`` (as the read's ``wait``), and in the same round trip the counters ``keys``,
        the cache entries ``peeks`` and the reservation ``admit`` (see ``HotStore.hit_and_get``)."""
        read = await self.hot.hit_and_get(key(user), self.limit, self.window_s, now, keys, peeks, admit)
        return read._replace(wait=_seconds(read.wait))


def key(user: str) -> str:
    return f"pb:{{{user}}}:rl"


def _seconds(wait: float) -> int:
    return math.ceil(wait) if wait > 0 else 0
