"""``pennybot simulate``: replay a workload through the real pipeline, on an accelerated clock, with
the simulated provider, and price two baselines (bot.baselines) on the same messages.

No real LLM is ever called: whatever the configuration says, every model of the catalog is played
by the simulated provider, billed at that model's list price. The stores are in memory unless
asked otherwise (a replay writes a month of spend that never happened into them).
The clock follows the workload's timestamps, so budget days and months roll over as they would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bot.baselines import Asked, Naive, Plain, Tally, cheapest, month_key
from bot.factory import build, catalog_of, close
from bot.pipeline import Pipeline
from bot.settings import Settings
from bot.turn import Inbound, Turn
from bot.workloads import WorkloadMessage
from budget.complexity import classify
from budget.money import ZERO, quantize, to_nano
from budget.outbox import Recorder
from budget.periods import Period
from budget.records import AIRequest, Kind, Spend, Status
from budget.rules import Thresholds
from budget.tokens import TokenCounter
from providers.base import ChatMessage
from providers.catalog import Tier
from providers.simulated import SimulatedProvider

FORCED = "simulated (forced: no real LLM is called; each model is played offline and billed at its list price)"


class SimClock:
    """The replay's clock: set from each message's timestamp, never moved backwards."""

    def __init__(self) -> None:
        self.now = datetime.fromtimestamp(0).astimezone()

    def __call__(self) -> datetime:
        return self.now


def simulation_settings(settings: Settings, *, keep_stores: bool = False) -> Settings:
    """The operator's settings with every model played by the simulated provider (keys dropped,
    list prices kept) and, unless ``keep_stores``, in-memory stores."""
    catalog = [
        {"provider": "simulated", "model": s.model, "tier": s.tier.value, "price_provider": s.price_provider}
        | ({"price": dict(s.price)} if s.price else {})
        for s in catalog_of(settings)
    ]
    changes: dict[str, Any] = {"model_catalog": catalog, "openai_api_key": None, "anthropic_api_key": None,
                               "simulated_latency_ms": 0, "log_message_text": False}  # fmt: skip
    if not keep_stores:
        changes |= {"database_url": "memory://", "redis_url": "memory://", "supabase_url": None,
                    "supabase_service_role_key": None}  # fmt: skip
    return settings.model_copy(update=changes)


class _Tap:
    """The pipeline's recorder, counting every ai_request row on its way to the ledger."""

    def __init__(self, inner: Recorder, on_row: Callable[[AIRequest], None]) -> None:
        self.inner = inner
        self.on_row = on_row

    async def record(self, rows: Sequence[AIRequest]) -> None:
        await self.inner.record(rows)
        for row in rows:
            self.on_row(row)

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend:
        return await self.inner.spend(user_key, start, end)

    async def recorded(self, request_ids: Collection[str]) -> set[str]:
        return await self.inner.recorded(request_ids)

    async def flush(self) -> int:
        return await self.inner.flush()

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(slots=True)
class Result:
    """The replay's figures: pennybot's and the two baselines'."""

    messages: int
    pennybot: Tally
    naive: Tally
    plain: Tally
    summary_calls: int
    summary_cost: Decimal
    tokens_saved: int  # prompt tokens folding and trimming kept out, against the whole history
    rate_limited: int
    global_limit: Decimal | None
    limits_passed: list[str]
    models: list[str]
    seconds: float
    out_of_order: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


