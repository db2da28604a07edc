"""The Redis hot store against a real Redis: concurrency, expiry of lost reservations, script reloads,
the blocking pool, and agreement with the in-process store. The contract itself is test_hot_store.py."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from budget.stores import Admit, HitRead, Hold, HotStore, open_hot_store
from budget.stores.memory import MemoryHotStore
from budget.stores.redis import RedisHotStore
from tests.conftest import require_server

REDIS_URL = os.environ.get("PENNYBOT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _ping(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


_reachable = functools.cache(_ping)  # the shared server: asked once per session


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete one prefix's keys with SCAN + DEL: the server is shared, so never FLUSHDB."""
    n = 0
    async with aioredis.Redis.from_url(url) as client:
        batch = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(batch), 500):
            n += await client.delete(*batch[i : i + 500])
    return n


@asynccontextmanager
async def redis_namespace(url: str = REDIS_URL, **options: str) -> AsyncIterator[str]:
    """``url`` with a fresh random key prefix (and extra query options); its keys go afterwards."""
    require_server(_reachable(url), f"Redis at {url}")
    prefix = f"pbtest-{uuid.uuid4().hex[:12]}"
    query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **options}.items())
    try:
        yield f"{url}{'&' if '?' in url else '?'}{query}"
    finally:
        await delete_prefix(url, prefix)


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    """A plain client, to look at the keys the store leaves behind."""
    require_server(_reachable(REDIS_URL), f"Redis at {REDIS_URL}")
    async with aioredis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
        yield client


# --- URLs, key layout and types (no server needed for the first four) ---


_ARG = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=30),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(min_size=7000, max_size=7000),  # past redis-py's chunking size
)
_NAME = st.one_of(st.sampled_from(["EVALSHA", "GET", "SCRIPT LOAD", "CONFIG GET", "get"]), st.text(max_size=12))


@settings(max_examples=400, deadline=None)
@given(name=_NAME, args=st.lists(_ARG, max_size=100), decode=st.booleans())
def test_the_lean_connection_packs_as_redis_py_does(name: str, args: list[object], decode: bool) -> None:
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    from budget.stores.redis import LeanConnection

    def packed(connection: Connection) -> bytes | type[Exception]:
        try:
            return b"".join(bytes(part) for part in connection.pack_command(name, *args))
        except (DataError, UnicodeEncodeError, IndexError, AssertionError) as error:
            return type(error)

    mine, theirs = LeanConnection(decode_responses=decode), Connection(decode_responses=decode)
    assert packed(mine) == packed(theirs)


async def test_url_picks_the_store_and_sizes_the_blocking_pool() -> None:
    made = open_hot_store("redis://127.0.0.1:6379/3?prefix=pb&max_connections=7&timeout=2.5")
    assert isinstance(made, RedisHotStore)
    pool = made.redis.connection_pool
    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout, made.prefix) == (7, 2.5, "pb:")
    assert pool.connection_kwargs["db"] == 3 and "prefix" not in pool.connection_kwargs
    await made.aclose()
    tls = open_hot_store("rediss://127.0.0.1:6380/0")
    assert isinstance(tls, RedisHotStore)
    assert tls.redis.connection_pool.connection_class is aioredis.SSLConnection
    await tls.aclose()


