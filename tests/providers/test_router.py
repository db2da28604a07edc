from decimal import Decimal

from providers.catalog import ModelSpec, Tier, default_catalog, parse_catalog
from providers.router import Router

CATALOG = [
    ModelSpec("openai", "gpt-4o-mini", Tier.CHEAP, "openai"),
    ModelSpec("openai", "gpt-4.1-mini", Tier.STANDARD, "openai"),
    ModelSpec("openai", "gpt-4.1", Tier.PREMIUM, "openai"),
    ModelSpec("anthropic", "claude-haiku-4-5", Tier.CHEAP, "anthropic"),
    ModelSpec("anthropic", "claude-sonnet-4-5", Tier.PREMIUM, "anthropic"),
]
COST = {"gpt-4o-mini": 1, "gpt-4.1-mini": 4, "gpt-4.1": 20, "claude-haiku-4-5": 6, "claude-sonnet-4-5": 18}


def router() -> Router:
    return Router(CATALOG, {"openai": object(), "anthropic": object()}, lambda s: Decimal(COST[s.model]))  # type: ignore[dict-item]


def names(chain: list[ModelSpec]) -> list[str]:
    return [s.model for s in chain]


def test_chain_is_tier_cheapest_first_then_cheaper_tiers_then_dearer() -> None:
    r = router()
    assert names(r.chain(Tier.PREMIUM, 0)) == [
        "claude-sonnet-4-5",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4o-mini",
        "claude-haiku-4-5",
    ]
    assert names(r.chain(Tier.CHEAP, 0)) == [
        "gpt-4o-mini",
        "claude-haiku-4-5",
        "gpt-4.1-mini",
        "claude-sonnet-4-5",
        "gpt-4.1",
    ]
    assert names(r.chain(Tier.STANDARD, 0)) == [
        "gpt-4.1-mini",
        "gpt-4o-mini",
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
        "gpt-4.1",
    ]


def test_a_failing_provider_goes_last_for_its_cooldown_and_one_success_restores_it() -> None:
    r = router()
    spec = CATALOG[0]
    for _ in range(2):
        r.failed(spec, now=100)
    assert r.healthy("openai", 100)
    r.failed(spec, now=100)
    assert not r.healthy("openai", 100)
    assert names(r.chain(Tier.CHEAP, 110))[:2] == ["claude-haiku-4-5", "claude-sonnet-4-5"]
    assert r.healthy("openai", 130)
    r.succeeded(spec)
    assert r.health["openai"].failures == 0


def test_retry_after_puts_a_provider_in_cooldown_at_once() -> None:
    r = router()
    r.failed(CATALOG[0], now=0, retry_after=12)
    assert not r.healthy("openai", 11.9) and r.healthy("openai", 12)


def test_default_catalog_is_simulated_without_keys() -> None:
    sim = default_catalog([])
    assert {s.provider for s in sim} == {"simulated"} and {s.price_provider for s in sim} == {"openai"}
    assert [s.tier for s in sim] == [Tier.CHEAP, Tier.STANDARD, Tier.PREMIUM]
    assert {s.provider for s in default_catalog(["openai", "anthropic"])} == {"openai", "anthropic"}


def test_parse_catalog() -> None:
    [spec] = parse_catalog(
        [{"provider": "openai", "model": "m", "tier": "premium", "price": {"input": 1, "output": "2"}}]
    )
    assert (spec.tier, spec.price_provider, spec.price) == (Tier.PREMIUM, "openai", {"input": "1", "output": "2"})