async def simulate(
    settings: Settings,
    workload: Iterable[WorkloadMessage],
    *,
    counter: TokenCounter | None = None,
    progress: Callable[[int], None] | None = None,
    keep_stores: bool = False,
) -> Result:
    """Replay ``workload`` (in time order) and price it three ways."""
    started = time.perf_counter()
    settings = simulation_settings(settings, keep_stores=keep_stores)
    clock = SimClock()
    counter = counter or TokenCounter()
    built = build(settings, clock=clock, counter=counter)
    d = built.deps
    await d.db.migrate()
    pennybot = Tally()
    per_user: dict[tuple[str, str, str], Decimal] = {}  # (user, period, key) -> spend, from the ledger
    summaries: list[Decimal] = []  # the cost of each summary call

    def on_row(row: AIRequest) -> None:
        month = d.calendar.window(Period.MONTH, row.created_at).key
        if row.status is Status.CACHED:
            pennybot.cache_hits += 1
        elif row.status is Status.OK:
            pennybot.call(row.model, row.usage, row.cost, month)
            if row.kind is Kind.SUMMARY:
                summaries.append(row.cost)
        day = d.calendar.window(Period.DAY, row.created_at).key
        for who in (row.user_key, ""):
            for period, key in (("day", day), ("month", month)):
                per_user[(who, period, key)] = per_user.get((who, period, key), ZERO) + row.cost

    d.recorder = _Tap(d.recorder, on_row)
    pipeline = Pipeline(d)
    premium, cheap = cheapest(built.catalog, Tier.PREMIUM, d.prices), cheapest(built.catalog, Tier.CHEAP, d.prices)
    naive = Naive(premium, d.prices, counter, d.system)
    plain = Plain(
        cheap, premium, d.prices, counter, d.system,
        limits=d.budget.limits, thresholds=Thresholds(settings.warning_threshold, settings.critical_threshold),
        calendar=d.calendar, token_cap=settings.context_token_cap,
        cache_ttl_s=settings.cache_ttl, cache_size=settings.max_cache_size,
    )  # fmt: skip
    replier = SimulatedProvider(count_prompt=lambda m, model: 0, count_text=counter.count_text)
    history: dict[str, int] = {}  # user -> prompt tokens of every turn pennybot stored for them
    outcomes: dict[str, int] = {}
    saved = rate_limited = out_of_order = n = 0
    try:
        for n, msg in enumerate(workload, 1):
            if msg.ts < clock.now:
                out_of_order += 1  # replayed at the time of the message before it
            else:
                clock.now = msg.ts
            inbound = Inbound(msg.channel, msg.user, msg.user, f"sim-{n}", msg.text, msg.kind)
            turn = await pipeline.handle(inbound)
            await pipeline.done(turn)
            _count_outcomes(turn, pennybot, outcomes)
            rate_limited += "rate_limit" in turn.outcomes
            saved += _saved(turn, history, counter)
            if msg.kind == "text" and msg.text.strip() and not msg.text.startswith("/"):
                asked = Asked(
                    turn.user, msg.text, counter.count(ChatMessage("user", msg.text)),
                    counter.count(ChatMessage("assistant", replier.reply(msg.text, settings.max_reply_tokens))),
                    classify(msg.text), clock.now,
                )  # fmt: skip
                month = month_key(d.calendar, clock.now)
                naive.add(asked, month)
                plain.add(asked, month)
            if progress is not None:
                progress(n)
    finally:
        await close(d)
    return Result(
        messages=n,
        pennybot=pennybot,
        naive=naive.tally,
        plain=plain.tally,
        summary_calls=len(summaries),
        summary_cost=sum(summaries, ZERO),
        tokens_saved=saved,
        rate_limited=rate_limited,
        global_limit=d.budget.limits.global_monthly_usd,
        limits_passed=_passed(per_user, d.budget.limits),
        models=[f"{s.name} ({s.tier.value}, billed as {s.price_provider})" for s in built.catalog],
        seconds=time.perf_counter() - started,
        out_of_order=out_of_order,
        outcomes=outcomes,
    )


def _count_outcomes(turn: Turn, tally: Tally, outcomes: dict[str, int]) -> None:
    """Users warned and blocked, as the pipeline's stages report them."""
    budget = turn.outcomes.get("budget", "")
    answer = turn.outcomes.get("answer", "")
    if budget.startswith("warn user"):
        tally.users_warned.add(turn.user)
    if budget.startswith("blocked user") or answer == "over budget":
        tally.users_blocked.add(turn.user)
    if budget.startswith("blocked user") or answer in ("over budget", "cache only"):
        tally.refused += 1
    if turn.answer is not None:
        tally.answered += 1
    for key in ("budget", "ladder", "cache", "answer", "kind", "command", "rate_limit", "context"):
        value = turn.outcomes.get(key)
        if value is not None:
            word = value.split(" $")[0] if key == "answer" else value
            if key in ("context", "rate_limit"):
                word = "too long" if value == "too long" else key
            outcomes[f"{key}: {word}"] = outcomes.get(f"{key}: {word}", 0) + 1


