"""The policy simulator: prefix-cache billing, exact baselines, budgets across a month's end, the
CLI, and the targets on the shipped workload."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.settings import load_settings
from bot.simulate import report, simulate
from bot.workloads import Workload, WorkloadMessage, write_jsonl
from budget.money import quantize
from budget.tokens import TokenCounter
from providers.base import ChatMessage, CompletionRequest, Usage
from providers.simulated import SimulatedProvider
from tests.conftest import Bot

SHIPPED = Path(__file__).parents[2] / "workloads" / "month-1k.jsonl.gz"
SYSTEM = "You are pennybot, a helpful assistant. Answer clearly and briefly."
M = Decimal(1_000_000)
# List prices, dollars per million tokens (input, cached input, output).
GPT_4O_MINI = (Decimal("0.15"), Decimal("0.075"), Decimal("0.60"))
GPT_41 = (Decimal("2"), Decimal("0.50"), Decimal("8"))


def by_hand(price: tuple[Decimal, Decimal, Decimal], tokens_in: int, out: int, cached: int = 0) -> Decimal:
    inp, read, output = price
    return ((tokens_in - cached) * inp + cached * read + out * output) / M


def size(counter: TokenCounter, text: str) -> int:
    """A message's share of an OpenAI prompt: 3 framing tokens, the role (1 token), the content."""
    return 3 + 1 + counter.count_text(text)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_790_000_000.0

    def __call__(self) -> float:
        return self.t


# -- prefix-cache billing ----------------------------------------------------------------------


async def test_a_repeated_prefix_is_billed_as_cached_input(counter: TokenCounter) -> None:
    clock = FakeClock()
    provider = SimulatedProvider(
        count_prompt=lambda msgs, model: counter.prompt_tokens([counter.count(m) for m in msgs], model),
        count_text=counter.count_text,
        clock=clock,
    )
    system = ChatMessage("system", "Answer as a patient tutor. " + "Be concise and precise. " * 260)
    first = [system, ChatMessage("user", "What is a prime number?")]
    s0, s1 = size(counter, system.content), size(counter, first[1].content)
    assert s0 >= 1024

    async def usage(messages: list[ChatMessage], model: str = "gpt-4o-mini") -> Usage:
        return (await provider.complete(CompletionRequest(model, messages, 200))).usage

    one = await usage(first)
    assert (one.input_tokens, one.cache_read_tokens) == (3 + s0 + s1, 0)  # nothing seen yet
    again = await usage(first)
    assert again.cache_read_tokens == (s0 + s1) // 128 * 128  # whole messages, in steps of 128
    # A follow-up shares the previous prompt, up to its last message.
    answer = ChatMessage("assistant", provider.reply(first[1].content, 200))
    follow = [*first, answer, ChatMessage("user", "And 91?")]
    three = await usage(follow)
    assert three.cache_read_tokens == (s0 + s1) // 128 * 128
    assert three.input_tokens == 3 + s0 + s1 + size(counter, answer.content) + size(counter, "And 91?")
    # Billed exactly: cached tokens at the cached-input price.
    from budget.pricing import PriceBook

    book = PriceBook([("gpt-4o-mini", "openai", None), ("claude-haiku-4-5", "anthropic", None)])
    assert book.cost("gpt-4o-mini", three) == quantize(
        by_hand(GPT_4O_MINI, three.input_tokens, three.output_tokens, three.cache_read_tokens)
    )
    # Another model has its own cache; after 5 idle minutes the prefix is gone.
    assert (await usage(follow, "gpt-4.1")).cache_read_tokens == 0
    clock.t += 301
    assert (await usage(follow)).cache_read_tokens == 0
    # Claude caches from a minimum that depends on the model (Claude is counted by its bytes here,
    # an upper bound): this prompt is over Sonnet 4.5's 1,024 and under Haiku 4.5's 4,096.
    middle = [ChatMessage("system", "Be concise. " * 150), ChatMessage("user", "What is a prime number?")]
    for model, written in (("claude-haiku-4-5", False), ("claude-sonnet-4-5", True)):
        got = [await usage(middle, model) for _ in range(2)]
        assert 1024 <= got[0].input_tokens < 4096
        flags = [(u.cache_write_tokens > 0, u.cache_read_tokens > 0) for u in got]
        assert flags == [(written, False), (False, written)]
    assert (await usage(first, "claude-haiku-4-5")).cache_read_tokens == 0
    short = [ChatMessage("system", "Be brief."), ChatMessage("user", "hi")]
    await usage(short)
    assert (await usage(short)).cache_read_tokens == 0


