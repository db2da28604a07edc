"""The Redis hot store (``redis://host:port/db``, ``rediss://`` for TLS), shared by every replica.

URL options: ``prefix`` namespaces every key (``<prefix>:pb:{user}:...``, outside the hash tag);
``max_connections`` and ``timeout`` size the blocking pool (a call waits up to ``timeout`` seconds
for a free connection instead of failing); ``socket_timeout`` and ``socket_connect_timeout`` (2 s
each by default) bound a reply and a connect. Each method is one round trip: a command or one Lua
script (``lua/*.lua``, sent by EVALSHA and reloaded by redis-py after a SCRIPT FLUSH).

Known limits:

- Time is the ``now`` callers pass (wall-clock epoch seconds in the bot, a hand-driven clock in
  tests), never Redis TIME. Redis's own expiries (rate-limit logs, cache values, counters) only free
  memory and assume that clock is roughly wall time.
- Redis Cluster: a reservation touches a user's keys and the global ones (``pb:{global}:...``) in one
  script, which crosses slots, and the expiry sweep in ``reserve.lua`` reaches reservation hashes
  not named in KEYS. Use a single node or Sentinel; a Cluster needs the global counters split out.
- Run Redis with ``maxmemory-policy noeviction``: an evicted counter is re-seeded from the ledger
  without the holds in flight, and an evicted reservation never gives its money back.
- Lua compares ``counter + amount <= limit`` in doubles: exact below 2**53 (9e15 nano-dollars, about
  $9M); the counters themselves change only through Redis's 64-bit INCRBY/DECRBY.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Mapping, Sequence
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from budget.stores.base import LEFT_OUT_TTL_S, Admit, HitRead, Hold

# The pool waits up to POOL_TIMEOUT_S for a connection rather than raising at once, as the default
# pool does past its size: a burst of messages queues instead of failing.
MAX_CONNECTIONS = 50
POOL_TIMEOUT_S = 20.0
# A reply or a connect that takes longer: the server is treated as away (the failover store moves to
# Postgres). Not retried: a hung server (one behind a partition that drops packets, or stuck) does
# not answer a retry either, and redis-py's four tries at its default 5 s kept a call 20 s.
SOCKET_TIMEOUT_S = 2.0


class LeanConnection(Connection):
    """redis-py's TCP connection, packing a command of strings, bytes and integers in one join.

    redis-py's ``pack_command`` grows its buffer one argument at a time (a copy of everything so far
    each time) and dispatches each argument's type through its encoder: a message's first script,
    with about 90 arguments, took 63 µs to pack on a 2-core EPYC VM, 18 µs here. The bytes are the
    same (``tests/budget/test_redis_store.py`` checks them against redis-py's on generated
    commands); anything else (a float, a command name with a space, ``memoryview``) goes to
    redis-py's own."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if not (isinstance(name, str) and name.isalpha()):
            return super().pack_command(*args)
        encoding, errors = self.encoder.encoding, self.encoder.encoding_errors
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            if isinstance(arg, str):
                raw = arg.encode(encoding, errors)
            elif isinstance(arg, bytes):
                raw = arg
            elif type(arg) is int:
                raw = b"%d" % arg
            else:
                return super().pack_command(*args)
            parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        return [b"".join(parts)]


# A counter's log of amounts settles left out of it while it did not exist (settle.lua, seed.lua).
_LEFT = "~left"


# Scripts that reserve: sent after reserve_core.lua, which holds the reservation step they share.
_RESERVING = frozenset({"reserve", "hit_get"})


