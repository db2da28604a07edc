"""The cost API end to end: requests to the real app on uvicorn, the stores read behind it."""

from __future__ import annotations

import hmac
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import bot.api
from bot.turn import Deps, Inbound
from budget.cache import CachedAnswer
from budget.periods import Period
from budget.queries import normalize_query
from budget.records import AIRequest, Kind, Status, StoredAlert
from providers.base import ChatMessage, Usage
from tests.bot.server_harness import Served, channel_settings, serve

TOKEN = "pb-admin-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE = "telegram:alice"
BOB = "whatsapp:bob"
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/cost/analytics", None),
    ("GET", f"/api/cost/quota/{ALICE}", None),
    ("PUT", f"/api/cost/quota/{ALICE}", {"daily_usd": "0"}),
    ("POST", "/api/cost/optimize", {"question": "What is the capital of France?"}),
    ("GET", "/api/cost/cache/stats", None),
    ("POST", "/api/cost/cache/clear", None),
    ("GET", "/api/cost/alerts", None),
    ("GET", "/api/cost/budget/recommendations", None),
]
_ids = itertools.count()


@dataclass
class Api:
    """The served app, with every response body kept to check that none carries the token."""

    served: Served
    bodies: list[str] = field(default_factory=list)

    @property
    def deps(self) -> Deps:
        return self.served.runtime.built.deps

    async def call(self, method: str, path: str, *, headers: dict[str, str] | None = AUTH, **kw: Any) -> httpx.Response:
        r = await self.served.http.request(method, path, headers=headers, **kw)
        self.bodies.append(r.text)
        return r

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.call(method, path, **kw)
        assert r.status_code == 200, r.text
        return r.json()

    async def send(self, text: str, user: str = "alice", channel: str = "console") -> list[str]:
        """A message through the bot's own pipeline, as a channel would hand it in."""
        pipeline = self.served.runtime.dispatcher.pipeline
        turn = await pipeline.handle(Inbound(channel, user, user, f"m{next(_ids)}", text))
        await pipeline.done(turn)
        return turn.replies


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with serve(**channel_settings(None, None, admin_api_token=TOKEN)) as s:
        a = Api(s)
        yield a
    assert a.bodies and not any(TOKEN in b for b in a.bodies)  # invariant 8


def row(
    user: str,
    cost: str,
    when: datetime,
    *,
    model: str = "gpt-4o-mini",
    provider: str = "openai",
    status: Status = Status.OK,
    tier: str | None = None,
    complexity: str | None = None,
    usage: Usage | None = None,
    saved: str = "0",
) -> AIRequest:
    return AIRequest(
        request_id=f"r{next(_ids)}", created_at=when, user_key=user, channel=user.split(":")[0], message_id=None,
        kind=Kind.ANSWER, provider=provider, model=model, status=status, usage=usage or Usage(), cost=Decimal(cost),
        saved=Decimal(saved), tier=tier, complexity=complexity,
    )  # fmt: skip


def detail_locs(r: httpx.Response) -> list[list[Any]]:
    assert r.status_code == 422, r.text
    return [e["loc"] for e in r.json()["detail"]]


# -- who may call ------------------------------------------------------------------------------


async def test_a_method_a_path_lacks_is_405_naming_every_method_it_has(api: Api) -> None:
    for method in ("OPTIONS", "DELETE", "POST"):
        r = await api.call(method, "/api/cost/quota/telegram:1")
        assert (r.status_code, r.headers["allow"]) == (405, "GET, PUT"), method
    r = await api.call("POST", "/healthz")
    assert (r.status_code, r.headers["allow"]) == (405, "GET")


async def test_missing_or_wrong_token_is_401_and_changes_nothing(api: Api) -> None:
    await api.send("What is the capital of France?")
    cached = (await api.deps.cache.stats(datetime.now(UTC).timestamp())).size
    assert cached == 1  # the answer
    wrong = [
        None,
        {"Authorization": "Bearer " + "x" * len(TOKEN)},  # same length, other value
        {"Authorization": "Bearer " + TOKEN[:-1]},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
    ]
    for (method, path, body), headers in itertools.product(ROUTES, wrong):
        r = await api.call(method, path, json=body, headers=headers)
        assert r.status_code == 401, (method, path, headers)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {"detail": "missing or wrong bearer token"}
    # A malformed body is not even read before the token is checked.
    json_type = {"Content-Type": "application/json"}
    r = await api.call("PUT", f"/api/cost/quota/{ALICE}", content=b"{oops", headers=json_type)
    assert r.status_code == 401
    assert await api.deps.db.get_quota(ALICE) is None
    assert await api.deps.db.audit_entries(datetime.now(UTC) - timedelta(hours=1)) == []
    assert (await api.deps.cache.stats(datetime.now(UTC).timestamp())).size == cached