SONNET_45 = (Decimal("3"), Decimal("0.30"), Decimal("3.75"), Decimal("6"), Decimal("15"))  # 5m and 1h writes


@pytest.mark.parametrize("ttl", ["5m", "1h"])
async def test_claude_bills_the_breakpoints_writes_and_reads(counter: TokenCounter, ttl: Any) -> None:
    clock = FakeClock()
    provider = SimulatedProvider(
        count_prompt=lambda msgs, model: counter.prompt_tokens([counter.count(m) for m in msgs], model),
        count_text=counter.count_text, clock=clock, anthropic_cache=ttl,
    )  # fmt: skip
    model = "claude-sonnet-4-5"  # caches from 1,024 tokens
    system = ChatMessage("system", "Answer as a patient tutor. " + "Be concise and precise. " * 260)
    first = [system, ChatMessage("user", "What is a prime number?")]

    async def usage(messages: list[ChatMessage], cache_prompt: bool = True) -> Usage:
        return (await provider.complete(CompletionRequest(model, messages, 200, cache_prompt=cache_prompt))).usage

    one = await usage(first)  # nothing written before: the whole prompt is written
    assert one.input_tokens >= 1024
    assert (one.cache_read_tokens, one.cache_write_tokens) == (0, one.input_tokens)
    assert one.cache_write_1h_tokens == (one.input_tokens if ttl == "1h" else 0)
    answer = ChatMessage("assistant", provider.reply(first[1].content, 200))
    follow = [*first, answer, ChatMessage("user", "And 91?")]
    two = await usage(follow)  # the first prompt is read back; only the reply and question are written
    assert two.cache_read_tokens == one.input_tokens
    assert two.cache_write_tokens == two.input_tokens - one.input_tokens > 0
    from budget.pricing import PriceBook

    _, read, write_5m, write_1h, out = SONNET_45  # no input at the full price: read or written
    write = write_1h if ttl == "1h" else write_5m
    fresh = two.input_tokens - two.cache_read_tokens - two.cache_write_tokens
    assert fresh == 0
    expected = (two.cache_read_tokens * read + two.cache_write_tokens * write + two.output_tokens * out) / M
    assert PriceBook([(model, "anthropic", None)]).cost(model, two) == quantize(expected)
    # A one-off prompt (a summary) sets no breakpoint: neither read nor written.
    assert (await usage(follow, cache_prompt=False)).cache_read_tokens == 0
    # Idle past the TTL, the prefix is gone and written again; within it, each use starts it again.
    clock.t += 299 if ttl == "5m" else 3599
    assert (await usage(follow)).cache_read_tokens == two.input_tokens
    clock.t += 301 if ttl == "5m" else 3601
    gone = await usage(follow)
    assert (gone.cache_read_tokens, gone.cache_write_tokens) == (0, gone.input_tokens)
    # Too short for the model: nothing cached.
    short = [ChatMessage("system", "Be brief."), ChatMessage("user", "hi")]
    assert (await usage(short)).cache_write_tokens == 0 and (await usage(short)).cache_read_tokens == 0


async def test_claude_caches_nothing_with_the_setting_off(counter: TokenCounter) -> None:
    provider = SimulatedProvider(
        count_prompt=lambda msgs, model: counter.prompt_tokens([counter.count(m) for m in msgs], model),
        count_text=counter.count_text, anthropic_cache="off",
    )  # fmt: skip
    prompt = [ChatMessage("system", "Be concise and precise. " * 300), ChatMessage("user", "hi")]
    for _ in range(2):
        got = (await provider.complete(CompletionRequest("claude-sonnet-4-5", prompt, 50))).usage
        assert (got.cache_read_tokens, got.cache_write_tokens) == (0, 0)