@cache
def _lua(name: str) -> str:
    """A script's source from ``budget/stores/lua``, read once per process."""
    return (files("budget.stores") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@cache
def script_source(name: str) -> str:
    """What is sent for script ``name``: its file, after reserve_core.lua for the scripts that reserve."""
    return _lua("reserve_core") + "\n" + _lua(name) if name in _RESERVING else _lua(name)


def _split_url(url: str) -> tuple[str, str]:
    """The URL without our own ``prefix`` option (redis-py would pass it on to the connection), and the prefix."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), "")
    if "{" in prefix or "}" in prefix:
        raise ValueError("the Redis key prefix must not contain braces: they would replace the keys' hash tags")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _whole(n: int) -> int:
    # A float would fail INCRBY half way through a script, after earlier writes: refuse it before sending.
    if not isinstance(n, int):
        raise TypeError(f"counters hold whole numbers (nano-dollars, tokens), not {type(n).__name__}")
    return n


def _score(t: float) -> str:
    # repr round-trips a double exactly, so Redis compares the very times the memory store would.
    return repr(float(t))


def _hit_args(limit: int, window_s: float, now: float) -> list[str | int]:
    if limit < 1:  # the script would let everything through; the memory store fails too
        raise ValueError(f"a rate limit must allow at least one event per window, not {limit}")
    member = f"{_score(now)}:{uuid.uuid4().hex[:16]}"  # two events at one instant are two events
    expire_ms = max(1, math.ceil(window_s * 1000))
    return [_score(now - window_s), int(limit), _score(now), member, expire_ms]


def _wait(oldest: str | None, window_s: float, now: float) -> float:
    if oldest is None:
        return 0.0
    return float(oldest) + window_s - now  # the same arithmetic, in the same order, as the memory store


class RedisHotStore:
    """Counters, reservations, the rate limiter and the answer cache in Redis, each step atomic."""

    scheme = "redis"
    dedupes = True  # hit_and_get's once-key rides in its script, in the store every process shares

    def __init__(self, url: str, *, max_connections: int = MAX_CONNECTIONS, timeout: float = POOL_TIMEOUT_S) -> None:
        clean, prefix = _split_url(url)
        self.url = _redacted(url)
        self.prefix = f"{prefix}:" if prefix else ""
        # URL query options win over these keyword arguments (redis-py's from_url rule).
        # A connection dropped by a Redis restart is replaced and the command retried: reserve is
        # idempotent on its id and a retried settle can only over-count, never under-count. A
        # timeout is not retried (SOCKET_TIMEOUT_S).
        pool = BlockingConnectionPool.from_url(
            clean, max_connections=max_connections, timeout=timeout, decode_responses=True,
            connection_class=LeanConnection,  # rediss:// and unix:// URLs set their own
            socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3, supported_errors=(RedisConnectionError,)),
            retry_on_error=[RedisConnectionError],
        )  # fmt: skip
        self.redis: Redis = Redis.from_pool(pool)
        self._reserve = self.redis.register_script(script_source("reserve"))
        self._settle = self.redis.register_script(script_source("settle"))
        self._seed = self.redis.register_script(script_source("seed"))
        self._hit = self.redis.register_script(script_source("hit"))
        self._hit_get = self.redis.register_script(script_source("hit_get"))
        self._cache_get = self.redis.register_script(script_source("cache_get"))
        self._cache_put = self.redis.register_script(script_source("cache_put"))
        self._cache_used = self.redis.register_script(script_source("cache_used"))
        self._cache_size = self.redis.register_script(script_source("cache_size"))
        self._cache_clear = self.redis.register_script(script_source("cache_clear"))
        # The store's own keys. "id:" keeps a reservation named "due" from landing on the index.
        self._due = self._k("pb:rsv:due")
        self._held_prefix = self._k("pb:rsv:id:")
        self._lru = self._k("pb:{cache}:lru")
        self._expiry = self._k("pb:{cache}:expiry")
        self._seq = self._k("pb:{cache}:seq")

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def get_counters(self, keys: Sequence[str]) -> list[int | None]:
        if not keys:
            return []
        values: list[Any] = await self.redis.mget([self._k(k) for k in keys])
        return [None if v is None else int(v) for v in values]

    async def seed_counter(self, key: str, value: int, ttl_s: int, *, seen: Collection[str] | None = None) -> bool:
        if seen is None:
            return bool(await self.redis.set(self._k(key), _whole(value), nx=True, ex=max(1, int(ttl_s))))
        named = self._k(key)
        args: list[str | int] = [_whole(value), max(1, int(ttl_s)), *seen]
        return bool(await self._seed(keys=[named, named + _LEFT], args=args))

    async def left_out(self, keys: Sequence[str]) -> list[dict[str, int]]:
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self._k(key) + _LEFT)
            logs: list[dict[str, str]] = await pipe.execute()
        return [{row: int(amount) for row, amount in log.items()} for log in logs]

    async def set_counters(self, values: Mapping[str, int], ttl_s: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key, value in values.items():
                pipe.set(self._k(key), _whole(value), ex=max(1, int(ttl_s)))
            await pipe.execute()

    async def swap_counters(self, values: Mapping[str, int], ttl_s: int) -> list[int | None]:
        if not values:
            return []
        # SET ... GET per key, atomic each; no MULTI: the keys need not change together. A retry after
        # a dropped connection can find the value its first try set: a change seen, never one missed.
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, value in values.items():
                pipe.set(self._k(key), _whole(value), ex=max(1, int(ttl_s)), get=True)
            before: list[Any] = await pipe.execute()
        return [None if v is None else int(v) for v in before]

    async def reserve(
        self, reservation_id: str, holds: Sequence[Hold], ttl_s: int, now: float, *, seeded_only: bool = False
    ) -> str | None:
        args: list[str | int] = [
            _score(now), _score(now + ttl_s), reservation_id, self._held_prefix, "1" if seeded_only else "0"
        ]  # fmt: skip
        for h in holds:
            args += [_whole(h.amount), "" if h.limit is None else _whole(h.limit)]
        keys = [self._due, self._held_prefix + reservation_id, *(self._k(h.key) for h in holds)]
        refused = int(await self._reserve(keys=keys, args=args))
        return None if refused == 0 else holds[refused - 1].key

    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], *, seeded_only: bool = False, row: str | None = None
    ) -> list[str]:
        names = list(actual)
        keys = [self._due, self._held_prefix + reservation_id, *(self._k(k) for k in names)]
        args = [reservation_id, "1" if seeded_only else "0", row or "", LEFT_OUT_TTL_S]
        args += [_whole(actual[k]) for k in names]
        left_out = await self._settle(keys=keys, args=args)
        return [names[int(i) - 1] for i in left_out]

    async def hit(self, key: str, limit: int, window_s: float, now: float) -> float:
        oldest = await self._hit(keys=[self._k(key)], args=_hit_args(limit, window_s, now))
        return _wait(oldest, window_s, now)

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
        names = [self._k(key), *(self._k(k) for k in keys)]
        if peeks:
            names += [self._expiry, *(self._k(k) for k in peeks)]
        args: list[str | int] = [*_hit_args(limit, window_s, now), len(keys), _score(now), len(peeks)]
        if admit is None or not admit.holds:  # a reservation of no holds is none (and h 0 ends ARGV)
            args.append(0)
        else:
            names += [self._due, self._held_prefix + admit.reservation_id]
            args += self._admit_args(admit, keys, peeks, now)
        if once is not None:  # last of each: the script counts KEYS and ARGV to find it
            names.append(self._k(once[0]))
            args.append(max(1, int(once[1])))  # its value: the event's member, unique to this call
        oldest, values, entries, reserved, repeated = await self._hit_get(keys=names, args=args)
        return HitRead(
            _wait(oldest or None, window_s, now),
            [None if v is None else int(v) for v in values],
            [e or None for e in entries],
            bool(reserved),
            bool(repeated),
        )

    def _admit_args(self, admit: Admit, keys: Sequence[str], peeks: Sequence[str], now: float) -> list[str | int]:
        """hit_get.lua's arguments for a reservation: keys by their place among those read (1-based)."""
        place = {k: i for i, k in enumerate(keys, 1)}
        args: list[str | int] = [
            len(admit.holds), _score(now + admit.ttl_s), admit.reservation_id, self._held_prefix,
            0 if admit.unless is None else list(peeks).index(admit.unless) + 1, len(admit.expect),
        ]  # fmt: skip
        for k, value in admit.expect.items():
            args += [place[k], _whole(value)]
        for hold, ceiling in zip(admit.holds, admit.ceilings, strict=True):
            args += [place[hold.key], _whole(hold.amount)]
            args += ["" if hold.limit is None else _whole(hold.limit), "" if ceiling is None else _whole(ceiling)]
        return args

    async def cache_get(self, key: str, now: float, counts: tuple[str, str] | None = None) -> str | None:
        keys = self._cache_keys(key) + ([] if counts is None else [self._k(counts[0]), self._k(counts[1])])
        value: str | None = await self._cache_get(keys=keys, args=[_score(now)])
        return value

    async def cache_used(
        self, keys: Sequence[str], now: float, counts: tuple[str, str], hits: int, misses: int
    ) -> None:
        names = [self._lru, self._expiry, self._seq, self._k(counts[0]), self._k(counts[1])]
        await self._cache_used(keys=names + [self._k(k) for k in keys], args=[_score(now), int(hits), int(misses)])

    async def cache_put(self, key: str, value: str, ttl_s: float, max_size: int, now: float) -> None:
        expire_ms = max(1, math.ceil(ttl_s * 1000))
        await self._cache_put(
            keys=self._cache_keys(key), args=[value, expire_ms, _score(now + ttl_s), max(0, int(max_size))]
        )

    def _cache_keys(self, key: str) -> list[str]:
        return [self._k(key), self._lru, self._expiry, self._seq]

    async def cache_clear(self) -> int:
        return int(await self._cache_clear(keys=[self._lru, self._expiry]))

    async def cache_size(self, now: float) -> int:
        return int(await self._cache_size(keys=[self._lru, self._expiry], args=[_score(now)]))

    async def incr(self, key: str, by: int = 1) -> int:
        return int(await self.redis.incrby(self._k(key), _whole(by)))

    async def set_once(self, key: str, ttl_s: int) -> bool:
        # The value is new for each call: redis-py retrying it after a lost reply (the connection
        # dropped after the server ran it) sends the same token, which tells it from a second claim.
        token = uuid.uuid4().hex
        held = await self.redis.set(self._k(key), token, nx=True, get=True, ex=max(1, int(ttl_s)))
        return held is None or held == token

    async def once(self, key: str, ttl_s: int) -> bool | None:
        return await self.set_once(key, ttl_s)

    async def aclose(self) -> None:
        await self.redis.aclose()  # from_pool gave the client the pool: this closes its connections too
