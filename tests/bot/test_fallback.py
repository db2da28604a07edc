"""The pipeline with the real OpenAI and Anthropic SDKs against local wire-format servers:
failures fall back to the next provider, each attempt is one ai_request row, nothing leaks."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

from budget.money import from_nano
from budget.periods import Period
from budget.records import AIRequest, Kind, Status
from budget.rules import Scope, Unit
from tests.conftest import Bot
from tests.fakes.llm_servers import (
    Drop,
    Fail,
    FakeAnthropicServer,
    FakeOpenAIServer,
    Hang,
    Ok,
    anthropic_usage,
    openai_usage,
    rate_limited,
)

CATALOG = [
    {"provider": "openai", "model": "gpt-4o-mini", "tier": "cheap"},
    {"provider": "anthropic", "model": "claude-haiku-4-5", "tier": "cheap"},
]


async def real_bot(make_bot: Any, oa: FakeOpenAIServer, an: FakeAnthropicServer, **kw: Any) -> Bot:
    bot: Bot = await make_bot(
        openai_api_key="sk-test-secret",
        openai_base_url=oa.base_url,
        anthropic_api_key="sk-ant-test-secret",
        anthropic_base_url=an.base_url,
        model_catalog=CATALOG,
        llm_timeout_s=0.5,
        llm_max_retries=0,
        **kw,
    )
    return bot


async def rows(bot: Bot) -> list[AIRequest]:
    return await bot.deps.db.requests(bot.clock.now - timedelta(days=1), bot.clock.now + timedelta(days=1))


async def spent(bot: Bot) -> Decimal:
    meters = await bot.deps.budget.meters("console:alice", bot.clock.now)
    m = next(m for m in meters if m.scope is Scope.USER and m.period is Period.MONTH and m.unit is Unit.USD)
    return from_nano(m.used)


async def test_openai_answers_with_exact_cost_from_its_usage(
    make_bot: Any, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    bot = await real_bot(make_bot, openai_server, anthropic_server)
    openai_server.script(Ok(text="Paris.", usage=openai_usage(1200, 40, cached_tokens=1024, reasoning_tokens=0)))
    turn = await bot.send("What is the capital of France?")
    assert turn.replies == ["Paris."]
    [row] = await rows(bot)
    # 176 uncached at $0.15/M + 1,024 cached at $0.075/M + 40 output at $0.60/M
    assert row.cost == Decimal("0.0000264") + Decimal("0.0000768") + Decimal("0.000024")
    assert (row.usage.input_tokens, row.usage.cache_read_tokens, row.usage.output_tokens) == (1200, 1024, 40)
    assert await spent(bot) == row.cost
    sent = openai_server.requests[0].body
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"][0]["role"] == "system"
    assert sent["max_completion_tokens"] == 1024


async def test_500_falls_back_to_anthropic_and_both_attempts_are_recorded(
    make_bot: Any, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    bot = await real_bot(make_bot, openai_server, anthropic_server)
    openai_server.script(Fail(500))
    anthropic_server.script(Ok(text="Bonjour.", usage=anthropic_usage(100, 10, cache_read_input_tokens=50)))
    turn = await bot.send("Say hello in French.")
    assert turn.replies == ["Bonjour."]
    failed, ok = await rows(bot)
    assert (failed.status, failed.provider, failed.cost) == (Status.ERROR, "openai", Decimal(0))
    assert "server" in (failed.error or "")
    assert (ok.status, ok.provider, ok.kind) == (Status.OK, "anthropic", Kind.ANSWER)
    # Anthropic: 100 uncached at $1/M + 50 cache reads at $0.10/M + 10 output at $5/M
    assert ok.cost == Decimal("0.000100") + Decimal("0.000005") + Decimal("0.00005")
    assert await spent(bot) == ok.cost  # the failed attempt's reservation was released
    assert "sk-test-secret" not in (failed.error or "")


async def test_429_with_retry_after_puts_openai_in_cooldown(
    make_bot: Any, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    bot = await real_bot(make_bot, openai_server, anthropic_server)
    openai_server.script(rate_limited(30))
    await bot.send("Hello?")
    assert [r.provider for r in await rows(bot)] == ["openai", "anthropic"]
    assert not bot.deps.router.healthy("openai", bot.clock.now.timestamp() + 1)
    turn = await bot.send("Hello again, are you there?")  # openai is skipped while it cools down
    assert turn.outcomes["choose"].endswith("-> anthropic/claude-haiku-4-5 (healthy, cheapest of its tier)")
    assert len(openai_server.requests) == 1
    bot.clock.advance(seconds=29)  # the bot's clock, not the wall's: the simulator runs a month in minutes
    assert not bot.deps.router.healthy("openai", bot.clock.now.timestamp())
    bot.clock.advance(seconds=2)
    assert bot.deps.router.healthy("openai", bot.clock.now.timestamp())


async def test_timeout_and_dropped_connection_fall_back(
    make_bot: Any, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    bot = await real_bot(make_bot, openai_server, anthropic_server)
    openai_server.script(Hang(5), Drop())
    first = await bot.send("First question?")
    second = await bot.send("Second question, please?")
    assert (first.replies, second.replies) == (["echo: First question?"], ["echo: Second question, please?"])
    got = [(r.provider, r.status, (r.error or "").split(": ")[1:2]) for r in await rows(bot)]
    assert got == [
        ("openai", Status.ERROR, ["timeout"]),
        ("anthropic", Status.OK, []),
        ("openai", Status.ERROR, ["connection"]),
        ("anthropic", Status.OK, []),
    ]


async def test_every_provider_failing_gives_a_plain_message_and_no_charge(
    make_bot: Any, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    bot = await real_bot(make_bot, openai_server, anthropic_server)
    openai_server.script(Fail(503))
    anthropic_server.script(Fail(529, "Overloaded"))
    turn = await bot.send("Anyone?")
    assert turn.replies == ["Sorry, no AI provider could answer just now. Please try again in a minute."]
    assert [(r.provider, r.status) for r in await rows(bot)] == [("openai", Status.ERROR), ("anthropic", Status.ERROR)]
    assert await spent(bot) == 0
    assert (await bot.deps.db.conversation("console:alice")).turns == []


async def test_a_server_that_reports_no_usage_is_still_charged(
    make_bot: Any, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    bot = await real_bot(make_bot, openai_server, anthropic_server)
    openai_server.script(Ok(text="An answer with no usage block.", usage=openai_usage(0, 0)))
    await bot.send("Hello?")
    [row] = await rows(bot)
    assert row.usage.input_tokens > 0 and row.usage.output_tokens == 7
    assert row.cost > 0