async def test_the_pipeline_records_cached_input_on_the_bots_clock(make_bot: Any) -> None:
    long_system = "You are a patient tutor. " + "Explain with care and check each step. " * 150
    bot: Bot = await make_bot(
        system_prompt=long_system, model_catalog=[{"provider": "simulated", "model": "gpt-4o-mini", "tier": "cheap"}]
    )
    await bot.send("What is a prime number?")
    bot.clock.advance(seconds=40)
    turn = await bot.send("And is 91 one?")
    row = (await bot.deps.db.requests(bot.clock.now - timedelta(days=1), bot.clock.now + timedelta(days=1)))[-1]
    assert row.usage.cache_read_tokens > 1024 and row.usage.cache_read_tokens % 128 == 0
    assert row.cost == quantize(
        by_hand(GPT_4O_MINI, row.usage.input_tokens, row.usage.output_tokens, row.usage.cache_read_tokens)
    )
    assert turn.usage == row.usage
    bot.clock.advance(minutes=6)
    await bot.send("And 97?")
    last = (await bot.deps.db.requests(bot.clock.now - timedelta(days=1), bot.clock.now + timedelta(days=1)))[-1]
    assert last.usage.cache_read_tokens == 0  # expired on the bot's clock, not the wall clock


# -- exact figures on a tiny workload ----------------------------------------------------------

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
TINY = [
    WorkloadMessage(T0, "1", "telegram", "What is the capital of France?"),
    WorkloadMessage(
        T0 + timedelta(seconds=30), "1", "telegram", "Compare Python and Go for a web backend, with pros and cons."
    ),
    WorkloadMessage(T0 + timedelta(seconds=60), "2", "telegram", "what is the capital of france?"),
    WorkloadMessage(T0 + timedelta(seconds=90), "2", "telegram", "What is the capital of France"),
    WorkloadMessage(T0 + timedelta(seconds=95), "2", "telegram", "", "photo"),
]


async def test_naive_and_plain_baselines_by_hand(counter: TokenCounter) -> None:
    result = await simulate(load_settings(None), TINY, counter=counter)
    reply = SimulatedProvider(count_prompt=lambda m, model: 0, count_text=counter.count_text).reply
    q = [m.text for m in TINY[:4]]
    r = [reply(text, 1024) for text in q]
    out = [counter.count_text(x) for x in r]
    sys_ = size(counter, SYSTEM)
    s = [size(counter, x) for x in q]
    a = [size(counter, x) for x in r]
    # Naive: gpt-4.1 with the whole conversation; every prompt is under 1,024 tokens (no prefix cache).
    naive = (
        by_hand(GPT_41, 3 + sys_ + s[0], out[0])
        + by_hand(GPT_41, 3 + sys_ + s[0] + a[0] + s[1], out[1])
        + by_hand(GPT_41, 3 + sys_ + s[2], out[2])
        + by_hand(GPT_41, 3 + sys_ + s[2] + a[2] + s[3], out[3])
    )
    assert result.naive.cost == naive and result.naive.calls == 4
    # Plain: cheap for the simple question, premium for the complex one; user 2's first question is
    # the same lowercased (a cache hit, whose answer joins the history); the one without "?" is not.
    plain = (
        by_hand(GPT_4O_MINI, 3 + sys_ + s[0], out[0])
        + by_hand(GPT_41, 3 + sys_ + s[0] + a[0] + s[1], out[1])
        + by_hand(GPT_4O_MINI, 3 + sys_ + s[2] + a[0] + s[3], out[3])
    )
    assert result.plain.cost == plain
    assert (result.plain.calls, result.plain.cache_hits, result.plain.answered) == (3, 1, 4)
    # Each model's share, with the tokens it was billed for (no prompt here reaches the prefix cache).
    cheap_in, premium_in = [3 + sys_ + s[0], 3 + sys_ + s[2] + a[0] + s[3]], 3 + sys_ + s[0] + a[0] + s[1]
    by_model = {m: (c.calls, c.input_tokens, c.cached_input_tokens, c.output_tokens, c.cost)
                for m, c in result.plain.by_model.items()}  # fmt: skip
    assert by_model == {
        "gpt-4o-mini": (2, sum(cheap_in), 0, out[0] + out[3], plain - by_hand(GPT_41, premium_in, out[1])),
        "gpt-4.1": (1, premium_in, 0, out[1], by_hand(GPT_41, premium_in, out[1])),
    }
    assert (result.plain.input_tokens, result.plain.output_tokens) == (sum(cheap_in) + premium_in, sum(out) - out[2])
    # pennybot: both of user 2's spellings are served from the cache (normalized, self-contained).
    pb = result.pennybot
    assert (pb.calls, pb.cache_hits, pb.answered, result.messages) == (2, 2, 4, 5)
    assert pb.by_model.keys() == {"gpt-4o-mini", "gpt-4.1"}
    data = report(result, "tiny")
    assert data["cost_usd"] == str(pb.cost)
    assert data["cost_per_message_usd"] == str(quantize(pb.cost / 5))
    assert data["cache_hit_rate"] == 0.5
    assert Decimal(data["baselines"]["naive"]["cost_usd"]) == naive
    assert data["limits_passed"] == [] and data["out_of_order"] == 0


