"""The Database protocol over HTTPS: a Supabase project's REST API (PostgREST), for hosts that
cannot open a Postgres connection. Built from ``SUPABASE_URL`` and ``SUPABASE_SERVICE_ROLE_KEY``.

Reads and one-statement writes use the table endpoints. What must be atomic or report what it did
(add_turns' ids, fold, claim_inbox, upsert_user, the sums) is one SQL function of
supabase/migrations/20261123000200_rpc.sql, called as ``POST /rest/v1/rpc/<name>``: PostgREST
runs each request in one transaction. Money travels as text both ways: PostgREST writes NUMERIC
as a JSON number, which the client parses into a float, so the reads cast it (``cost_usd::text``)
and the functions return text, read here with Decimal.

The key goes only into the ``apikey`` and ``Authorization`` headers; errors never repeat it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from budget.money import NANO, NANOS_PER_USD
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
)
from budget.stores.database import claim_then_read
from providers.base import Usage

if TYPE_CHECKING:
    import httpx
    from postgrest import AsyncRequestBuilder

    from supabase import AsyncClient

# The newest migration whose functions this store calls (pennybot_schema_version() returns it).
SCHEMA_VERSION = 20261124000300
# Supabase caps every read at the project's "Max rows" (1000 unless changed): pages stay within it.
PAGE_SIZE = 1000
_AI_SELECT = (
    "id,request_id,created_at,user_key,channel,message_id,kind,provider,model,tier,complexity,status,"
    "prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,"
    "cost_usd::text,saved_usd::text,latency_ms,error,reason"
)
_MISSING = {"PGRST202", "PGRST205", "42883", "42P01"}  # no such function or table


class SupabaseError(RuntimeError):
    """The Supabase REST API refused a request or could not be reached. The message never holds
    the service role key."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class SchemaNotApplied(SupabaseError):
    """The project lacks pennybot's tables and functions, or has an older version of them."""


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _money(amount: Decimal) -> str:
    """Dollars as JSON text, positional (``1E-7`` reads fine in Postgres, but is harder to read)."""
    return format(amount, "f")


