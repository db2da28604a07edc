"""The embedded store: one SQLite file (``sqlite:///path``) or memory (``sqlite:///:memory:``).

Calls are synchronous inside the event loop on purpose: in WAL mode with synchronous=NORMAL a
write is tens of microseconds, cheaper than a thread hop. Money is integer nano-dollars.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from budget.money import from_nano, to_nano
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
from budget.stores.database import answer_each, claim_then_read
from providers.base import Usage

_AI_COLUMNS = (
    "request_id, created_at, user_key, channel, message_id, kind, provider, model, tier, complexity,"
    " status, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,"
    " cost_nano, saved_nano, latency_ms, error, reason"
)


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _path_of(url: str) -> str:
    if url.startswith("memory://") or url in ("sqlite://", "sqlite:///:memory:"):
        return ":memory:"
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a SQLite URL: {url!r} (use sqlite:///path/to/file.db)")
    return url.removeprefix("sqlite:///")


class SQLiteDatabase:
    """The Database protocol on SQLite."""

    scheme = "sqlite"

    def __init__(self, url: str) -> None:
        path = _path_of(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=normal")
        self._db.execute("pragma busy_timeout=5000")

    async def migrate(self) -> None:
        schema = resources.files("budget.stores").joinpath("sqlite_schema.sql").read_text()
        self._db.executescript(schema)
        # A file made before the inbox's leases were fenced (Postgres: 20261124000000_lease_epoch).
        # And before the take-overs were marked with their owner (20261124000200_lease_owner).
        columns = {row[1] for row in self._db.execute("pragma table_info(inbox)")}
        if "lease_epoch" not in columns:
            self._db.execute("alter table inbox add column lease_epoch integer not null default 0")
        if "lease_owner" not in columns:
            self._db.execute("alter table inbox add column lease_owner text")

    async def record(self, rows: Sequence[AIRequest]) -> None:
        self._db.executemany(
            f"insert or ignore into ai_requests ({_AI_COLUMNS}) values ({', '.join('?' * 21)})",
            [
                (
                    r.request_id,
                    _ts(r.created_at),
                    r.user_key,
                    r.channel,
                    r.message_id,
                    r.kind.value,
                    r.provider,
                    r.model,
                    r.tier,
                    r.complexity,
                    r.status.value,
                    r.usage.input_tokens,
                    r.usage.output_tokens,
                    r.usage.cache_read_tokens,
                    r.usage.cache_write_tokens,
                    r.usage.reasoning_tokens,
                    to_nano(r.cost),
                    to_nano(r.saved),
                    r.latency_ms,
                    r.error,
                    r.reason,
                )
                for r in rows
            ],
        )

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend:
        sql = (
            "select coalesce(sum(cost_nano), 0), coalesce(sum(prompt_tokens + completion_tokens), 0)"
            " from ai_requests where created_at >= ? and created_at < ?"
        )
        args: list[Any] = [_ts(start), _ts(end)]
        if user_key is not None:
            sql += " and user_key = ?"
            args.append(user_key)
        nanos, tokens = self._db.execute(sql, args).fetchone()
        return Spend(int(nanos), int(tokens))

    async def recorded(self, request_ids: Collection[str]) -> set[str]:
        ids = list(request_ids)
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(f"select request_id from ai_requests where request_id in ({marks})", ids)
        return {r for (r,) in rows.fetchall()}

    async def requests(self, start: datetime, end: datetime, user_key: str | None = None) -> list[AIRequest]:
        sql = f"select {_AI_COLUMNS} from ai_requests where created_at >= ? and created_at < ?"
        args: list[Any] = [_ts(start), _ts(end)]
        if user_key is not None:
            sql += " and user_key = ?"
            args.append(user_key)
        return [_ai_request(row) for row in self._db.execute(sql + " order by id", args)]

    async def record_fee(
        self, channel: str, user_key: str, direction: str, message_id: str, fee: Decimal, now: datetime
    ) -> None:
        self._db.execute(
            "insert or ignore into channel_fees (created_at, channel, user_key, direction, message_id, fee_nano)"
            " values (?, ?, ?, ?, ?, ?)",
            (_ts(now), channel, user_key, direction, message_id, to_nano(fee)),
        )

    async def fees(self, start: datetime, end: datetime) -> Decimal:
        (nanos,) = self._db.execute(
            "select coalesce(sum(fee_nano), 0) from channel_fees where created_at >= ? and created_at < ?",
            (_ts(start), _ts(end)),
        ).fetchone()
        return from_nano(int(nanos))

    async def record_resources(
        self, process: str, start: datetime, end: datetime, cpu_us: int, memory_byte_seconds: int
    ) -> None:
        self._db.execute(
            "insert or ignore into resource_usage (created_at, started_at, process, cpu_us, memory_byte_seconds)"
            " values (?, ?, ?, ?, ?)",
            (_ts(end), _ts(start), process, cpu_us, memory_byte_seconds),
        )

    async def resources(self, start: datetime, end: datetime) -> ResourceUse:
        cpu, memory = self._db.execute(
            "select coalesce(sum(cpu_us), 0), coalesce(sum(memory_byte_seconds), 0) from resource_usage"
            " where created_at >= ? and created_at < ?",
            (_ts(start), _ts(end)),
        ).fetchone()
        return ResourceUse(int(cpu), int(memory))

    async def set_user_active(self, user_key: str, active: bool) -> None:
        self._db.execute("update users set active = ? where user_key = ?", (int(active), user_key))

    async def ping(self) -> None:
        self._db.execute("select 1").fetchone()

    async def conversation(self, user_key: str) -> Conversation:
        rows = self._db.execute(
            "select id, role, content, tokens, size from messages where user_key = ? and not folded order by id",
            (user_key,),
        ).fetchall()
        return Conversation.of(StoredTurn(*row) for row in rows)

    async def add_turns(
        self, user_key: str, turns: Sequence[tuple[str, str, int, int]], now: datetime
    ) -> list[StoredTurn]:
        self._db.execute("begin")
        try:
            stored = self._insert_turns(user_key, turns, now)
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return stored

    def _insert_turns(
        self, user_key: str, turns: Sequence[tuple[str, str, int, int]], now: datetime
    ) -> list[StoredTurn]:
        stored = []
        for role, content, tokens, size in turns:
            cur = self._db.execute(
                "insert into messages (user_key, role, content, tokens, size, created_at) values (?, ?, ?, ?, ?, ?)",
                (user_key, role, content, tokens, size, _ts(now)),
            )
            stored.append(StoredTurn(int(cur.lastrowid or 0), role, content, tokens, size))
        return stored

    async def fold(
        self, user_key: str, turn_ids: Sequence[int], summary: tuple[str, int, int], now: datetime
    ) -> StoredTurn:
        content, tokens, size = summary
        self._db.execute("begin")
        try:
            self._db.execute(
                "update messages set folded = 1 where user_key = ? and role = 'summary' and not folded",
                (user_key,),
            )
            self._db.executemany(
                "update messages set folded = 1 where user_key = ? and id = ?",
                [(user_key, i) for i in turn_ids],
            )
            cur = self._db.execute(
                "insert into messages (user_key, role, content, tokens, size, created_at)"
                " values (?, 'summary', ?, ?, ?, ?)",
                (user_key, content, tokens, size, _ts(now)),
            )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return StoredTurn(int(cur.lastrowid or 0), "summary", content, tokens, size)

    async def reset_conversation(self, user_key: str) -> int:
        cur = self._db.execute("delete from messages where user_key = ?", (user_key,))
        return cur.rowcount

    async def upsert_user(self, user_key: str, channel: str, platform_id: str, now: datetime) -> None:
        self._db.execute(
            "insert into users (user_key, channel, platform_id, created_at, last_seen_at)"
            " values (?, ?, ?, ?, ?)"
            " on conflict (user_key) do update set last_seen_at = excluded.last_seen_at",
            (user_key, channel, platform_id, _ts(now), _ts(now)),
        )

    async def claim_inbox(
        self, channel: str, message_id: str, user_key: str, payload: dict[str, Any], now: datetime, lease_s: float = 60
    ) -> bool:
        cur = self._db.execute(
            "insert or ignore into inbox (channel, message_id, user_key, payload, received_at, lease_until)"
            " values (?, ?, ?, ?, ?, ?)",
            (channel, message_id, user_key, json.dumps(payload), _ts(now), _ts(now + timedelta(seconds=lease_s))),
        )
        return cur.rowcount == 1

    async def claim_inbox_reading(
        self, channel: str, message_id: str, user_key: str, payload: dict[str, Any], now: datetime, lease_s: float = 60
    ) -> Conversation | None:
        # In process, no round trip to save: the claim, then the read.
        return await claim_then_read(self, channel, message_id, user_key, payload, now, lease_s)

    async def land_claims(self, claims: Sequence[Claim], token: str, now: datetime, lease_s: float) -> list[Landing]:
        if not claims:
            return []
        until = _ts(now + timedelta(seconds=lease_s))
        landed = []
        self._db.execute("begin immediate")  # one writer at a time: each insert and its read are one step
        try:
            for c in claims:
                cur = self._db.execute(
                    "insert or ignore into inbox (channel, message_id, user_key, payload, received_at, lease_until)"
                    " values (?, ?, ?, ?, ?, ?)",
                    (c.channel, c.message_id, c.user_key, json.dumps({**c.payload, "by": token}), _ts(c.received_at),
                     until),
                )  # fmt: skip
                if cur.rowcount == 1:
                    landed.append(Landing.MINE)
                    continue
                # There before (an ignored insert changes nothing): whose, and how far along.
                payload, status, reply = self._db.execute(
                    "select payload, status, reply from inbox where channel = ? and message_id = ?",
                    (c.channel, c.message_id),
                ).fetchone()
                if status == "done" or reply is not None:
                    landed.append(Landing.ANSWERED)
                elif json.loads(payload).get("by") == token:
                    landed.append(Landing.MINE)
                else:
                    landed.append(Landing.PENDING)
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return landed

    async def renew_lease(self, channel: str, message_id: str, now: datetime, lease_s: float, epoch: int = 0) -> bool:
        cur = self._db.execute(
            "update inbox set lease_until = ?"
            " where channel = ? and message_id = ? and lease_epoch = ? and status <> 'done'",
            (_ts(now + timedelta(seconds=lease_s)), channel, message_id, epoch),
        )
        return cur.rowcount == 1

    async def lease_open(
        self, now: datetime, lease_s: float, limit: int = 100, owner: str | None = None
    ) -> list[InboxItem]:
        self._db.execute("begin immediate")  # one writer at a time: the select and update are one step
        try:
            rows = self._db.execute(
                "select channel, message_id, payload, reply, lease_epoch + 1 from inbox where status <> 'done'"
                " and (lease_until is null or lease_until < ?) order by received_at limit ?",
                (_ts(now), limit),
            ).fetchall()
            self._db.executemany(
                "update inbox set lease_until = ?, lease_epoch = ?, lease_owner = ?"
                " where channel = ? and message_id = ?",
                [(_ts(now + timedelta(seconds=lease_s)), e, owner, c, m) for c, m, _, _, e in rows],
            )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return [InboxItem(c, m, json.loads(p), json.loads(r) if r else None, e) for c, m, p, r, e in rows]

    async def lease_holder(self, channel: str, message_id: str) -> Lease | None:
        row = self._db.execute(
            "select lease_epoch, lease_owner, lease_until from inbox"
            " where channel = ? and message_id = ? and status <> 'done'",
            (channel, message_id),
        ).fetchone()
        return None if row is None else Lease(row[0], row[1], datetime.fromisoformat(row[2]) if row[2] else None)

    async def decide_inbox(self, channel: str, message_id: str, owner: str) -> bool:
        cur = self._db.execute(
            "update inbox set lease_owner = ? where channel = ? and message_id = ? and lease_epoch = 0"
            " and status = 'pending' and json_extract(payload, '$.by') is not null"
            " and (lease_owner is null or lease_owner = ?)",
            (owner, channel, message_id, owner),
        )
        return cur.rowcount == 1

    async def answer_inbox(
        self, channel: str, message_id: str, replies: Sequence[str], exchange: Exchange | None = None, epoch: int = 0
    ) -> bool:
        self._db.execute("begin immediate")
        try:
            held = self._db.execute(
                "select status from inbox where channel = ? and message_id = ? and lease_epoch = ?",
                (channel, message_id, epoch),
            ).fetchone()
            if held is not None and held[0] == "pending":  # else taken over, or stored before by this owner
                if exchange is not None:
                    self._insert_turns(exchange.user_key, exchange.turns, exchange.at)
                self._db.execute(
                    "update inbox set status = 'answered', reply = ? where channel = ? and message_id = ?",
                    (json.dumps(list(replies)), channel, message_id),
                )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return held is not None

    async def store_answers(self, answers: Sequence[Answer]) -> list[bool]:
        return await answer_each(self, answers)

    async def finish_inbox(self, sent: Sequence[tuple[str, str, datetime]]) -> None:
        self._db.execute("begin")
        try:
            self._db.executemany(
                "update inbox set status = 'done', done_at = ? where channel = ? and message_id = ?",
                [(_ts(at), channel, message_id) for channel, message_id, at in sent],
            )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise

    async def open_inbox(self, owner: str | None = None) -> list[InboxItem]:
        rows = self._db.execute(
            "select channel, message_id, payload, reply, lease_epoch from inbox where status <> 'done'"
            " and (? is null or lease_owner = ? and lease_epoch > 0) order by received_at",
            (owner, owner),
        ).fetchall()
        return [InboxItem(c, m, json.loads(p), json.loads(r) if r else None, e) for c, m, p, r, e in rows]

    async def get_quota(self, user_key: str) -> Quota | None:
        row = self._db.execute(
            "select daily_nano, monthly_nano, daily_tokens, monthly_tokens from quotas where user_key = ?", (user_key,)
        ).fetchone()
        if row is None:
            return None
        dn, mn, dt, mt = row
        return Quota(user_key, None if dn is None else from_nano(dn), None if mn is None else from_nano(mn), dt, mt)

    async def set_quota(self, quota: Quota, actor: str, now: datetime) -> Quota | None:
        old = await self.get_quota(quota.user_key)

        def nano(v: Decimal | None) -> int | None:
            return None if v is None else to_nano(v)

        self._db.execute("begin")
        try:
            self._db.execute(
                "insert into quotas (user_key, daily_nano, monthly_nano, daily_tokens, monthly_tokens, updated_at,"
                " updated_by) values (?, ?, ?, ?, ?, ?, ?) on conflict (user_key) do update set"
                " daily_nano = excluded.daily_nano, monthly_nano = excluded.monthly_nano,"
                " daily_tokens = excluded.daily_tokens, monthly_tokens = excluded.monthly_tokens,"
                " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (quota.user_key, nano(quota.daily_usd), nano(quota.monthly_usd), quota.daily_tokens,
                 quota.monthly_tokens, _ts(now), actor),
            )  # fmt: skip
            self._insert_audit(actor, "quota.set", quota.user_key, quota_change(old, quota), now)
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return old

    def _insert_audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any], now: datetime
    ) -> None:
        self._db.execute(
            "insert into audit_log (created_at, actor, action, target, details) values (?, ?, ?, ?, ?)",
            (_ts(now), actor, action, target, json.dumps(details)),
        )

    async def audit(self, actor: str, action: str, target: str | None, details: dict[str, Any], now: datetime) -> None:
        self._insert_audit(actor, action, target, details, now)

    async def audit_entries(self, since: datetime, limit: int = 100) -> list[AuditEntry]:
        rows = self._db.execute(
            "select created_at, actor, action, target, details from audit_log where created_at >= ?"
            " order by id desc limit ?",
            (_ts(since), limit),
        ).fetchall()
        return [AuditEntry(datetime.fromisoformat(c), a, act, t, json.loads(d)) for c, a, act, t, d in rows]

    async def add_alert(self, alert: StoredAlert) -> bool:
        cur = self._db.execute(
            "insert or ignore into alerts (created_at, rule, subject, period_key, level, message)"
            " values (?, ?, ?, ?, ?, ?)",
            (_ts(alert.created_at), alert.rule, alert.subject, alert.period_key, alert.level, alert.message),
        )
        return cur.rowcount == 1

    async def alerts(self, since: datetime, limit: int = 50) -> list[StoredAlert]:
        rows = self._db.execute(
            "select rule, subject, period_key, level, message, created_at from alerts where created_at >= ?"
            " order by id desc limit ?",
            (_ts(since), limit),
        ).fetchall()
        return [StoredAlert(r, s, p, lv, m, datetime.fromisoformat(c)) for r, s, p, lv, m, c in rows]

    async def known_user(self, user_key: str) -> bool:
        row = self._db.execute(
            "select exists(select 1 from users where user_key = ?)"
            " or exists(select 1 from ai_requests where user_key = ?)",
            (user_key, user_key),
        ).fetchone()
        return bool(row[0])

    async def purge_before(self, cutoff: datetime) -> tuple[int, int]:
        messages = self._db.execute("delete from messages where created_at < ?", (_ts(cutoff),)).rowcount
        requests = self._db.execute("delete from ai_requests where created_at < ?", (_ts(cutoff),)).rowcount
        self._db.execute("delete from resource_usage where created_at < ?", (_ts(cutoff),))
        return messages, requests

    async def aclose(self) -> None:
        self._db.close()


def _ai_request(row: tuple[Any, ...]) -> AIRequest:
    (
        rid,
        created,
        user,
        channel,
        mid,
        kind,
        provider,
        model,
        tier,
        complexity,
        status,
        prompt,
        completion,
        cached,
        cache_write,
        reasoning,
        cost,
        saved,
        latency,
        error,
        reason,
    ) = row
    return AIRequest(
        request_id=rid,
        created_at=datetime.fromisoformat(created),
        user_key=user,
        channel=channel,
        message_id=mid,
        kind=Kind(kind),
        provider=provider,
        model=model,
        status=Status(status),
        usage=Usage(
            input_tokens=prompt,
            output_tokens=completion,
            cache_read_tokens=cached,
            cache_write_tokens=cache_write,
            reasoning_tokens=reasoning,
        ),
        cost=from_nano(cost),
        saved=from_nano(saved),
        latency_ms=latency,
        tier=tier,
        complexity=complexity,
        error=error,
        reason=reason,
    )
