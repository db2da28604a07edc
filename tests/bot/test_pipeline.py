"""The whole pipeline on the embedded defaults, with the simulated provider: exact figures."""

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

from budget.money import from_nano, to_nano
from budget.periods import Period
from budget.records import AIRequest, Kind, Status
from budget.rules import Scope, Unit
from providers.base import Usage
from tests.conftest import Bot

ONE_MODEL = [{"provider": "simulated", "model": "gpt-4o-mini", "tier": "cheap"}]


async def rows(bot: Bot, user: str | None = None) -> list[AIRequest]:
    now = bot.clock.now
    return await bot.deps.db.requests(now - timedelta(days=40), now + timedelta(days=1), user)


async def spend_row(bot: Bot, cost: str, user: str = "console:alice") -> None:
    """Put past spend on the ledger, as an earlier process would have."""
    await bot.deps.db.record(
        [
            AIRequest(
                request_id=f"past-{user}-{cost}",
                created_at=bot.clock.now - timedelta(hours=1),
                user_key=user,
                channel="console",
                message_id=None,
                kind=Kind.ANSWER,
                provider="simulated",
                model="gpt-4o-mini",
                status=Status.OK,
                usage=Usage(10, 10),
                cost=Decimal(cost),
            )
        ]
    )


async def user_month(bot: Bot, user: str = "console:alice") -> int:
    meters = await bot.deps.budget.meters(user, bot.clock.now)
    return next(m.used for m in meters if m.scope is Scope.USER and m.period is Period.MONTH and m.unit is Unit.USD)


def count_redis(hot: Any) -> list[str]:
    """From now on, each command the Redis store sends, by name (a script by the store's attribute)."""
    scripts = {s.sha: name for name, s in vars(hot).items() if hasattr(s, "sha")}
    sent: list[str] = []
    execute = hot.redis.execute_command

    async def counting(*args: object, **kw: object) -> object:
        sent.append(scripts[str(args[1])] if args[0] == "EVALSHA" else str(args[0]))
        return await execute(*args, **kw)

    hot.redis.execute_command = counting
    return sent


async def test_an_answer_is_priced_recorded_and_counted(make_bot: Any) -> None:
    bot: Bot = await make_bot(model_catalog=ONE_MODEL)
    turn = await bot.send("Hello, who are you?")
    assert turn.replies[0].startswith("[simulated] ")
    [row] = await rows(bot)
    assert (row.kind, row.status, row.provider, row.model) == (Kind.ANSWER, Status.OK, "simulated", "gpt-4o-mini")
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens.
    expected = Decimal(row.usage.input_tokens) * Decimal("0.00000015") + Decimal(row.usage.output_tokens) * Decimal(
        "0.0000006"
    )
    assert row.cost == expected
    assert row.usage.input_tokens == bot.deps.counter.prompt_tokens(turn.prompt, "gpt-4o-mini")
    assert await user_month(bot) == to_nano(expected)
    assert turn.cost == expected


async def test_cache_hit_costs_nothing_and_records_the_saving(make_bot: Any) -> None:
    bot: Bot = await make_bot(model_catalog=ONE_MODEL)
    first = await bot.send("What is the capital of France?", user="alice")
    second = await bot.send("  what is the CAPITAL of france ", user="bob")
    assert second.replies == first.replies
    assert second.outcomes["cache"] == "hit"
    a, b = await rows(bot)
    assert (b.status, b.cost, b.saved, b.user_key) == (Status.CACHED, Decimal(0), a.cost, "console:bob")
    assert await user_month(bot, "console:bob") == 0
    stats = await bot.deps.cache.stats(bot.clock.now.timestamp())
    assert (stats.hits, stats.misses, stats.size) == (1, 1, 1)