async def test_the_token_is_compared_in_constant_time(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(bot.api, "hmac", SimpleNamespace(compare_digest=spy))
    assert (await api.call("GET", "/api/cost/cache/stats", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await api.call("GET", "/api/cost/cache/stats")).status_code == 200
    assert compared == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


async def test_every_call_is_refused_while_the_token_is_unset() -> None:
    async with serve(**channel_settings(None, None)) as s:
        for method, path, body in ROUTES:
            for headers in ({}, AUTH, {"Authorization": "Bearer x"}):
                r = await s.http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401
                assert r.headers["www-authenticate"] == "Bearer"
                assert r.json() == {"detail": "admin API is off: set ADMIN_API_TOKEN"}


# -- validation and unknown users --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        ("GET", "/api/cost/analytics?days=0", None, ["query", "days"]),
        ("GET", "/api/cost/analytics?days=367", None, ["query", "days"]),
        ("GET", "/api/cost/analytics?days=ten", None, ["query", "days"]),
        ("GET", "/api/cost/analytics?user_id=alice", None, ["query", "user_id"]),
        ("GET", "/api/cost/alerts?days=0", None, ["query", "days"]),
        ("GET", "/api/cost/budget/recommendations?user_id=no%20colon", None, ["query", "user_id"]),
        ("GET", "/api/cost/quota/alice", None, ["path", "user_id"]),
        ("PUT", f"/api/cost/quota/{ALICE}", {"daily_usd": -1}, ["body", "daily_usd"]),
        ("PUT", f"/api/cost/quota/{ALICE}", {"daily_usd": "-0.01"}, ["body", "daily_usd"]),
        ("PUT", f"/api/cost/quota/{ALICE}", {"monthly_usd": "0.0000000001"}, ["body", "monthly_usd"]),
        ("PUT", f"/api/cost/quota/{ALICE}", {"monthly_usd": "ten"}, ["body", "monthly_usd"]),
        ("PUT", f"/api/cost/quota/{ALICE}", {"monthly_usd": "1e12"}, ["body", "monthly_usd"]),
        ("PUT", f"/api/cost/quota/{ALICE}", {"daily_tokens": -5}, ["body", "daily_tokens"]),
        ("PUT", f"/api/cost/quota/{ALICE}", {"daily_tokens": 1.5}, ["body", "daily_tokens"]),
        ("PUT", f"/api/cost/quota/{ALICE}", {"daly_usd": 1}, ["body", "daly_usd"]),
        ("POST", "/api/cost/optimize", {"question": ""}, ["body", "question"]),
        ("POST", "/api/cost/optimize", {"question": "x" * 20_001}, ["body", "question"]),
        ("POST", "/api/cost/optimize", {}, ["body", "question"]),
        ("POST", "/api/cost/optimize", {"question": "hi", "user_id": "alice"}, ["body", "user_id"]),
    ],
)
async def test_bad_queries_and_bodies_are_422_naming_the_field(
    api: Api, method: str, path: str, body: Any, loc: list[str]
) -> None:
    assert detail_locs(await api.call(method, path, json=body)) == [loc]


async def test_non_finite_and_malformed_amounts_are_422(api: Api) -> None:
    path, json_type = f"/api/cost/quota/{ALICE}", {"Content-Type": "application/json"} | AUTH
    for raw in (b'{"daily_usd": 1e400}', b'{"daily_usd": 1e-10}'):
        assert detail_locs(await api.call("PUT", path, content=raw, headers=json_type)) == [["body", "daily_usd"]]
    for raw in (b'{"daily_usd": NaN}', b'{"daily_usd": Infinity}', b'{"daily_usd": -Infinity}'):  # not JSON
        r = await api.call("PUT", path, content=raw, headers=json_type)
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    assert (await api.call("PUT", path, content=b"{oops", headers=json_type)).status_code == 422
    assert await api.deps.db.get_quota(ALICE) is None


