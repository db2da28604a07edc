"""One contract for every hot store URL: in process, a real Redis (each test in its own key prefix)
and Postgres (each test in its own schema)."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import roundtrips
from budget.cache import AnswerCache, CachedAnswer
from budget.money import usd
from budget.ratelimit import RateLimiter
from budget.stores import Admit, HitRead, Hold, HotStore, open_hot_store
from budget.stores.memory import MemoryHotStore
from budget.stores.pg_hot import PostgresHotStore
from budget.stores.postgres import PostgresDatabase
from budget.stores.redis import LeanConnection, RedisHotStore
from tests.budget.test_redis_store import REDIS_URL, _limiter_and_cache, _money, _step, redis_namespace
from tests.conftest import PG_DSN

URLS = ["memory://", REDIS_URL, f"{PG_DSN}?schema=<random>"]


@asynccontextmanager
async def pg_schema(dsn: str) -> AsyncIterator[str]:
    """``dsn`` with a fresh schema that holds every migration; the schema goes afterwards."""
    url = f"{dsn}?schema=pb_hot_{uuid.uuid4().hex[:10]}"
    db = PostgresDatabase(url)
    try:
        await db.migrate()
        await db.aclose()
        yield url
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"drop schema if exists {url.rsplit('=', 1)[1]} cascade")


@pytest.fixture(params=URLS, ids=lambda url: url.split(":", 1)[0])
async def hot(request: pytest.FixtureRequest) -> AsyncIterator[HotStore]:
    url: str = request.param
    if url.startswith("postgresql"):
        async with pg_schema(request.getfixturevalue("pg_dsn")) as schema_url:  # skips when Postgres is not there
            store: HotStore = PostgresHotStore(schema_url)
            yield store
            await store.aclose()
        return
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
    assert await hot.seed_counter("a", 5, 60) is True
    assert await hot.seed_counter("a", 99, 60) is False  # it says whether it wrote (failover rule j)
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


async def test_seeded_only_reserve_refuses_a_missing_counter_and_creates_nothing(hot: HotStore) -> None:
    await hot.seed_counter("u", 10, 60)
    refused = await hot.reserve("r", [Hold("u", 5, 100), Hold("g", 5, None)], 60, now=0, seeded_only=True)
    assert refused == "g"  # missing: refused before any limit is looked at, and nothing held
    assert await hot.get_counters(["u", "g"]) == [10, None]
    assert await hot.reserve("r", [Hold("u", 91, 100)], 60, now=0, seeded_only=True) == "u"  # over its limit
    assert await hot.reserve("r", [Hold("u", 90, 100)], 60, now=0, seeded_only=True) is None
    assert await hot.get_counters(["u"]) == [100]


async def test_seeded_only_settle_leaves_missing_counters_out(hot: HotStore) -> None:
    await hot.seed_counter("k", 100, 60)
    await hot.seed_counter("t", 0, 60)
    assert await hot.reserve("r", [Hold("k", 50, None), Hold("t", 9, None)], 60, now=0) is None
    left_out = await hot.settle("r", {"k": 20, "t": 3, "gone": 7}, seeded_only=True)
    assert left_out == ["gone"]  # named, so the caller knows
    assert await hot.get_counters(["k", "t", "gone"]) == [120, 3, None]  # never created from 0
    assert await hot.settle("r", {"gone": 1}) == []  # without seeded_only, a counter is created
    assert await hot.get_counters(["gone"]) == [1]


async def test_a_settle_logs_what_it_left_out_by_row_and_the_next_seed_adds_what_its_sum_may_lack(
    hot: HotStore,
) -> None:
    await hot.seed_counter("k", 100, 60)
    assert await hot.settle("r1", {"k": 20, "gone": 7, "zero": 0}, seeded_only=True, row="row1") == ["gone", "zero"]
    assert await hot.settle("r2", {"gone": 5}, seeded_only=True, row="row2") == ["gone"]
    assert await hot.settle("r3", {"gone": 11}, seeded_only=True) == ["gone"]  # no row (a release): not logged
    assert await hot.left_out(["gone", "zero", "k"]) == [{"row1": 7, "row2": 5}, {}, {}]
    # The seeder read the log (row1, row2) and asked the ledger: it had row1, so the sum (1,000) has
    # row1's 7 and the seeder added row2's 5. Row3 was left out after that read: the store adds it.
    assert await hot.settle("r4", {"gone": 13}, seeded_only=True, row="row3") == ["gone"]
    assert await hot.seed_counter("gone", 1_000 + 5, 60, seen=["row1", "row2"])
    assert await hot.get_counters(["gone", "k"]) == [1_018, 120]
    assert await hot.left_out(["gone"]) == [{}]  # cleared with the seed
    assert not await hot.seed_counter("gone", 0, 60, seen=[])  # there already: nothing changes
    assert await hot.get_counters(["gone"]) == [1_018]
    # A plain seed (a quota, the rate limit's) leaves a log alone.
    assert await hot.settle("r5", {"other": 3}, seeded_only=True, row="row5") == ["other"]
    assert await hot.seed_counter("other", 10, 60)
    assert await hot.left_out(["other"]) == [{"row5": 3}]


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


async def test_a_rate_limit_hit_reads_counters_in_the_same_step(hot: HotStore) -> None:
    await hot.seed_counter("pb:{u}:usd:month:2026-11", 1_500, 3600)
    keys = ["pb:{u}:usd:month:2026-11", "pb:{global}:usd:month:2026-11"]
    limiter = RateLimiter(hot, per_minute=2)
    assert await limiter.wait_time_and_read("u", 0.0, keys) == (0, [1_500, None], [], False, False, False)
    assert await limiter.wait_time_and_read("u", 10.0, keys) == (0, [1_500, None], [], False, False, False)
    await hot.seed_counter("pb:{global}:usd:month:2026-11", 7, 3600)
    # over the limit: not counted, and the counters are read all the same
    assert await limiter.wait_time_and_read("u", 20.0, keys) == (40, [1_500, 7], [], False, False, False)
    # the first event left the window
    assert await limiter.wait_time_and_read("u", 60.0, []) == (0, [], [], False, False, False)
    assert await limiter.wait_time("u", 60.0) == 10  # the same log as wait_time's


async def test_a_rate_limit_hit_peeks_at_cache_entries_without_counting_them(hot: HotStore) -> None:
    limiter = RateLimiter(hot, per_minute=1)
    await hot.cache_put("pb:{cache}:a:1", "one", 100, 10, now=0)
    await hot.cache_put("pb:{cache}:a:2", "two", 5, 10, now=0)
    peeks = ["pb:{cache}:a:1", "pb:{cache}:a:2", "pb:{cache}:a:3"]
    assert await limiter.wait_time_and_read("u", 1.0, [], peeks) == (0, [], ["one", "two", None], False, False, False)
    # the rate limit refuses; the entries are read all the same, "two" has expired at 5
    read = await limiter.wait_time_and_read("u", 5.0, ["c"], peeks)
    assert read == (56, [None], ["one", None, None], False, False, False)
    assert await hot.get_counters(["pb:{cache}:hits", "pb:{cache}:misses"]) == [None, None]
    assert await hot.cache_size(now=1) == 2  # a peek neither removes nor counts


async def test_a_once_key_rides_with_the_rate_limit_and_a_repeat_does_nothing_else(hot: HotStore) -> None:
    seen, usd, quota = "pb:{inbox}:seen:telegram:1", "pb:{u}:usd", "pb:{u}:quota"
    await hot.set_counters({usd: 1_500, quota: 7}, 3600)
    keys, peeks = [usd, "pb:{global}:usd", quota], ["pb:{cache}:a:1"]
    await hot.cache_put(peeks[0], "cached", 60, 10, now=0)

    def admit(rid: str) -> Admit:
        return Admit(rid, [Hold(usd, 100, 10_000)], [9_000], 60, {quota: 7})

    rides = isinstance(hot, RedisHotStore)  # the others decline ``admit``: the caller reserves
    first = await hot.hit_and_get("pb:{u}:rl", 1, 60, 1.0, keys, peeks, admit("r1"), once=(seen, 60))
    assert first == HitRead(0.0, [1_500, None, 7], ["cached"], rides, False)
    held = 1_600 if rides else 1_500
    assert await hot.get_counters([usd]) == [held]
    # The same message again, here under another user's rate limit: a repeat, and nothing else.
    again = await hot.hit_and_get("pb:{u2}:rl", 1, 60, 2.0, keys, peeks, admit("r2"), once=(seen, 60))
    assert again == HitRead(0.0, [], [], False, True)
    assert await hot.get_counters([usd]) == [held]  # no reservation
    # u2's limit of 1 is still whole: had the repeat counted its event, this one would wait 59 s.
    assert await hot.hit_and_get("pb:{u2}:rl", 1, 60, 3.0, []) == HitRead(0.0, [], [], False, False)
    assert (await hot.hit_and_get("pb:{u2}:rl", 1, 60, 4.0, [])).wait == 59.0
    # u1 is at its limit; a repeat still only says that it is one.
    assert await hot.hit_and_get("pb:{u}:rl", 1, 60, 5.0, keys, once=(seen, 60)) == HitRead(0.0, [], [], False, True)
    # Another message is no repeat: its event is counted (refused by u1's limit) and the counters read.
    other = await hot.hit_and_get("pb:{u}:rl", 1, 60, 6.0, keys, once=("pb:{inbox}:seen:telegram:2", 60))
    assert other == HitRead(55.0, [held, None, 7], [], False, False)


def expire_in_postgres(hot: PostgresHotStore, key: str) -> float:
    """The seconds the key had left by the server's clock (as Redis's), and its row moved past its ttl."""
    with psycopg.connect(hot._dsn, autocommit=True) as conn:
        table = f"{hot.schema}.hot_counters"
        left = conn.execute(f"select extract(epoch from expires_at - now()) from {table} where key = %s", [key])
        seconds = float(left.fetchone()[0])  # type: ignore[index]
        conn.execute(f"update {table} set expires_at = now() - interval '1 s' where key = %s", [key])
    return seconds


async def test_a_once_key_lives_for_its_ttl(hot: HotStore) -> None:
    seen = "pb:{inbox}:seen:telegram:1"
    assert not (await hot.hit_and_get("rl", 5, 60, 0.0, [], once=(seen, 60))).repeated
    if isinstance(hot, RedisHotStore):
        assert 59 <= await hot.redis.ttl(hot._k(seen)) <= 60  # set with its ttl, in the script
    elif isinstance(hot, PostgresHotStore):  # server time, as Redis's: its row is moved past its ttl
        assert 59 <= expire_in_postgres(hot, seen) <= 60
        assert not (await hot.hit_and_get("rl", 5, 60, 1.0, [], once=(seen, 60))).repeated  # expired: a first time
    # Within its ttl, a repeat (the memory store's flags, as its set_once's, last as long as the process).
    assert (await hot.hit_and_get("rl", 5, 60, 2.0, [], once=(seen, 60))).repeated


async def test_which_stores_dedupe_in_the_rate_limits_round_trip(hot: HotStore) -> None:
    # Postgres sets a once-key in a statement of its own; Redis in the script, memory in process.
    assert hot.dedupes is {MemoryHotStore: False, RedisHotStore: True, PostgresHotStore: False}[type(hot)]


async def test_cache_used_marks_recency_removes_the_expired_and_counts(hot: HotStore) -> None:
    counts = ("pb:{cache}:hits", "pb:{cache}:misses")
    for k in ("k1", "k2"):
        await hot.cache_put(k, k.upper(), 100, 2, now=0)
    await hot.cache_put("k3", "K3", 5, 10, now=0)  # max_size 10: nothing evicted yet
    await hot.cache_used(["k1", "k3", "gone"], 10.0, counts, hits=2, misses=5)
    assert await hot.get_counters(list(counts)) == [2, 5]
    assert await hot.cache_size(now=10) == 2  # k3 expired and went
    await hot.cache_put("k4", "K4", 100, 2, now=11)  # evicts k2, the least recently used now
    read = await hot.hit_and_get("rl", 5, 60, 12, [], ["k1", "k2", "k4"])
    assert read.peeked == ["K1", None, "K4"]
    await hot.cache_used([], 12.0, counts, hits=0, misses=1)
    assert await hot.get_counters(list(counts)) == [2, 6]


async def test_postgres_marks_cache_uses_and_counts_in_a_round_trip_each(pg_dsn: str) -> None:
    # While Redis is away the failover store keeps the cache's bookkeeping here: a batch of uses
    # (in order: the last used is the most recent) and the counts, not a statement per key.
    uninstall = roundtrips.install()  # before the pool exists: it wraps each new connection
    try:
        async with pg_schema(pg_dsn) as url:
            hot = PostgresHotStore(url)
            counts = ("pb:{cache}:hits", "pb:{cache}:misses")
            for k in ("k1", "k2", "k3"):
                await hot.cache_put(k, k.upper(), 100, 3, now=0)
            await hot.cache_used(["k1"], 1.0, counts, hits=1, misses=1)
            roundtrips.TALLY.active = True
            roundtrips.TALLY.begin(1)
            await hot.cache_used(["k2", "k1", "gone"], 2.0, counts, hits=2, misses=1)
            counted = roundtrips.TALLY.end()
            roundtrips.TALLY.active = False
            # No statement cache here (pgbouncer): each statement is prepared, then run for every
            # row in one batch; the pool's reset query follows each.
            sent = [label for _, label in counted.labels.elements() if label != "query: pool reset"]
            assert sorted(sent) == sorted([
                "prepare: with used", "bind_execute_many: with used",
                "prepare: insert hot_counters", "bind_execute_many: insert hot_counters",
            ])  # fmt: skip
            assert await hot.get_counters(list(counts)) == [3, 2]
            await hot.cache_put("k4", "K4", 100, 3, now=3)  # evicts k3, the least recently used
            await hot.cache_put("k5", "K5", 100, 3, now=4)  # evicts k2: used before k1 in the batch
            read = await hot.hit_and_get("rl", 5, 60, 5, [], ["k1", "k2", "k3", "k4", "k5"])
            assert read.peeked == ["K1", None, None, "K4", "K5"]
            await hot.aclose()
    finally:
        roundtrips.TALLY.active = False
        roundtrips.TALLY.events.clear()
        uninstall()


async def test_redis_reads_rate_limit_counters_and_cache_counts_in_one_command_each() -> None:
    async with redis_namespace(REDIS_URL) as url:
        store = open_hot_store(url)
        limiter, cache = RateLimiter(store, per_minute=5), AnswerCache(store, ttl_s=100, max_size=2)
        await limiter.wait_time_and_read("w", 0.0, [])  # the scripts are loaded (SCRIPT LOAD once)
        await cache.get("k0", now=0)
        sent: list[str] = []
        execute = store.redis.execute_command  # type: ignore[attr-defined]

        async def counting(*args: object, **kw: object) -> object:
            sent.append(str(args[0]))
            return await execute(*args, **kw)

        store.redis.execute_command = counting  # type: ignore[attr-defined]
        await limiter.wait_time_and_read("u", 0.0, ["pb:{u}:a", "pb:{global}:b"])
        await cache.get("k1", now=1)
        assert sent == ["EVALSHA", "EVALSHA"]
        await store.aclose()


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


async def test_peeked_look_ups_are_counted_in_one_batch_and_kept_when_the_store_fails(hot: HotStore) -> None:
    cache = AnswerCache(hot, ttl_s=100, max_size=5, flush_s=0.5)
    a = CachedAnswer("A", usd("0.000123"), "openai", "gpt-4o-mini")
    await cache.put("k1", a, now=0)
    assert cache.peeked("k1", '{"text": "A", "cost": "0.000123", "provider": "openai", "model": "gpt-4o-mini"}', 1) == a
    assert cache.peeked("k2", None, 1) is None
    timer = cache._later.task
    assert timer is not None
    assert await hot.get_counters(["pb:{cache}:hits", "pb:{cache}:misses"]) == [None, None]  # not yet
    await timer
    assert await hot.get_counters(["pb:{cache}:hits", "pb:{cache}:misses"]) == [1, 1]  # one batch, on a timer
    used = hot.cache_used

    async def down(*args: object, **kw: object) -> None:  # a store outage, injected: no peer can fail on cue
        raise ConnectionError("store down")

    hot.cache_used = down  # type: ignore[method-assign]
    cache.peeked("k1", None, 2)
    assert cache._later.task is not None
    await cache._later.task  # the timer's write fails: logged, the count kept
    hot.cache_used = used  # type: ignore[method-assign]
    stats = await cache.stats(now=3)
    assert (stats.hits, stats.misses) == (1, 2)
    await cache.aclose()


async def test_closing_waits_for_a_bookkeeping_write_under_way_and_writes_the_rest(hot: HotStore) -> None:
    # A write cut mid-statement (cancelled) could leave its connection, and the rows it locked,
    # held; so closing waits for it. The write is held open by an injected pause (no store pauses
    # on cue), around the real store's write.
    cache = AnswerCache(hot, ttl_s=100, max_size=5, flush_s=0.01)
    used, entered, release, finished = hot.cache_used, asyncio.Event(), asyncio.Event(), []

    async def slow(*args: Any, **kw: Any) -> None:
        entered.set()
        await release.wait()
        await used(*args, **kw)
        finished.append(args[0])

    hot.cache_used = slow  # type: ignore[method-assign]
    cache.peeked("k1", None, 1)
    await entered.wait()  # the timer's write is under way
    cache.peeked("k2", None, 1)  # and another look-up waits for the next one
    closing = asyncio.create_task(cache.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()  # not cancelled: waited for
    release.set()
    await closing
    assert finished == [["k1"], ["k2"]]
    assert await hot.get_counters(["pb:{cache}:hits", "pb:{cache}:misses"]) == [None, 2]
    cache.peeked("k3", None, 2)  # closed: no timer is started any more
    assert cache._later.task is None


async def test_a_look_up_during_a_write_is_written_by_the_next_timer(hot: HotStore) -> None:
    cache = AnswerCache(hot, ttl_s=100, max_size=5, flush_s=0.01)
    used, entered, release = hot.cache_used, asyncio.Event(), asyncio.Event()

    async def slow(*args: Any, **kw: Any) -> None:
        entered.set()
        await release.wait()
        await used(*args, **kw)

    hot.cache_used = slow  # type: ignore[method-assign]
    cache.peeked("k1", None, 1)
    await entered.wait()
    cache.peeked("k2", None, 1)
    release.set()
    for _ in range(100):
        if await hot.get_counters(["pb:{cache}:misses"]) == [2]:
            break
        await asyncio.sleep(0.01)
    assert await hot.get_counters(["pb:{cache}:misses"]) == [2]
    await cache.aclose()


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


# --- the Postgres hot store against the in-process one ---


@pytest.fixture
async def pg_hot(pg_dsn: str) -> AsyncIterator[PostgresHotStore]:
    async with pg_schema(pg_dsn) as url:
        store = PostgresHotStore(url)
        yield store
        await store.aclose()


async def _agree_with_memory(pg: PostgresHotStore, steps: list[tuple[object, ...]]) -> None:
    with psycopg.connect(pg._dsn, autocommit=True) as conn:  # one schema for every example: start empty
        conn.execute(
            f"truncate {pg.schema}.hot_counters, {pg.schema}.hot_reservations, {pg.schema}.hot_events,"
            f" {pg.schema}.hot_cache"
        )
    mem, now = MemoryHotStore(), 1_700_000_000.0
    for step in steps:
        if step[0] == "advance":
            now += float(step[1])  # type: ignore[arg-type]
        else:
            assert await _step(mem, step, now) == await _step(pg, step, now), step
    assert await mem.get_counters(["x", "y"]) == await pg.get_counters(["x", "y"])
    assert await mem.cache_clear() == await pg.cache_clear()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_money, min_size=5, max_size=40))
async def test_postgres_reservations_behave_as_in_the_memory_store(
    pg_hot: PostgresHotStore, steps: list[tuple[object, ...]]
) -> None:
    await _agree_with_memory(pg_hot, steps)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_limiter_and_cache, min_size=5, max_size=40))
async def test_postgres_limiter_and_cache_behave_as_in_the_memory_store(
    pg_hot: PostgresHotStore, steps: list[tuple[object, ...]]
) -> None:
    await _agree_with_memory(pg_hot, steps)


async def test_postgres_delete_drops_counters_and_the_holds_on_them(pg_hot: PostgresHotStore) -> None:
    await pg_hot.seed_counter("k", 100, 60)
    assert await pg_hot.reserve("r", [Hold("k", 50, None), Hold("j", 5, None)], ttl_s=30, now=0) is None
    await pg_hot.delete(["k"])
    assert await pg_hot.get_counters(["k", "j"]) == [None, 5]
    await pg_hot.seed_counter("k", 100, 60)  # seeded again from the ledger, without r's hold
    await pg_hot.settle("r", {"k": 20, "j": 2})  # r holds nothing on k any more: only the actual is added
    assert await pg_hot.get_counters(["k", "j"]) == [120, 2]
    assert await pg_hot.reserve("lost", [Hold("j", 9, None)], ttl_s=30, now=0) is None
    await pg_hot.delete(["j"])
    assert await pg_hot.reserve("next", [Hold("k", 1, None)], 30, now=31) is None  # lost's expiry finds nothing
    assert await pg_hot.get_counters(["k", "j"]) == [121, None]
    assert await pg_hot.counter_keys() == ["k"]


async def test_postgres_seeded_only_settle_skips_a_deleted_counter_and_its_hold(pg_hot: PostgresHotStore) -> None:
    await pg_hot.seed_counter("k", 100, 60)
    await pg_hot.seed_counter("j", 0, 60)
    assert await pg_hot.reserve("r", [Hold("k", 50, None), Hold("j", 5, None)], ttl_s=30, now=0) is None
    await pg_hot.delete(["k"])
    assert await pg_hot.settle("r", {"k": 20, "j": 2}, seeded_only=True) == ["k"]
    assert await pg_hot.get_counters(["k", "j"]) == [None, 2]


async def test_postgres_counters_expire_by_their_ttl(pg_hot: PostgresHotStore) -> None:
    with psycopg.connect(pg_hot._dsn, autocommit=True) as conn:
        conn.execute(f"insert into {pg_hot.schema}.hot_counters values ('old', 7, now() - interval '1 s')")
    assert await pg_hot.get_counters(["old"]) == [None]  # as if Redis had dropped it
    await pg_hot.seed_counter("old", 3, 60)
    assert await pg_hot.get_counters(["old"]) == [3]
    assert await pg_hot.set_once("w", 60) is True
    assert await pg_hot.set_once("w", 60) is False
    assert await pg_hot.purge(now=0) == 0


async def test_set_counters_overwrites(hot: HotStore) -> None:
    await hot.seed_counter("q", 5, 60)
    await hot.set_counters({"q": -1, "r": 7}, 3600)
    assert await hot.get_counters(["q", "r"]) == [-1, 7]


async def test_swap_counters_sets_each_and_returns_what_it_held_before(hot: HotStore) -> None:
    mine, theirs = "pb:{u}:version", "pb:{u2}:version"
    await hot.set_counters({mine: 3}, 3600)
    assert await hot.swap_counters({mine: 4, theirs: 1}, 60) == [3, None]  # in the order given; None: missing
    assert await hot.get_counters([mine, theirs]) == [4, 1]
    assert await hot.swap_counters({theirs: 2, mine: 5}, 60) == [1, 4]
    assert await hot.get_counters([mine, theirs]) == [5, 2]
    assert await hot.swap_counters({}, 60) == []
    if isinstance(hot, RedisHotStore):  # each key lives for the swap's ttl, set_counters's 3600 replaced
        assert [59 <= await hot.redis.ttl(hot._k(k)) <= 60 for k in (mine, theirs)] == [True, True]
    elif isinstance(hot, PostgresHotStore):  # server time, as Redis's: a row past its ttl is missing
        assert 59 <= expire_in_postgres(hot, mine) <= 60
        assert await hot.swap_counters({mine: 6, theirs: 3}, 60) == [None, 2]
        assert await hot.get_counters([mine, theirs]) == [6, 3]


async def test_redis_swaps_counters_in_one_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    async with redis_namespace(REDIS_URL) as url:
        store = open_hot_store(url)
        await store.set_counters({"a": 1}, 60)  # a connection is made: its handshake is not the swap's
        sent: list[bytes] = []
        send = LeanConnection.send_packed_command

        async def counting(self: LeanConnection, command: Any, check_health: bool = True) -> None:
            sent.append(command if isinstance(command, bytes) else b"".join(command))
            await send(self, command, check_health)

        monkeypatch.setattr(LeanConnection, "send_packed_command", counting)
        assert await store.swap_counters({"a": 2, "b": 3, "c": 4}, 60) == [1, None, None]
        assert len(sent) == 1  # one write, three SET ... GET in it, no MULTI
        assert sent[0].count(b"$3\r\nSET\r\n") == 3 and b"MULTI" not in sent[0]
        assert await store.swap_counters({}, 60) == [] and len(sent) == 1
        await store.aclose()


async def _waiting_on_a_lock(dsn: str, schema: str | None) -> None:
    """Until a statement on ``schema``'s tables waits for a row lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(500):
            found = conn.execute(
                "select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like %s", [f"%{schema}%"]
            ).fetchone()
            if found:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the swap never waited")


async def test_postgres_swap_returns_what_another_transaction_committed_while_it_waited(
    pg_hot: PostgresHotStore,
) -> None:
    table = f"{pg_hot.schema}.hot_counters"
    with psycopg.connect(pg_hot._dsn) as other:  # a transaction of its own, held open
        # A row changed after the swap's statement began: the value locked, not its snapshot's, is old.
        await pg_hot.set_counters({"v": 7}, 60)
        other.execute(f"update {table} set value = 8 where key = 'v'")
        swap = asyncio.create_task(pg_hot.swap_counters({"v": 9, "w": 1}, 60))
        await _waiting_on_a_lock(pg_hot._dsn, pg_hot.schema)
        other.commit()
        assert await swap == [8, None]
        # A row inserted after it began is in no snapshot of it: the key goes again, and its value is old.
        other.execute(f"insert into {table} values ('x', 5, now() + interval '1 h')")
        swap = asyncio.create_task(pg_hot.swap_counters({"x": 6, "v": 10}, 60))
        await _waiting_on_a_lock(pg_hot._dsn, pg_hot.schema)
        other.commit()
        assert await swap == [5, 9]
    assert await pg_hot.get_counters(["v", "w", "x"]) == [10, 1, 6]