async def test_on_redis_a_cache_hit_takes_one_round_trip_and_its_bookkeeping_follows(make_bot: Any) -> None:
    from budget.queries import normalize_query
    from tests.budget.test_redis_store import redis_namespace

    async with redis_namespace() as url:
        bot: Bot = await make_bot(redis_url=url, model_catalog=ONE_MODEL)
        bot.deps.cache.flush_s = 3600  # the lookups' bookkeeping waits for stats(): no timer in the counts
        hot, now = bot.deps.hot, bot.clock.now.timestamp()
        france = await bot.send("What is the capital of France?", user="alice")  # loads the scripts too
        spain = await bot.send("What is the capital of Spain?", user="carol")
        assert (await bot.send("what is the capital of spain?", user="bob")).outcomes["cache"] == "hit"
        sent = count_redis(hot)  # every user's counters seeded
        italy = await bot.send("What is the capital of Italy?", user="carol")
        assert italy.outcomes["cache"] == "miss"  # not stored: carol's history was in its prompt
        assert sent == ["_hit_get", "_reserve", "_settle"]  # no lookup of its own
        sent.clear()
        again = await bot.send("  what is the CAPITAL of france ", user="bob")
        assert (again.outcomes["cache"], again.replies) == ("hit", france.replies)
        assert sent == ["_hit_get"]  # the entry came with the rate limit
        sent.clear()
        stats = await bot.deps.cache.stats(now)  # writes this process's pending bookkeeping first
        assert (stats.hits, stats.misses, stats.size) == (2, 3, 2)
        assert sent[0] == "_cache_used"
        # The hit made France's entry more recent than Spain's: the next entry evicts Spain's.
        await hot.cache_put("pb:{cache}:a:other", "x", 60, 2, now)
        cache, persona = bot.deps.cache, bot.deps.persona
        keys = [cache.key(normalize_query(t.inbound.text), persona, "cheap") for t in (france, spain)]
        read = await hot.hit_and_get("pb:{t}:rl", 5, 60, now, [], keys)
        assert [e is not None for e in read.peeked] == [True, False]


async def test_follow_up_never_hits_and_answers_with_history_are_not_stored(make_bot: Any) -> None:
    bot: Bot = await make_bot(model_catalog=ONE_MODEL)
    await bot.send("What is the capital of France?", user="alice")
    await bot.send("what about Germany?", user="alice")  # has history: answered, not stored
    turn = await bot.send("what about Germany?", user="bob")  # a fresh conversation: asked first
    assert turn.outcomes["cache"] == "miss"
    follow = await bot.send("what about Germany?", user="alice")
    assert follow.outcomes["cache"] == "not self-contained"
    assert [r.status for r in await rows(bot)] == [Status.OK] * 4


async def test_warning_at_80_percent_once_per_period_and_cheap_tier(make_bot: Any) -> None:
    bot: Bot = await make_bot(user_monthly_limit=Decimal(1))
    await spend_row(bot, "0.80")
    turn = await bot.send("Explain in detail why the sky is blue and compare it with sunsets, step by step.")
    assert turn.outcomes["budget"] == "warn user month"
    assert turn.tier == "cheap"
    assert turn.replies[0].startswith("Heads-up: you've used 80% of your monthly budget")
    assert "2026-12-01 00:00 UTC" in turn.replies[0]
    again = await bot.send("And another question about rainbows, please?")
    assert not any(r.startswith("Heads-up") for r in again.replies)
    # once warned, the flag read with the rate limit spares the set_once round trip
    assert again.warned == {"pb:{console:alice}:warned:pb:{console:alice}:usd:month:2026-11"}


async def test_block_at_95_percent_says_when_it_resets_and_spends_nothing(make_bot: Any) -> None:
    bot: Bot = await make_bot(user_monthly_limit=Decimal(1))
    await spend_row(bot, "0.95")
    turn = await bot.send("Hello?")
    assert turn.replies == [
        "You've reached your monthly budget, so I can't answer with AI right now. It resets on 2026-12-01 00:00 UTC."
    ]
    assert len(await rows(bot)) == 1  # only the past spend


async def test_just_under_95_percent_still_answers(make_bot: Any) -> None:
    bot: Bot = await make_bot(user_monthly_limit=Decimal(1), model_catalog=ONE_MODEL)
    await spend_row(bot, "0.949999999")
    turn = await bot.send("Hello?")
    assert turn.answer is not None