async def test_unknown_users_are_404(api: Api) -> None:
    for method, path, body in [
        ("GET", "/api/cost/quota/telegram:404", None),
        ("PUT", "/api/cost/quota/telegram:404", {"daily_usd": "1"}),
        ("GET", "/api/cost/analytics?user_id=telegram:404", None),
        ("GET", "/api/cost/budget/recommendations?user_id=telegram:404", None),
        ("POST", "/api/cost/optimize", {"question": "hi there", "user_id": "telegram:404"}),
    ]:
        r = await api.call(method, path, json=body)
        assert (r.status_code, r.json()) == (404, {"detail": "unknown user telegram:404"})
    assert await api.deps.db.get_quota("telegram:404") is None
    assert await api.deps.db.audit_entries(datetime.now(UTC) - timedelta(hours=1)) == []


# -- quotas ------------------------------------------------------------------------------------


async def test_a_quota_change_is_audited_and_blocks_the_next_message(api: Api) -> None:
    user = "console:alice"
    assert (await api.send("What is the capital of France?"))[0].startswith("[simulated] ")
    now = datetime.now(UTC)
    [answer] = await api.deps.db.requests(now - timedelta(hours=1), now + timedelta(hours=1), user)
    view = await api.ok("GET", f"/api/cost/quota/{user}")
    no_limits = {"daily_usd": None, "monthly_usd": None, "daily_tokens": None, "monthly_tokens": None}
    assert view["defaults"] == view["effective"] == no_limits | {"monthly_usd": "10"}
    assert view["overrides"] == no_limits
    assert Decimal(view["used"]["monthly_usd"]) == Decimal(view["used"]["daily_usd"]) == answer.cost > 0
    assert view["used"]["daily_tokens"] == answer.usage.input_tokens + answer.usage.output_tokens
    assert view["exempt"] is False

    view = await api.ok("PUT", f"/api/cost/quota/{user}", json={"daily_usd": "0", "monthly_tokens": 5000})
    assert view["overrides"] == no_limits | {"daily_usd": "0", "monthly_tokens": 5000}
    assert view["effective"] == {"daily_usd": "0", "monthly_usd": "10", "daily_tokens": None, "monthly_tokens": 5000}
    [entry] = await api.deps.db.audit_entries(now - timedelta(hours=1))
    assert (entry.actor, entry.action, entry.target) == ("api", "quota.set", user)
    assert entry.details == {"before": no_limits, "after": no_limits | {"daily_usd": "0", "monthly_tokens": "5000"}}

    # At once: the next message is blocked, though the quota was cached in the hot store.
    [reply] = await api.send("What is the capital of Spain?")
    assert reply.startswith("You've reached your daily budget")
    assert len(await api.deps.db.requests(now - timedelta(hours=1), now + timedelta(hours=1), user)) == 1

    # A field left out keeps its override; null clears one.
    view = await api.ok("PUT", f"/api/cost/quota/{user}", json={"daily_usd": None})
    assert view["overrides"] == no_limits | {"monthly_tokens": 5000}
    assert view["effective"]["daily_usd"] is None
    assert len(await api.deps.db.audit_entries(now - timedelta(hours=1))) == 2
    assert (await api.send("What is the capital of Spain?"))[0].startswith("[simulated] ")


async def test_a_json_number_amount_is_taken_exactly_from_its_text(api: Api) -> None:
    await api.deps.db.record([row(ALICE, "0.000001", datetime.now(UTC))])
    raw = b'{"monthly_usd": 12345678.123456789, "daily_usd": 0.1}'
    headers = AUTH | {"Content-Type": "application/json"}
    view = await api.ok("PUT", f"/api/cost/quota/{ALICE}", content=raw, headers=headers)
    assert view["overrides"]["monthly_usd"] == "12345678.123456789"  # a float would give ...12345679
    assert view["effective"]["daily_usd"] == "0.1"
    quota = await api.deps.db.get_quota(ALICE)
    assert quota is not None and (quota.monthly_usd, quota.daily_usd) == (Decimal("12345678.123456789"), Decimal("0.1"))


# -- analytics ---------------------------------------------------------------------------------


