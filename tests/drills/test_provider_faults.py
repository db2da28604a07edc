"""Provider faults at random: 200 messages from 20 users, 20 at a time, through the real pipeline and
the real OpenAI and Anthropic SDKs, against local servers that answer each request, at random with a
fixed seed, with a 500, a 429 with Retry-After, a hang past LLM_TIMEOUT_S, a dropped connection or an
answer. Every message gets an answer or the plain "couldn't answer" text; every attempt is one
ai_request row (failed ones cost 0); the counters hold exactly the sum of the rows; no reservation
is left; and a provider that asked to be left alone for Retry-After seconds is only called as a last
resort until then. Once on the embedded stores, once on Postgres and Redis.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.texts import Texts
from budget.ledger import GLOBAL, counter_key
from budget.money import ZERO, from_nano
from budget.periods import Period
from budget.records import AIRequest, Kind, Status
from budget.rules import Unit
from budget.stores.memory import MemoryHotStore
from providers.catalog import ModelSpec, Tier
from providers.router import Router
from tests.drills.conftest import SHARED_REDIS, LiveBot, SharedStores, live_bot
from tests.fakes.llm_servers import (
    Drop,
    Fail,
    FakeAnthropicServer,
    FakeOpenAIServer,
    Hang,
    Ok,
    Outcome,
    RecordedRequest,
    rate_limited,
)

SEED = 14
MESSAGES, USERS, AT_ONCE = 200, 20, 20
# LLM_TIMEOUT_S: a hang costs this much, an answer takes a few ms. Generous, because on a loaded CI
# machine a 0.5 s timeout fired before the request even reached the server, so the server saw no
# attempt for a row that says "timeout".
TIMEOUT_S = 3.0
RETRY_AFTER_S = 2.0  # long enough that a slow machine still sees chains made inside each window
CATALOG = [
    {"provider": "openai", "model": "gpt-4o-mini", "tier": "cheap"},  # the cheaper: first while healthy
    {"provider": "anthropic", "model": "claude-haiku-4-5", "tier": "cheap"},
]
QUESTION = re.compile(r"^Q(\d+) ")
# What each failure looks like in the ai_request row's error text ("openai/gpt-4o-mini: <kind>: ...").
MESSAGE: ContextVar[int] = ContextVar("message")
KIND_OF = {"500": "server", "429": "rate_limited", "hang": "timeout", "drop": "connection"}


@dataclass(frozen=True)
class Served:
    """One request as the fake provider saw it, and what it was told to do."""

    at: float  # time.monotonic() in the server thread
    provider: str
    message: int
    outcome: str  # ok, 500, 429, hang, drop


class Chaos:
    """Decides every request's fate and logs it. OpenAI's fate is drawn per message (seeded), so a run
    does not depend on arrival order; it gets every fault. Anthropic gets 500s and drops, never two
    failures in a row, so it never reaches the router's failure threshold: while OpenAI cools down
    after a 429, Anthropic is always the healthy first choice, which makes the cooldown observable."""

    def __init__(self) -> None:
        self.log: list[Served] = []
        self._lock = threading.Lock()
        self._anthropic_failed_last = False
        self._anthropic = random.Random(SEED)

    def openai(self, request: RecordedRequest) -> Outcome:
        i = _message_of(request)
        draw = random.Random(f"{SEED}:openai:{i}").random()
        if draw < 0.40:
            return self._serve("openai", i, "ok", Ok())
        if draw < 0.55:
            return self._serve("openai", i, "500", Fail(500, "upstream exploded"))
        if draw < 0.70:
            return self._serve("openai", i, "429", rate_limited(RETRY_AFTER_S))
        if draw < 0.85:
            return self._serve("openai", i, "hang", Hang(30))
        return self._serve("openai", i, "drop", Drop())

    def anthropic(self, request: RecordedRequest) -> Outcome:
        i = _message_of(request)
        with self._lock:
            draw = self._anthropic.random()
            answer = self._anthropic_failed_last or draw >= 0.45
            self._anthropic_failed_last = not answer
        if answer:
            return self._serve("anthropic", i, "ok", Ok())
        if draw < 0.25:
            return self._serve("anthropic", i, "500", Fail(500, "overloaded"))
        return self._serve("anthropic", i, "drop", Drop())

    def _serve(self, provider: str, i: int, outcome: str, result: Outcome) -> Outcome:
        with self._lock:
            self.log.append(Served(time.monotonic(), provider, i, outcome))
        return result


class RouterSpy:
    """Records what the live router decided and was told, passing every call through unchanged (a spy,
    not a mock: the router is the real one). Chains are recorded per message, through a context
    variable each message's task sets."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.chains: dict[int, list[str]] = {}
        self.failures: list[tuple[str, float | None]] = []
        # In call order: ("chain", now, chain, healthy), ("failed", provider, now, retry_after), ("ok", provider)
        self.events: list[tuple[Any, ...]] = []
        chain, failed, succeeded = router.chain, router.failed, router.succeeded

        def spy_chain(tier: Tier, now: float) -> list[ModelSpec]:
            specs = chain(tier, now)
            providers = [s.provider for s in specs]
            self.chains[MESSAGE.get()] = providers
            healthy = {p for p in router.providers if router.healthy(p, now)}
            self.events.append(("chain", now, providers, healthy))
            return specs

        def spy_failed(spec: ModelSpec, now: float, retry_after: float | None = None) -> None:
            self.failures.append((spec.provider, retry_after))
            self.events.append(("failed", spec.provider, now, retry_after))
            failed(spec, now, retry_after)

        def spy_succeeded(spec: ModelSpec) -> None:
            self.events.append(("ok", spec.provider))
            succeeded(spec)

        router.chain = spy_chain  # type: ignore[method-assign]
        router.failed = spy_failed  # type: ignore[method-assign]
        router.succeeded = spy_succeeded  # type: ignore[method-assign]

    def check_cooldowns(self, provider: str) -> int:
        """Assert that every chain made while ``provider`` was told to wait puts it after every healthy
        provider; returns how many such chains started elsewhere."""
        until, diverted, windows = float("-inf"), 0, 0
        for event in self.events:
            match event:
                case ("failed", p, now, retry_after) if p == provider and retry_after:
                    until = max(until, now + retry_after)
                    windows += 1
                case ("ok", p) if p == provider:
                    until = float("-inf")  # it answered: healthy again
                case ("chain", now, chain, healthy) if now < until:
                    assert provider not in healthy, event
                    assert all(chain.index(provider) > chain.index(p) for p in healthy), event
                    diverted += chain[0] != provider
        assert windows >= 5
        return diverted