async def test_global_budget_blocks_everyone(make_bot: Any) -> None:
    bot: Bot = await make_bot(global_monthly_limit=Decimal(2), global_daily_limit=Decimal("0.5"))
    await spend_row(bot, "0.5", user="console:zed")
    turn = await bot.send("Hello?", user="newcomer")
    assert turn.replies[0].startswith("The bot has reached its daily budget")
    assert "2026-11-11 00:00 UTC" in turn.replies[0]


async def test_daily_limit_resets_the_next_day_without_a_job(make_bot: Any) -> None:
    bot: Bot = await make_bot(cost_daily_limit=Decimal("0.01"), model_catalog=ONE_MODEL)
    await spend_row(bot, "0.0096")
    assert (await bot.send("Hi")).outcomes["budget"] == "blocked user day"
    bot.clock.advance(hours=12)
    assert (await bot.send("Hi again")).answer is not None


async def test_not_even_the_minimum_reply_fits(make_bot: Any) -> None:
    bot: Bot = await make_bot(user_monthly_limit=Decimal("0.001"), min_reply_tokens=100, model_catalog=ONE_MODEL)
    await spend_row(bot, "0.00095")
    turn = await bot.send("Hello?")
    assert turn.outcomes["budget"] == "blocked user month"
    await bot.deps.db.reset_conversation("console:alice")
    bot2: Bot = await make_bot(user_monthly_limit=Decimal("0.001"), min_reply_tokens=100, model_catalog=ONE_MODEL)
    # 94 %: warned, not blocked; $0.00006 left buys about 95 output tokens of gpt-4o-mini
    # ($0.60 per million) after the prompt, below MIN_REPLY_TOKENS=100.
    await spend_row(bot2, "0.00094")
    turn = await bot2.send("Hello?")
    assert turn.outcomes["answer"] == "over budget"
    assert "resets on 2026-12-01" in turn.replies[-1]


async def test_max_tokens_is_clamped_to_what_is_left(make_bot: Any) -> None:
    bot: Bot = await make_bot(user_monthly_limit=Decimal("0.001"), model_catalog=ONE_MODEL)
    await spend_row(bot, "0.0007")  # 70 %: $0.0003 left
    turn = await bot.send("Hello?")
    [_, row] = await rows(bot)
    prices = bot.deps.prices
    cap = prices.max_output_tokens("gpt-4o-mini", row.usage.input_tokens, Decimal("0.0003"))
    assert cap < 1024
    assert row.usage.output_tokens <= cap
    assert await user_month(bot) <= to_nano(Decimal("0.001"))
    assert turn.answer is not None


async def test_rate_limit_says_how_long_to_wait(make_bot: Any) -> None:
    bot: Bot = await make_bot(rate_limit_per_minute=2)
    await bot.send("one")
    bot.clock.advance(seconds=20)
    await bot.send("two")
    bot.clock.advance(seconds=10)
    turn = await bot.send("three")
    assert turn.replies == ["You're sending messages too fast. Please try again in 30 s."]
    bot.clock.advance(seconds=30)
    assert (await bot.send("four")).answer is not None