async def test_analytics_are_exact_to_the_nano_dollar(api: Api) -> None:
    now = datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    big = Usage(1000, 500, cache_read_tokens=200, reasoning_tokens=50)
    await api.deps.db.record(
        [
            row(ALICE, "0.000001234", hour_ago, tier="cheap", usage=Usage(input_tokens=100, output_tokens=20)),
            row(ALICE, "0.000987654", hour_ago, model="gpt-4.1", tier="premium", usage=big),
            row(BOB, "0.000000001", hour_ago, model="claude-haiku-4-5", provider="anthropic", tier="cheap"),
            row(BOB, "0", hour_ago, status=Status.CACHED, tier="cheap", saved="0.000001234"),
            row(ALICE, "0", hour_ago, status=Status.ERROR),
            row("telegram:carol", "0.5", now - timedelta(days=40)),
        ]
    )
    await api.deps.db.record_fee("whatsapp", BOB, "in", "SM1", Decimal("0.005"), hour_ago)

    a = await api.ok("GET", "/api/cost/analytics")
    money = ("llm_cost", "fees", "total_cost", "cost_per_active_user", "cost_per_answer", "premium_share")
    assert all(isinstance(a[k], str) for k in money)
    assert {k: Decimal(a[k]) for k in money} == {
        "llm_cost": Decimal("0.000988889"),
        "fees": Decimal("0.005"),
        "total_cost": Decimal("0.005988889"),
        "cost_per_active_user": Decimal("0.002994445"),  # 0.0029944445 rounded up
        "cost_per_answer": Decimal("0.001497223"),  # 0.00149722225 rounded up
        "premium_share": Decimal("0.000987654") / Decimal("0.000988889"),
    }
    assert (a["requests"], a["answers"], a["errors"], a["active_users"]) == (5, 4, 1, 2)
    assert a["tokens"] == {"prompt": 1100, "completion": 520, "cached": 200, "cache_write": 0, "reasoning": 50}
    assert a["cache"] == {"hits": 1, "answers": 4, "hit_rate": "0.25", "saved": "0.000001234"}
    by = {k: {n: Decimal(v) for n, v in a[k].items()} for k in ("by_model", "by_provider", "by_channel", "by_user")}
    assert list(a["by_model"]) == ["gpt-4.1", "gpt-4o-mini", "claude-haiku-4-5"]  # dearest first
    assert by["by_model"] == {
        "gpt-4.1": Decimal("0.000987654"), "gpt-4o-mini": Decimal("0.000001234"),
        "claude-haiku-4-5": Decimal("0.000000001"),
    }  # fmt: skip
    assert by["by_provider"] == {"openai": Decimal("0.000988888"), "anthropic": Decimal("0.000000001")}
    assert by["by_channel"] == {"telegram": Decimal("0.000988888"), "whatsapp": Decimal("0.000000001")}
    assert by["by_user"] == {ALICE: Decimal("0.000988888"), BOB: Decimal("0.000000001")}
    assert a["top_users"] == [{"user_id": ALICE, "cost": "0.000988888"}, {"user_id": BOB, "cost": "0.000000001"}]

    mine = await api.ok("GET", f"/api/cost/analytics?user_id={ALICE}")
    assert (mine["user_id"], mine["requests"], mine["llm_cost"], mine["fees"]) == (ALICE, 3, "0.000988888", "0")
    assert mine["by_channel"] == {"telegram": "0.000988888"}

    longer = await api.ok("GET", "/api/cost/analytics?days=60")
    assert Decimal(longer["llm_cost"]) == Decimal("0.500988889")
    assert datetime.fromisoformat(longer["end"]) - datetime.fromisoformat(longer["start"]) == timedelta(days=60)


# -- optimize ----------------------------------------------------------------------------------


async def test_optimize_estimates_every_catalog_model(api: Api) -> None:
    d = api.deps
    question = "What is the capital of France?"
    o = await api.ok("POST", "/api/cost/optimize", json={"question": question})
    prompt = d.counter.prompt_tokens([d.system, d.counter.count(ChatMessage("user", question))], "gpt-4o-mini")
    assert (o["complexity"], o["tier"], o["chosen"]["model"]) == ("simple", "cheap", "simulated/gpt-4o-mini")
    assert (o["prompt_tokens"], o["expected_output_tokens"], o["output_samples"]) == (prompt, 150, 0)
    usage = Usage(input_tokens=prompt, output_tokens=150)
    assert [(e["model"], e["tier"]) for e in o["estimates"]] == [(s.name, s.tier.value) for s in d.router.catalog]
    assert len(o["estimates"]) == 3
    for e, spec in zip(o["estimates"], d.router.catalog, strict=True):
        assert Decimal(e["cost"]) == d.prices.cost(spec.model, usage)
    assert o["chosen"]["cost"] == o["estimates"][0]["cost"]
    assert o["why"] == "a simple question goes to the cheap tier"
    assert (o["cache_hit"], o["self_contained"], o["repeated"], o["suggestions"]) == (False, True, 1, [])

    proof = {"question": "Prove step by step that sqrt(2) is irrational."}
    hard = await api.ok("POST", "/api/cost/optimize", json=proof)
    assert (hard["complexity"], hard["tier"], hard["chosen"]["model"]) == ("complex", "premium", "simulated/gpt-4.1")