class SupabaseDatabase:
    """The Database protocol on a Supabase project's REST API, with the service role key."""

    scheme = "supabase"

    def __init__(
        self,
        url: str,
        service_role_key: str,
        *,
        schema: str = "public",
        timeout: float = 10.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if not service_role_key:
            raise ValueError("the Supabase service role key is empty (SUPABASE_SERVICE_ROLE_KEY)")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        import httpx

        from supabase import AsyncClient, AsyncClientOptions

        self.url = url.rstrip("/")
        self.schema = schema
        self._key = service_role_key
        self._page = page_size
        # Our own HTTP client: the library's default waits 120 s; one timeout for every request.
        self._http: httpx.AsyncClient = httpx.AsyncClient(timeout=timeout, http2=True)
        options = AsyncClientOptions(
            schema=schema, httpx_client=self._http, auto_refresh_token=False, persist_session=False
        )
        self._client: AsyncClient = AsyncClient(self.url, service_role_key, options)  # no network call

    # --- plumbing --------------------------------------------------------------------------

    def _table(self, name: str) -> AsyncRequestBuilder:
        return self._client.table(name)

    async def _run(self, what: str, query: Any) -> Any:
        """Execute a built query; errors become SupabaseError, with the key redacted."""
        import httpx
        from postgrest import APIError

        try:
            return await query.execute()
        except APIError as exc:
            parts = [exc.message or "request refused"]
            parts += [f"{label}: {value}" for label, value in (("details", exc.details), ("hint", exc.hint)) if value]
            code = f" ({exc.code})" if exc.code else ""
            raise SupabaseError(self._redact(f"{what} failed{code}: {'; '.join(map(str, parts))}"), exc.code) from None
        except httpx.HTTPError as exc:
            message = f"{what} failed: Supabase at {self.url} is unreachable ({exc!r})"
            raise SupabaseError(self._redact(message)) from None

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "[service role key]")[:1000]

    async def _rpc(self, fn: str, params: dict[str, Any]) -> Any:
        return (await self._run(fn, self._client.rpc(fn, params))).data

    async def _pages(self, what: str, build: Any, *, keyset: bool) -> list[dict[str, Any]]:
        """Every row of a read, ``page_size`` at a time: after ``id`` (``keyset``) or by offset. A
        short page is the last, so ``page_size`` must not exceed the project's "Max rows", which
        PostgREST applies without saying so."""
        rows: list[dict[str, Any]] = []
        while True:
            query = build()
            if keyset and rows:
                query = query.gt("id", rows[-1]["id"])
            elif not keyset and rows:
                query = query.offset(len(rows))
            page = (await self._run(what, query.limit(self._page))).data
            rows += page
            if len(page) < self._page:
                return rows

    # --- the protocol ----------------------------------------------------------------------

    async def migrate(self) -> None:
        """DDL cannot run over REST: check the migrations were applied, or say how to apply them."""
        try:
            found = await self._rpc("pennybot_schema_version", {})
        except SupabaseError as exc:
            if exc.code not in _MISSING:
                raise
            found = None
        if isinstance(found, int) and found >= SCHEMA_VERSION:
            return
        state = "has no pennybot schema" if found is None else f"has pennybot schema {found}, not {SCHEMA_VERSION}"
        raise SchemaNotApplied(
            f"The Supabase project at {self.url} {state}. The REST API cannot create tables: apply"
            " supabase/migrations with `supabase db push`, or run `pennybot migrate` with DATABASE_URL"
            " set to the project's Postgres connection string, then start again."
        )

    async def record(self, rows: Sequence[AIRequest]) -> None:
        if not rows:
            return
        body = [
            {
                "request_id": r.request_id, "created_at": r.created_at.isoformat(), "user_key": r.user_key,
                "channel": r.channel, "message_id": r.message_id, "kind": r.kind.value, "provider": r.provider,
                "model": r.model, "tier": r.tier, "complexity": r.complexity, "status": r.status.value,
                "prompt_tokens": r.usage.input_tokens, "completion_tokens": r.usage.output_tokens,
                "cached_tokens": r.usage.cache_read_tokens, "cache_write_tokens": r.usage.cache_write_tokens,
                "reasoning_tokens": r.usage.reasoning_tokens, "cost_usd": _money(r.cost),
                "saved_usd": _money(r.saved), "latency_ms": r.latency_ms, "error": r.error, "reason": r.reason,
            }
            for r in rows
        ]  # fmt: skip
        from postgrest.types import ReturnMethod

        query = self._table("ai_requests").upsert(
            body, on_conflict="request_id", ignore_duplicates=True, returning=ReturnMethod.minimal
        )
        await self._run("record", query)

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend:
        params = {"p_user_key": user_key, "p_start": start.isoformat(), "p_end": end.isoformat()}
        (row,) = await self._rpc("pennybot_spend", params)
        return Spend(int(Decimal(row["cost_usd"]) * NANOS_PER_USD), int(row["tokens"]))

    async def recorded(self, request_ids: Collection[str]) -> set[str]:
        ids = list(request_ids)
        if not ids:
            return set()
        query = self._table("ai_requests").select("request_id").in_("request_id", ids)
        return {row["request_id"] for row in (await self._run("recorded", query)).data}

    async def requests(self, start: datetime, end: datetime, user_key: str | None = None) -> list[AIRequest]:
        def build() -> Any:
            query = self._table("ai_requests").select(_AI_SELECT)
            query = query.gte("created_at", start.isoformat()).lt("created_at", end.isoformat())
            return (query if user_key is None else query.eq("user_key", user_key)).order("id")

        return [_ai_request(row) for row in await self._pages("requests", build, keyset=True)]

    async def record_fee(
        self, channel: str, user_key: str, direction: str, message_id: str, fee: Decimal, now: datetime
    ) -> None:
        from postgrest.types import ReturnMethod

        row = {
            "created_at": now.isoformat(), "channel": channel, "user_key": user_key, "direction": direction,
            "message_id": message_id, "fee_usd": _money(fee),
        }  # fmt: skip
        query = self._table("channel_fees").upsert(
            [row], on_conflict="channel,direction,message_id", ignore_duplicates=True, returning=ReturnMethod.minimal
        )
        await self._run("record_fee", query)

    async def fees(self, start: datetime, end: datetime) -> Decimal:
        total = await self._rpc("pennybot_fees", {"p_start": start.isoformat(), "p_end": end.isoformat()})
        return Decimal(total).quantize(NANO)

    async def record_resources(
        self, process: str, start: datetime, end: datetime, cpu_us: int, memory_byte_seconds: int
    ) -> None:
        from postgrest.types import ReturnMethod

        row = {
            "created_at": end.isoformat(), "started_at": start.isoformat(), "process": process,
            "cpu_us": cpu_us, "memory_byte_seconds": memory_byte_seconds,
        }  # fmt: skip
        query = self._table("resource_usage").upsert(
            [row], on_conflict="process,started_at", ignore_duplicates=True, returning=ReturnMethod.minimal
        )
        await self._run("record_resources", query)

    async def resources(self, start: datetime, end: datetime) -> ResourceUse:
        used = await self._rpc("pennybot_resources", {"p_start": start.isoformat(), "p_end": end.isoformat()})
        return ResourceUse(int(used["cpu_us"]), int(used["memory_byte_seconds"]))

    async def set_user_active(self, user_key: str, active: bool) -> None:
        from postgrest.types import ReturnMethod

        query = self._table("users").update({"active": active}, returning=ReturnMethod.minimal).eq("user_key", user_key)
        await self._run("set_user_active", query)

    async def ping(self) -> None:
        await self._rpc("pennybot_schema_version", {})

    async def conversation(self, user_key: str) -> Conversation:
        def build() -> Any:
            query = self._table("messages").select("id,role,content,tokens,size").eq("user_key", user_key)
            return query.is_("folded", False).order("id")

        rows = await self._pages("conversation", build, keyset=True)
        return Conversation.of(_stored_turn(row) for row in rows)

    async def add_turns(
        self, user_key: str, turns: Sequence[tuple[str, str, int, int]], now: datetime
    ) -> list[StoredTurn]:
        if not turns:
            return []
        params = {"p_user_key": user_key, "p_turns": _turn_rows(turns), "p_now": now.isoformat()}
        ids = await self._rpc("pennybot_add_turns", params)
        return [StoredTurn(int(i), r, c, t, s) for i, (r, c, t, s) in zip(ids, turns, strict=True)]

    async def fold(
        self, user_key: str, turn_ids: Sequence[int], summary: tuple[str, int, int], now: datetime
    ) -> StoredTurn:
        content, tokens, size = summary
        params = {
            "p_user_key": user_key, "p_turn_ids": list(turn_ids), "p_content": content, "p_tokens": tokens,
            "p_size": size, "p_now": now.isoformat(),
        }  # fmt: skip
        new_id = await self._rpc("pennybot_fold", params)
        return StoredTurn(int(new_id), "summary", content, tokens, size)

    async def reset_conversation(self, user_key: str) -> int:
        from postgrest.types import CountMethod, ReturnMethod

        query = self._table("messages").delete(count=CountMethod.exact, returning=ReturnMethod.minimal)
        response = await self._run("reset_conversation", query.eq("user_key", user_key))
        return int(response.count or 0)

    async def upsert_user(self, user_key: str, channel: str, platform_id: str, now: datetime) -> None:
        params = {"p_user_key": user_key, "p_channel": channel, "p_platform_id": platform_id, "p_now": now.isoformat()}
        await self._rpc("pennybot_upsert_user", params)

    async def claim_inbox(
        self, channel: str, message_id: str, user_key: str, payload: dict[str, Any], now: datetime, lease_s: float = 60
    ) -> bool:
        params = {
            "p_channel": channel, "p_message_id": message_id, "p_user_key": user_key, "p_payload": payload,
            "p_now": now.isoformat(), "p_lease_until": (now + timedelta(seconds=lease_s)).isoformat(),
        }  # fmt: skip
        return await self._rpc("pennybot_claim_inbox", params) is True

    async def claim_inbox_reading(
        self, channel: str, message_id: str, user_key: str, payload: dict[str, Any], now: datetime, lease_s: float = 60
    ) -> Conversation | None:
        # Two requests: one would need a new SQL function, for little (a REST request costs far
        # more than the round trip it would save).
        return await claim_then_read(self, channel, message_id, user_key, payload, now, lease_s)

    async def land_claims(self, claims: Sequence[Claim], token: str, now: datetime, lease_s: float) -> list[Landing]:
        if not claims:
            return []
        params = {
            "p_claims": [
                {
                    "channel": c.channel, "message_id": c.message_id, "user_key": c.user_key,
                    "payload": {**c.payload, "by": token}, "received_at": c.received_at.isoformat(),
                }
                for c in claims
            ],
            "p_token": token,
            "p_lease_until": (now + timedelta(seconds=lease_s)).isoformat(),
        }  # fmt: skip
        return [Landing(x) for x in await self._batch("pennybot_land_claims", params, len(claims))]

    async def _batch(self, function: str, params: dict[str, Any], n: int) -> list[Any]:
        """A batch function's answer: one item per item sent, in order (never half a batch taken as whole)."""
        items = await self._rpc(function, params)
        if not isinstance(items, list) or len(items) != n:
            raise SupabaseError(f"{function} answered {items!r} for {n} items")
        return items

    async def renew_lease(self, channel: str, message_id: str, now: datetime, lease_s: float, epoch: int = 0) -> bool:
        from postgrest.types import CountMethod, ReturnMethod

        until = (now + timedelta(seconds=lease_s)).isoformat()
        query = self._table("inbox").update(
            {"lease_until": until}, count=CountMethod.exact, returning=ReturnMethod.minimal
        ).eq("channel", channel).eq("message_id", message_id)
        query = query.eq("lease_epoch", epoch).neq("status", "done")
        return bool((await self._run("renew_lease", query)).count == 1)

    async def lease_open(
        self, now: datetime, lease_s: float, limit: int = 100, owner: str | None = None
    ) -> list[InboxItem]:
        params = {
            "p_now": now.isoformat(), "p_lease_until": (now + timedelta(seconds=lease_s)).isoformat(), "p_limit": limit,
            "p_owner": owner,
        }  # fmt: skip
        rows = await self._rpc("pennybot_lease_open", params)
        return [InboxItem(r["channel"], r["message_id"], r["payload"], r["reply"], r["lease_epoch"]) for r in rows]

    async def lease_holder(self, channel: str, message_id: str) -> Lease | None:
        query = self._table("inbox").select("lease_epoch,lease_owner,lease_until")
        query = query.eq("channel", channel).eq("message_id", message_id).neq("status", "done")
        rows = (await self._run("lease_holder", query)).data
        if not rows:
            return None
        until = rows[0]["lease_until"]
        return Lease(rows[0]["lease_epoch"], rows[0]["lease_owner"], datetime.fromisoformat(until) if until else None)

    async def decide_inbox(self, channel: str, message_id: str, owner: str) -> bool:
        params = {"p_channel": channel, "p_message_id": message_id, "p_owner": owner}
        return await self._rpc("pennybot_decide_inbox", params) is True

    async def answer_inbox(
        self, channel: str, message_id: str, replies: Sequence[str], exchange: Exchange | None = None, epoch: int = 0
    ) -> bool:
        # One function: the replies and the turns are stored together, by the message's owner only.
        params: dict[str, Any] = {
            "p_channel": channel, "p_message_id": message_id, "p_epoch": epoch, "p_reply": list(replies),
            "p_user_key": None, "p_turns": None, "p_now": None,
        }  # fmt: skip
        if exchange is not None and exchange.turns:
            turns = _turn_rows(exchange.turns)
            params |= {"p_user_key": exchange.user_key, "p_turns": turns, "p_now": exchange.at.isoformat()}
        return await self._rpc("pennybot_answer_inbox", params) is True

    async def store_answers(self, answers: Sequence[Answer]) -> list[bool]:
        if not answers:
            return []
        rows = []
        for a in answers:
            row: dict[str, Any] = {
                "channel": a.channel, "message_id": a.message_id, "reply": list(a.replies), "epoch": a.epoch,
                "done_at": None if a.done_at is None else a.done_at.isoformat(),
            }  # fmt: skip
            if a.exchange is not None and a.exchange.turns:
                turns = _turn_rows(a.exchange.turns)
                row |= {"user_key": a.exchange.user_key, "at": a.exchange.at.isoformat(), "turns": turns}
            rows.append(row)
        return [bool(x) for x in await self._batch("pennybot_store_answers", {"p_answers": rows}, len(answers))]

    async def finish_inbox(self, sent: Sequence[tuple[str, str, datetime]]) -> None:
        if sent:  # one call: a REST update sets the same values on every row it matches, each mark has its time
            marks = [{"channel": c, "message_id": m, "at": at.isoformat()} for c, m, at in sent]
            await self._rpc("pennybot_finish_inbox", {"p_sent": marks})

    async def open_inbox(self, owner: str | None = None) -> list[InboxItem]:
        def build() -> Any:
            query = self._table("inbox").select("channel,message_id,payload,reply,lease_epoch").neq("status", "done")
            if owner is not None:
                query = query.eq("lease_owner", owner).gt("lease_epoch", 0)
            return query.order("received_at").order("channel").order("message_id")

        rows = await self._pages("open_inbox", build, keyset=False)
        return [InboxItem(r["channel"], r["message_id"], r["payload"], r["reply"], r["lease_epoch"]) for r in rows]

    async def get_quota(self, user_key: str) -> Quota | None:
        columns = "daily_usd::text,monthly_usd::text,daily_tokens,monthly_tokens"
        rows = (await self._run("get_quota", self._table("quotas").select(columns).eq("user_key", user_key))).data
        if not rows:
            return None
        r = rows[0]
        return Quota(user_key, _dec(r["daily_usd"]), _dec(r["monthly_usd"]), r["daily_tokens"], r["monthly_tokens"])

    async def set_quota(self, quota: Quota, actor: str, now: datetime) -> Quota | None:
        old = await self._rpc(
            "pennybot_set_quota",
            {
                "p_user_key": quota.user_key, "p_actor": actor, "p_now": now.isoformat(),
                "p_daily_usd": None if quota.daily_usd is None else _money(quota.daily_usd),
                "p_monthly_usd": None if quota.monthly_usd is None else _money(quota.monthly_usd),
                "p_daily_tokens": quota.daily_tokens, "p_monthly_tokens": quota.monthly_tokens,
            },
        )  # fmt: skip
        if not old:
            return None
        tokens = {k: None if old[k] is None else int(old[k]) for k in ("daily_tokens", "monthly_tokens")}
        return Quota(quota.user_key, _dec(old["daily_usd"]), _dec(old["monthly_usd"]), **tokens)

    async def audit(self, actor: str, action: str, target: str | None, details: dict[str, Any], now: datetime) -> None:
        from postgrest.types import ReturnMethod

        row = {"created_at": now.isoformat(), "actor": actor, "action": action, "target": target, "details": details}
        await self._run("audit", self._table("audit_log").insert(row, returning=ReturnMethod.minimal))

    async def audit_entries(self, since: datetime, limit: int = 100) -> list[AuditEntry]:
        query = self._table("audit_log").select("created_at,actor,action,target,details")
        rows = (
            await self._run(
                "audit_entries", query.gte("created_at", since.isoformat()).order("id", desc=True).limit(limit)
            )
        ).data
        return [
            AuditEntry(datetime.fromisoformat(r["created_at"]), r["actor"], r["action"], r["target"], r["details"])
            for r in rows
        ]

    async def add_alert(self, alert: StoredAlert) -> bool:
        from postgrest.types import ReturnMethod

        row = {
            "created_at": alert.created_at.isoformat(), "rule": alert.rule, "subject": alert.subject,
            "period_key": alert.period_key, "level": alert.level, "message": alert.message,
        }  # fmt: skip
        query = self._table("alerts").upsert(
            [row], on_conflict="rule,subject,period_key,level", ignore_duplicates=True,
            returning=ReturnMethod.representation,
        )  # fmt: skip
        return bool((await self._run("add_alert", query)).data)

    async def alerts(self, since: datetime, limit: int = 50) -> list[StoredAlert]:
        query = self._table("alerts").select("rule,subject,period_key,level,message,created_at")
        rows = (
            await self._run("alerts", query.gte("created_at", since.isoformat()).order("id", desc=True).limit(limit))
        ).data
        return [
            StoredAlert(
                r["rule"],
                r["subject"],
                r["period_key"],
                r["level"],
                r["message"],
                datetime.fromisoformat(r["created_at"]),
            )
            for r in rows
        ]

    async def known_user(self, user_key: str) -> bool:
        for table in ("users", "ai_requests"):
            found = (
                await self._run("known_user", self._table(table).select("user_key").eq("user_key", user_key).limit(1))
            ).data
            if found:
                return True
        return False

    async def purge_before(self, cutoff: datetime) -> tuple[int, int]:
        from postgrest.types import CountMethod, ReturnMethod

        counts = []
        for table in ("messages", "ai_requests", "resource_usage"):
            query = self._table(table).delete(count=CountMethod.exact, returning=ReturnMethod.minimal)
            counts.append(int((await self._run("purge_before", query.lt("created_at", cutoff.isoformat()))).count or 0))
        return counts[0], counts[1]

    async def aclose(self) -> None:
        await self._http.aclose()