def _saved(turn: Turn, history: dict[str, int], counter: TokenCounter) -> int:
    """Prompt tokens this answer did without, against a prompt with the user's whole history
    (what folding and trimming kept out); then the exchange joins that history."""
    if turn.outcomes.get("command") == "/reset":
        history.pop(turn.user, None)
    if turn.answer is None:
        return 0
    overhead = 4  # per message, as pennybot counts the prompt: 3 framing tokens and the role
    whole = history.get(turn.user, 0)
    saved = 0
    if turn.prompt:  # answered by a model (a cache hit has no prompt)
        actual = sum(c.tokens + overhead for c in turn.prompt[1:-1])
        saved = max(0, whole - actual)
    asked = turn.message.tokens if turn.message else counter.count_text(turn.inbound.text)
    history[turn.user] = whole + asked + counter.count_text(turn.answer) + 2 * overhead
    return saved


def _passed(spend: dict[tuple[str, str, str], Decimal], limits: Any) -> list[str]:
    """Every budget a spend went over (there should be none)."""
    bad = []
    for (who, period, key), used in sorted(spend.items()):
        limit = (
            (limits.global_daily_usd if period == "day" else limits.global_monthly_usd)
            if who == ""
            else (limits.user_daily_usd if period == "day" else limits.user_monthly_usd)
        )
        if limit is not None and to_nano(used) > to_nano(limit):
            bad.append(f"{who or 'the bot'} {period} {key}: spent {used} of {limit}")
    return bad


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _per(cost: Decimal, n: int) -> Decimal:
    return quantize(cost / n) if n else ZERO


def _peak(t: Tally, limit: Decimal | None) -> float | None:
    if not limit:
        return None
    return round(float(max(t.month_spend.values(), default=ZERO) / limit), 4)


def figures(t: Tally, messages: int, global_limit: Decimal | None) -> dict[str, Any]:
    """One bot's figures, money as exact decimal strings."""
    return {
        "ai_calls": t.calls,
        "cost_usd": str(t.cost),
        "cost_per_message_usd": str(_per(t.cost, messages)),
        "cache_hits": t.cache_hits,
        "cache_hit_rate": _rate(t.cache_hits, t.answered),
        "cache_hits_on_follow_ups": t.follow_up_hits,
        "input_tokens": t.input_tokens,
        "cached_input_tokens": t.cached_input_tokens,
        "output_tokens": t.output_tokens,
        "users_warned": len(t.users_warned),
        "users_blocked": len(t.users_blocked),
        "messages_refused": t.refused,
        "global_budget_peak": _peak(t, global_limit),
        "by_model": {
            m: {
                "calls": c.calls,
                "cost_usd": str(c.cost),
                "input_tokens": c.input_tokens,
                "cached_input_tokens": c.cached_input_tokens,
                "output_tokens": c.output_tokens,
            }
            for m, c in sorted(t.by_model.items())
        },
    }


def report(result: Result, workload: str) -> dict[str, Any]:
    """The JSON report (``--format json``)."""
    r = result
    out: dict[str, Any] = {
        "workload": workload,
        "provider": FORCED,
        "models": r.models,
        "messages": r.messages,
        **figures(r.pennybot, r.messages, r.global_limit),
        "summary_calls": r.summary_calls,
        "summary_cost_usd": str(r.summary_cost),
        "tokens_saved_by_context": r.tokens_saved,
        "rate_limited": r.rate_limited,
        "limits_passed": r.limits_passed,
        "out_of_order": r.out_of_order,
        "outcomes": dict(sorted(r.outcomes.items())),
        "baselines": {
            "naive": figures(r.naive, r.messages, r.global_limit),
            "plain": figures(r.plain, r.messages, r.global_limit),
        },
        "vs_naive": _ratio(r.pennybot.cost, r.naive.cost),
        "vs_plain": _ratio(r.pennybot.cost, r.plain.cost),
        "run_seconds": round(r.seconds, 1),
    }
    return out


def _ratio(a: Decimal, b: Decimal) -> float | None:
    return round(float(a / b), 4) if b else None
