"""Ordered fallback across providers, and their health.

A provider that fails ``failure_threshold`` times in a row is put last in every chain for
``cooldown_s``; one success restores it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from providers.base import Provider
from providers.catalog import ModelSpec, Tier


@dataclass(slots=True)
class Health:
    failures: int = 0
    down_until: float = 0.0


class Router:
    """Builds the fallback chain for a tier and keeps per-provider health."""

    def __init__(
        self,
        catalog: Sequence[ModelSpec],
        providers: Mapping[str, Provider],
        unit_cost: Callable[[ModelSpec], Decimal],
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
    ) -> None:
        self.catalog = list(catalog)
        self.providers = dict(providers)
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.health = {name: Health() for name in self.providers}
        self._cost = {spec: unit_cost(spec) for spec in self.catalog}

    def healthy(self, provider: str, now: float) -> bool:
        return self.health[provider].down_until <= now

    def chain(self, tier: Tier, now: float) -> list[ModelSpec]:
        """The tier's models cheapest first; then cheaper tiers, then dearer ones; providers in
        cooldown go last, still tried before the message is given up."""
        order = list(Tier)
        rank = {
            t: (0, 0)
            if t is tier
            else (1, -order.index(t))
            if order.index(t) < order.index(tier)
            else (2, order.index(t))
            for t in order
        }
        return sorted(
            self.catalog,
            key=lambda s: (not self.healthy(s.provider, now), rank[s.tier], self._cost[s], s.name),
        )

    def provider(self, spec: ModelSpec) -> Provider:
        return self.providers[spec.provider]

    def succeeded(self, spec: ModelSpec) -> None:
        self.health[spec.provider] = Health()

    def failed(self, spec: ModelSpec, now: float, retry_after: float | None = None) -> None:
        h = self.health[spec.provider]
        h.failures += 1
        if h.failures >= self.failure_threshold or retry_after:
            h.down_until = now + max(
                self.cooldown_s if h.failures >= self.failure_threshold else 0.0, retry_after or 0.0
            )
