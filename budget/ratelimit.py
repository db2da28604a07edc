"""Per-user rate limit over a sliding window (an exact log of the window's events)."""

from __future__ import annotations

import math

from budget.stores import HotStore


class RateLimiter:
    """At most ``per_minute`` messages in any ``window_s`` seconds."""

    def __init__(self, hot: HotStore, per_minute: int, window_s: float = 60.0) -> None:
        self.hot = hot
        self.limit = per_minute
        self.window_s = window_s

    async def wait_time(self, user: str, now: float) -> int:
        """0 if the message may go on (and counts it), else the whole seconds to wait."""
        wait = await self.hot.hit(f"pb:{{{user}}}:rl", self.limit, self.window_s, now)
        return math.ceil(wait) if wait > 0 else 0
