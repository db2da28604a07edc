"""The Postgres store (``postgresql://...``): a Supabase project's database or any Postgres.

asyncpg with a pool. On a direct connection each statement is prepared once per connection and
then one round trip; behind a transaction-mode pooler (pgbouncer, Supabase's on port 6543), where
a prepared statement does not outlive its transaction, the cache is off and each is two.
``?statement_cache=off`` (or ``on``) in the URL overrides the guess from the port.
``?schema=NAME`` in the URL puts every table in that schema. Money is NUMERIC: Decimal in,
Decimal out. Each method is one statement where it can be: one round trip, atomic on its own.

A Postgres that hangs (it accepts and never answers: stuck, or behind a partition that drops
packets) fails a call with ``TimeoutError`` after ``command_timeout`` (15 s; asyncpg's own default
is none: a call held for ever) and a new connection after ``connect_timeout`` (10 s; asyncpg's 60),
both settable in the URL (``?command_timeout=S&connect_timeout=S``). asyncpg then cancels the
statement on the server, within ``command_timeout`` too, or drops the connection: the caller has
its error after twice ``command_timeout`` at most, or ``connect_timeout`` when the pool must open a
connection first. Every write here may be retried after a timeout: each is one statement that
does nothing twice (a request id, a lease epoch, a claim's token), the same rule as for a reply
lost with its connection; the sweep's take-over, which moves a lease's epoch, is a transaction, so
one that runs only after the caller gave up on it rolls back. A call waits for a pooled connection
no longer than either timeout (``Pool``; asyncpg's pool waits for ever): behind hung
connections a call would wait for the whole hang, and one that starts a lease from the caller's
``now`` would be granted a lease already spent, so the sweeps would take its message over while it
is answered. Migrations and the purge may run longer (``LONG_S``): a migration waits for another
process's, and a purge of a year's rows is slow, not hung.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from budget.records import (
    AIRequest,
    Answer,
    AuditEntry,
    Claim,
    Conversation,
    Exchange,
    InboxItem,
    Kind,
    Landing,
    Lease,
    Quota,
    ResourceUse,
    Spend,
    Status,
    StoredAlert,
    StoredTurn,
    quota_change,
)
from providers.base import Usage

_AI_COLUMNS = (
    "request_id, created_at, user_key, channel, message_id, kind, provider, model, tier, complexity,"
    " status, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,"
    " cost_usd, saved_usd, latency_ms, error, reason"
)
_MIGRATION_LOCK = 0x70656E6E79  # "penny": one migrating process at a time
# Supabase's transaction-mode pooler, and pgbouncer's default port: no prepared statement survives
# a transaction there. A pooler on another port needs ``?statement_cache=off``.
_POOLER_PORTS = frozenset({6543, 6432})
_STATEMENT_CACHE_SIZE = 100  # asyncpg's default
_SWITCH = {"on": True, "off": False}
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 15.0
LONG_S = 3600.0  # migrations and the purge
_TIMEOUTS = ("connect_timeout", "command_timeout")


def migrations() -> list[tuple[str, str]]:
    """(name, SQL) of every migration shipped with the package, in order."""
    folder = resources.files("budget.stores").joinpath("migrations")
    files = sorted((f.name, f) for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(name, f.read_text()) for name, f in files]


def _split_url(url: str) -> tuple[str, str | None]:
    """The URL for asyncpg (pennybot's own parameters taken out) and the ``schema`` parameter."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    schema = query.pop("schema", None)
    for own in ("statement_cache", *_TIMEOUTS):  # not server settings: asyncpg would send them as ones
        query.pop(own, None)
    return urlunsplit(parts._replace(query=urlencode(query))), schema


def url_timeouts(url: str, connect_s: float, command_s: float) -> tuple[float, float]:
    """``?connect_timeout=`` and ``?command_timeout=`` of ``url`` (seconds), else the defaults given."""
    query = dict(parse_qsl(urlsplit(url).query))
    found = {"connect_timeout": connect_s, "command_timeout": command_s}
    for name in _TIMEOUTS:
        if name in query:
            try:
                seconds = float(query[name])
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"{name} must be a number of seconds above 0, not {query[name]!r}")
            found[name] = seconds
    return found["connect_timeout"], found["command_timeout"]


