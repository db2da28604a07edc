"""The model catalog: which models the bot may use, on which provider, in which tier."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Tier(StrEnum):
    CHEAP = "cheap"
    STANDARD = "standard"
    PREMIUM = "premium"

    def cheaper(self) -> Tier:
        order = list(Tier)
        return order[max(order.index(self) - 1, 0)]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One usable model. ``price_provider`` names whose price list bills it (genai-prices id);
    ``price`` overrides it with per-million-token rates as strings (input, output, cached_input,
    cache_write, cache_write_1h)."""

    provider: str
    model: str
    tier: Tier
    price_provider: str
    price: Mapping[str, str] | None = field(default=None, hash=False)

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


DEFAULT_MODELS: dict[str, list[tuple[Tier, str]]] = {
    "openai": [(Tier.CHEAP, "gpt-4o-mini"), (Tier.STANDARD, "gpt-4.1-mini"), (Tier.PREMIUM, "gpt-4.1")],
    "anthropic": [
        (Tier.CHEAP, "claude-haiku-4-5"),
        (Tier.STANDARD, "claude-haiku-4-5"),
        (Tier.PREMIUM, "claude-sonnet-4-5"),
    ],
}


def default_catalog(providers: Iterable[str]) -> list[ModelSpec]:
    """The default models of each configured provider; with none, the simulated provider plays
    OpenAI's models and is billed at their prices, so offline figures are realistic."""
    on = [p for p in providers if p in DEFAULT_MODELS]
    if not on:
        return [ModelSpec("simulated", m, t, "openai") for t, m in DEFAULT_MODELS["openai"]]
    return [ModelSpec(p, m, t, p) for p in on for t, m in DEFAULT_MODELS[p]]


def parse_catalog(entries: Iterable[Mapping[str, object]]) -> list[ModelSpec]:
    """Catalog entries from config (``MODEL_CATALOG`` JSON): provider, model, tier, optional
    price_provider and price."""
    specs = []
    for e in entries:
        provider = str(e["provider"])
        price = e.get("price")
        specs.append(
            ModelSpec(
                provider=provider,
                model=str(e["model"]),
                tier=Tier(str(e["tier"])),
                price_provider=str(e.get("price_provider", "openai" if provider == "simulated" else provider)),
                price={str(k): str(v) for k, v in price.items()} if isinstance(price, Mapping) else None,
            )
        )
    return specs