async def test_pennybot_cost_is_its_ledger(counter: TokenCounter) -> None:
    """Every figure comes from the ai_request rows the pipeline wrote, priced at list prices: each
    model's cost is its billed tokens at its list price, and the totals are the models' sums."""
    settings = load_settings(None, database_url="memory://")
    result = await simulate(settings, TINY[:2], counter=counter)
    pb = result.pennybot
    prices = {"gpt-4o-mini": GPT_4O_MINI, "gpt-4.1": GPT_41}
    assert {m: c.calls for m, c in pb.by_model.items()} == {"gpt-4o-mini": 1, "gpt-4.1": 1}
    for model, c in pb.by_model.items():
        assert c.input_tokens > c.cached_input_tokens == 0 and c.output_tokens > 0
        assert c.cost == by_hand(prices[model], c.input_tokens, c.output_tokens)
    assert pb.cost == sum((c.cost for c in pb.by_model.values()), Decimal(0))
    assert pb.input_tokens == sum(c.input_tokens for c in pb.by_model.values())
    assert pb.output_tokens == sum(c.output_tokens for c in pb.by_model.values())
    data = report(result, "tiny")["by_model"]
    assert data["gpt-4.1"] == {
        "calls": 1, "cost_usd": str(pb.by_model["gpt-4.1"].cost), "input_tokens": pb.by_model["gpt-4.1"].input_tokens,
        "cached_input_tokens": 0, "output_tokens": pb.by_model["gpt-4.1"].output_tokens,
    }  # fmt: skip


async def test_budgets_roll_over_at_the_month_and_are_never_passed(counter: TokenCounter) -> None:
    # A user whose monthly budget covers a few answers, near the end of October, then in November.
    start = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)
    messages = [
        WorkloadMessage(start + timedelta(minutes=2 * i), "9", "whatsapp", f"What is the capital of country {i}?")
        for i in range(40)
    ] + [WorkloadMessage(datetime(2026, 11, 1, 9, 0, tzinfo=UTC), "9", "whatsapp", "What is the capital of Peru?")]
    settings = load_settings(None, user_monthly_limit=Decimal("0.0008"), global_monthly_limit=Decimal("5"))
    result = await simulate(settings, messages, counter=counter)
    pb = result.pennybot
    assert result.limits_passed == []
    assert pb.users_warned == {"whatsapp:9"} and pb.users_blocked == {"whatsapp:9"}
    # Refused at the gate (95 %) or when not even a minimal reply's worst case fits what is left.
    refusals = result.outcomes.get("budget: blocked user month", 0) + result.outcomes["answer: over budget"]
    assert pb.refused == refusals > 0
    assert pb.month_spend["2026-10"] <= Decimal("0.0008") and pb.month_spend["2026-11"] > 0  # answered again
    assert result.plain.users_blocked == {"whatsapp:9"}  # the plain bot blocks at 95 % of what it spent


async def test_the_bots_budget_is_never_passed(counter: TokenCounter) -> None:
    start = datetime(2026, 11, 5, 10, 0, tzinfo=UTC)
    messages = [
        WorkloadMessage(start + timedelta(seconds=20 * i), str(i % 7), "telegram", f"How do I learn topic {i}?")
        for i in range(60)
    ]
    settings = load_settings(None, global_monthly_limit=Decimal("0.01"), user_monthly_limit=None)
    result = await simulate(settings, messages, counter=counter)
    data = report(result, "x")
    assert result.limits_passed == []
    assert 0.8 <= data["global_budget_peak"] <= 1
    assert result.outcomes.get("answer: cache only", 0) > 0  # the ladder's last step was reached
    assert data["baselines"]["naive"]["global_budget_peak"] > 1  # no limits: it overspends


# -- the CLI -----------------------------------------------------------------------------------


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=clean | env,
    )  # fmt: skip