async def test_optimize_sees_the_cache_without_counting_a_lookup(api: Api) -> None:
    d = api.deps
    now = datetime.now(UTC).timestamp()
    question = "What is the capital of France?"
    key = d.cache.key(normalize_query(question), d.persona, "cheap")
    await d.cache.put(key, CachedAnswer("Paris.", Decimal("0.00002"), "simulated", "gpt-4o-mini"), now)
    for asked in (question, "  what is the CAPITAL of france "):
        o = await api.ok("POST", "/api/cost/optimize", json={"question": asked})
        assert o["cache_hit"] is True
        assert [s["rule"] for s in o["suggestions"]] == ["cache_hit"]
        assert Decimal(o["suggestions"][0]["figures"]["saved"]) == Decimal(o["chosen"]["cost"]) > 0
    other = await api.ok("POST", "/api/cost/optimize", json={"question": "What is the capital of Spain?"})
    assert other["cache_hit"] is False
    stats = await api.ok("GET", "/api/cost/cache/stats")
    assert (stats["hits"], stats["misses"], stats["size"]) == (0, 0, 1)


async def test_optimize_uses_the_users_conversation_and_history(api: Api) -> None:
    d = api.deps
    now = datetime.now(UTC)
    question = "What is the capital of France?"
    mine = [10, 20, 30, 40, 50]
    await d.db.record(
        [row(ALICE, "0.000001", now - timedelta(hours=1), complexity="simple", usage=Usage(50, n)) for n in mine]
        + [row(BOB, "0.000001", now - timedelta(hours=1), complexity="simple", usage=Usage(50, 900)) for _ in mine]
        + [row(ALICE, "0.000001", now - timedelta(days=45), complexity="simple", usage=Usage(50, 7))]  # too old
    )
    turns = [("user", question, 7, 30), ("assistant", "Paris.", 2, 6)] * 2 + [("user", "thanks", 1, 6)]
    await d.db.add_turns(ALICE, turns, now)
    for q in (question, "and in Germany?"):
        key = d.cache.key(normalize_query(q), d.persona, "cheap")
        await d.cache.put(key, CachedAnswer("cached", Decimal("0.00002"), "simulated", "gpt-4o-mini"), now.timestamp())

    o = await api.ok("POST", "/api/cost/optimize", json={"question": question, "user_id": ALICE})
    assert (o["expected_output_tokens"], o["output_samples"]) == (30, 5)
    history = [d.counter.count(ChatMessage(r, c)) for r, c, _, _ in turns]
    counted = [d.system, *history, d.counter.count(ChatMessage("user", question))]
    assert o["prompt_tokens"] == d.counter.prompt_tokens(counted, "gpt-4o-mini")
    assert (o["cache_hit"], o["repeated"]) == (True, 3)
    repeated = next(s for s in o["suggestions"] if s["rule"] == "repeated_question")
    assert repeated["figures"]["times"] == "3"

    everyone = await api.ok("POST", "/api/cost/optimize", json={"question": question})
    assert (everyone["expected_output_tokens"], everyone["output_samples"]) == (475, 10)  # (50 + 900) / 2

    # A follow-up is never served from the cache once there is a conversation (invariant 6).
    follow = await api.ok("POST", "/api/cost/optimize", json={"question": "and in Germany?", "user_id": ALICE})
    assert (follow["cache_hit"], follow["self_contained"]) == (False, False)
    assert "not_self_contained" in [s["rule"] for s in follow["suggestions"]]


# -- cache, alerts, recommendations ------------------------------------------------------------