async def test_on_redis_a_flood_is_refused_without_a_round_trip_until_the_store_would_let_it_through(
    make_bot: Any,
) -> None:
    from tests.budget.test_redis_store import redis_namespace

    async with redis_namespace() as url:
        bot: Bot = await make_bot(redis_url=url, model_catalog=ONE_MODEL, rate_limit_per_minute=2)
        bot.deps.cache.flush_s = 3600  # the lookups' bookkeeping waits: no timer in the counts
        bot.deps.refusals.flush_s = 3600  # and so do the refusals' counts
        await bot.send("one", user="flood")
        bot.clock.advance(seconds=20)
        await bot.send("two", user="flood")
        sent = count_redis(bot.deps.hot)
        bot.clock.advance(seconds=5)
        first = await bot.send("three", user="flood")  # the store refuses: the oldest event is 25 s old
        assert first.replies == ["You're sending messages too fast. Please try again in 35 s."]
        assert sent.count("_hit_get") == 1
        sent.clear()
        for i in range(20):  # then this process refuses by itself, counting down the same wait
            bot.clock.advance(seconds=1)
            turn = await bot.send(f"flood {i}", user="flood")
            assert turn.replies == [f"You're sending messages too fast. Please try again in {34 - i} s."]
            assert turn.complexity is None  # not even classified
        assert sent == []  # no round trip at all: the refusals are counted in the background
        other = await bot.send("hello", user="calm")  # others still ask the store
        assert other.answer is not None and sent.count("_hit_get") == 1
        bot.clock.advance(seconds=15)  # 60 s after "one": the store lets the next one through
        assert (await bot.send("four", user="flood")).answer is not None
        assert sent.count("_hit_get") == 2
        # Every refusal is still counted for the rate_limited alert (these 46 s stay in one hour).
        from bot.jobs import _hour_start, rate_limited_key
        from budget.alerts import hour_period

        hours = {hour_period(_hour_start(bot.clock.now - timedelta(seconds=s), bot.deps.calendar.tz)) for s in (0, 46)}
        sent.clear()
        await bot.deps.refusals.flush()
        assert sent == ["SET", "INCRBY"] * len(hours)  # one write a key, for all its refusals
        counts = await bot.deps.hot.get_counters([rate_limited_key(h) for h in sorted(hours)])
        assert sum(c or 0 for c in counts) == 21


async def test_redelivered_message_is_dropped_and_not_charged(make_bot: Any) -> None:
    from bot.turn import Inbound

    bot: Bot = await make_bot()
    msg = Inbound("telegram", "1", "1", "update-7", "Hello")
    first = await bot.pipeline.handle(msg)
    again = await bot.pipeline.handle(msg)
    assert first.answer is not None
    assert (again.replies, again.outcomes) == ([], {"dedupe": "duplicate"})
    assert len(await rows(bot)) == 1


async def test_folding_after_twenty_turns_records_a_summary_call(make_bot: Any) -> None:
    bot: Bot = await make_bot(model_catalog=ONE_MODEL)
    for i in range(10):
        await bot.send(f"Tell me fact number {i} about the ocean.")
    conv = await bot.deps.db.conversation("console:alice")
    assert (conv.summary, len(conv.turns)) == (None, 20)
    turn = await bot.send("Tell me fact number 10 about the ocean.")
    assert turn.outcomes["context"] == "20 turns, folded 10"
    conv = await bot.deps.db.conversation("console:alice")
    assert conv.summary is not None
    assert len(conv.turns) == 12  # the 10 kept plus the new exchange
    assert conv.summary.content.count("User: Tell me fact number") == 5  # one per folded user turn
    summaries = [r for r in await rows(bot) if r.kind is Kind.SUMMARY]
    assert len(summaries) == 1 and summaries[0].cost > 0
    # The summary call is charged to the user it serves.
    total = sum((r.cost for r in await rows(bot)), Decimal(0))
    assert await user_month(bot) == to_nano(total)
    # The prompt: system, summary, the 10 kept turns, the new message.
    assert [c.message.role for c in turn.prompt] == ["system", "system"] + ["user", "assistant"] * 5 + ["user"]


async def test_reset_clears_the_conversation(make_bot: Any) -> None:
    bot: Bot = await make_bot()
    await bot.send("Remember that my name is Ada.")
    assert (await bot.send("/reset")).replies == ["Done: this conversation is cleared."]
    assert (await bot.deps.db.conversation("console:alice")).turns == []


async def test_too_long_message_is_refused(make_bot: Any) -> None:
    bot: Bot = await make_bot()
    turn = await bot.send("word " * 5000)
    assert turn.outcomes["context"] == "too long"
    assert await rows(bot) == []