def test_simulate_json_keys_and_forced_simulation(tmp_path: Path) -> None:
    path = tmp_path / "tiny.jsonl"
    write_jsonl(TINY, path)
    # Keys set: the simulator must still never call a real LLM (the guard would not stop a subprocess).
    done = cli(tmp_path, "simulate", "--workload", str(path), "--format", "json",
               OPENAI_API_KEY="sk-must-not-be-used", ANTHROPIC_API_KEY="sk-ant-nope",
               DATABASE_URL=f"sqlite:///{tmp_path}/prod.db")  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    for key in ("messages", "ai_calls", "cost_usd", "cost_per_message_usd", "cache_hit_rate", "users_warned",
                "users_blocked"):  # fmt: skip
        assert key in data
    assert data["baselines"]["naive"]["cost_usd"] and data["baselines"]["plain"]["cost_usd"]
    assert data["messages"] == 5 and data["provider"].startswith("simulated (forced")
    assert all(m.startswith("simulated/") for m in data["models"])
    # Both keys set: the catalog has OpenAI's and Anthropic's models, each billed at its own prices.
    assert any("claude" in m and "billed as anthropic" in m for m in data["models"])
    assert not (tmp_path / "prod.db").exists()  # the configured database was left alone


def test_simulate_table_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "tiny.jsonl"
    write_jsonl(TINY, path)
    done = cli(tmp_path, "simulate", "--workload", str(path))
    assert done.returncode == 0, done.stderr
    assert "pennybot simulate" in done.stdout and "cost per message" in done.stdout
    assert "limits passed: none" in done.stdout and "simulated (forced" in done.stdout
    # AI calls by model: pennybot's two (one each), naive's four on gpt-4.1, plain's 2 + 1.
    rows = [line.split("│")[1:4] for line in done.stdout.splitlines() if line.startswith("│") and "gpt-" in line]
    assert [[c.strip() for c in row] for row in rows] == [
        ["pennybot", "gpt-4.1", "1"], ["pennybot", "gpt-4o-mini", "1"], ["naive", "gpt-4.1", "4"],
        ["plain", "gpt-4.1", "1"], ["plain", "gpt-4o-mini", "2"],
    ]  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ts": "2026-11-01T00:00:00Z"}\n')
    done = cli(tmp_path, "simulate", "--workload", str(bad))
    assert done.returncode == 2 and done.stderr.strip() == f"pennybot: {bad}:1: 'user' is missing or not a string"


def test_workload_generate_command(tmp_path: Path) -> None:
    done = cli(tmp_path, "workload", "generate", "--users", "20", "--messages", "300", "--seed", "5",
               "--out", "w.jsonl")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "300 messages from 20 users over 2026-11 written to w.jsonl"
    assert len(list(Workload(tmp_path / "w.jsonl"))) == 300
    done = cli(tmp_path, "workload", "generate", "--users", "20", "--messages", "10", "--out", "w.jsonl")
    assert done.returncode == 2 and "--messages must be at least --users" in done.stderr


# -- the targets on the shipped workload -------------------------------------------------------


def slice_of_shipped() -> list[WorkloadMessage]:
    """A deterministic tenth of the shipped workload: every user whose number ends in 0 (one of
    them heavy), all of their messages. The full month takes longer than the suite allows."""
    return [m for m in Workload(SHIPPED) if m.user.endswith("0")]


@pytest.fixture(scope="module")
def shipped_result() -> Any:
    import asyncio

    settings = load_settings(Path(__file__).parents[2] / "workloads" / "month-1k.env")
    return report(asyncio.run(simulate(settings, slice_of_shipped())), "slice")


def test_shipped_workload_keeps_every_limit_and_beats_naive(shipped_result: dict[str, Any]) -> None:
    data = shipped_result
    assert data["limits_passed"] == []
    assert data["users_warned"] >= 1  # a heavy user reaches 80 % of the monthly limit
    assert data["vs_naive"] <= 0.10


@pytest.mark.xfail(strict=True, reason="not met by the current pipeline; see BENCHMARKS.md (policy simulator)")
def test_shipped_workload_cost_targets(shipped_result: dict[str, Any]) -> None:
    assert Decimal(shipped_result["cost_per_message_usd"]) < Decimal("0.0005")
    assert shipped_result["vs_plain"] <= 0.75