async def test_cache_stats_and_an_audited_clear(api: Api) -> None:
    d = api.deps
    now = datetime.now(UTC)
    for n in range(2):
        await d.cache.put(f"pb:{{cache}}:a:{n}", CachedAnswer("a", Decimal(0), "p", "m"), now.timestamp())
    assert await d.cache.get("pb:{cache}:a:0", now.timestamp()) is not None
    assert await d.cache.get("pb:{cache}:a:9", now.timestamp()) is None
    assert await api.ok("GET", "/api/cost/cache/stats") == {"hits": 1, "misses": 1, "size": 2, "hit_rate": "0.5"}
    assert await api.ok("POST", "/api/cost/cache/clear") == {"removed": 2}
    assert (await api.ok("GET", "/api/cost/cache/stats"))["size"] == 0
    [entry] = await d.db.audit_entries(now - timedelta(hours=1))
    assert (entry.actor, entry.action, entry.target, entry.details) == ("api", "cache.clear", None, {"removed": 2})


async def test_alerts_of_the_last_days_newest_first(api: Api) -> None:
    now = datetime.now(UTC)
    for age, level in ((10, "warn"), (1, "block")):
        await api.deps.db.add_alert(
            StoredAlert("user_monthly", ALICE, f"k{age}", level, f"{level} for alice", now - timedelta(days=age))
        )
    week = await api.ok("GET", "/api/cost/alerts")
    assert [a["level"] for a in week["alerts"]] == ["block"]
    assert week["alerts"][0] | {"created_at": None} == {
        "rule": "user_monthly", "subject": ALICE, "period_key": "k1", "level": "block",
        "message": "block for alice", "created_at": None,
    }  # fmt: skip
    assert [a["level"] for a in (await api.ok("GET", "/api/cost/alerts?days=30"))["alerts"]] == ["block", "warn"]


def month_start(now: datetime, back: int) -> datetime:
    year, month = divmod(now.year * 12 + now.month - 1 - back, 12)
    return datetime(year, month + 1, 1, tzinfo=UTC)


async def test_recommendations_from_the_last_twelve_months(api: Api) -> None:
    now = datetime.now(UTC)
    rows = [row(ALICE, str(n), month_start(now, n) + timedelta(days=3, hours=12)) for n in (1, 2, 3)]
    rows += [row(ALICE, "100", month_start(now, 14)), row(BOB, "5", month_start(now, 1) + timedelta(days=4))]
    rows += [row(ALICE, "0", now - timedelta(minutes=5), status=Status.CACHED, saved="0.25")]
    await api.deps.db.record(rows)

    mine = await api.ok("GET", f"/api/cost/budget/recommendations?user_id={ALICE}")
    assert datetime.fromisoformat(mine["start"]) == api.deps.calendar.window(Period.MONTH, month_start(now, 12)).start
    found = {r["rule"]: r for r in mine["recommendations"]}
    assert set(found) == {"monthly_limit", "cache_savings"}
    assert found["monthly_limit"]["subject"] == ALICE
    figures = found["monthly_limit"]["figures"]
    assert (figures["limit"], figures["months"]) == ("3.00", "3")  # month 14 left out
    assert Decimal(figures["max_month"]) == 3
    cache = found["cache_savings"]["figures"]
    assert (Decimal(cache["saved"]), cache["hits"], cache["answers"], cache["hit_rate"]) == (
        Decimal("0.25"), "1", "4", "25.00",
    )  # fmt: skip

    bot_wide = await api.ok("GET", "/api/cost/budget/recommendations")
    limit = next(r for r in bot_wide["recommendations"] if r["rule"] == "monthly_limit")
    assert limit["subject"] is None
    assert Decimal(limit["figures"]["max_month"]) == 6  # 1 + 5 in the last month


# -- the OpenAPI document ----------------------------------------------------------------------


async def test_openapi_lists_every_route_with_the_bearer_scheme(api: Api) -> None:
    doc = (await api.call("GET", "/openapi.json", headers=None)).json()
    api.bodies.append(str(doc))
    listed = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert {(method, path.replace(ALICE, "{user_id}")) for method, path, _ in ROUTES} <= listed
    assert doc["components"]["securitySchemes"]["HTTPBearer"] | {"description": None} == {
        "type": "http", "scheme": "bearer", "description": None,
    }  # fmt: skip
    for path, ops in doc["paths"].items():
        if path.startswith("/api/cost/"):
            for op in ops.values():
                assert op["security"] == [{"HTTPBearer": []}]
                assert {"200", "401"} <= set(op["responses"])
    schemas = doc["components"]["schemas"]
    assert schemas["Analytics"]["properties"]["llm_cost"] == {"type": "string", "title": "Llm Cost"}
    assert schemas["QuotaUpdate"]["additionalProperties"] is False
    put = doc["paths"]["/api/cost/quota/{user_id}"]["put"]
    answer = put["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/QuotaView"}
