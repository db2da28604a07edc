"""The Postgres hot store (``postgresql://...``): what Redis holds, in the tables of
``supabase/migrations/20261123000300_hot.sql``, exact across every process that shares the database.

It backs ``FailoverHotStore`` when Redis cannot be reached (slower: a few round trips a call instead
of one). asyncpg with a pool and no prepared-statement cache, so it works behind Supabase's
transaction-mode pooler; ``?schema=NAME`` names the schema of the tables, which are always
schema-qualified (a transaction-mode pooler refuses search_path at connect), as in the Database store.
A call gives up after 10 s and a connect after 5 (``command_timeout``, ``connect_timeout``): a
Postgres that hangs must not hold the budget checks longer. The URL's ``?command_timeout=`` and
``?connect_timeout=`` are the Database store's (its reports may take longer) and are not used here.

How each step stays atomic across processes:

- ``reserve``, ``settle`` and ``delete`` run in one transaction that locks every counter it reads
  or writes: missing rows are inserted (value 0) and then all of them are locked with
  ``select ... for update``, both in key order, so two transactions never wait on each other in a
  circle. Holds of reservations past their expiry are given back first, as in Redis. A deadlock
  that slips through anyway (a key one transaction inserts while another gives back an expired
  hold on it) rolls back one transaction whole, which is then run again.
- ``hit`` takes a transaction-level advisory lock on its key, then reads and writes the key's log.
- A counter whose ttl passed (server time, like Redis EXPIRE) reads as absent and starts again from 0
  at the next write, as Redis recreates an expired key. Every other time is the callers' ``now``,
  kept as double precision so it compares exactly as in the memory and Redis stores.

Rows of idle keys (counters of past periods, rate-limit logs of users gone quiet) stay until
``purge(now)`` deletes them; in Redis, key expiry does that. Behind ``FailoverHotStore`` counters
are named per outage (``<key>#<epoch>``): those of past outages go the same way, at their ttl.
``delete`` and ``counter_keys`` are what the failover needs beyond the HotStore protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from budget.stores.base import LEFT_OUT_TTL_S, Admit, HitRead, Hold
from budget.stores.postgres import Pool, _split_url

T = TypeVar("T")

_ATTEMPTS = 5  # a transaction that lost a deadlock is rolled back whole: run it again
_EVENTS_LOCK = 0x686F74  # "hot": the first half of a rate-limit log's advisory lock key


def _whole(n: int) -> int:
    # asyncpg would fail on 1.5 half way through a transaction: refuse it first, as the Redis store does.
    if not isinstance(n, int):
        raise TypeError(f"counters hold whole numbers (nano-dollars, tokens), not {type(n).__name__}")
    return n


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _ttl(ttl_s: float) -> float:
    return float(max(1, int(ttl_s)))  # whole seconds, at least one, as Redis's EX


class _Locked:
    """The counters one transaction holds locked, with the values Redis would see."""

    def __init__(self, table: str, rows: Sequence[Any], fresh: set[str]) -> None:
        self.table = table
        # A row this transaction just inserted, or one past its ttl, is a key Redis would not have.
        self.live = {r["key"]: int(r["value"]) for r in rows if not r["gone"] and r["key"] not in fresh}
        self.before = dict(self.live)
        self.reset = fresh | {r["key"] for r in rows if r["gone"]}  # written from 0, with no ttl
        self.fresh = fresh

    def add(self, key: str, amount: int) -> None:
        self.live[key] = self.live.get(key, 0) + amount

    def value(self, key: str) -> int:
        return self.live.get(key, 0)

    async def write(self, conn: Any) -> None:
        """Store what changed. An inserted row nothing was added to goes again: Redis would have no key."""
        changed = [k for k, v in self.live.items() if k in self.reset or self.before.get(k) != v]
        if changed:
            await conn.execute(
                f"update {self.table} as c"
                " set value = u.value, expires_at = case when u.reset then null else c.expires_at end"
                " from unnest($1::text[], $2::bigint[], $3::boolean[]) as u(key, value, reset) where c.key = u.key",
                changed, [self.live[k] for k in changed], [k in self.reset for k in changed],
            )  # fmt: skip
        unused = sorted(self.fresh - self.live.keys())
        if unused:
            await conn.execute(f"delete from {self.table} where key = any($1::text[])", unused)


class PostgresHotStore:
    """Counters, reservations, the rate limiter and the answer cache in Postgres, each step atomic."""

    scheme = "postgresql"
    dedupes = False  # hit_and_get's once-key is a statement of its own (set_once), not free

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
    ) -> None:
        self._dsn, self.schema = _split_url(url)
        if self.schema is not None and not self.schema.isidentifier():
            raise ValueError(f"schema must be a plain identifier, not {self.schema!r}")
        self.url = _redacted(self._dsn)
        s = f'"{self.schema}".' if self.schema else ""
        self._counters, self._reservations = f"{s}hot_counters", f"{s}hot_reservations"
        self._events, self._cache, self._use = f"{s}hot_events", f"{s}hot_cache", f"{s}hot_cache_use"
        self._left = f"{s}hot_left_out"
        # One entry's use: a live one becomes the most recently used, an expired one goes.
        self._cache_use_sql = (
            f"with used as (update {self._cache} set last_used = nextval('{self._use}')"
            " where key = $1 and expires_at > $2 returning value),"
            f" gone as (delete from {self._cache} where key = $1 and expires_at <= $2)"
            " select value from used"
        )
        self._incr_sql = (
            f"insert into {self._counters} as c (key, value) values ($1, $2) on conflict (key) do update"
            " set value = case when c.expires_at <= now() then excluded.value else c.value + excluded.value end,"
            " expires_at = case when c.expires_at <= now() then null else c.expires_at end"
            " returning value"
        )
        self._pool = Pool(
            self._dsn, connect_timeout=connect_timeout, command_timeout=command_timeout,
            min_size=min_size, max_size=max_size, statement_cache_size=0,
        )  # fmt: skip

    async def _conn_pool(self) -> Pool:
        return await self._pool.opened()

    async def _transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        import asyncpg

        pool = await self._conn_pool()
        for attempt in range(_ATTEMPTS):
            try:
                async with pool.acquire() as conn, conn.transaction():
                    return await work(conn)
            except asyncpg.DeadlockDetectedError:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _lock(self, conn: Any, insert: Sequence[str], lock: Sequence[str]) -> _Locked:
        """Insert the missing rows of ``insert`` (at 0), then lock every row of ``lock``, in key order."""
        fresh: set[str] = set()
        if insert:
            rows = await conn.fetch(
                f"insert into {self._counters} (key, value) select k, 0 from unnest($1::text[]) as k order by k"
                " on conflict do nothing returning key",
                sorted(set(insert)),
            )
            fresh = {r["key"] for r in rows}
        rows = await conn.fetch(
            f"select key, value, coalesce(expires_at <= now(), false) as gone from {self._counters}"
            " where key = any($1::text[]) order by key for update",
            sorted(set(lock)),
        )
        return _Locked(self._counters, rows, fresh)

    async def get_counters(self, keys: Sequence[str]) -> list[int | None]:
        if not keys:
            return []
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"select key, value from {self._counters}"
            " where key = any($1::text[]) and (expires_at is null or expires_at > now())",
            list(keys),
        )
        found = {r["key"]: int(r["value"]) for r in rows}
        return [found.get(k) for k in keys]

    async def seed_counter(self, key: str, value: int, ttl_s: int, *, seen: Collection[str] | None = None) -> bool:
        if seen is not None:
            return await self._seed_with_log(key, _whole(value), ttl_s, list(seen))
        pool = await self._conn_pool()
        status = await pool.execute(
            f"insert into {self._counters} as c (key, value, expires_at)"
            " values ($1, $2, now() + make_interval(secs => $3))"
            " on conflict (key) do update set value = excluded.value, expires_at = excluded.expires_at"
            " where c.expires_at <= now()",
            key, _whole(value), _ttl(ttl_s),
        )  # fmt: skip
        return bool(status == "INSERT 0 1")

    async def _seed_with_log(self, key: str, value: int, ttl_s: int, seen: list[str]) -> bool:
        """The seed with its counter's log (``HotStore.left_out``): the counter's row is locked
        first, so a settle of it (which locks it too) either logged before the log is read, in a
        statement after the lock, or waits and finds the counter there."""

        async def work(conn: Any) -> bool:
            counters = await self._lock(conn, [key], [key])
            if key in counters.live:  # there already (a row inserted just now is never live)
                return False
            added = await conn.fetchval(
                f"with gone as (delete from {self._left} where key = $1 returning row_id, amount, expires_at)"
                " select coalesce(sum(amount), 0) from gone where expires_at > now() and row_id <> all($2::text[])",
                key, seen,
            )  # fmt: skip
            await conn.execute(
                f"update {self._counters} set value = $2, expires_at = now() + make_interval(secs => $3)"
                " where key = $1",
                key, value + int(added), _ttl(ttl_s),
            )  # fmt: skip
            return True

        return await self._transaction(work)

    async def left_out(self, keys: Sequence[str]) -> list[dict[str, int]]:
        if not keys:
            return []
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"select key, row_id, amount from {self._left} where key = any($1::text[]) and expires_at > now()",
            list(keys),
        )
        found: dict[str, dict[str, int]] = {}
        for r in rows:
            found.setdefault(r["key"], {})[r["row_id"]] = int(r["amount"])
        return [found.get(k, {}) for k in keys]

    async def set_counters(self, values: Mapping[str, int], ttl_s: int) -> None:
        pool = await self._conn_pool()
        await pool.executemany(
            f"insert into {self._counters} (key, value, expires_at) values ($1, $2, now() + make_interval(secs => $3))"
            " on conflict (key) do update set value = excluded.value, expires_at = excluded.expires_at",
            [(key, _whole(value), _ttl(ttl_s)) for key, value in values.items()],
        )

    async def swap_counters(self, values: Mapping[str, int], ttl_s: int) -> list[int | None]:
        """One statement: the rows there are locked in key order and updated, returning what they held
        (None if past their ttl); the others are inserted. A row another transaction inserted after the
        statement began is not in its snapshot, so its value is unknown: it is left as it is, and the
        key goes again in a statement of its own, which sees it."""
        if not values:
            return []
        import asyncpg

        pending = {key: _whole(value) for key, value in values.items()}
        before: dict[str, int | None] = {}
        pool = await self._conn_pool()
        for attempt in range(_ATTEMPTS):
            try:
                rows = await pool.fetch(
                    f"with want as (select * from unnest($1::text[], $2::bigint[]) as w(key, value)),"
                    f" old as (select key, value, coalesce(expires_at <= now(), false) as gone from {self._counters}"
                    "  where key = any($1::text[]) order by key for update),"
                    f" updated as (update {self._counters} as c"
                    "  set value = want.value, expires_at = now() + make_interval(secs => $3)"
                    "  from old join want using (key) where c.key = old.key"
                    "  returning c.key, case when old.gone then null else old.value end as before),"
                    # ``not in`` reads all of ``old`` (every lock taken) before the first row goes in.
                    f" inserted as (insert into {self._counters} as c (key, value, expires_at)"
                    "  select key, value, now() + make_interval(secs => $3) from want"
                    "  where key not in (select key from old) order by key"
                    "  on conflict (key) do update set value = excluded.value, expires_at = excluded.expires_at"
                    "  where c.expires_at <= now() returning c.key, null::bigint as before)"
                    " select key, before from updated union all select key, before from inserted",
                    list(pending), list(pending.values()), _ttl(ttl_s),
                )  # fmt: skip
            except asyncpg.DeadlockDetectedError:  # rolled back whole: nothing of it was applied
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            for r in rows:
                before[r["key"]] = None if r["before"] is None else int(r["before"])
                del pending[r["key"]]
            if not pending:
                return [before[k] for k in values]
        raise RuntimeError(f"counters {sorted(pending)} were recreated under every attempt to swap them")

    async def reserve(
        self, reservation_id: str, holds: Sequence[Hold], ttl_s: int, now: float, *, seeded_only: bool = False
    ) -> str | None:
        for h in holds:
            _whole(h.amount)
            if h.limit is not None:
                _whole(h.limit)
        keys = [h.key for h in holds]

        async def work(conn: Any) -> str | None:
            # Expired reservations are read before any lock, so that their counters are locked in the
            # same ordered step as ours; the delete below then gives back only what is still there.
            rows = await conn.fetch(
                f"select id, key, expires_at <= $1 as due from {self._reservations} where expires_at <= $1 or id = $2",
                float(now), reservation_id,
            )  # fmt: skip
            due = [r for r in rows if r["due"]]
            counters = await self._lock(conn, keys, [*keys, *(r["key"] for r in due)])
            if due:
                released = await conn.fetch(
                    f"delete from {self._reservations} as r using unnest($1::text[], $2::text[]) as d(id, key)"
                    " where r.id = d.id and r.key = d.key and r.expires_at <= $3 returning r.key, r.amount",
                    [r["id"] for r in due], [r["key"] for r in due], float(now),
                )  # fmt: skip
                for r in released:
                    # A counter that expired (or was deleted) is gone for good: recreating it negative is garbage.
                    if r["key"] in counters.live:
                        counters.add(r["key"], -int(r["amount"]))
            missing = (h.key for h in holds if seeded_only and h.key not in counters.live)
            if any(not r["due"] for r in rows):
                refused = None  # a retried call whose first try applied: a success, never a second hold
            else:
                refused = next(missing, None) or next(
                    (h.key for h in holds if h.limit is not None and counters.value(h.key) + h.amount > h.limit), None
                )
                if refused is None:
                    held: dict[str, int] = {}
                    for h in holds:
                        counters.add(h.key, h.amount)
                        held[h.key] = held.get(h.key, 0) + h.amount
                    await conn.execute(
                        f"insert into {self._reservations} (id, key, amount, expires_at)"
                        " select $1, k, a, $4 from unnest($2::text[], $3::bigint[]) as t(k, a)",
                        reservation_id, list(held), list(held.values()), float(now + ttl_s),
                    )  # fmt: skip
            await counters.write(conn)
            return refused

        return await self._transaction(work)

    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], *, seeded_only: bool = False, row: str | None = None
    ) -> list[str]:
        for v in actual.values():
            _whole(v)

        async def work(conn: Any) -> list[str]:
            rows = await conn.fetch(f"select key from {self._reservations} where id = $1", reservation_id)
            keys = [*actual, *(r["key"] for r in rows)]
            counters = await self._lock(conn, keys, keys)
            held = await conn.fetch(
                f"delete from {self._reservations} where id = $1 returning key, amount", reservation_id
            )
            # Seeded only: a counter that does not exist is left as it is (a hold on it went with it).
            gone = {k for k in keys if k not in counters.live} if seeded_only else set()
            # An unknown or already released reservation holds nothing: only the actual amounts are added.
            for key, amount in actual.items():
                if key not in gone:
                    counters.add(key, amount)
            for r in held:
                if r["key"] not in gone:
                    counters.add(r["key"], -int(r["amount"]))
            logged = [k for k in actual if k in gone and actual[k]] if row is not None else []
            if logged:  # for the counter's next seed (left_out), while its row is locked here
                await conn.execute(
                    f"insert into {self._left} (key, row_id, amount, expires_at)"
                    " select k, $2, a, now() + make_interval(secs => $4)"
                    " from unnest($1::text[], $3::bigint[]) as t(k, a) on conflict (key, row_id)"
                    " do update set amount = excluded.amount, expires_at = excluded.expires_at",
                    logged, row, [actual[k] for k in logged], float(LEFT_OUT_TTL_S),
                )  # fmt: skip
            await counters.write(conn)
            return [k for k in actual if k in gone]

        return await self._transaction(work)

    async def hit(self, key: str, limit: int, window_s: float, now: float) -> float:
        if limit < 1:
            raise ValueError(f"a rate limit must allow at least one event per window, not {limit}")
        cutoff = float(now - window_s)  # an event this old has left the window, as in the memory store

        async def work(conn: Any) -> float:
            await conn.execute("select pg_advisory_xact_lock($1, hashtext($2))", _EVENTS_LOCK, key)
            row = await conn.fetchrow(
                f"select count(*) as n, min(at) as oldest from {self._events} where key = $1 and at > $2", key, cutoff
            )
            allowed = row["n"] < limit
            await conn.execute(
                f"with gone as (delete from {self._events} where key = $1 and at <= $2)"
                f" insert into {self._events} (key, at) select $1, $3 where $4",
                key, cutoff, float(now), allowed,
            )  # fmt: skip
            # The same arithmetic, in the same order, as the memory store.
            return 0.0 if allowed else float(row["oldest"]) + window_s - now

        return await self._transaction(work)

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
        # The fallback store: two or three statements (the Redis store does it in one round trip),
        # one more for ``once``, first, and ``admit`` declined.
        if once is not None and not await self.set_once(*once):
            return HitRead(0.0, [], [], False, True)
        wait, values = await self.hit(key, limit, window_s, now), await self.get_counters(keys)
        if not peeks:
            return HitRead(wait, values, [])
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"select key, value from {self._cache} where key = any($1::text[]) and expires_at > $2",
            list(peeks), float(now),
        )  # fmt: skip
        live = {r["key"]: r["value"] for r in rows}
        return HitRead(wait, values, [live.get(k) for k in peeks])

    async def cache_get(self, key: str, now: float, counts: tuple[str, str] | None = None) -> str | None:
        value = await self._cache_get(key, now)
        if counts is not None:
            await self.incr(counts[value is None])
        return value

    async def _cache_get(self, key: str, now: float) -> str | None:
        pool = await self._conn_pool()
        value: str | None = await pool.fetchval(self._cache_use_sql, key, float(now))
        return value

    async def cache_used(
        self, keys: Sequence[str], now: float, counts: tuple[str, str], hits: int, misses: int
    ) -> None:
        pool = await self._conn_pool()
        if keys:  # asyncpg sends the uses in order, in one round trip (its executemany pipelines)
            await pool.executemany(self._cache_use_sql, [(key, float(now)) for key in keys])
        added = [(counter, _whole(n)) for counter, n in zip(counts, (hits, misses), strict=True) if n]
        if added:
            await pool.executemany(self._incr_sql, added)

    async def cache_put(self, key: str, value: str, ttl_s: float, max_size: int, now: float) -> None:
        async def work(conn: Any) -> None:
            await conn.execute(
                f"insert into {self._cache} (key, value, expires_at, last_used)"
                f" values ($1, $2, $3, nextval('{self._use}')) on conflict (key) do update"
                " set value = excluded.value, expires_at = excluded.expires_at, last_used = excluded.last_used",
                key, value, float(now + ttl_s),
            )  # fmt: skip
            # Expired entries count until something removes them, as in the memory and Redis stores.
            await conn.execute(
                f"delete from {self._cache} where key in"
                f" (select key from {self._cache} order by last_used desc offset $1)",
                max(0, int(max_size)),
            )

        await self._transaction(work)

    async def cache_clear(self) -> int:
        pool = await self._conn_pool()
        status: str = await pool.execute(f"delete from {self._cache}")
        return int(status.split()[-1])

    async def cache_size(self, now: float) -> int:
        pool = await self._conn_pool()
        n: int = await pool.fetchval(
            f"with gone as (delete from {self._cache} where expires_at <= $1)"
            f" select count(*) from {self._cache} where expires_at > $1",
            float(now),
        )
        return n

    async def incr(self, key: str, by: int = 1) -> int:
        pool = await self._conn_pool()
        value: int = await pool.fetchval(self._incr_sql, key, _whole(by))
        return value

    async def set_once(self, key: str, ttl_s: int) -> bool:
        # In the counters' key space and with a ttl, as Redis's SET NX EX.
        pool = await self._conn_pool()
        first = await pool.fetchval(
            f"insert into {self._counters} as c (key, value, expires_at)"
            " values ($1, 1, now() + make_interval(secs => $2))"
            " on conflict (key) do update set value = 1, expires_at = excluded.expires_at"
            " where c.expires_at <= now() returning true",
            key, _ttl(ttl_s),
        )  # fmt: skip
        return bool(first)

    async def once(self, key: str, ttl_s: int) -> bool | None:
        return await self.set_once(key, ttl_s)

    async def delete(self, keys: Sequence[str]) -> None:
        """Forget counters, and every open reservation's hold on them: a counter seeded again from
        the ledger must never be lowered later by a hold it did not count."""
        if not keys:
            return

        async def work(conn: Any) -> None:
            await self._lock(conn, [], keys)
            await conn.execute(f"delete from {self._counters} where key = any($1::text[])", list(keys))
            await conn.execute(f"delete from {self._reservations} where key = any($1::text[])", list(keys))

        await self._transaction(work)

    async def counter_keys(self) -> list[str]:
        """Every counter row there is, live or not: after an outage, what the fallback was used for."""
        pool = await self._conn_pool()
        return [r["key"] for r in await pool.fetch(f"select key from {self._counters} order by key")]

    async def purge(self, now: float, max_window_s: float = 86_400.0) -> int:
        """Delete what nothing reads again: counters past their ttl, rate-limit events older than
        ``max_window_s``, expired cache entries and left-out logs. Returns how many rows went."""

        async def work(conn: Any) -> int:
            statuses = [
                await conn.execute(f"delete from {self._counters} where expires_at <= now()"),
                await conn.execute(f"delete from {self._events} where at <= $1", float(now - max_window_s)),
                await conn.execute(f"delete from {self._cache} where expires_at <= $1", float(now)),
                await conn.execute(f"delete from {self._left} where expires_at <= now()"),
            ]
            return sum(int(s.split()[-1]) for s in statuses)

        return await self._transaction(work)

    async def aclose(self) -> None:
        await self._pool.close()
