"""The answer cache: self-contained questions answered before cost nothing the second time.

The key covers the normalized question, the persona (system prompt) and the model tier
(DESIGN invariant 6); the stages decide what may be stored and served (budget.queries).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal

from budget.stores import HotStore

HITS = "pb:{cache}:hits"
MISSES = "pb:{cache}:misses"


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


class AnswerCache:
    """TTL and least-recently-used eviction at ``max_size`` entries, in the hot store."""

    def __init__(self, hot: HotStore, ttl_s: float, max_size: int) -> None:
        self.hot = hot
        self.ttl_s = ttl_s
        self.max_size = max_size

    @staticmethod
    def key(normalized: str, persona: str, tier: str) -> str:
        digest = hashlib.sha256(f"{persona}\x1f{tier}\x1f{normalized}".encode()).hexdigest()
        return f"pb:{{cache}}:a:{digest[:32]}"

    async def get(self, key: str, now: float) -> CachedAnswer | None:
        raw = await self.hot.cache_get(key, now, (HITS, MISSES))  # counted in the same round trip
        if raw is None:
            return None
        data = json.loads(raw)
        return CachedAnswer(data["text"], Decimal(data["cost"]), data["provider"], data["model"])

    async def put(self, key: str, answer: CachedAnswer, now: float, ttl_s: float | None = None) -> None:
        raw = json.dumps(
            {"text": answer.text, "cost": str(answer.cost), "provider": answer.provider, "model": answer.model}
        )
        await self.hot.cache_put(key, raw, ttl_s or self.ttl_s, self.max_size, now)

    async def stats(self, now: float) -> CacheStats:
        hits, misses = await self.hot.get_counters([HITS, MISSES])
        return CacheStats(hits or 0, misses or 0, await self.hot.cache_size(now))

    async def clear(self) -> int:
        return await self.hot.cache_clear()
