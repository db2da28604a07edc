"""The answer cache: self-contained questions answered before cost nothing the second time.

The key covers the normalized question, the persona (system prompt) and the model tier
(DESIGN invariant 6); the stages decide what may be stored and served (budget.queries).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from budget.later import WriteLater, WritesLater
from budget.stores import HotStore

HITS = "pb:{cache}:hits"
MISSES = "pb:{cache}:misses"
FLUSH_S = 0.25  # a peeked look-up's bookkeeping waits at most this long, then goes with the others'
MAX_PENDING_KEYS = 10_000  # past this, recency marks wait for the next batch (the counts never do)

log = logging.getLogger("pennybot.cache")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    text: str
    cost: Decimal  # what the answer cost when it was made: a hit saves that much
    provider: str
    model: str


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    size: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class AnswerCache(WritesLater):
    """TTL and least-recently-used eviction at ``max_size`` entries, in the hot store."""

    def __init__(self, hot: HotStore, ttl_s: float, max_size: int, *, flush_s: float = FLUSH_S) -> None:
        self.hot = hot
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._used: dict[str, None] = {}  # entries looked up by peek, in order of use
        self._hits = 0
        self._misses = 0
        self._now = 0.0
        self._later = WriteLater(self.flush, self._waiting, flush_s, "cache bookkeeping", log)

    @staticmethod
    def key(normalized: str, persona: str, tier: str) -> str:
        digest = hashlib.sha256(f"{persona}\x1f{tier}\x1f{normalized}".encode()).hexdigest()
        return f"pb:{{cache}}:a:{digest[:32]}"

    async def get(self, key: str, now: float) -> CachedAnswer | None:
        raw = await self.hot.cache_get(key, now, (HITS, MISSES))  # counted in the same round trip
        return None if raw is None else _answer(raw)

    def peeked(self, key: str, raw: str | None, now: float) -> CachedAnswer | None:
        """A look-up answered by ``HotStore.hit_and_get``'s peek (``raw``: the live entry or None),
        as ``get`` answers it. Its bookkeeping (the entry's recency or removal, the hit or miss
        count) is written within ``flush_s`` with every other look-up's, in one step, off the
        message's path: a crash loses at most that long's counts, never an answer."""
        self._used.pop(key, None)
        if len(self._used) < MAX_PENDING_KEYS:
            self._used[key] = None
        if raw is None:
            self._misses += 1
        else:
            self._hits += 1
        self._now = max(self._now, now)
        self._later.soon()
        return None if raw is None else _answer(raw)

    def _waiting(self) -> bool:
        return bool(self._used or self._hits or self._misses)

    async def flush(self) -> None:
        """Write the peeked look-ups' bookkeeping now. If the store fails, the counts are kept for
        the next flush."""
        if not self._waiting():
            return
        used: Sequence[str] = list(self._used)
        hits, misses = self._hits, self._misses
        self._used, self._hits, self._misses = {}, 0, 0
        try:
            await self.hot.cache_used(used, self._now, (HITS, MISSES), hits, misses)
        except BaseException:
            self._hits += hits
            self._misses += misses
            raise

    async def put(self, key: str, answer: CachedAnswer, now: float, ttl_s: float | None = None) -> None:
        raw = json.dumps(
            {"text": answer.text, "cost": str(answer.cost), "provider": answer.provider, "model": answer.model}
        )
        await self.hot.cache_put(key, raw, ttl_s or self.ttl_s, self.max_size, now)

    async def stats(self, now: float) -> CacheStats:
        await self.flush()  # this process's look-ups count at once
        hits, misses = await self.hot.get_counters([HITS, MISSES])
        return CacheStats(hits or 0, misses or 0, await self.hot.cache_size(now))

    async def clear(self) -> int:
        return await self.hot.cache_clear()


def _answer(raw: str) -> CachedAnswer:
    data = json.loads(raw)
    return CachedAnswer(data["text"], Decimal(data["cost"]), data["provider"], data["model"])