async def test_a_prefix_with_braces_is_refused_and_passwords_stay_out_of_the_url() -> None:
    with pytest.raises(ValueError, match="braces"):
        RedisHotStore("redis://127.0.0.1/0?prefix={x}")
    made = RedisHotStore("redis://:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in made.url and made.url == "redis://:***@127.0.0.1:6379/0"
    await made.aclose()


async def test_money_is_refused_as_a_float_before_anything_is_written() -> None:
    made = RedisHotStore("redis://127.0.0.1:1/0")  # never reached: the check comes first
    with pytest.raises(TypeError, match="whole numbers"):
        await made.reserve("r", [Hold("a", 1, None), Hold("b", 0.5, None)], 60, now=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="whole numbers"):
        await made.settle("r", {"a": 1.5})  # type: ignore[dict-item]
    await made.aclose()


async def test_the_prefix_goes_outside_the_hash_tag() -> None:
    made = RedisHotStore("redis://127.0.0.1/0?prefix=pb7")
    key = made._k("pb:{console:alice}:usd:month:2026-11")
    assert key == "pb7:pb:{console:alice}:usd:month:2026-11"
    assert key_slot(key.encode()) == key_slot(b"{console:alice}") == key_slot(b"pb:{console:alice}:rl")
    await made.aclose()


async def test_keys_live_under_the_prefix(store: RedisHotStore, raw: aioredis.Redis) -> None:
    user, glob = "pb:{console:alice}:usd:month:2026-11", "pb:{global}:usd:month:2026-11"
    await store.reserve("r1", [Hold(user, 5, 100), Hold(glob, 5, None)], 60, now=0)
    await store.hit("pb:{console:alice}:rl", 3, 60, now=0)
    await store.cache_put("pb:{cache}:a:abc", "v", 60, 10, now=0)
    p = store.prefix
    keys = {k async for k in raw.scan_iter(match=f"{p}*")}
    suffixes = ["rsv:due", "rsv:id:r1", "{cache}:lru", "{cache}:expiry", "{cache}:seq", "{cache}:a:abc"]
    assert keys == {p + user, p + glob, p + "pb:{console:alice}:rl"} | {f"{p}pb:{s}" for s in suffixes}
    assert await raw.hgetall(f"{p}pb:rsv:id:r1") == {p + user: "5", p + glob: "5"}
    # The record has no expiry of its own: Redis dropping it before the sweep would keep the money held.
    assert await raw.ttl(f"{p}pb:rsv:id:r1") == -1


# --- concurrency ---


async def test_500_concurrent_reserves_take_exactly_what_fits() -> None:
    limit, amount = 10_000, 37
    async with redis_namespace(max_connections="20") as url:
        made = RedisHotStore(url)
        holds = [Hold("pb:{u}:usd", amount, limit), Hold("pb:{global}:usd", amount, None)]
        results = await asyncio.gather(*(made.reserve(f"r{i}", holds, 60, now=0) for i in range(500)))
        ok = results.count(None)
        assert ok == limit // amount == 270
        assert set(results) == {None, "pb:{u}:usd"}
        assert await made.get_counters(["pb:{u}:usd", "pb:{global}:usd"]) == [ok * amount, ok * amount]
        await made.aclose()


@dataclass
class _Reserve:
    amount: int


@dataclass
class _Settle:
    pick: int  # which open reservation (modulo how many there are)
    permille: int  # the actual cost as a share of what was held


@dataclass
class _Peek:
    pass


_op = st.one_of(
    st.builds(_Reserve, st.integers(0, 120)),
    st.builds(_Settle, st.integers(0, 1000), st.integers(0, 1000)),
    st.just(_Peek()),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(0, 400), rounds=st.lists(st.lists(_op, max_size=12), max_size=8))
async def test_interleaved_reserves_and_settles_never_pass_the_limit(
    store: RedisHotStore, limit: int, rounds: list[list[_Reserve | _Settle | _Peek]]
) -> None:
    # One store for every example; fresh keys per example keep them apart.
    tag = uuid.uuid4().hex
    user, glob = f"pb:{{{tag}}}:usd", f"pb:{{global}}:{tag}"

    def holds(n: int) -> list[Hold]:
        return [Hold(glob, n, limit * 2), Hold(user, n, limit)]

    open_: dict[str, int] = {}
    spent = 0

    async def run(op: _Reserve | _Settle | _Peek, chosen: tuple[str, int] | None) -> None:
        nonlocal spent
        if isinstance(op, _Reserve):
            rid = uuid.uuid4().hex
            if await store.reserve(rid, holds(op.amount), 600, now=0) is None:
                open_[rid] = op.amount
        elif isinstance(op, _Settle) and chosen is not None:
            rid, held = chosen
            actual = held * op.permille // 1000  # a call never costs more than its worst case
            spent += actual
            await store.settle(rid, {user: actual, glob: actual})
        else:  # a peek, or a settle with nothing open to settle
            value = (await store.get_counters([user]))[0] or 0
            assert value <= limit  # checked while other steps are in flight, not only between rounds

    for ops in rounds:
        # Settles in a round pick among the reservations open when it starts, each at most once.
        chosen: list[tuple[str, int] | None] = []
        candidates = list(open_.items())
        for op in ops:
            if isinstance(op, _Settle) and candidates:
                chosen.append(candidates.pop(op.pick % len(candidates)))
                del open_[chosen[-1][0]]
            else:
                chosen.append(None)
        await asyncio.gather(*(run(op, c) for op, c in zip(ops, chosen, strict=True)))
        in_flight = sum(open_.values())
        assert ((await store.get_counters([user]))[0] or 0) == spent + in_flight <= limit
    for rid, held in list(open_.items()):
        spent += held
        await store.settle(rid, {user: held, glob: held})
    assert [v or 0 for v in await store.get_counters([user, glob])] == [spent, spent]


# --- lost reservations ---


async def test_a_dead_owners_reservation_is_released_after_its_ttl(store: RedisHotStore, raw: aioredis.Redis) -> None:
    await store.seed_counter("k", 100, 3600)
    assert await store.reserve("dead", [Hold("k", 600, 1000)], ttl_s=30, now=1000.0) is None  # never settled
    assert await store.reserve("a", [Hold("k", 400, 1000)], 30, now=1029.9) == "k"
    assert await store.reserve("b", [Hold("k", 400, 1000)], 30, now=1030.0) is None
    assert await store.get_counters(["k"]) == [500]
    assert not await raw.exists(f"{store.prefix}pb:rsv:id:dead")
    assert await raw.zrange(f"{store.prefix}pb:rsv:due", 0, -1) == ["b"]
    await store.settle("dead", {"k": 7})  # a straggler settles after the release: only its actual counts
    assert await store.get_counters(["k"]) == [507]


async def test_a_dead_owners_money_comes_back_on_the_wall_clock(store: RedisHotStore) -> None:
    # With wall-clock time the release must still find the record a whole ttl later.
    assert await store.reserve("dead", [Hold("k", 900, 1000)], ttl_s=1, now=time.time()) is None
    await asyncio.sleep(1.05)
    assert await store.reserve("next", [Hold("k", 900, 1000)], 1, now=time.time()) is None
    assert await store.get_counters(["k"]) == [900]


# --- scripts and the pool ---


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A Redis of our own, for drills that would disturb the shared one (SCRIPT FLUSH, counting commands)."""
    binary = shutil.which("redis-server")
    require_server(binary is not None, "redis-server (to start a private Redis)")
    assert binary is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            if _ping(url):
                break
            time.sleep(0.02)
        assert _ping(url), "the private redis-server did not start"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _exercise(hot: HotStore, rid: str, now: float) -> None:
    assert await hot.reserve(rid, [Hold("k", 1, None)], 60, now) is None
    await hot.settle(rid, {"k": 1})
    assert await hot.hit("rl", 100, 60, now) == 0.0
    await hot.cache_put("c", "v", 60, 10, now)
    assert await hot.cache_get("c", now) == "v"
    assert await hot.cache_size(now) == 1


async def test_scripts_keep_working_after_script_flush(private_redis: str) -> None:
    made = RedisHotStore(private_redis)
    await _exercise(made, "r1", 0)
    async with aioredis.Redis.from_url(private_redis) as admin:
        await admin.script_flush()
        await _exercise(made, "r2", 1)
        assert await made.cache_clear() == 1
    assert await made.get_counters(["k"]) == [2]
    await made.aclose()


async def test_each_call_is_one_round_trip(private_redis: str) -> None:
    made = RedisHotStore(private_redis)
    await _exercise(made, "warm", 0)  # loads every script once
    watcher = aioredis.Redis.from_url(private_redis, decode_responses=True)
    marker = aioredis.Redis.from_url(private_redis, decode_responses=True)
    await marker.ping()  # connects (HELLO) before the monitor starts
    async with watcher.monitor() as monitor:
        await _exercise(made, "r", 1)  # six calls
        await marker.echo("end")
        sent: list[str] = []
        while (cmd := await monitor.next_command())["command"] != "ECHO end":
            if cmd["client_type"] != "lua":  # what a script runs inside Redis is no round trip
                sent.append(str(cmd["command"]).split()[0])
    assert sent == ["EVALSHA"] * 6
    for client in (watcher, marker, made):
        await client.aclose()


class LosesAReply:
    """A TCP proxy in front of the shared Redis that, once armed, forwards the next command whose
    bytes hold ``marker``, lets the server run it and drops the connection instead of its reply:
    the client sees a dropped connection and retries on a new one (redis-py's ``Retry``)."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.marker: bytes | None = None
        self.lost = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        lose_next = False

        async def requests() -> None:
            nonlocal lose_next
            while data := await reader.read(65536):
                if self.marker is not None and self.marker in data:
                    self.marker, lose_next = None, True
                up_writer.write(data)
                await up_writer.drain()

        async def replies() -> None:
            nonlocal lose_next
            while data := await up_reader.read(65536):
                if lose_next:  # the server ran the command: its reply never arrives
                    lose_next = False
                    self.lost += 1
                    writer.transport.abort()
                    up_writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(requests(), replies())
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()
            up_writer.transport.abort()


async def test_a_once_key_call_retried_after_a_lost_reply_is_no_repeat(raw: aioredis.Redis) -> None:
    """The once-key's value is the call's own token: a call the client sends again because the
    connection dropped before its reply finds its own token and goes on (its steps are idempotent),
    where a second claim of the message finds another and is a repeat."""
    proxy = LosesAReply(REDIS_URL)
    via = await proxy.start()
    async with redis_namespace() as url:
        prefix = url.split("prefix=")[1]
        made = RedisHotStore(url.replace(urlsplit(url).netloc, via, 1))
        usd, seen = "pb:{u}:usd", "pb:{inbox}:seen:telegram:1"
        try:
            await made.set_counters({usd: 1_500}, 3600)
            # The first try takes the rate limit's last place (1 a minute) and the budget up to its
            # ceiling (1,500 may hold 100 more while at most 1,550): its retry must answer alike.
            admit = Admit("r1", [Hold(usd, 100, 10_000)], [1_550], 60, {})
            await made.hit_and_get("pb:{x}:rl", 5, 60, 0.0, [])  # the script loaded: the lost reply is its run's

            proxy.marker = b"EVALSHA"
            first = await made.hit_and_get("pb:{u}:rl", 1, 60, 1.0, [usd], admit=admit, once=(seen, 60))
            assert proxy.lost == 1  # the server ran it once before the retry
            # The retry: no repeat, allowed, reserved. Its read comes after the first try's hold.
            assert first == HitRead(0.0, [1_600], [], True, False)
            assert await raw.zcard(f"{prefix}:pb:{{u}}:rl") == 1  # one event (the same member)
            assert await made.get_counters([usd]) == [1_600]  # held once (the same reservation id)
            again = await made.hit_and_get("pb:{u}:rl", 1, 60, 2.0, [usd], once=(seen, 60))
            assert again == HitRead(0.0, [], [], False, True)  # another claim of it: a repeat
            same_instant = await made.hit_and_get("pb:{u}:rl", 1, 60, 1.0, [usd], once=(seen, 60))
            assert same_instant.repeated  # even at the first try's very time: the token is the call's own
            other = await made.hit_and_get("pb:{u}:rl", 1, 60, 3.0, [usd], once=("pb:{inbox}:seen:telegram:2", 60))
            assert other.wait == 58.0  # another message: the limit's one place is taken

            proxy.marker = b"SET"
            assert await made.set_once("pb:{w}:warned", 60) is True  # its own retry
            assert proxy.lost == 2
            assert await made.set_once("pb:{w}:warned", 60) is False

            await made.hit("pb:{y}:rl", 5, 60, now=0.0)  # the script loaded
            proxy.marker = b"EVALSHA"  # the rate limit alone: its retry takes the last place it took
            assert await made.hit("pb:{v}:rl", 1, 60, now=1.0) == 0.0
            assert proxy.lost == 3
            assert await raw.zcard(f"{prefix}:pb:{{v}}:rl") == 1
            assert await made.hit("pb:{v}:rl", 1, 60, now=2.0) == 59.0
        finally:
            await made.aclose()
            await proxy.stop()


async def test_the_pool_makes_calls_wait_instead_of_failing() -> None:
    name = f"pbtest-{uuid.uuid4().hex[:8]}"
    async with redis_namespace(max_connections="10", client_name=name) as url:
        made = RedisHotStore(url)
        results = await asyncio.gather(*(made.hit(f"rl{i % 7}", 1000, 60, now=0) for i in range(300)))
        assert results == [0.0] * 300
        async with aioredis.Redis.from_url(REDIS_URL, decode_responses=True) as admin:
            mine = [c for c in await admin.client_list() if c.get("name") == name]
        assert len(mine) == 10  # all 300 went through the pool's 10 connections
        await made.aclose()


# --- agreement with the in-process store ---

# Small steps, often none: equal times are where orderings (LRU, window edges, expiry) can disagree.
_advance = st.tuples(st.just("advance"), st.sampled_from([0.0, 0.0, 0.1, 2.5, 5.0, 7.5, 12.5, 30.0]))
_money = st.one_of(
    _advance,
    st.tuples(st.just("reserve"), st.integers(0, 3), st.integers(0, 60), st.integers(0, 60), st.sampled_from([5, 30])),
    st.tuples(st.just("settle"), st.integers(0, 3), st.integers(0, 60), st.integers(0, 60)),
)
_limiter_and_cache = st.one_of(
    _advance,
    st.tuples(st.just("hit"), st.integers(0, 1), st.integers(1, 3), st.sampled_from([10.0, 12.5])),
    st.tuples(st.just("put"), st.integers(0, 3), st.sampled_from([5.0, 7.5, 20.0])),
    st.tuples(st.just("get"), st.integers(0, 3)),
    st.tuples(st.just("size")),
)


async def _step(hot: HotStore, step: tuple[object, ...], now: float) -> object:
    match step:
        case ("reserve", int(r), int(x), int(y), int(ttl)):
            return await hot.reserve(f"r{r}", [Hold("x", x, 100), Hold("y", y, 80)], ttl, now)
        case ("settle", int(r), int(x), int(y)):
            return await hot.settle(f"r{r}", {"x": x, "y": y})
        case ("hit", int(k), int(limit), float(window)):
            return await hot.hit(f"rl{k}", limit, window, now)
        case ("put", int(k), float(ttl)):
            return await hot.cache_put(f"c{k}", f"v{k}", ttl, 2, now)
        case ("get", int(k)):
            return await hot.cache_get(f"c{k}", now)
        case ("size",):
            return await hot.cache_size(now)
    raise AssertionError(step)


async def _agree(steps: list[tuple[object, ...]]) -> None:
    async with redis_namespace() as url:
        mem, red = MemoryHotStore(), RedisHotStore(url)
        now = 1_700_000_000.0
        try:
            for step in steps:
                if step[0] == "advance":
                    now += float(step[1])  # type: ignore[arg-type]
                else:
                    assert await _step(mem, step, now) == await _step(red, step, now), step
            assert await mem.get_counters(["x", "y"]) == await red.get_counters(["x", "y"])
            assert await mem.cache_clear() == await red.cache_clear()
        finally:
            await red.aclose()


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(_money, min_size=5, max_size=50))
async def test_reservations_behave_as_in_the_memory_store(steps: list[tuple[object, ...]]) -> None:
    await _agree(steps)


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(_limiter_and_cache, min_size=5, max_size=50))
async def test_limiter_and_cache_behave_as_in_the_memory_store(steps: list[tuple[object, ...]]) -> None:
    await _agree(steps)


async def test_lru_order_holds_within_one_clock_tick() -> None:
    # Uses are ordered by a sequence number: by time alone, ties would go by key name.
    await _agree([("put", 1, 20.0), ("put", 0, 20.0), ("put", 2, 20.0), ("get", 0), ("get", 1)])