def uses_statement_cache(url: str) -> bool:
    """Whether prepared statements may be cached on the connections of ``url``: ``?statement_cache=``
    if given, else not when a port is a transaction-mode pooler's (every host of a multi-host URL)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if "statement_cache" in query:
        value = query["statement_cache"].lower()
        if value not in _SWITCH:
            raise ValueError(f"statement_cache must be on or off, not {value!r}")
        return _SWITCH[value]
    hosts = parts.netloc.rpartition("@")[2].split(",")
    ports = [h.rpartition(":")[2] for h in hosts if ":" in h.rpartition("]")[2]]
    ports += query.get("port", "").split(",")
    return not any(p.strip().isdigit() and int(p) in _POOLER_PORTS for p in ports)


async def _keep_session(conn: Any) -> None:
    """The pool's reset on release, in place of asyncpg's (``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``, one round trip every time a connection goes back to the pool).

    asyncpg still rolls back a transaction left open. The rest has nothing to undo, because this
    store's pool (its own; no other code gets its connections) never leaves session state
    behind: the only advisory lock is ``pg_advisory_xact_lock`` (released at commit), the only SET
    is ``set local`` (this transaction only), and it never LISTENs, declares a cursor or makes a
    temporary table. Keep it so, or go back to asyncpg's reset.
    """


class Pool:
    """asyncpg's pool, opened on first use (once for a burst of first calls), whose every call waits
    for a pooled connection no longer than ``command_timeout`` (or ``connect_timeout`` if longer: it
    may have to open one): asyncpg's pool waits for ever, so behind the connections of a Postgres
    that hangs each call would wait for as long as the hang.
    Its statements time out after ``command_timeout`` too, unless a call says otherwise, and its
    connects after ``connect_timeout``."""

    def __init__(self, dsn: str, *, connect_timeout: float, command_timeout: float, **options: Any) -> None:
        self._dsn, self._options = dsn, options
        self.connect_timeout, self.command_timeout = connect_timeout, command_timeout
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def opened(self) -> Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self._dsn, timeout=self.connect_timeout, command_timeout=self.command_timeout,
                        **self._options,
                    )  # fmt: skip
        return self

    def acquire(self) -> Any:
        return self._pool.acquire(timeout=max(self.command_timeout, self.connect_timeout))

    async def execute(self, query: str, *args: Any, **options: Any) -> str:
        async with self.acquire() as conn:
            return str(await conn.execute(query, *args, **options))

    async def executemany(self, query: str, args: Any, **options: Any) -> None:
        async with self.acquire() as conn:
            await conn.executemany(query, args, **options)

    async def fetch(self, query: str, *args: Any, **options: Any) -> list[Any]:
        async with self.acquire() as conn:
            return list(await conn.fetch(query, *args, **options))

    async def fetchrow(self, query: str, *args: Any, **options: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args, **options)

    async def fetchval(self, query: str, *args: Any, **options: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args, **options)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


class PostgresDatabase:
    """The Database protocol on Postgres."""

    scheme = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        command_timeout: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self.statement_cache = uses_statement_cache(url)
        self.connect_timeout, self.command_timeout = url_timeouts(url, connect_timeout, command_timeout)
        self.url, self.schema = _split_url(url)
        if self.schema is not None and not self.schema.isidentifier():
            raise ValueError(f"schema must be a plain identifier, not {self.schema!r}")
        # Tables are schema-qualified rather than found through search_path: a transaction-mode
        # pooler (pgbouncer, Supabase's) refuses search_path at connect and would leak a SET.
        self.s = f'"{self.schema}".' if self.schema else ""
        # The per-message writes' statements, built once: add_turns alone, and answer_inbox with
        # and without the exchange's turns riding along.
        self._add_turns_sql = self._insert_turns(1)
        # The replies are stored, and the turns with them, only by the message's owner (its lease's
        # epoch) and only once: a retry of a stored answer (its commit's reply was lost) adds no
        # turn twice. The select reads the inbox as it was before the update: stored now, or before
        # by this owner, is True; taken over is False.
        stored = (
            f"with stored as (update {self.s}inbox set status = 'answered', reply = $3::jsonb"
            " where channel = $1 and message_id = $2 and lease_epoch = $4 and status = 'pending' returning 1)"
        )
        mine = (
            f" select exists (select from stored) or exists (select from {self.s}inbox"
            " where channel = $1 and message_id = $2 and lease_epoch = $4 and status <> 'pending')"
        )
        self._answer_sql = stored + mine
        self._answer_with_turns_sql = (
            f"{stored}, added as ({self._insert_turns(5, only_if='exists (select from stored)')}){mine}"
        )
        # store_answers: many answers, each with its done mark if sent, in one statement. The turns
        # come as flat arrays, each row naming its answer (n); an answer is stored only if the
        # message is the caller's and pending, a done mark only on its own answer. The two
        # updates take disjoint rows (pending, answered), as one statement must.
        self._store_answers_sql = (
            "with m as (select * from unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::timestamptz[])"
            " with ordinality as m (channel, message_id, reply, epoch, done_at, n)),"
            f" answered as (update {self.s}inbox i set reply = m.reply::jsonb, done_at = m.done_at,"
            " status = case when m.done_at is null then 'answered' else 'done' end from m"
            " where i.channel = m.channel and i.message_id = m.message_id and i.lease_epoch = m.epoch"
            " and i.status = 'pending' returning m.n),"
            f" finished as (update {self.s}inbox i set status = 'done', done_at = m.done_at from m"
            " where i.channel = m.channel and i.message_id = m.message_id and i.lease_epoch = m.epoch"
            " and i.status = 'answered' and m.done_at is not null returning m.n),"
            f" added as (insert into {self.s}messages (user_key, role, content, tokens, size, created_at)"
            " select t.user_key, t.role, t.content, t.tokens, t.size, t.at from unnest($6::bigint[], $7::text[],"
            " $8::text[], $9::text[], $10::integer[], $11::integer[], $12::timestamptz[]) with ordinality"
            " as t (n, user_key, role, content, tokens, size, at, o)"
            " where t.n in (select n from answered) order by t.o returning 1)"
            " select exists (select from answered a where a.n = m.n) or exists (select from"
            f" {self.s}inbox i where i.channel = m.channel and i.message_id = m.message_id"
            " and i.lease_epoch = m.epoch and i.status <> 'pending') as mine from m order by m.n"
        )
        # land_claims: many claims in one statement. The insert takes the keys in order, so two
        # batches landing the same messages at once wait on each other rather than deadlock. The
        # select reads the inbox as it was before the statement (a CTE's insert is not visible to
        # it): inserted now, or there with this token (a retried write), is mine; another
        # claimant's is answered once its replies are stored or sent; else, or not seen at all
        # (inserted by a statement committed after this one began), pending.
        self._land_claims_sql = (
            "with claims as (select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])"
            " with ordinality as c (channel, message_id, user_key, payload, received_at, n)),"
            f" landed as (insert into {self.s}inbox (channel, message_id, user_key, payload, received_at, lease_until)"
            " select channel, message_id, user_key, payload::jsonb, received_at, $7::timestamptz from claims"
            " order by channel, message_id on conflict do nothing returning channel, message_id)"
            " select case when l.channel is not null then 'mine' when i.status = 'done' or i.reply is not null"
            " then 'answered' when i.payload->>'by' = $6::text then 'mine' else 'pending' end as landing"
            " from claims c left join landed l on l.channel = c.channel and l.message_id = c.message_id"
            f" left join {self.s}inbox i on i.channel = c.channel and i.message_id = c.message_id order by c.n"
        )
        self._pool = Pool(
            self.url, connect_timeout=self.connect_timeout, command_timeout=self.command_timeout,
            min_size=min_size, max_size=max_size, reset=_keep_session,
            statement_cache_size=_STATEMENT_CACHE_SIZE if self.statement_cache else 0,
        )  # fmt: skip

    async def _conn_pool(self) -> Pool:
        return await self._pool.opened()

    async def migrate(self) -> None:
        """Apply what is not applied yet, recording each migration; safe to run twice and from
        several processes at once."""
        pool = await self._conn_pool()
        async with pool.acquire() as conn, conn.transaction():
            # Another process's migration holds the lock for as long as it takes.
            await conn.execute("select pg_advisory_xact_lock($1)", _MIGRATION_LOCK, timeout=LONG_S)
            if self.schema:
                await conn.execute(f'create schema if not exists "{self.schema}"')
                await conn.execute(f'set local search_path to "{self.schema}"')  # this transaction only
            await conn.execute(
                "create table if not exists pennybot_migrations"
                " (name text primary key, applied_at timestamptz not null default now())"
            )
            done = {r["name"] for r in await conn.fetch("select name from pennybot_migrations")}
            for name, sql in migrations():
                if name not in done:
                    await conn.execute(sql, timeout=LONG_S)  # an index on a large ledger takes a while
                    await conn.execute("insert into pennybot_migrations (name) values ($1)", name)

    async def record(self, rows: Sequence[AIRequest]) -> None:
        if not rows:
            return
        pool = await self._conn_pool()
        await pool.executemany(
            f"insert into {self.s}ai_requests ({_AI_COLUMNS}) values"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
            " on conflict (request_id) do nothing",
            [
                (
                    r.request_id, r.created_at, r.user_key, r.channel, r.message_id, r.kind.value, r.provider,
                    r.model, r.tier, r.complexity, r.status.value, r.usage.input_tokens, r.usage.output_tokens,
                    r.usage.cache_read_tokens, r.usage.cache_write_tokens, r.usage.reasoning_tokens, r.cost,
                    r.saved, r.latency_ms, r.error, r.reason,
                )
                for r in rows
            ],
        )  # fmt: skip

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend:
        pool = await self._conn_pool()
        sql = (
            "select coalesce(sum(cost_usd), 0) as cost, coalesce(sum(prompt_tokens + completion_tokens), 0) as tokens"
            f" from {self.s}ai_requests where created_at >= $1 and created_at < $2"
        )
        args: list[Any] = [start, end]
        if user_key is not None:
            sql += " and user_key = $3"
            args.append(user_key)
        row = await pool.fetchrow(sql, *args)
        return Spend(int(Decimal(row["cost"]) * 1_000_000_000), int(row["tokens"]))

    async def recorded(self, request_ids: Collection[str]) -> set[str]:
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"select request_id from {self.s}ai_requests where request_id = any($1::text[])", list(request_ids)
        )
        return {r["request_id"] for r in rows}

    async def requests(self, start: datetime, end: datetime, user_key: str | None = None) -> list[AIRequest]:
        pool = await self._conn_pool()
        sql = f"select {_AI_COLUMNS} from {self.s}ai_requests where created_at >= $1 and created_at < $2"
        args: list[Any] = [start, end]
        if user_key is not None:
            sql += " and user_key = $3"
            args.append(user_key)
        return [_ai_request(r) for r in await pool.fetch(sql + " order by id", *args)]

    async def record_fee(
        self, channel: str, user_key: str, direction: str, message_id: str, fee: Decimal, now: datetime
    ) -> None:
        pool = await self._conn_pool()
        await pool.execute(
            f"insert into {self.s}channel_fees (created_at, channel, user_key, direction, message_id, fee_usd)"
            " values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
            now, channel, user_key, direction, message_id, fee,
        )  # fmt: skip

    async def fees(self, start: datetime, end: datetime) -> Decimal:
        pool = await self._conn_pool()
        value = await pool.fetchval(
            f"select coalesce(sum(fee_usd), 0) from {self.s}channel_fees where created_at >= $1 and created_at < $2",
            start,
            end,
        )
        return Decimal(value).quantize(Decimal("0.000000001"))

    async def record_resources(
        self, process: str, start: datetime, end: datetime, cpu_us: int, memory_byte_seconds: int
    ) -> None:
        pool = await self._conn_pool()
        await pool.execute(
            f"insert into {self.s}resource_usage (created_at, started_at, process, cpu_us, memory_byte_seconds)"
            " values ($1, $2, $3, $4, $5) on conflict do nothing",
            end, start, process, cpu_us, memory_byte_seconds,
        )  # fmt: skip

    async def resources(self, start: datetime, end: datetime) -> ResourceUse:
        pool = await self._conn_pool()
        row = await pool.fetchrow(
            f"select coalesce(sum(cpu_us), 0), coalesce(sum(memory_byte_seconds), 0) from {self.s}resource_usage"
            " where created_at >= $1 and created_at < $2",
            start,
            end,
        )
        return ResourceUse(int(row[0]), int(row[1]))

    async def set_user_active(self, user_key: str, active: bool) -> None:
        pool = await self._conn_pool()
        await pool.execute(f"update {self.s}users set active = $1 where user_key = $2", active, user_key)

    async def ping(self) -> None:
        pool = await self._conn_pool()
        await pool.fetchval("select 1")

    async def conversation(self, user_key: str) -> Conversation:
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"select id, role, content, tokens, size from {self.s}messages"
            " where user_key = $1 and not folded order by id",
            user_key,
        )
        return _conversation(rows)

    def _insert_turns(self, first: int, only_if: str = "true") -> str:
        """The insert of ``add_turns`` with its parameters numbered from ``first`` (user key,
        roles, contents, tokens, sizes, time), for use alone or in a larger statement (where
        ``only_if`` holds); built once, in ``__init__``."""
        a, r, c, t, z, w = (f"${first + i}" for i in range(6))
        return (
            f"insert into {self.s}messages (user_key, role, content, tokens, size, created_at)"
            f" select {a}, t.role, t.content, t.tokens, t.size, {w}"
            f" from unnest({r}::text[], {c}::text[], {t}::integer[], {z}::integer[]) with ordinality"
            f" as t(role, content, tokens, size, n) where {only_if} order by t.n returning id"
        )

    async def add_turns(
        self, user_key: str, turns: Sequence[tuple[str, str, int, int]], now: datetime
    ) -> list[StoredTurn]:
        if not turns:
            return []
        pool = await self._conn_pool()
        # One statement, so all the turns or none (as a transaction would) in one round trip. Rows
        # are inserted in the given order, so their identity ids rise in it: sorted, they pair up.
        rows = await pool.fetch(self._add_turns_sql, user_key, *_columns(turns), now)
        ids = sorted(r["id"] for r in rows)
        return [StoredTurn(i, *turn) for i, turn in zip(ids, turns, strict=True)]

    async def fold(
        self, user_key: str, turn_ids: Sequence[int], summary: tuple[str, int, int], now: datetime
    ) -> StoredTurn:
        content, tokens, size = summary
        pool = await self._conn_pool()
        # One statement, atomic as a transaction: the update (in a CTE) and the insert see the same
        # snapshot, so the new summary is never among the rows marked folded.
        new_id = await pool.fetchval(
            f"with folded as (update {self.s}messages set folded = true"
            " where user_key = $1 and (role = 'summary' or id = any($2::bigint[])) and not folded)"
            f" insert into {self.s}messages (user_key, role, content, tokens, size, created_at)"
            " values ($1, 'summary', $3, $4, $5, $6) returning id",
            user_key, list(turn_ids), content, tokens, size, now,
        )  # fmt: skip
        return StoredTurn(new_id, "summary", content, tokens, size)

    async def reset_conversation(self, user_key: str) -> int:
        pool = await self._conn_pool()
        status = await pool.execute(f"delete from {self.s}messages where user_key = $1", user_key)
        return int(status.split()[-1])

    async def upsert_user(self, user_key: str, channel: str, platform_id: str, now: datetime) -> None:
        pool = await self._conn_pool()
        await pool.execute(
            f"insert into {self.s}users (user_key, channel, platform_id, created_at, last_seen_at)"
            " values ($1, $2, $3, $4, $4)"
            " on conflict (user_key) do update set last_seen_at = excluded.last_seen_at",
            user_key, channel, platform_id, now,
        )  # fmt: skip

    async def claim_inbox(
        self, channel: str, message_id: str, user_key: str, payload: dict[str, Any], now: datetime, lease_s: float = 60
    ) -> bool:
        pool = await self._conn_pool()
        status = await pool.execute(
            f"insert into {self.s}inbox (channel, message_id, user_key, payload, received_at, lease_until)"
            " values ($1, $2, $3, $4::jsonb, $5, $6) on conflict do nothing",
            channel, message_id, user_key, json.dumps(payload), now, now + timedelta(seconds=lease_s),
        )  # fmt: skip
        return bool(status == "INSERT 0 1")

    async def claim_inbox_reading(
        self, channel: str, message_id: str, user_key: str, payload: dict[str, Any], now: datetime, lease_s: float = 60
    ) -> Conversation | None:
        pool = await self._conn_pool()
        # One statement: no row if the message was stored before; else a marker row (id null)
        # and the user's unfolded turns. The insert's CTE runs once, whatever the select reads.
        rows = await pool.fetch(
            f"with claimed as (insert into {self.s}inbox"
            " (channel, message_id, user_key, payload, received_at, lease_until)"
            " values ($1, $2, $3, $4::jsonb, $5, $6) on conflict do nothing returning 1)"
            " select null::bigint as id, null as role, null as content, null::integer as tokens,"
            " null::integer as size where exists (select from claimed)"
            " union all select id, role, content, tokens, size"
            f" from {self.s}messages where user_key = $3 and not folded and exists (select from claimed)"
            " order by id nulls first",
            channel, message_id, user_key, json.dumps(payload), now, now + timedelta(seconds=lease_s),
        )  # fmt: skip
        return _conversation(rows[1:]) if rows else None

    async def land_claims(self, claims: Sequence[Claim], token: str, now: datetime, lease_s: float) -> list[Landing]:
        if not claims:
            return []
        pool = await self._conn_pool()
        rows = await pool.fetch(
            self._land_claims_sql,
            [c.channel for c in claims], [c.message_id for c in claims], [c.user_key for c in claims],
            [json.dumps({**c.payload, "by": token}) for c in claims], [c.received_at for c in claims], token,
            now + timedelta(seconds=lease_s),
        )  # fmt: skip
        return [Landing(r["landing"]) for r in rows]

    async def renew_lease(self, channel: str, message_id: str, now: datetime, lease_s: float, epoch: int = 0) -> bool:
        pool = await self._conn_pool()
        status = await pool.execute(
            f"update {self.s}inbox set lease_until = $3"
            " where channel = $1 and message_id = $2 and lease_epoch = $4 and status <> 'done'",
            channel, message_id, now + timedelta(seconds=lease_s), epoch,
        )  # fmt: skip
        return bool(status == "UPDATE 1")

    async def lease_open(
        self, now: datetime, lease_s: float, limit: int = 100, owner: str | None = None
    ) -> list[InboxItem]:
        pool = await self._conn_pool()
        # skip locked: several processes sweeping at once each take different messages. A
        # transaction, unlike the other writes: a take-over that ran after its caller gave up would
        # move the epoch with nobody holding the result, fencing off the process from its answers.
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"update {self.s}inbox i set lease_until = $2, lease_epoch = i.lease_epoch + 1, lease_owner = $4 from ("
                f" select channel, message_id from {self.s}inbox where status <> 'done'"
                "  and (lease_until is null or lease_until < $1) order by received_at limit $3 for update skip locked"
                ") o where i.channel = o.channel and i.message_id = o.message_id"
                " returning i.channel, i.message_id, i.payload, i.reply, i.received_at, i.lease_epoch",
                now, now + timedelta(seconds=lease_s), limit, owner,
            )  # fmt: skip
        rows = sorted(rows, key=lambda r: r["received_at"])
        return [
            InboxItem(
                r["channel"], r["message_id"], json.loads(r["payload"]), json.loads(r["reply"]) if r["reply"] else None,
                r["lease_epoch"],
            )
            for r in rows
        ]

    async def lease_holder(self, channel: str, message_id: str) -> Lease | None:
        pool = await self._conn_pool()
        row = await pool.fetchrow(
            f"select lease_epoch, lease_owner, lease_until from {self.s}inbox"
            " where channel = $1 and message_id = $2 and status <> 'done'",
            channel, message_id,
        )  # fmt: skip
        return None if row is None else Lease(row["lease_epoch"], row["lease_owner"], row["lease_until"])

    async def decide_inbox(self, channel: str, message_id: str, owner: str) -> bool:
        pool = await self._conn_pool()
        decided = await pool.fetchval(f"select {self.s}pennybot_decide_inbox($1, $2, $3)", channel, message_id, owner)
        return bool(decided)

    async def answer_inbox(
        self, channel: str, message_id: str, replies: Sequence[str], exchange: Exchange | None = None, epoch: int = 0
    ) -> bool:
        pool = await self._conn_pool()
        if exchange is None or not exchange.turns:
            return bool(await pool.fetchval(self._answer_sql, channel, message_id, json.dumps(list(replies)), epoch))
        # The turns ride in the same statement: the replies and the exchange are stored together
        # or not at all, in one round trip.
        stored = await pool.fetchval(
            self._answer_with_turns_sql,
            channel, message_id, json.dumps(list(replies)), epoch, exchange.user_key, *_columns(exchange.turns),
            exchange.at,
        )  # fmt: skip
        return bool(stored)

    async def store_answers(self, answers: Sequence[Answer]) -> list[bool]:
        if not answers:
            return []
        turns = [
            (n, a.exchange.user_key, *turn, a.exchange.at)
            for n, a in enumerate(answers, 1)
            if a.exchange is not None
            for turn in a.exchange.turns
        ]
        pool = await self._conn_pool()
        rows = await pool.fetch(
            self._store_answers_sql,
            [a.channel for a in answers], [a.message_id for a in answers],
            [json.dumps(list(a.replies)) for a in answers], [a.epoch for a in answers],
            [a.done_at for a in answers], *(_columns(turns) if turns else [[]] * 7),
        )  # fmt: skip
        return [bool(r["mine"]) for r in rows]

    async def finish_inbox(self, sent: Sequence[tuple[str, str, datetime]]) -> None:
        if not sent:
            return
        pool = await self._conn_pool()
        channels, ids, times = zip(*sent, strict=True)
        await pool.execute(
            f"update {self.s}inbox i set status = 'done', done_at = m.at"
            " from unnest($1::text[], $2::text[], $3::timestamptz[]) as m (channel, message_id, at)"
            " where i.channel = m.channel and i.message_id = m.message_id",
            list(channels), list(ids), list(times),
        )  # fmt: skip

    async def open_inbox(self, owner: str | None = None) -> list[InboxItem]:
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"select channel, message_id, payload, reply, lease_epoch from {self.s}inbox where status <> 'done'"
            " and ($1::text is null or lease_owner = $1 and lease_epoch > 0) order by received_at",
            owner,
        )  # fmt: skip
        return [
            InboxItem(
                r["channel"], r["message_id"], json.loads(r["payload"]), json.loads(r["reply"]) if r["reply"] else None,
                r["lease_epoch"],
            )
            for r in rows
        ]

    async def get_quota(self, user_key: str) -> Quota | None:
        pool = await self._conn_pool()
        row = await pool.fetchrow(
            f"select daily_usd, monthly_usd, daily_tokens, monthly_tokens from {self.s}quotas where user_key = $1",
            user_key,
        )
        if row is None:
            return None
        return Quota(user_key, row["daily_usd"], row["monthly_usd"], row["daily_tokens"], row["monthly_tokens"])

    async def set_quota(self, quota: Quota, actor: str, now: datetime) -> Quota | None:
        pool = await self._conn_pool()
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"select daily_usd, monthly_usd, daily_tokens, monthly_tokens from {self.s}quotas"
                " where user_key = $1 for update",
                quota.user_key,
            )
            old = None if row is None else Quota(quota.user_key, *row.values())
            await conn.execute(
                f"insert into {self.s}quotas (user_key, daily_usd, monthly_usd, daily_tokens, monthly_tokens,"
                " updated_at, updated_by) values ($1, $2, $3, $4, $5, $6, $7) on conflict (user_key) do update set"
                " daily_usd = excluded.daily_usd, monthly_usd = excluded.monthly_usd,"
                " daily_tokens = excluded.daily_tokens, monthly_tokens = excluded.monthly_tokens,"
                " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                quota.user_key, quota.daily_usd, quota.monthly_usd, quota.daily_tokens, quota.monthly_tokens, now,
                actor,
            )  # fmt: skip
            await conn.execute(
                f"insert into {self.s}audit_log (created_at, actor, action, target, details)"
                " values ($1, $2, 'quota.set', $3, $4::jsonb)",
                now, actor, quota.user_key, json.dumps(quota_change(old, quota)),
            )  # fmt: skip
        return old

    async def audit(self, actor: str, action: str, target: str | None, details: dict[str, Any], now: datetime) -> None:
        pool = await self._conn_pool()
        await pool.execute(
            f"insert into {self.s}audit_log (created_at, actor, action, target, details)"
            " values ($1, $2, $3, $4, $5::jsonb)",
            now, actor, action, target, json.dumps(details),
        )  # fmt: skip

    async def audit_entries(self, since: datetime, limit: int = 100) -> list[AuditEntry]:
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"select created_at, actor, action, target, details from {self.s}audit_log where created_at >= $1"
            " order by id desc limit $2",
            since, limit,
        )  # fmt: skip
        return [
            AuditEntry(r["created_at"], r["actor"], r["action"], r["target"], json.loads(r["details"])) for r in rows
        ]

    async def add_alert(self, alert: StoredAlert) -> bool:
        pool = await self._conn_pool()
        status = await pool.execute(
            f"insert into {self.s}alerts (created_at, rule, subject, period_key, level, message)"
            " values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
            alert.created_at, alert.rule, alert.subject, alert.period_key, alert.level, alert.message,
        )  # fmt: skip
        return bool(status == "INSERT 0 1")

    async def alerts(self, since: datetime, limit: int = 50) -> list[StoredAlert]:
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"select rule, subject, period_key, level, message, created_at from {self.s}alerts where created_at >= $1"
            " order by id desc limit $2",
            since, limit,
        )  # fmt: skip
        return [StoredAlert(*r.values()) for r in rows]

    async def known_user(self, user_key: str) -> bool:
        pool = await self._conn_pool()
        return bool(
            await pool.fetchval(
                f"select exists(select 1 from {self.s}users where user_key = $1)"
                f" or exists(select 1 from {self.s}ai_requests where user_key = $1)",
                user_key,
            )
        )

    async def purge_before(self, cutoff: datetime) -> tuple[int, int]:
        pool = await self._conn_pool()
        messages = await pool.execute(f"delete from {self.s}messages where created_at < $1", cutoff, timeout=LONG_S)
        requests = await pool.execute(f"delete from {self.s}ai_requests where created_at < $1", cutoff, timeout=LONG_S)
        await pool.execute(f"delete from {self.s}resource_usage where created_at < $1", cutoff, timeout=LONG_S)
        return int(messages.split()[-1]), int(requests.split()[-1])

    async def aclose(self) -> None:
        await self._pool.close()


def _ai_request(row: Any) -> AIRequest:
    return AIRequest(
        request_id=row["request_id"], created_at=row["created_at"], user_key=row["user_key"],
        channel=row["channel"], message_id=row["message_id"], kind=Kind(row["kind"]), provider=row["provider"],
        model=row["model"], status=Status(row["status"]),
        usage=Usage(
            input_tokens=row["prompt_tokens"], output_tokens=row["completion_tokens"],
            cache_read_tokens=row["cached_tokens"], cache_write_tokens=row["cache_write_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
        ),
        cost=row["cost_usd"], saved=row["saved_usd"], latency_ms=row["latency_ms"], tier=row["tier"],
        complexity=row["complexity"], error=row["error"], reason=row["reason"],
    )  # fmt: skip


def _columns(turns: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows (of turns: role, content, tokens, size) as an array a column, for ``unnest``."""
    return [list(column) for column in zip(*turns, strict=True)]


def _conversation(rows: Sequence[Any]) -> Conversation:
    return Conversation.of(StoredTurn(r["id"], r["role"], r["content"], r["tokens"], r["size"]) for r in rows)