async def test_200_concurrent_messages_never_pass_the_limit(make_bot: Any) -> None:
    bot: Bot = await make_bot(model_catalog=ONE_MODEL, rate_limit_per_minute=1000, simulated_latency_ms=5)
    # Worst case of one message: ~30 prompt tokens + 1,024 output tokens of gpt-4o-mini.
    worst = bot.deps.prices.worst_case("gpt-4o-mini", 40, 1024)
    limit = worst * 10
    bot2: Bot = await make_bot(
        model_catalog=ONE_MODEL, rate_limit_per_minute=1000, simulated_latency_ms=5, user_monthly_limit=limit
    )
    turns = await asyncio.gather(
        *(bot2.send(f"Question number {i}: how do tides work?", user="alice") for i in range(200))
    )
    answered = [t for t in turns if t.answer is not None]
    recorded = await rows(bot2)
    ledger = sum((r.cost for r in recorded), Decimal(0))
    assert 10 <= len(answered) < 200
    assert len([r for r in recorded if r.status is Status.OK and r.kind is Kind.ANSWER]) == len(answered)
    assert ledger <= limit
    assert from_nano(await user_month(bot2)) == ledger  # every reservation settled, none left behind


async def test_restart_keeps_spend_from_the_ledger(make_bot: Any, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/pb.db"
    bot: Bot = await make_bot(database_url=url, model_catalog=ONE_MODEL)
    await bot.send("Hello!")
    spent = await user_month(bot)
    assert spent > 0
    restarted: Bot = await make_bot(database_url=url, model_catalog=ONE_MODEL)  # fresh memory counters
    assert await user_month(restarted) == spent


async def test_admins_are_exempt_only_when_configured(make_bot: Any) -> None:
    for exempt, blocked in ((False, True), (True, False)):
        bot: Bot = await make_bot(user_monthly_limit=Decimal(1), admin_user_ids="console:alice", admins_exempt=exempt)
        await spend_row(bot, "0.99")
        turn = await bot.send("Hello?")
        assert (turn.outcomes["budget"].startswith("blocked")) is blocked


async def test_no_budget_store_means_no_ai_call(make_bot: Any) -> None:
    # A real Redis client pointed at a port where nothing listens: the hot store is unreachable.
    from tests.drills.servers import free_port

    bot: Bot = await make_bot(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    turn = await bot.send("Hello?")
    assert turn.replies == [
        "AI replies are paused for a moment: I can't check the budget right now. Please try again soon."
    ]
    assert turn.outcomes["budget"] == "unavailable"
    assert await rows(bot) == []
    assert (await bot.send("/help")).replies[0].startswith("I answer questions")  # commands still work


async def test_a_users_quota_applies_at_once_and_survives_a_restart(make_bot: Any, tmp_path: Any) -> None:
    from budget.records import Quota

    url = f"sqlite:///{tmp_path}/pb.db"
    bot: Bot = await make_bot(database_url=url, model_catalog=ONE_MODEL)
    await spend_row(bot, "0.5")  # 5 % of the default $10
    assert (await bot.send("Hello?")).answer is not None
    quota = Quota("console:alice", monthly_usd=Decimal("0.5"))
    await bot.deps.db.set_quota(quota, "console:admin", bot.clock.now)
    await bot.deps.budget.apply_quota(quota)
    assert (await bot.send("Hello again?")).outcomes["budget"] == "blocked user month"
    restarted: Bot = await make_bot(database_url=url, model_catalog=ONE_MODEL)  # empty hot store: reloads it
    assert (await restarted.send("Still there?")).outcomes["budget"] == "blocked user month"
    other = await restarted.send("Hello?", user="bob")  # others keep the configured limits
    assert other.answer is not None


async def bot_spent(bot: Bot, cost: str, user: str) -> None:
    """Spend by another process: on the ledger and on the bot's counter that is already live."""
    from budget.ledger import GLOBAL, counter_key
    from budget.periods import Calendar

    await spend_row(bot, cost, user)
    month = Calendar().window(Period.MONTH, bot.clock.now)
    await bot.deps.hot.incr(counter_key(GLOBAL, Unit.USD, month), to_nano(Decimal(cost)))


async def test_the_ladder_on_the_bots_budget_step_by_step(make_bot: Any) -> None:
    bot: Bot = await make_bot(global_monthly_limit=Decimal(1), user_monthly_limit=Decimal(10))
    # Normal: a complex question gets the premium tier; its answer is cached (a fresh conversation).
    normal = await bot.send("Explain in detail why the sky is blue, and compare it with sunsets step by step.")
    assert (normal.step, normal.tier) == (0, "premium")
    await bot_spent(bot, "0.80", "console:zed")  # the bot at 80 %
    cheaper = await bot.send(
        "Explain in detail why leaves turn red, and compare maples and oaks step by step.", user="b"
    )
    assert (cheaper.step, cheaper.tier, cheaper.outcomes["ladder"]) == (1, "cheap", "cheaper")
    assert cheaper.replies[0].startswith("Heads-up: the bot has used 80% of its monthly budget")
    await bot_spent(bot, "0.10", "console:yan")  # 90 %: the last 4 turns, free folding, 4x cache life
    for i in range(4):
        await bot.send(f"Tell me fact number {i} about whales.", user="c")
    short = await bot.send("And one more fact about whales?", user="c")
    assert short.step == 2 and short.outcomes["context"] == "6 turns, summary, folded 2"  # 4 kept each time
    assert [c.message.role for c in short.prompt] == [
        "system",
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert not [r for r in await rows(bot, "console:c") if r.kind is Kind.SUMMARY]  # folded without an AI call
    await bot_spent(bot, "0.05", "console:xia")  # 95 %: AI off, the cache only
    hit = await bot.send("Explain in detail why leaves turn red, and compare maples and oaks step by step.", user="d")
    assert hit.outcomes["cache"] == "hit" and hit.step == 3
    miss = await bot.send("What is the tallest mountain?", user="d")
    assert miss.outcomes["answer"] == "cache only"
    assert miss.replies == [
        "The bot has reached its monthly budget, so I can only answer questions I've answered before. "
        "AI replies resume on 2026-12-01 00:00 UTC."
    ]
    assert (await bot.send("/usage", user="d")).replies[0].startswith("Today:")  # commands still work
    bot.clock.advance(days=30)  # 2026-12-10: a new month lifts the ladder
    assert (await bot.send("What is the tallest mountain?", user="d")).answer is not None


async def test_on_redis_an_answer_is_reserved_with_the_rate_limit_two_round_trips_in_all(make_bot: Any) -> None:
    from bot.dispatch import Dispatcher
    from bot.pipeline import STAGES, Pipeline
    from bot.turn import Inbound, Next, Turn
    from tests.bot.test_dispatch import Recording
    from tests.budget.test_redis_store import redis_namespace

    async def stop(turn: Turn, next: Next) -> Turn:  # a stage that ends the message after the rate limit
        turn.replies.append("stopped")
        return turn

    async with redis_namespace() as url:
        bot: Bot = await make_bot(redis_url=url, model_catalog=ONE_MODEL)
        bot.deps.cache.flush_s = 3600  # the lookups' bookkeeping waits for the end: no timer in the counts
        hot = bot.deps.hot
        async def ask(dispatcher: Dispatcher, message_id: str, text: str) -> None:
            inbound = Inbound("console", "a", "a", message_id, text)
            assert await dispatcher.claim(inbound)
            await dispatcher.run(inbound)

        replier = Recording()
        dispatcher = Dispatcher(bot.pipeline, {"console": replier})
        await ask(dispatcher, "m-1", "Hello, who are you?")  # the user's counters and quota are seeded
        sent = count_redis(hot)
        await ask(dispatcher, "m-2", "Explain how the tides work, in two sentences.")
        assert sent == ["_hit_get", "_settle"]  # reserved with the rate limit, settled after the call
        first, second = await rows(bot)
        assert await user_month(bot, "console:a") == to_nano(first.cost + second.cost)  # exact, nothing held
        assert second.cost > 0 and replier.sent[-1][0] == "m-2"

        # Reserved, then not used (a stage ended the message first): given back at once.
        sent.clear()
        stopped = Dispatcher(Pipeline(bot.deps, (*STAGES[:4], stop, *STAGES[4:])), {"console": replier})
        await ask(stopped, "m-3", "And how do the seasons work?")
        assert sent == ["_hit_get", "_settle"]  # the settle is the release
        assert replier.sent[-1] == ("m-3", ["stopped"])
        assert await user_month(bot, "console:a") == to_nano(first.cost + second.cost)
        assert await hot.redis.zcard(hot._due) == 0  # type: ignore[attr-defined]  # no reservation left open
