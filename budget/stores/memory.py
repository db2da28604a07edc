"""The in-process hot store (``memory://``), the embedded default.

Every method runs without awaiting in between its read and its write, so on one event loop each
is atomic, which is what reserve needs. Counters are rebuilt from the ledger after a restart.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Collection, Mapping, Sequence

from budget.stores.base import Admit, HitRead, Hold


class MemoryHotStore:
    """Dicts and deques; nothing survives the process, by design (the ledger is the truth)."""

    scheme = "memory"
    dedupes = False  # its once-keys live in one process only (and, as its flags, never expire)

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._counters: dict[str, int] = {}
        self._reservations: dict[str, tuple[float, list[tuple[str, int]]]] = {}
        self._windows: dict[str, deque[float]] = {}
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._left: dict[str, dict[str, int]] = {}  # counter: {row: amount} left out of it (HotStore.left_out)

    async def get_counters(self, keys: Sequence[str]) -> list[int | None]:
        return [self._counters.get(k) for k in keys]

    async def seed_counter(self, key: str, value: int, ttl_s: int, *, seen: Collection[str] | None = None) -> bool:
        if key in self._counters:
            return False
        if seen is not None:
            value += sum(a for row, a in self._left.pop(key, {}).items() if row not in seen)
        self._counters[key] = value
        return True

    async def left_out(self, keys: Sequence[str]) -> list[dict[str, int]]:
        return [dict(self._left.get(k, {})) for k in keys]

    async def set_counters(self, values: Mapping[str, int], ttl_s: int) -> None:
        self._counters.update(values)

    async def swap_counters(self, values: Mapping[str, int], ttl_s: int) -> list[int | None]:
        # No await between the read and the write: atomic on the event loop. No ttl, as set_counters.
        before = [self._counters.get(k) for k in values]
        self._counters.update(values)
        return before

    async def reserve(
        self, reservation_id: str, holds: Sequence[Hold], ttl_s: int, now: float, *, seeded_only: bool = False
    ) -> str | None:
        self._expire_reservations(now)
        if reservation_id in self._reservations:
            return None  # a retried call that already applied: a success, never a second hold
        if seeded_only:
            missing = next((h.key for h in holds if h.key not in self._counters), None)
            if missing is not None:
                return missing
        for h in holds:
            if h.limit is not None and self._counters.get(h.key, 0) + h.amount > h.limit:
                return h.key
        for h in holds:
            self._counters[h.key] = self._counters.get(h.key, 0) + h.amount
        self._reservations[reservation_id] = (now + ttl_s, [(h.key, h.amount) for h in holds])
        return None

    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], *, seeded_only: bool = False, row: str | None = None
    ) -> list[str]:
        _, held = self._reservations.pop(reservation_id, (0.0, []))
        held_by_key: dict[str, int] = {}
        for key, amount in held:
            held_by_key[key] = held_by_key.get(key, 0) + amount
        left_out = [k for k in actual if k not in self._counters] if seeded_only else []
        if row is not None:  # kept for the process's lifetime: an in-process store has no expiry
            for key in left_out:
                if actual[key]:
                    self._left.setdefault(key, {})[row] = actual[key]
        for key in (held_by_key.keys() | actual.keys()) - set(left_out):
            if seeded_only and key not in self._counters:
                continue  # a held counter deleted since: the hold went with it
            self._counters[key] = self._counters.get(key, 0) + actual.get(key, 0) - held_by_key.get(key, 0)
        return left_out

    def _expire_reservations(self, now: float) -> None:
        # A reservation outlives its call only if the call's task was lost; give its money back.
        for rid in [r for r, (exp, _) in self._reservations.items() if exp <= now]:
            for key, amount in self._reservations.pop(rid)[1]:
                self._counters[key] -= amount

    async def hit(self, key: str, limit: int, window_s: float, now: float) -> float:
        events = self._windows.setdefault(key, deque())
        while events and events[0] <= now - window_s:
            events.popleft()
        if len(events) >= limit:
            return events[0] + window_s - now
        events.append(now)
        return 0.0

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
        # ``once`` first and in the same step (set_once never waits); ``admit`` declined: in process,
        # a separate reserve costs no round trip.
        if once is not None and not await self.set_once(*once):
            return HitRead(0.0, [], [], False, True)
        entries = [self._cache.get(k) for k in peeks]
        peeked = [e[0] if e is not None and e[1] > now else None for e in entries]
        return HitRead(await self.hit(key, limit, window_s, now), await self.get_counters(keys), peeked)

    async def cache_get(self, key: str, now: float, counts: tuple[str, str] | None = None) -> str | None:
        value = self._cache_get(key, now)
        if counts is not None:
            await self.incr(counts[value is None])
        return value

    def _cache_get(self, key: str, now: float) -> str | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return entry[0]

    async def cache_used(
        self, keys: Sequence[str], now: float, counts: tuple[str, str], hits: int, misses: int
    ) -> None:
        for key in keys:
            self._cache_get(key, now)
        for counter, n in zip(counts, (hits, misses), strict=True):
            if n:
                await self.incr(counter, n)

    async def cache_put(self, key: str, value: str, ttl_s: float, max_size: int, now: float) -> None:
        self._cache[key] = (value, now + ttl_s)
        self._cache.move_to_end(key)
        while len(self._cache) > max_size:
            self._cache.popitem(last=False)  # least recently used

    async def cache_clear(self) -> int:
        n = len(self._cache)
        self._cache.clear()
        return n

    async def cache_size(self, now: float) -> int:
        for key in [k for k, (_, exp) in self._cache.items() if exp <= now]:
            del self._cache[key]
        return len(self._cache)

    async def incr(self, key: str, by: int = 1) -> int:
        self._counters[key] = self._counters.get(key, 0) + by
        return self._counters[key]

    async def set_once(self, key: str, ttl_s: int) -> bool:
        # A counter set to 1, as in Redis and Postgres: get_counters reads it too.
        if key in self._counters:
            return False
        self._counters[key] = 1
        return True

    async def once(self, key: str, ttl_s: int) -> bool | None:
        return await self.set_once(key, ttl_s)

    async def aclose(self) -> None:
        return None