def _message_of(request: RecordedRequest) -> int:
    last = request.body["messages"][-1]["content"]
    text = last if isinstance(last, str) else "".join(b.get("text", "") for b in last)
    match = QUESTION.match(text)
    assert match, f"not a drill question: {text[:80]!r}"
    return int(match.group(1))


def _text(i: int) -> str:
    return f"Q{i} from user {i % USERS}: what makes tides rise and fall, case {i}?"


@pytest.fixture(params=["embedded", "postgres+redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "embedded":
        return {"database_url": f"sqlite:///{tmp_path}/pb.db", "redis_url": "memory://"}
    shared: SharedStores = request.getfixturevalue("shared_stores")
    return {"database_url": shared.database_url, "redis_url": shared.redis_url, "_prefix": shared.prefix}


async def test_random_provider_faults_answer_or_say_so_and_charge_only_answers(
    stores: dict[str, Any],
    openai_server: FakeOpenAIServer,
    anthropic_server: FakeAnthropicServer,
    tmp_path: Path,
) -> None:
    chaos = Chaos()
    openai_server.respond_with(chaos.openai)
    anthropic_server.respond_with(chaos.anthropic)
    prefix = stores.pop("_prefix", None)
    settings = stores | {
        "openai_api_key": "sk-drill-openai-key", "openai_base_url": openai_server.base_url,
        "anthropic_api_key": "sk-ant-drill-key", "anthropic_base_url": anthropic_server.base_url,
        "model_catalog": CATALOG, "llm_timeout_s": TIMEOUT_S, "llm_max_retries": 0,  # one HTTP request an attempt
        "rate_limit_per_minute": 10_000, "outbox_path": tmp_path / "outbox.db",
    }  # fmt: skip
    async with live_bot(**settings) as bot:
        spy = RouterSpy(bot.deps.router)
        sem = asyncio.Semaphore(AT_ONCE)

        async def one(i: int) -> list[str]:
            MESSAGE.set(i)  # each message runs in its own task, with its own context
            async with sem:
                turn = await bot.send(f"u{i % USERS}", f"m{i}", _text(i))
                return turn.replies

        replies = await asyncio.gather(*(one(i) for i in range(MESSAGES)))
        await bot.deps.recorder.flush()
        now = bot.deps.clock()
        rows = await bot.deps.db.requests(now - timedelta(days=1), now + timedelta(days=1))
        counters = await _counters(bot, rows)
        open_holds = await _open_reservations(bot, prefix)

    log = sorted(chaos.log, key=lambda s: s.at)
    by_message: dict[int, list[Served]] = {}
    for s in log:
        by_message.setdefault(s.message, []).append(s)

    # Every message: the echo of its question from a provider that answered, or the plain apology.
    down = Texts().providers_down
    answered = {i for i, r in enumerate(replies) if r == [f"echo: {_text(i)}"]}
    apologized = {i for i, r in enumerate(replies) if r == [down]}
    assert answered | apologized == set(range(MESSAGES)), [r for r in replies if r not in ([down],)][:3]
    assert answered and apologized  # the run saw both
    for i in apologized:  # given up only after every provider failed it
        assert sorted(s.provider for s in by_message[i]) == ["anthropic", "openai"]
        assert all(s.outcome != "ok" for s in by_message[i])

    # Every HTTP request is one ai_request row with the same provider and fate; failures cost 0.
    assert len({r.request_id for r in rows}) == len(rows) == len(log)
    rows_of: dict[int, list[AIRequest]] = {}
    for r in rows:
        assert r.kind is Kind.ANSWER
        rows_of.setdefault(int(r.message_id.removeprefix("m")), []).append(r)
    for i in range(MESSAGES):
        seen = sorted((s.provider, s.outcome) for s in by_message.get(i, []))
        got = sorted((r.provider, _fate(r)) for r in rows_of.get(i, []))
        assert got == seen, (i, got, seen)
        oks = [r for r in rows_of.get(i, []) if r.status is Status.OK]
        assert len(oks) == (1 if i in answered else 0)
    for r in rows:
        if r.status is Status.ERROR:
            assert r.cost == ZERO and r.usage.total_tokens == 0
        else:
            assert r.cost > 0
    assert {s.outcome for s in log} == {"ok", "500", "429", "hang", "drop"}

    # Counters equal the rows to the nano-dollar (and the token); nothing is still held.
    assert counters == _expected(rows)
    assert open_holds == 0

    # Every message called the providers in the order of its chain, as the router gave it.
    for i in range(MESSAGES):
        called = [s.provider for s in by_message.get(i, [])]
        assert called == spy.chains[i][: len(called)], (i, called, spy.chains[i])
        assert len(called) == (len(CATALOG) if i in apologized else called.index(_answerer(rows_of[i])) + 1)

    # Retry-After honoured: each 429's header reached the router; until it elapsed (or OpenAI answered
    # again, which restores its health), every chain put OpenAI after every healthy provider.
    assert sorted(r for p, r in spy.failures if p == "openai" and r is not None) == [RETRY_AFTER_S] * sum(
        s.outcome == "429" for s in log
    )
    assert all(r is None for p, r in spy.failures if p == "anthropic")
    diverted = spy.check_cooldowns("openai")
    assert diverted >= 5  # the cooldown did steer first attempts to the other provider


def _answerer(rows: list[AIRequest]) -> str:
    return next(r.provider for r in rows if r.status is Status.OK)


def _fate(row: AIRequest) -> str:
    if row.status is Status.OK:
        return "ok"
    kind = (row.error or "").split(": ")[1]
    return next(name for name, k in KIND_OF.items() if k == kind)


def _keys(bot: LiveBot, rows: list[AIRequest]) -> dict[str, tuple[str, Unit]]:
    """Every monthly counter the run touched: USD and tokens per user, USD for the bot."""
    month = bot.deps.calendar.window(Period.MONTH, bot.deps.clock())
    keys = {counter_key(GLOBAL, Unit.USD, month): (GLOBAL, Unit.USD)}
    for user in {r.user_key for r in rows}:
        for unit in (Unit.USD, Unit.TOKENS):
            keys[counter_key(user, unit, month)] = (user, unit)
    return keys


async def _counters(bot: LiveBot, rows: list[AIRequest]) -> dict[tuple[str, Unit], int]:
    keys = _keys(bot, rows)
    values = await bot.deps.hot.get_counters(list(keys))
    return {keys[k]: v or 0 for k, v in zip(keys, values, strict=True)}


def _expected(rows: list[AIRequest]) -> dict[tuple[str, Unit], int]:
    want: dict[tuple[str, Unit], Decimal | int] = {(GLOBAL, Unit.USD): ZERO}
    for r in rows:
        for key, amount in (
            ((r.user_key, Unit.USD), r.cost),
            ((GLOBAL, Unit.USD), r.cost),
            ((r.user_key, Unit.TOKENS), r.usage.total_tokens),
        ):
            want[key] = want.get(key, 0) + amount
    return {k: (int(v) if k[1] is Unit.TOKENS else _nano(v)) for k, v in want.items()}


def _nano(amount: Decimal | int) -> int:
    nanos = Decimal(amount) * 10**9
    assert nanos == nanos.to_integral_value(), amount
    assert from_nano(int(nanos)) == amount
    return int(nanos)


async def _open_reservations(bot: LiveBot, prefix: str | None) -> int:
    """Reservations still held, read from the hot store itself."""
    hot = bot.deps.hot
    if isinstance(hot, MemoryHotStore):
        return len(hot._reservations)
    assert prefix is not None
    client = aioredis.Redis.from_url(SHARED_REDIS, decode_responses=True)
    try:
        due = await client.zcard(f"{prefix}:pb:rsv:due")
        held = [k async for k in client.scan_iter(f"{prefix}:pb:rsv:id:*")]
    finally:
        await client.aclose()
    return int(due) + len(held) + len(getattr(hot, "_open", {}))