def _ai_request(row: dict[str, Any]) -> AIRequest:
    return AIRequest(
        request_id=row["request_id"], created_at=datetime.fromisoformat(row["created_at"]),
        user_key=row["user_key"], channel=row["channel"], message_id=row["message_id"], kind=Kind(row["kind"]),
        provider=row["provider"], model=row["model"], status=Status(row["status"]),
        usage=Usage(
            input_tokens=row["prompt_tokens"], output_tokens=row["completion_tokens"],
            cache_read_tokens=row["cached_tokens"], cache_write_tokens=row["cache_write_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
        ),
        cost=Decimal(row["cost_usd"]), saved=Decimal(row["saved_usd"]), latency_ms=row["latency_ms"],
        tier=row["tier"], complexity=row["complexity"], error=row["error"], reason=row["reason"],
    )  # fmt: skip


def _stored_turn(row: Mapping[str, Any]) -> StoredTurn:
    return StoredTurn(row["id"], row["role"], row["content"], row["tokens"], row["size"])


def _turn_rows(turns: Sequence[tuple[str, str, int, int]]) -> list[dict[str, Any]]:
    """(role, content, tokens, size) turns as the SQL functions take them."""
    return [{"role": r, "content": c, "tokens": t, "size": z} for r, c, t, z in turns]
