"""One contract for every hot store URL: in process and a real Redis (each test in its own key prefix)."""

from collections.abc import AsyncIterator

import pytest

from budget.cache import AnswerCache, CachedAnswer
from budget.money import usd
from budget.ratelimit import RateLimiter
from budget.stores import Hold, HotStore, open_hot_store
from tests.budget.test_redis_store import REDIS_URL, redis_namespace

URLS = ["memory://", REDIS_URL]


@pytest.fixture(params=URLS, ids=lambda url: url.split(":", 1)[0])
async def hot(request: pytest.FixtureRequest) -> AsyncIterator[HotStore]:
    url: str = request.param
    if not url.startswith("redis"):
        store = open_hot_store(url)
        yield store
        await store.aclose()
        return
    async with redis_namespace(url) as prefixed:  # skips (fails in CI) when Redis is not there
        store = open_hot_store(prefixed)
        yield store
        await store.aclose()


async def test_counters_start_missing_and_seed_only_once(hot: HotStore) -> None:
    assert await hot.get_counters(["a", "b"]) == [None, None]
    await hot.seed_counter("a", 5, 60)
    await hot.seed_counter("a", 99, 60)
    assert await hot.get_counters(["a", "b"]) == [5, None]


async def test_reserve_is_all_or_nothing(hot: HotStore) -> None:
    await hot.seed_counter("u", 90, 60)
    await hot.seed_counter("g", 0, 60)
    refused = await hot.reserve("r1", [Hold("g", 20, 1000), Hold("u", 20, 100)], 60, now=0)
    assert refused == "u"
    assert await hot.get_counters(["u", "g"]) == [90, 0]
    assert await hot.reserve("r2", [Hold("g", 10, 1000), Hold("u", 10, 100)], 60, now=0) is None
    assert await hot.get_counters(["u", "g"]) == [100, 10]


async def test_reserve_up_to_the_limit_exactly(hot: HotStore) -> None:
    assert await hot.reserve("r", [Hold("k", 100, 100)], 60, now=0) is None
    assert await hot.reserve("r2", [Hold("k", 1, 100)], 60, now=0) == "k"


async def test_settle_replaces_the_hold_with_the_actual(hot: HotStore) -> None:
    await hot.reserve("r", [Hold("k", 100, None), Hold("t", 50, None)], 60, now=0)
    await hot.settle("r", {"k": 37, "t": 20})
    assert await hot.get_counters(["k", "t"]) == [37, 20]
    await hot.settle("r", {"k": 37, "t": 20})  # settling twice adds the actual again: callers settle once
    assert await hot.get_counters(["k"]) == [74]


async def test_a_lost_reservation_expires(hot: HotStore) -> None:
    await hot.reserve("lost", [Hold("k", 100, 150)], ttl_s=30, now=0)
    assert await hot.reserve("x", [Hold("k", 100, 150)], 30, now=29) == "k"
    assert await hot.reserve("y", [Hold("k", 100, 150)], 30, now=30) is None
    assert await hot.get_counters(["k"]) == [100]


async def test_sliding_window_edges(hot: HotStore) -> None:
    limiter = RateLimiter(hot, per_minute=3)
    assert [await limiter.wait_time("u", t) for t in (0.0, 10.0, 20.0)] == [0, 0, 0]
    assert await limiter.wait_time("u", 30.0) == 30  # the first event leaves the window at 60
    assert await limiter.wait_time("u", 59.9) == 1
    assert await limiter.wait_time("u", 60.0) == 0  # exactly one window after the first: allowed
    assert await limiter.wait_time("u", 60.5) == 10
    assert await limiter.wait_time("other", 60.5) == 0


async def test_cache_ttl_lru_and_stats(hot: HotStore) -> None:
    cache = AnswerCache(hot, ttl_s=100, max_size=2)
    a = CachedAnswer("A", usd("0.000123"), "openai", "gpt-4o-mini")
    await cache.put("k1", a, now=0)
    await cache.put("k2", a, now=0)
    assert await cache.get("k1", now=1) == a  # k1 is now the most recently used
    await cache.put("k3", a, now=2)  # evicts k2, the least recently used
    assert await cache.get("k2", now=3) is None
    assert await cache.get("k1", now=99.9) == a
    assert await cache.get("k3", now=102) is None  # expired at 102
    stats = await cache.stats(now=102)
    assert (stats.hits, stats.misses, stats.size) == (2, 2, 0)
    assert stats.hit_rate == 0.5
    await cache.put("k4", a, now=200)
    assert await cache.clear() == 1


async def test_cache_key_covers_text_persona_and_tier() -> None:
    k = AnswerCache.key
    assert k("q", "p", "cheap") == k("q", "p", "cheap")
    assert len({k("q", "p", "cheap"), k("q2", "p", "cheap"), k("q", "p2", "cheap"), k("q", "p", "premium")}) == 4


async def test_set_once(hot: HotStore) -> None:
    assert await hot.set_once("w", 60) is True
    assert await hot.set_once("w", 60) is False


async def test_a_retried_reserve_never_holds_twice(hot: HotStore) -> None:
    assert await hot.reserve("same", [Hold("k", 60, 100)], 60, now=0) is None
    assert await hot.reserve("same", [Hold("k", 60, 100)], 60, now=0) is None  # the retry of a call that applied
    assert await hot.get_counters(["k"]) == [60]
    await hot.settle("same", {"k": 10})
    assert await hot.get_counters(["k"]) == [10]
