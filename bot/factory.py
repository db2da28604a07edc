"""Assemble the bot from settings, in one place (as python-telegram-bot's ApplicationBuilder)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from bot.conversations import Conversations
from bot.jobs import RATE_LIMITED_TTL_S
from bot.settings import Settings
from bot.texts import load_texts
from bot.turn import Deps
from budget.cache import AnswerCache
from budget.context import ContextPolicy
from budget.journal import Journal
from budget.ledger import Budget, Limits
from budget.outbox import DirectRecorder, OutboxRecorder, Recorder
from budget.periods import Calendar
from budget.pricing import Price, PriceBook
from budget.ratelimit import RateLimiter, Refusals
from budget.rules import Ladder, Thresholds
from budget.stores import open_database, open_hot_store, open_supabase
from budget.tokens import TokenCounter
from providers.base import ChatMessage, Provider
from providers.catalog import ModelSpec, default_catalog, parse_catalog
from providers.router import Router
from providers.simulated import SimulatedProvider

PRICE_FIELDS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cached_input": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}


@dataclass(frozen=True, slots=True)
class Built:
    deps: Deps
    catalog: list[ModelSpec]
    simulated: bool


def catalog_of(settings: Settings) -> list[ModelSpec]:
    if settings.model_catalog:
        return parse_catalog(settings.model_catalog)
    return default_catalog(settings.providers_on)


def _price(spec: ModelSpec) -> Price | None:
    if spec.price is None:
        return None
    unknown = set(spec.price) - set(PRICE_FIELDS)
    if unknown or "input" not in spec.price or "output" not in spec.price:
        raise ValueError(
            f"MODEL_CATALOG price of {spec.model}: give input and output (and optionally "
            f"cached_input, cache_write, cache_write_1h) in USD per million tokens"
        )
    return Price(**{PRICE_FIELDS[k]: Decimal(v) for k, v in spec.price.items()})


def _providers(
    settings: Settings, catalog: list[ModelSpec], counter: TokenCounter, clock: Callable[[], datetime]
) -> dict[str, Provider]:
    wanted = {s.provider for s in catalog}
    made: dict[str, Provider] = {}
    timeout, retries = settings.llm_timeout_s, settings.llm_max_retries
    for name in wanted:
        if name == "openai":
            from providers.openai_api import OpenAIProvider

            key = settings.openai_api_key
            made[name] = OpenAIProvider(
                api_key=key.get_secret_value() if key else "",
                base_url=settings.openai_base_url,
                timeout_s=timeout,
                max_retries=retries,
            )
        elif name == "anthropic":
            from providers.anthropic_api import AnthropicProvider

            key = settings.anthropic_api_key
            made[name] = AnthropicProvider(
                api_key=key.get_secret_value() if key else "",
                base_url=settings.anthropic_base_url,
                timeout_s=timeout,
                max_retries=retries,
                prompt_cache=settings.anthropic_prompt_cache,
            )
        elif name == "simulated":
            made[name] = SimulatedProvider(
                count_prompt=lambda msgs, model: counter.prompt_tokens([counter.count(m) for m in msgs], model),
                count_text=counter.count_text,
                latency_s=settings.simulated_latency_ms / 1000,
                clock=lambda: clock().timestamp(),  # its prompt-prefix cache expires on the bot's clock
                anthropic_cache=settings.anthropic_prompt_cache,
            )
        else:
            raise ValueError(f"MODEL_CATALOG names unknown provider {name!r} (openai, anthropic, simulated)")
    return made


def build(
    settings: Settings,
    *,
    clock: Callable[[], datetime] | None = None,
    providers: Mapping[str, Provider] | None = None,
    counter: TokenCounter | None = None,
) -> Built:
    """Everything the pipeline needs. Unknown models without a configured price fail here,
    at start-up, not on the first message."""
    counter = counter or TokenCounter()
    now = clock or (lambda: datetime.now(UTC))
    catalog = catalog_of(settings)
    prices = PriceBook([(s.model, s.price_provider, _price(s)) for s in catalog])
    made = dict(providers) if providers is not None else _providers(settings, catalog, counter, now)
    router = Router(catalog, made, lambda s: prices.worst_case(s.model, 1000, 1000))
    if settings.uses_supabase_rest:
        assert settings.supabase_url and settings.supabase_service_role_key
        db = open_supabase(settings.supabase_url, settings.supabase_service_role_key.get_secret_value())
        local = False
    else:
        db = open_database(settings.database_url)
        local = settings.database_url.startswith(("sqlite", "memory"))
    # A network database gets the durable outbox: no message waits on it, none is lost when it is down.
    recorder: Recorder = DirectRecorder(db) if local else OutboxRecorder(db, settings.outbox_path)
    hot = open_hot_store(settings.redis_url)
    if settings.redis_url.startswith(("redis://", "rediss://")) and not local and not settings.uses_supabase_rest:
        # Redis unreachable: budget checks move to counters in Postgres (slower, still exact across
        # processes) rather than spending unchecked.
        from budget.stores.failover import FailoverHotStore

        hot = FailoverHotStore(hot, open_hot_store(settings.database_url))
    calendar = Calendar(settings.budget_timezone)
    limits = Limits(
        user_daily_usd=settings.cost_daily_limit,
        user_monthly_usd=settings.user_monthly_limit,
        user_daily_tokens=settings.token_daily_limit,
        user_monthly_tokens=settings.token_monthly_limit,
        global_daily_usd=settings.global_daily_limit,
        global_monthly_usd=settings.global_monthly_limit,
    )
    # A reservation outlives its call only if its task was lost; it expires after the longest
    # a call can take with its retries.
    ttl = int(settings.llm_timeout_s * (settings.llm_max_retries + 1) * len(catalog)) + 60
    deps = Deps(
        settings=settings,
        db=db,
        recorder=recorder,
        hot=hot,
        budget=Budget(hot, recorder, calendar, limits, ttl, quotas=db),
        limiter=RateLimiter(hot, settings.rate_limit_per_minute),
        refusals=Refusals(hot, RATE_LIMITED_TTL_S),
        cache=AnswerCache(hot, settings.cache_ttl, settings.max_cache_size),
        counter=counter,
        prices=prices,
        router=router,
        texts=load_texts(settings.texts_file),
        calendar=calendar,
        thresholds=Thresholds(settings.warning_threshold, settings.critical_threshold),
        ladder=Ladder(settings.degrade_cheaper_at, settings.degrade_shorter_at, settings.degrade_cache_only_at),
        policy=ContextPolicy(token_cap=settings.context_token_cap),
        system=counter.count(ChatMessage("system", settings.system_prompt)),
        persona=hashlib.sha256(settings.system_prompt.encode()).hexdigest()[:16],
        clock=now,
        log=logging.getLogger("pennybot"),
        journal=None if local else Journal(settings.outbox_path),
        conversations=None if local else Conversations(),
    )
    return Built(deps, catalog, simulated=all(s.provider == "simulated" for s in catalog))


async def close(deps: Deps) -> None:
    for provider in deps.router.providers.values():
        await provider.aclose()
    await deps.recorder.aclose()
    await deps.cache.aclose()
    await deps.refusals.aclose()
    await deps.hot.aclose()
    await deps.db.aclose()
    if deps.journal is not None:
        deps.journal.close()
