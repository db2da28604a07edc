"""Redis goes away, budgets stay exact: FailoverHotStore over a Redis of its own (stopped, started,
or cut off behind a proxy so that it keeps its data) and the Postgres hot store in a fresh schema."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from budget.ledger import Budget, Limits
from budget.money import to_nano
from budget.outbox import OutboxRecorder
from budget.periods import Calendar
from budget.records import AIRequest, Kind, Spend, Status
from budget.stores import Admit, HitRead, Hold
from budget.stores.failover import DOWN_KEY, EPOCH_KEY, FailoverHotStore, StoresUnavailable
from budget.stores.pg_hot import PostgresHotStore
from budget.stores.postgres import PostgresDatabase
from budget.stores.redis import RedisHotStore
from providers.base import Usage
from tests.budget.test_hot_store import pg_schema
from tests.conftest import require_server
from tests.drills.network import Partition, Tarpit
from tests.drills.servers import PG_BIN, ThrowawayPostgres, ThrowawayRedis

RETRY_S = 0.3
USER, GLOBAL = "pb:{u1}:usd:month:2026-11", "pb:{global}:usd:month:2026-11"
NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)


@pytest.fixture
def redis_server() -> Iterator[ThrowawayRedis]:
    require_server(shutil.which("redis-server") is not None, "redis-server (to start a Redis of our own)")
    with ThrowawayRedis() as server:
        yield server


@pytest.fixture
async def pg_url(pg_dsn: str) -> AsyncIterator[str]:
    async with pg_schema(pg_dsn) as url:
        yield url


def failover(redis_url: str, pg_url: str, *, retry_after_s: float = RETRY_S, watch_s: float = 1.0) -> FailoverHotStore:
    return FailoverHotStore(
        RedisHotStore(redis_url), PostgresHotStore(pg_url), retry_after_s=retry_after_s, watch_s=watch_s
    )


async def says_it_last(hot: FailoverHotStore) -> None:
    """``hot`` tries the primary again and fails, after the others did: its word stands (rule k),
    so it is the first back (a process that reaches the primary stays while another's word stands)."""
    await asyncio.sleep(hot.retry_after_s)
    await hot.get_counters([GLOBAL])
    assert hot.using == 1


@contextlib.asynccontextmanager
async def one_cut_off(
    redis_server: ThrowawayRedis, pg_url: str, **b_options: float
) -> AsyncIterator[tuple[FailoverHotStore, FailoverHotStore, Partition]]:
    """Two processes (rule k): a reaches Redis and looks for another's word every 50 ms; b reaches
    it through a proxy, to be cut off with ``proxy.cut()``."""
    proxy = Partition(redis_server.port)
    await proxy.heal()
    a = failover(redis_server.url, pg_url, watch_s=0.05)
    b = failover(f"redis://127.0.0.1:{proxy.port}/0", pg_url, **b_options)
    try:
        yield a, b, proxy
    finally:
        await a.aclose()
        await b.aclose()
        await proxy.cut()


async def b_cut_off_at_500(a: FailoverHotStore, b: FailoverHotStore, proxy: Partition, *, a_looks: bool = True) -> None:
    """The bot's counter at 500 on Redis for both; then b is cut off, on Postgres, seeded there from
    the ledger (500), while a is still on Redis (and stays there, if not ``a_looks``, until
    ``a_moves``)."""
    if not a_looks:
        a._watch_at = math.inf
    for hot in (a, b):
        assert await seeded(hot, [GLOBAL], value=500) == [500]
    await proxy.cut()
    assert await seeded(b, [GLOBAL], value=500) == [500]
    assert (a.using, b.using) == (0, 1)


def a_moves(a: FailoverHotStore, redis_server: ThrowawayRedis, then: str) -> None:
    """a's next call moves it to Postgres: it "joins" b there (after an idle spell, the call waits
    for its look for b's word), or "is cut off too" (Redis stopped)."""
    if then == "joins":
        a._watch_at = -math.inf
    else:
        redis_server.stop()


async def joined(hot: FailoverHotStore) -> None:
    """Calls on ``hot`` (on the primary) until its watch has read another process's word and moved it."""
    async with asyncio.timeout(5):
        while hot.using == 0:
            await hot.get_counters([GLOBAL])
            await asyncio.sleep(0.02)


async def seeded(hot: FailoverHotStore, keys: list[str], value: int = 0) -> list[int | None]:
    """What Budget.meters does: read, seed what is missing, read again."""
    for key, found in zip(keys, await hot.get_counters(keys), strict=True):
        if found is None:
            await hot.seed_counter(key, value, 3600)
    return await hot.get_counters(keys)


async def test_while_redis_is_down_300_reserves_from_two_processes_admit_exactly_what_fits(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    a, b = failover(redis_server.url, pg_url), failover(redis_server.url, pg_url)
    try:
        assert await seeded(a, [USER, GLOBAL]) == [0, 0]
        assert await b.get_counters([USER]) == [0]
        assert (a.using, b.using) == (0, 0)
        redis_server.stop()

        assert await seeded(a, [USER, GLOBAL]) == [0, 0]  # Postgres now, seeded there from the (empty) ledger
        assert (a.using, b.using) == (1, 0)  # b has not noticed yet
        limit, amount = 10_000, 37
        holds = [Hold(USER, amount, limit), Hold(GLOBAL, amount, None)]
        results = await asyncio.gather(*((a if i % 2 else b).reserve(f"r{i}", holds, 600, now=0) for i in range(300)))
        assert results.count(None) == limit // amount == 270
        assert set(results) == {None, USER}
        assert (a.using, b.using) == (1, 1)
        await says_it_last(a)
        pg = PostgresHotStore(pg_url)
        assert await pg.get_counters([f"{USER}#0", f"{GLOBAL}#0"]) == [270 * amount] * 2  # outage 0's counters
        await pg.aclose()

        redis_server.start()  # empty: it keeps nothing on disk
        await asyncio.sleep(RETRY_S)
        assert await a.get_counters([USER, GLOBAL]) == [None, None]  # to be seeded from the ledger
        assert a.using == 0
        assert await b.get_counters([USER]) == [None]
        pg = PostgresHotStore(pg_url)
        assert await pg.get_counters([EPOCH_KEY]) == [1]  # the next outage starts with fresh counters
        await pg.aclose()
    finally:
        await a.aclose()
        await b.aclose()


async def test_after_a_partition_the_counters_used_meanwhile_are_deleted_from_redis(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    proxy = Partition(redis_server.port)
    await proxy.heal()
    hot = failover(f"redis://127.0.0.1:{proxy.port}/0", pg_url)
    direct = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    other = "pb:{u2}:usd:month:2026-11"
    try:
        assert await seeded(hot, [USER, GLOBAL, other], value=100) == [100, 100, 100]
        assert await hot.reserve("before", [Hold(USER, 5, None), Hold(GLOBAL, 5, None)], 600, now=0) is None
        await proxy.cut()

        assert await seeded(hot, [USER, GLOBAL], value=500) == [500, 500]  # the ledger knows more than Redis
        assert await hot.reserve("during", [Hold(USER, 7, 1000), Hold(GLOBAL, 7, None)], 600, now=0) is None
        assert hot.using == 1
        assert await direct.mget([USER, GLOBAL, other]) == ["105", "105", "100"]  # Redis kept its stale values

        await proxy.heal()
        await asyncio.sleep(RETRY_S)
        assert await hot.get_counters([USER, GLOBAL, other]) == [None, None, 100]
        assert hot.using == 0
        assert await direct.mget([USER, GLOBAL]) == [None, None]
        # The open reservation's holds went with the counters: seeded again, they are never lowered by it.
        assert await direct.hgetall("pb:rsv:id:before") == {}
    finally:
        await direct.aclose()
        await hot.aclose()
        await proxy.cut()


async def test_the_first_process_back_cleans_up_and_the_others_follow_it_without_deleting_again(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    proxy = Partition(redis_server.port)
    await proxy.heal()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    a = failover(url, pg_url)
    b = FailoverHotStore(RedisHotStore(url), PostgresHotStore(pg_url), retry_after_s=60)  # waits long on its own
    try:
        await seeded(a, [USER])
        await seeded(b, [USER])
        await proxy.cut()
        for hot in (a, b):
            await seeded(hot, [USER], value=50)
            assert await hot.reserve(f"r{id(hot)}", [Hold(USER, 10, 1000)], 600, now=0) is None
        assert (a.using, b.using) == (1, 1)
        await says_it_last(a)

        await proxy.heal()
        await asyncio.sleep(RETRY_S)
        assert await seeded(a, [USER], value=70) == [70]  # a is back first: deleted, seeded from the ledger
        assert await a.reserve("ra2", [Hold(USER, 5, 1000)], 600, now=0) is None  # after carrying a's 10 over
        assert await a.get_counters([USER]) == [85]
        # b sees the outage is over with its next reservation (on Postgres, before it writes there),
        # and is back at once rather than in 60 s, without deleting a's fresh counter a second time:
        # that reservation is made on Redis, after carrying b's 10 over.
        assert await b.reserve("rb2", [Hold(USER, 5, 1000)], 600, now=0) is None
        assert b.using == 0
        assert await b.get_counters([USER]) == [100]
        assert await b.reserve("rb3", [Hold(USER, 1, 1000)], 600, now=0) is None
        assert await a.get_counters([USER]) == [101]
    finally:
        await a.aclose()
        await b.aclose()
        await proxy.cut()


async def outage_begins(redis_server: ThrowawayRedis, *processes: FailoverHotStore) -> None:
    """The bot's counter at 100 on Redis, then Redis stopped and each process on Postgres, its
    counter seeded there from the ledger (100)."""
    for hot in processes:
        assert await seeded(hot, [GLOBAL], value=100) == [100]
    redis_server.stop()
    for hot in processes:
        assert await seeded(hot, [GLOBAL], value=100) == [100]
    assert [hot.using for hot in processes] == [1] * len(processes)
    await says_it_last(processes[0])


async def test_a_process_behind_reserves_and_settles_on_the_primary_not_on_the_outages_counters(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    # Rule (h): b, still on Postgres after a went back and cleaned up, finds the epoch moved with its
    # next reserve and settle, before either writes there. On the outage's counters (which nobody
    # reads any more) its reserve would pass a limit a has nearly reached on Redis, and its settle
    # would never reach the counter a seeded from the ledger before b's call was in it.
    a = failover(redis_server.url, pg_url)
    b = FailoverHotStore(RedisHotStore(redis_server.url), PostgresHotStore(pg_url), retry_after_s=60)
    try:
        await outage_begins(redis_server, a, b)
        assert await b.reserve("rb", [Hold(GLOBAL, 50, 1000)], 600, now=0) is None
        redis_server.start()
        await asyncio.sleep(RETRY_S)
        assert await seeded(a, [GLOBAL], value=100) == [100]  # a is back: the ledger has 100, b's call is in flight
        assert await a.reserve("ra", [Hold(GLOBAL, 850, 1000)], 600, now=0) is None
        assert a.using == 0 and await a.get_counters([GLOBAL]) == [950]
        # On the outage's counter (150) this would fit; on Redis, with b's 50 carried over, it does not.
        assert await b.reserve("rb2", [Hold(GLOBAL, 100, 1000)], 600, now=0) == GLOBAL
        assert b.using == 0
        assert await a.get_counters([GLOBAL]) == [1000]
        await b.settle("rb", {GLOBAL: 30})  # its row is in the ledger now: 130
        await a.settle("ra", {GLOBAL: 850})
        assert await a.get_counters([GLOBAL]) == [980]  # the ledger: 100 + 30 + 850
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("retry_after_s", [RETRY_S, 60])
async def test_a_process_behind_that_cannot_reach_the_primary_takes_up_the_current_outage_and_the_others_join_it(
    redis_server: ThrowawayRedis, pg_url: str, retry_after_s: float
) -> None:
    # A partition that cuts off only b, after a full outage: a is back on Redis and moved the epoch
    # on. b's reserve finds that (h) and cannot follow. It used to go on counting on the past
    # outage's counters, which nobody reads, while a counted on Redis. Now it takes up the current
    # outage and says so (k), and a joins it there. Each call tries Redis once: at its start when
    # b's own retry is due, else when it finds the epoch moved.
    tries = 0
    async with one_cut_off(redis_server, pg_url, retry_after_s=retry_after_s) as (a, b, proxy):
        try_primary = b._try_primary

        async def counted() -> bool:
            nonlocal tries
            tries += 1
            return await try_primary()

        b._try_primary = counted  # type: ignore[method-assign]
        await outage_begins(redis_server, a, b)
        assert await b.reserve("rb", [Hold(GLOBAL, 50, 1000)], 600, now=0) is None  # outage 0, in flight
        await says_it_last(a)  # b's reserve may have tried Redis again (its retry due): a is still the first back
        await proxy.cut()
        redis_server.start()
        await asyncio.sleep(RETRY_S)
        assert await seeded(a, [GLOBAL], value=100) == [100]
        assert (a.using, b.using) == (0, 1)
        assert await PostgresHotStore(pg_url).get_counters([EPOCH_KEY]) == [1]
        tries = 0
        # Outage 1's counter is not seeded yet: refused until the meters are read (e).
        assert await b.reserve("rb2", [Hold(GLOBAL, 20, 1000)], 600, now=0) == GLOBAL
        assert b.using == 1 and tries == 1
        assert await seeded(b, [GLOBAL], value=100) == [100]
        # rb's hold is carried from outage 0's counter to outage 1's (f) before rb2 is admitted.
        assert await b.reserve("rb2", [Hold(GLOBAL, 20, 1000)], 600, now=0) is None
        assert await b.get_counters([GLOBAL]) == [170]
        assert tries == 1

        await joined(a)
        assert await a.get_counters([GLOBAL]) == [170]  # b's counter: one store for both
        assert await a.reserve("ra", [Hold(GLOBAL, 830, 1000)], 600, now=0) is None
        assert await b.reserve("rb3", [Hold(GLOBAL, 1, 1000)], 600, now=0) == GLOBAL  # full, on both
        await b.settle("rb", {GLOBAL: 30})
        await b.settle("rb2", {GLOBAL: 20})
        assert await a.get_counters([GLOBAL]) == [980]
        # a reaches Redis, but stays while b's word stands.
        assert not await a._switch_back(force=True)
        assert a.using == 1


async def test_a_process_cut_off_from_redis_takes_the_others_to_postgres_with_it(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    # Rule (k). A partition cuts off b alone from Redis. Before (k) b counted on Postgres and a on
    # Redis, each only its own calls, for as long as the partition lasted: with 500 of the bot's
    # 1,000 left, each admitted 13 more calls of 37 (26 in all, 962 over 1,000). Now a reads b's
    # word within ``watch_s`` and counts on Postgres too.
    direct = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    async with direct, one_cut_off(redis_server, pg_url) as (a, b, proxy):
        await b_cut_off_at_500(a, b, proxy)
        await joined(a)
        assert await a.get_counters([GLOBAL]) == [500]  # b's counter, seeded by b
        holds = [Hold(GLOBAL, 37, 1000)]
        results = await asyncio.gather(*((a if i % 2 else b).reserve(f"r{i}", holds, 600, now=0) for i in range(40)))
        assert results.count(None) == 500 // 37 == 13
        assert await a.get_counters([GLOBAL]) == [500 + 13 * 37]
        assert await direct.get(GLOBAL) == "500"  # Redis was left as it was

        # b can reach Redis again: its word is the one that stands, so it goes back first and cleans
        # up; a follows with its next reserve (h) and carries its open holds over.
        await proxy.heal()
        await asyncio.sleep(RETRY_S)
        assert await b.get_counters([GLOBAL]) == [None]  # to be seeded from the ledger
        assert b.using == 0
        assert await PostgresHotStore(pg_url).get_counters([EPOCH_KEY]) == [1]
        assert await seeded(b, [GLOBAL], value=500) == [500]
        assert await a.reserve("ra", holds, 600, now=0) is None
        assert a.using == 0
        mine = sum(1 for i, r in enumerate(results) if r is None and i % 2)
        assert await direct.get(GLOBAL) == str(500 + (mine + 1) * 37)  # a's open holds came along


async def test_a_process_idle_while_another_was_cut_off_makes_its_next_call_on_postgres(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    # Rule (k): the look for another's word runs beside the calls while they come; a call after an
    # idle spell (no look for over ``watch_s``) waits for it, so it is not made on Redis.
    async with one_cut_off(redis_server, pg_url) as (a, b, proxy):
        await b_cut_off_at_500(a, b, proxy)
        await asyncio.sleep(0.2)  # a idle
        # Made on Postgres, where a's reservation finds b's counter: on Redis it would be admitted
        # against the counter b no longer adds to.
        assert await a.reserve("ra", [Hold(GLOBAL, 37, 1000)], 600, now=0) is None
        assert a.using == 1
        assert await b.get_counters([GLOBAL]) == [537]
        assert await b.stores[1].get_counters([DOWN_KEY]) != [None]
    pg = PostgresHotStore(pg_url)
    assert await pg.get_counters([DOWN_KEY]) == [None]  # b took its word back as it closed
    await pg.aclose()


@pytest.mark.parametrize("then", ["joins", "is cut off too"])
async def test_what_a_process_settled_on_redis_after_the_fallback_was_seeded_is_counted_there_when_it_moves(
    redis_server: ThrowawayRedis, pg_url: str, then: str
) -> None:
    # Rule (k)'s window: b is cut off and seeds the bot's counter on Postgres from the ledger (500).
    # a, before its next look, settles two calls of 100 on Redis, whose rows reached the ledger
    # after that sum. Before, Postgres's counter never had them: once a moved there, both processes
    # counted against 500 where 700 was spent, for as long as the outage lasted. Now a brings them.
    async with one_cut_off(redis_server, pg_url) as (a, b, proxy):
        await b_cut_off_at_500(a, b, proxy, a_looks=False)
        for rid in ("r1", "r2"):
            assert await a.reserve(rid, [Hold(GLOBAL, 150, 1000)], 600, now=0) is None
            await a.settle(rid, {GLOBAL: 100})
        assert await a.get_counters([GLOBAL]) == [700]  # Redis's
        assert await b.get_counters([GLOBAL]) == [500]
        a_moves(a, redis_server, then)
        assert await a.get_counters([GLOBAL]) == [700]
        assert a.using == 1 and a._joined == (then == "joins")
        assert await b.get_counters([GLOBAL]) == [700]
        # 300 left, on one counter for both.
        assert await b.reserve("rb", [Hold(GLOBAL, 301, 1000)], 600, now=0) == GLOBAL
        assert await a.reserve("ra", [Hold(GLOBAL, 300, 1000)], 600, now=0) is None
        assert await b.reserve("rb", [Hold(GLOBAL, 1, 1000)], 600, now=0) == GLOBAL


@pytest.mark.parametrize("then", ["joins", "is cut off too"])
async def test_a_process_that_moves_to_postgres_holds_its_calls_in_flight_there_at_once(
    redis_server: ThrowawayRedis, pg_url: str, then: str
) -> None:
    # Rules (f) and (k): a's call of up to 300, reserved on Redis, is in flight when a moves to
    # Postgres. Its hold is carried there with the move, not with a's next reserve (which may be
    # long in coming): meanwhile b would admit 400 more, and a's call could pass the limit as it
    # settles.
    async with one_cut_off(redis_server, pg_url) as (a, b, proxy):
        await b_cut_off_at_500(a, b, proxy, a_looks=False)
        assert await a.reserve("ra", [Hold(GLOBAL, 300, 1000)], 600, now=0) is None
        a_moves(a, redis_server, then)
        assert await a.get_counters([GLOBAL]) == [800]
        assert a.using == 1
        assert await b.reserve("rb", [Hold(GLOBAL, 201, 1000)], 600, now=0) == GLOBAL
        assert await b.reserve("rb", [Hold(GLOBAL, 200, 1000)], 600, now=0) is None
        await a.settle("ra", {GLOBAL: 250})
        assert await b.get_counters([GLOBAL]) == [950]


async def test_a_settle_on_redis_that_ends_after_the_move_to_postgres_is_counted_there(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    # Rule (k): a's settle is on its way to Redis when a's look finds b's word and moves it to
    # Postgres. The settle lands on Redis; its amount is then added on Postgres too. (The Redis
    # store's settle is held back in the test to keep the call in flight: the server is real.)
    direct = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    async with direct, one_cut_off(redis_server, pg_url) as (a, b, proxy):
        await b_cut_off_at_500(a, b, proxy, a_looks=False)
        assert await a.reserve("r1", [Hold(GLOBAL, 150, 1000)], 600, now=0) is None
        gate, sent = asyncio.Event(), asyncio.Event()
        settle = a.stores[0].settle

        async def held_back(*args: object, **kwargs: object) -> list[str]:
            sent.set()
            await gate.wait()
            return await settle(*args, **kwargs)  # type: ignore[arg-type]

        a.stores[0].settle = held_back  # type: ignore[method-assign]
        settling = asyncio.create_task(a.settle("r1", {GLOBAL: 100}))
        await sent.wait()
        a_moves(a, redis_server, "joins")
        assert await a.get_counters([GLOBAL]) == [500]  # on Postgres now; r1 not settled yet
        assert a.using == 1
        gate.set()
        await settling
        assert await direct.get(GLOBAL) == "600"
        assert await b.get_counters([GLOBAL]) == [600]
        assert await b.reserve("rb", [Hold(GLOBAL, 401, 1000)], 600, now=0) == GLOBAL


async def test_a_hung_redis_call_times_out_once_and_is_not_retried() -> None:
    # redis-py's default (5 s, four tries: a call held 20 s) would keep every message waiting that
    # long before the failover moves to Postgres. A plain URL gets 2 s; a timeout is not retried.
    assert RedisHotStore("redis://127.0.0.1:6379/0").redis.connection_pool.connection_kwargs["socket_timeout"] == 2.0
    async with Tarpit() as pit:
        hot = RedisHotStore(f"redis://127.0.0.1:{pit.port}/0?socket_timeout=0.2")
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                await hot.get_counters([GLOBAL])
            assert pit.accepted == 1
        finally:
            await hot.aclose()


async def test_while_redis_hangs_each_try_of_it_is_given_up_on_after_the_probe_timeout(pg_url: str) -> None:
    # A Redis that accepts and never answers, with a client timeout longer than the test allows:
    # only the failover's own probe timeout (1 s) lets a call go on, on Postgres, at the first
    # try of the primary (a new process starts with one) and at the next.
    async with Tarpit() as pit:
        hot = failover(f"redis://127.0.0.1:{pit.port}/0?socket_timeout=30", pg_url)
        try:
            async with asyncio.timeout(6):
                assert await seeded(hot, [GLOBAL], value=7) == [7]
                assert hot.using == 1
                await asyncio.sleep(RETRY_S)
                assert await hot.get_counters([GLOBAL]) == [7]
            assert hot.using == 1
            assert pit.accepted == 2  # one try each time: no retry of a timeout
        finally:
            await hot.aclose()


async def test_a_settle_lands_on_the_store_in_use(redis_server: ThrowawayRedis, pg_url: str) -> None:
    a, b = failover(redis_server.url, pg_url), failover(redis_server.url, pg_url)
    try:
        await seeded(a, [USER, GLOBAL])
        assert await a.reserve("r1", [Hold(USER, 100, 1000), Hold(GLOBAL, 100, None)], 600, now=0) is None
        assert await a.reserve("r2", [Hold(USER, 100, 1000), Hold(GLOBAL, 100, None)], 600, now=0) is None
        redis_server.stop()

        # No counter on Postgres yet: settling would create one from 0 that reads as seeded. It is
        # applied, then deleted, so the next read seeds it from the ledger (which has r1's row by then).
        await a.settle("r1", {USER: 40, GLOBAL: 40})
        assert await b.get_counters([USER, GLOBAL]) == [None, None]
        assert await seeded(b, [USER, GLOBAL], value=40) == [40, 40]
        # r2 is still in flight in process a: a carries its holds over before its next reservation.
        assert await a.reserve("r3", [Hold(USER, 100, 1000), Hold(GLOBAL, 100, None)], 600, now=0) is None
        assert await a.get_counters([USER, GLOBAL]) == [240, 240]
        await a.settle("r2", {USER: 30, GLOBAL: 30})  # replaces r2's carried holds
        await a.settle("r3", {USER: 50, GLOBAL: 50})
        assert await b.get_counters([USER, GLOBAL]) == [120, 120]
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_reservation_on_a_counter_missing_after_a_switch_is_refused_until_seeded(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    hot = failover(redis_server.url, pg_url)
    try:
        await seeded(hot, [USER])  # the meters were read on Redis...
        redis_server.stop()
        # ...and the reservation lands on Postgres, where the counter was never seeded: creating it
        # at 0 would forget the period's spend, so it is refused, and the caller reads the meters again.
        assert await hot.reserve("r", [Hold(USER, 10, 1000)], 600, now=0) == USER
        assert await hot.get_counters([USER]) == [None]
        assert await seeded(hot, [USER], value=900) == [900]
        assert await hot.reserve("r", [Hold(USER, 10, 1000)], 600, now=0) is None
        assert await hot.reserve("r4", [Hold(USER, 91, 1000)], 600, now=0) == USER
    finally:
        await hot.aclose()


async def test_on_redis_a_deleted_counter_is_refused_and_left_out_never_recreated(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    # The hot path through the failover store: one step each for reserve and settle, the stores'
    # seeded_only refusing or leaving out a missing counter in that same step (rule e).
    hot = failover(redis_server.url, pg_url)
    try:
        await seeded(hot, [USER, GLOBAL], value=5)
        primary = hot.stores[0]
        assert isinstance(primary, RedisHotStore)
        await hot.reserve("warm", [Hold(USER, 1, None)], 600, now=0)  # the scripts are loaded once
        await hot.settle("warm", {USER: 0})
        sent: list[str] = []
        execute = primary.redis.execute_command

        async def counting(*args: object, **kw: object) -> object:
            sent.append(str(args[0]))
            return await execute(*args, **kw)

        primary.redis.execute_command = counting  # type: ignore[method-assign]
        assert await hot.reserve("r", [Hold(USER, 100, 1000), Hold(GLOBAL, 100, None)], 600, now=0) is None
        await hot.settle("r", {USER: 40, GLOBAL: 40})
        assert sent == ["EVALSHA", "EVALSHA"]
        assert await hot.get_counters([USER, GLOBAL]) == [45, 45]
        # A counter deleted meanwhile (another process's switch back) is refused and left out in
        # that same step: never recreated from 0.
        await execute("DEL", primary._k(GLOBAL))
        assert await hot.reserve("r2", [Hold(USER, 1, 1000), Hold(GLOBAL, 1, None)], 600, now=0) == GLOBAL
        assert await hot.reserve("r3", [Hold(USER, 1, 1000)], 600, now=0) is None
        await hot.settle("r3", {USER: 1, GLOBAL: 1})
        assert await hot.get_counters([USER, GLOBAL]) == [46, None]
    finally:
        await hot.aclose()


async def test_a_seed_read_before_a_switch_is_dropped(redis_server: ThrowawayRedis, pg_url: str) -> None:
    # Rule (i): the ledger sum behind a seed was read on one store; a switch came before the seed, so
    # the sum may miss a settle left out on the new store. It is not written; a fresh read seeds.
    hot = failover(redis_server.url, pg_url)
    try:
        await seeded(hot, [USER])  # on Redis
        assert await hot.get_counters([GLOBAL]) == [None]  # the read a seed follows...
        redis_server.stop()
        assert await hot.reserve("r", [Hold(USER, 1, None)], 600, now=0) == USER  # ...then a switch
        assert hot.using == 1
        await hot.seed_counter(GLOBAL, 7, 3600)  # the stale seed: dropped
        assert await hot.get_counters([GLOBAL]) == [None]
        await hot.seed_counter(GLOBAL, 9, 3600)  # after a read on this store: written
        assert await hot.get_counters([GLOBAL]) == [9]
    finally:
        await hot.aclose()


async def test_a_settle_leaves_out_a_counter_seeded_after_it_began(redis_server: ThrowawayRedis, pg_url: str) -> None:
    # Rule (j): bot/calls.py records the call's row, then settles. A counter deleted meanwhile
    # (another process's switch back) and seeded again after the settle began has the call in the
    # seed's sum: the settle must not add it a second time. Seeded before it began, it adds.
    hot = failover(redis_server.url, pg_url)
    try:
        assert await seeded(hot, [GLOBAL], value=100) == [100]
        primary = hot.stores[0]
        assert isinstance(primary, RedisHotStore)
        write = primary.settle
        slow: list[asyncio.Event] = []

        async def slow_settle(
            rid: str, actual: dict[str, int], *, seeded_only: bool, row: str | None = None
        ) -> list[str]:
            if slow:  # the real settle, behind a slow network
                await slow.pop().wait()
            return await write(rid, actual, seeded_only=seeded_only, row=row)

        primary.settle = slow_settle  # type: ignore[method-assign]
        for rid, actual, ledger in (("late", 30, 130), ("early", 20, 150)):
            assert await hot.reserve(rid, [Hold(GLOBAL, 50, 1000)], 600, now=0) is None
            assert await hot._delete([GLOBAL], None)  # what another process's switch back runs: holds go too
            if rid == "early":
                assert await seeded(hot, [GLOBAL], value=ledger - actual) == [130]  # before the call's row
            gate = asyncio.Event()
            slow.append(gate)
            settle = asyncio.create_task(hot.settle(rid, {GLOBAL: actual}))  # the row is in the ledger now
            await asyncio.sleep(0)  # the settle began: its write waits on the network
            assert not slow
            if rid == "late":
                assert await seeded(hot, [GLOBAL], value=ledger) == [130]  # the sum has the call
            gate.set()
            await settle
            assert await hot.get_counters([GLOBAL]) == [ledger]
    finally:
        await hot.aclose()


async def test_a_new_process_clears_what_an_earlier_one_left_on_the_fallback(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    # A process died during outage 0: Postgres holds the outage's counters, Redis the stale ones.
    pg = PostgresHotStore(pg_url)
    red = RedisHotStore(redis_server.url)
    await red.seed_counter(USER, 100, 3600)
    await red.seed_counter(GLOBAL, 100, 3600)
    await pg.seed_counter(f"{USER}#0", 300, 3600)
    hot = failover(redis_server.url, pg_url)
    try:
        assert await hot.get_counters([USER, GLOBAL]) == [None, 100]  # seeded again from the ledger
        assert await pg.get_counters([EPOCH_KEY]) == [1]
    finally:
        await hot.aclose()
        await red.aclose()
        await pg.aclose()


async def test_limiter_and_cache_follow_the_store_in_use(redis_server: ThrowawayRedis, pg_url: str) -> None:
    hot = failover(redis_server.url, pg_url)
    try:
        assert await hot.hit("pb:{u1}:rl", 1, 60, now=0) == 0.0
        await hot.cache_put("pb:{cache}:a:1", "on redis", 60, 10, now=0)
        redis_server.stop()
        assert await hot.hit("pb:{u1}:rl", 1, 60, now=1) == 0.0  # a fresh log on Postgres
        assert await hot.hit("pb:{u1}:rl", 1, 60, now=2) == 59.0
        assert await hot.cache_get("pb:{cache}:a:1", now=1) is None
        await hot.cache_put("pb:{cache}:a:1", "on postgres", 60, 10, now=1)
        assert await hot.cache_get("pb:{cache}:a:1", now=2) == "on postgres"
        read = await hot.hit_and_get("pb:{u2}:rl", 1, 60, 3, [], ["pb:{cache}:a:1", "pb:{cache}:a:2"])
        assert read.peeked == ["on postgres", None]
        counts = ("pb:{cache}:hits", "pb:{cache}:misses")
        await hot.cache_used(["pb:{cache}:a:1"], 3, counts, 4, 1)
        assert await hot.get_counters(list(counts)) == [4, 1]  # on Postgres, named as the failover names them
        assert await hot.set_once("pb:{u1}:warned", 60) is True
        assert hot.using == 1
    finally:
        await hot.aclose()


async def test_a_reservation_made_with_the_rate_limit_is_settled_like_any_other(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    hot = failover(redis_server.url, pg_url)
    try:
        await hot.seed_counter(USER, 100, 3600)
        admit = Admit("r1", [Hold(USER, 50, 1_000)], [900], 60)
        read = await hot.hit_and_get("pb:{u1}:rl", 5, 60, 0, [USER], (), admit)
        assert (read.values, read.reserved) == ([100], True)  # on the primary, in the same round trip
        assert await hot.get_counters([USER]) == [150]
        await hot.settle("r1", {USER: 20})
        assert await hot.get_counters([USER]) == [120]
        assert hot._open == {}  # type: ignore[attr-defined]  # known as open, then settled
        redis_server.stop()
        await hot.seed_counter(USER, 120, 3600)  # on Postgres now
        admit = Admit("r2", [Hold(USER, 50, 1_000)], [900], 60)
        read = await hot.hit_and_get("pb:{u1}:rl", 5, 60, 1, [USER], (), admit)
        assert (read.values, read.reserved) == ([120], False)  # declined on the fallback: reserve as usual
        assert hot.using == 1
    finally:
        await hot.aclose()


async def test_a_once_key_rides_with_the_rate_limit_on_redis_and_goes_unchecked_on_the_fallback(
    redis_server: ThrowawayRedis, pg_url: str
) -> None:
    hot = failover(redis_server.url, pg_url)
    direct = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    pg = PostgresHotStore(pg_url)
    seen = "pb:{inbox}:seen:telegram:1"
    try:
        assert FailoverHotStore.dedupes is True
        await hot.seed_counter(USER, 100, 3600)
        read = await hot.hit_and_get("pb:{u1}:rl", 1, 60, 0, [USER], once=(seen, 60))
        assert (read.wait, read.values, read.repeated) == (0.0, [100], False)
        assert (hot.using, await direct.exists(seen), await pg.get_counters([seen])) == (0, 1, [None])  # on Redis
        assert 59 <= await direct.ttl(seen) <= 60
        admit = Admit("r1", [Hold(USER, 50, 1_000)], [900], 60)
        again = await hot.hit_and_get("pb:{u2}:rl", 1, 60, 1, [USER], (), admit, once=(seen, 60))
        assert again == HitRead(0.0, [], [], False, True)
        assert (await hot.get_counters([USER]), hot._open) == ([100], {})  # no hold
        assert await hot.hit("pb:{u2}:rl", 1, 60, now=2) == 0.0  # the repeat counted no event
        other = "pb:{inbox}:seen:telegram:2"
        assert (await hot.once(seen, 60), await hot.once(other, 60), await hot.once(other, 60)) == (False, True, False)
        redis_server.stop()
        # On Postgres now: a key set there would not be seen by processes still on Redis, so none is
        # checked or set (rule c): unchecked, every time, and the caller asks the database.
        read = await hot.hit_and_get("pb:{u1}:rl", 1, 60, 3, [USER], once=(seen, 60))
        assert (read.wait, read.values, read.repeated, read.unchecked, hot.using) == (0.0, [None], False, True, 1)
        fresh = "pb:{inbox}:seen:telegram:3"
        read = await hot.hit_and_get("pb:{u1}:rl", 1, 60, 4, [USER], once=(fresh, 60))
        assert (read.repeated, read.unchecked) == (False, True)
        assert (await hot.once(fresh, 60), await hot.once(fresh, 60)) == (None, None)
        assert await pg.get_counters([seen, fresh]) == [None, None]
        assert (await hot.hit_and_get("pb:{u1}:rl", 1, 60, 5, [USER])).unchecked is False  # no once, nothing unchecked
    finally:
        await hot.aclose()
        await direct.aclose()
        await pg.aclose()


async def test_swap_counters_goes_to_the_store_in_use(redis_server: ThrowawayRedis, pg_url: str) -> None:
    hot = failover(redis_server.url, pg_url)
    direct = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    pg = PostgresHotStore(pg_url)
    version = "pb:{u1}:version"
    try:
        assert await hot.swap_counters({version: 1}, 60) == [None]
        assert await hot.swap_counters({version: 2}, 60) == [1]
        assert (hot.using, await direct.get(version), await pg.get_counters([version, f"{version}#0"])) == (
            0, "2", [None, None],
        )  # fmt: skip
        redis_server.stop()
        # On Postgres now, named as set_counters names it there: a value of the outage, missing at first.
        assert await hot.swap_counters({version: 3}, 60) == [None]
        assert (hot.using, await pg.get_counters([version, f"{version}#0"])) == (1, [None, 3])
    finally:
        await hot.aclose()
        await direct.aclose()
        await pg.aclose()


@pytest.fixture
def private_postgres() -> Iterator[ThrowawayPostgres]:
    require_server((PG_BIN / "initdb").exists(), "PostgreSQL's initdb (to start a Postgres of our own)")
    with ThrowawayPostgres() as server:
        yield server


async def test_with_both_stores_down_ai_replies_pause_with_a_clear_error(
    redis_server: ThrowawayRedis, private_postgres: ThrowawayPostgres
) -> None:
    db = PostgresDatabase(private_postgres.dsn)
    await db.migrate()
    await db.aclose()
    hot = failover(redis_server.url, private_postgres.dsn)
    try:
        assert await seeded(hot, [USER]) == [0]
        redis_server.stop()
        private_postgres.stop()
        with pytest.raises(StoresUnavailable, match="AI replies are paused"):
            await hot.reserve("r", [Hold(USER, 1, 10)], 600, now=0)
        started = time.perf_counter()
        with pytest.raises(StoresUnavailable):  # at once, without waiting on two dead servers again
            await hot.get_counters([USER])
        assert time.perf_counter() - started < 0.05

        private_postgres.start()
        await asyncio.sleep(RETRY_S)
        assert await seeded(hot, [USER], value=3) == [3]  # the fallback is back: budgets work again
        assert hot.using == 1
    finally:
        await hot.aclose()


# --- Budget over a failover store ---


@dataclass
class Ledger:
    """The ledger as Budget reads it: each call's cost, recorded right before its settle (bot/calls.py)."""

    rows: list[tuple[str, int]] = field(default_factory=list)

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend:
        nanos = sum(n for u, n in self.rows if user_key is None or u == user_key)
        return Spend(nanos, 0)

    def total(self, user_key: str | None = None) -> int:
        return sum(n for u, n in self.rows if user_key is None or u == user_key)


def call_row(request_id: str, cost: str, tokens: int) -> AIRequest:
    return AIRequest(
        request_id=request_id, created_at=NOW, user_key="console:a", channel="console", message_id=request_id,
        kind=Kind.ANSWER, provider="openai", model="gpt-4o-mini", status=Status.OK,
        usage=Usage(input_tokens=tokens, output_tokens=0), cost=Decimal(cost),
    )  # fmt: skip


@pytest.mark.parametrize("landed", [False, True], ids=["row-in-its-outbox", "row-landed"])
async def test_a_call_left_out_of_a_deleted_counter_is_in_its_next_seed_from_another_process(
    redis_server: ThrowawayRedis, pg_url: str, tmp_path: Path, landed: bool
) -> None:
    # b's call is in flight when a switch back deletes the counters on Redis (rule a); b records its
    # row (to its outbox: the ledger gets it in the background) and settles, which leaves every
    # counter out (e). a's next message seeds them from the ledger. Before the log (rule l), a's sum
    # lacked the row while it waited in b's outbox, and the call was never counted for the rest of
    # the month; with the log, a adds it, and only once when the row is in the ledger already.
    db = PostgresDatabase(pg_url)
    a_hot, b_hot = failover(redis_server.url, pg_url), failover(redis_server.url, pg_url)
    a_ledger = OutboxRecorder(db, tmp_path / "a.db")
    limits = Limits(user_monthly_usd=Decimal(1), global_monthly_usd=Decimal(10))
    a, b = (Budget(hot, a_ledger, Calendar("UTC"), limits, reservation_ttl_s=600) for hot in (a_hot, b_hot))
    try:
        await db.record([call_row("earlier", "0.0005", 40)])
        meters = await b.meters("console:a", NOW)
        assert [m.used for m in meters] == [500_000, 500_000, 40, 40, 500_000, 500_000]  # user $, tokens; bot $
        reservation = await b.reserve(meters, Decimal("0.002"), 100, NOW)
        assert reservation is not None
        assert await a_hot._delete(b.counter_keys("console:a", NOW), None)  # another process's switch back
        if landed:
            await db.record([call_row("r1", "0.0003", 7)])
        await b.settle(reservation, Decimal("0.0003"), 7, row="r1")  # recorded just before: bot/calls.py
        used = [m.used for m in await a.meters("console:a", NOW)]
        assert used == [800_000, 800_000, 47, 47, 800_000, 800_000]  # the call counted once (500,000 before)
        await db.record([call_row("r1", "0.0003", 7)])  # b's outbox lands it (again: a no-op)
        assert [m.used for m in await b.meters("console:a", NOW)] == used
        assert await a_hot.left_out(b.counter_keys("console:a", NOW)) == [{}] * 6  # cleared by the seeds
    finally:
        await a_ledger.aclose()
        await db.aclose()
        await a_hot.aclose()
        await b_hot.aclose()


@pytest.mark.parametrize("processes", [1, 2])
async def test_budget_never_passes_a_limit_across_an_outage(
    redis_server: ThrowawayRedis, pg_url: str, processes: int
) -> None:
    user_limit, global_limit, worst = Decimal("0.030"), Decimal("0.080"), Decimal("0.001")
    limits = Limits(user_monthly_usd=user_limit, global_monthly_usd=global_limit)
    stores = [failover(redis_server.url, pg_url) for _ in range(processes)]
    ledger = Ledger()  # one ledger: the processes share the database
    budgets = [Budget(hot, ledger, Calendar("UTC"), limits, reservation_ttl_s=600) for hot in stores]
    rng = random.Random(7)
    users = ["console:a", "console:b", "console:c"]

    async def call(user: str, budget: Budget) -> bool:
        for _ in range(2):  # as bot/calls.py: a refusal reads the meters again, once
            meters = await budget.meters(user, NOW)
            reservation = await budget.reserve(meters, worst, 0, NOW)
            if reservation is not None:
                break
        else:
            return False
        await asyncio.sleep(rng.uniform(0.05, 0.25))  # the LLM call, in flight across the switches
        actual = Decimal(rng.randint(300, 1000)) / 1_000_000
        ledger.rows.append((user, to_nano(actual)))  # the row first, then the settle: bot/calls.py
        await budget.settle(reservation, actual, 0)
        return True

    async def worker(user: str, budget: Budget) -> None:
        refused = 0
        while refused < 3:
            refused = 0 if await call(user, budget) else refused + 1

    try:
        load = asyncio.gather(*(worker(users[i % 3], budgets[i % processes]) for i in range(10)))
        await asyncio.sleep(0.4)
        await asyncio.to_thread(redis_server.stop)
        await asyncio.sleep(0.8)
        assert [hot.using for hot in stores] == [1] * processes
        await asyncio.to_thread(redis_server.start)
        await load
        while any(await asyncio.gather(*(call(u, b) for u in users for b in budgets))):  # until nothing fits
            pass
        assert [hot.using for hot in stores] == [0] * processes
        # Nothing in flight now: the counters (seeded again from the ledger after the outage) are the
        # ledger in one process (rule j). Across processes (see Limits) a call in flight over another
        # process's switch back can count twice (a budget reached a little early), and a call can
        # still be missed in Limits' narrow windows: each process lets one call through. (A process
        # behind used to go on settling on the outage's counters: missed about 1 run in 40, none in
        # 30 runs here before (h) sent those settles to Redis nor in 40 after; the deterministic
        # test of (h) above is the one that shows it.)
        over: dict[str | None, int] = {}
        for user in users:
            meters = await budgets[0].meters(user, NOW)
            used = {(m.scope.value, m.period.value): m.used for m in meters if m.unit.value == "usd"}
            over[user] = used[("user", "month")] - ledger.total(user)
            over[None] = used[("global", "month")] - ledger.total()
        missed = 0 if processes == 1 else processes * to_nano(worst)  # one call a process at most
        if processes == 1:
            assert set(over.values()) == {0}
        else:
            assert all(-missed <= n <= 10 * to_nano(worst) for n in over.values()), over  # 10 calls in flight
    finally:
        for hot in stores:
            await hot.aclose()

    assert to_nano(global_limit) - to_nano(worst) - over[None] < ledger.total() <= to_nano(global_limit) + missed
    for user in users:
        assert ledger.total(user) <= to_nano(user_limit) + missed
