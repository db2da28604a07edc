"""Admin chat commands, as an admin and as anyone else."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.bot.test_pipeline import ONE_MODEL, bot_spent, spend_row
from tests.conftest import Bot

ADMIN = "console:root"


async def admin_bot(make_bot: Any, **kw: Any) -> Bot:
    bot: Bot = await make_bot(admin_user_ids=ADMIN, model_catalog=ONE_MODEL, **kw)
    return bot


@pytest.mark.parametrize(
    "command", ["/stats", "/quota console:a", "/alerts", "/cache stats", "/cache clear", "/budget"]
)
async def test_a_non_admin_is_refused_and_audited(make_bot: Any, command: str) -> None:
    bot = await admin_bot(make_bot)
    turn = await bot.send(command, user="mallory")
    name = command.split()[0]
    assert turn.replies == [f"Sorry, {name} is for admins only."]
    [entry] = await bot.deps.db.audit_entries(bot.clock.now - timedelta(days=1))
    assert (entry.actor, entry.action, entry.details) == ("console:mallory", "command.refused", {"command": name})


async def test_help_lists_admin_commands_to_admins_only(make_bot: Any) -> None:
    bot = await admin_bot(make_bot)
    assert "/stats" in (await bot.send("/help", user="root")).replies[0]
    assert "/stats" not in (await bot.send("/help", user="someone")).replies[0]


async def test_stats_figures(make_bot: Any) -> None:
    bot = await admin_bot(make_bot)
    await spend_row(bot, "0.25", user="console:a")
    await spend_row(bot, "0.75", user="console:b")
    reply = (await bot.send("/stats month", user="root")).replies[0]
    assert reply.startswith("Stats (month, since 2026-11-01 00:00 UTC)")
    assert "Cost: $1.0000 (LLM $1.0000, channel fees $0.0000)" in reply
    assert "Top users: console:b $0.7500, console:a $0.2500" in reply
    assert "Users: 2 active; $0.5000 per user" in reply
    assert "Budget: $1.00 of $100.00 this month (1.0%)" in reply
    assert (await bot.send("/stats yesterday", user="root")).replies == ["Usage: /stats [today|week|month]"]


async def test_quota_show_set_clear_and_bad_arguments(make_bot: Any) -> None:
    bot = await admin_bot(make_bot)
    await spend_row(bot, "0.40", user="console:a")
    shown = (await bot.send("/quota console:a", user="root")).replies[0]
    assert "monthly usd: $0.4000 used of $10.0000" in shown
    done = (await bot.send("/quota console:a set monthly usd 0.41", user="root")).replies[0]
    assert "(own quota)" in done and "monthly usd: $0.4000 used of $0.4100" in done
    # takes effect at once: 0.40 of 0.41 is over 95 %
    assert (await bot.send("Hello?", user="a")).outcomes["budget"] == "blocked user month"
    [entry] = [e for e in await bot.deps.db.audit_entries(bot.clock.now - timedelta(days=1)) if e.action == "quota.set"]
    assert (entry.actor, entry.target) == ("console:root", "console:a")
    assert Decimal(entry.details["after"]["monthly_usd"]) == Decimal("0.41")
    tokens = (await bot.send("/quota console:a set daily tokens 5,000", user="root")).replies[0]
    assert "daily tokens: 20 tokens used of 5,000 tokens" in tokens and "$0.4100" in tokens  # the USD quota kept
    cleared = (await bot.send("/quota console:a set monthly usd none", user="root")).replies[0]
    assert "monthly usd: $0.4000 used of $10.0000" in cleared
    for bad in ("/quota", "/quota a", "/quota console:a set weekly usd 1", "/quota console:a set monthly usd lots",
                "/quota console:a set monthly usd -1", "/quota console:a put monthly usd 1"):  # fmt: skip
        assert (await bot.send(bad, user="root")).replies[0].split(".")[0].startswith(("Usage", "'lots'", "A limit"))


async def test_cache_alerts_and_budget(make_bot: Any) -> None:
    bot = await admin_bot(make_bot, global_monthly_limit=Decimal(1))
    await bot.send("What is the capital of France?", user="a")
    assert (await bot.send("/cache stats", user="root")).replies == [
        "Cache: 1 answers kept; 0 hits, 1 misses (0.0% hit rate)"]  # fmt: skip
    assert (await bot.send("/cache clear", user="root")).replies == ["Cache cleared: 1 answers removed."]
    assert (await bot.send("/cache wipe", user="root")).replies == ["Usage: /cache stats or /cache clear"]
    assert (await bot.send("/alerts", user="root")).replies == ["No alerts in the last 7 days."]
    await bot_spent(bot, "0.91", "console:z")
    budget = (await bot.send("/budget", user="root")).replies[0]
    assert "month: $0.91" in budget and "of $1.00" in budget
    assert budget.endswith("Degradation step: 2 (cheaper models, short context)")
