"""Advice on spend: what one question will cost and how to pay less (``optimize``), and limits and
savings drawn from past rows (``recommendations``). Pure functions; every piece of advice names
the rule that made it and carries the figures it rests on, as strings (Decimal dollars unformatted).

``optimize`` rules, checked in this order:

* ``cache_hit``: the question is answered from the cache, so it costs nothing.
* ``premium_chosen``: a premium model for a ``simple`` or ``medium`` question, and a cheaper model
  of the tier the question needs (or, with none there, of a tier below premium); not on a cache
  hit, where nothing is paid.
* ``long_question``: the prompt is over ``LONG_PROMPT_TOKENS`` (1,500) tokens.
* ``repeated_question``: asked ``REPEATED_QUESTION`` (3) times or more; cacheable if self-contained.
* ``not_self_contained``: a follow-up (``budget.queries.is_self_contained``), which the cache never
  serves (DESIGN invariant 6).

``recommendations`` rules, over one subject's rows (a user, or the whole bot):

* ``monthly_limit``: the nearest-rank 95th percentile of the complete months' spend, rounded up
  to the cent.
* ``cheap_tier_savings``: what simple answers made on a dearer tier would have cost on the cheap
  model, for the same tokens; only when that saves something.
* ``cache_savings``: what cache hits saved and the hit rate (hits / answers), once anything was
  answered.
* ``error_rate``: failed attempts over attempts, when above ``ERROR_RATE_LIMIT`` (5%).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_CEILING, Decimal

from budget.analytics import is_answer, monthly_costs, summarize
from budget.complexity import Complexity, classify
from budget.money import ZERO
from budget.pricing import PriceBook
from budget.queries import is_self_contained
from budget.records import AIRequest, Kind, Status
from providers.base import Usage
from providers.catalog import ModelSpec, Tier

LONG_PROMPT_TOKENS = 1_500  # a prompt above this many tokens earns ``long_question``
REPEATED_QUESTION = 3  # asked this many times or more earns ``repeated_question``
MIN_HISTORY = 5  # fewer past outputs than this: use DEFAULT_OUTPUT_TOKENS instead of their median
# Typical answer lengths when history is thin: a one-line reply, a few paragraphs, a long answer.
DEFAULT_OUTPUT_TOKENS: Mapping[Complexity, int] = {
    Complexity.SIMPLE: 150,
    Complexity.MEDIUM: 400,
    Complexity.COMPLEX: 1_000,
}
LIMIT_PERCENTILE = 95
ERROR_RATE_LIMIT = Decimal("0.05")  # an error rate above this earns ``error_rate``

# The tier each complexity calls for, as the provider choice maps them (budget.complexity).
TIER_FOR: Mapping[Complexity, Tier] = {
    Complexity.SIMPLE: Tier.CHEAP,
    Complexity.MEDIUM: Tier.STANDARD,
    Complexity.COMPLEX: Tier.PREMIUM,
}
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Suggestion:
    """How to make one question cheaper, from the rule named ``rule``."""

    rule: str
    message: str
    figures: dict[str, str]


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the question would cost on one catalog model."""

    spec: ModelSpec
    cost: Decimal


@dataclass(frozen=True, slots=True)
class Optimization:
    """The cost picture of one question: its complexity, expected output, cost on each model."""

    complexity: Complexity
    expected_output_tokens: int
    output_samples: int  # past outputs the expectation rests on; below MIN_HISTORY: the default
    estimates: list[Estimate]  # one per catalog model, catalog order
    chosen: ModelSpec
    chosen_cost: Decimal  # the estimate on the chosen model (what a cache hit saves)
    why: str
    cache_hit: bool
    self_contained: bool
    suggestions: list[Suggestion]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A setting or habit to change for ``subject`` (a user key, ``None`` for the whole bot)."""

    rule: str
    subject: str | None
    message: str
    figures: dict[str, str]


def expected_output_tokens(complexity: Complexity, history: Sequence[int]) -> int:
    """The median of past output token counts (the upper median rounded up, for an even count,
    so as not to under-estimate), or ``DEFAULT_OUTPUT_TOKENS`` with fewer than ``MIN_HISTORY``."""
    if any(n < 0 for n in history):
        raise ValueError("output token counts cannot be negative")
    if len(history) < MIN_HISTORY:
        return DEFAULT_OUTPUT_TOKENS[complexity]
    ordered = sorted(history)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return -(-(ordered[mid - 1] + ordered[mid]) // 2)


def optimize(
    question: str,
    *,
    prompt_tokens: int,
    history_output_tokens: Mapping[str, Sequence[int]],
    catalog: Sequence[ModelSpec],
    prices: PriceBook,
    chosen: ModelSpec,
    cache_hit: bool,
    repeated_count: int,
    reason: str | None = None,
) -> Optimization:
    """Estimate ``question`` on every catalog model and say how to make it cheaper.

    ``history_output_tokens`` maps a complexity (``"simple"``...) to past answers' output token
    counts; ``reason`` is why the provider choice picked ``chosen``, when known (the row's reason).
    Every catalog model must be in ``prices``.
    """
    if prompt_tokens < 0 or repeated_count < 0:
        raise ValueError("prompt_tokens and repeated_count cannot be negative")
    complexity = classify(question)
    history = history_output_tokens.get(complexity.value, ())
    expected = expected_output_tokens(complexity, history)
    usage = Usage(input_tokens=prompt_tokens, output_tokens=expected)
    estimates = [Estimate(spec, prices.cost(spec.model, usage)) for spec in catalog]
    chosen_cost = prices.cost(chosen.model, usage)
    self_contained = is_self_contained(question)

    suggestions: list[Suggestion] = []
    if cache_hit:
        suggestions.append(
            Suggestion(
                "cache_hit",
                f"Answered from the cache: free instead of about ${chosen_cost} on {chosen.name}.",
                {"saved": str(chosen_cost), "model": chosen.name},
            )
        )
    needs_premium = complexity is Complexity.COMPLEX
    cheaper = None if needs_premium or cache_hit else _cheaper_for(complexity, chosen_cost, estimates)
    if chosen.tier is Tier.PREMIUM and cheaper is not None:
        saving = chosen_cost - cheaper.cost
        suggestions.append(
            Suggestion(
                "premium_chosen",
                f"A {complexity.value} question went to the premium model {chosen.name}; "
                f"{cheaper.spec.name} would cost about ${cheaper.cost}, saving ${saving}.",
                {
                    "chosen_model": chosen.name,
                    "chosen_cost": str(chosen_cost),
                    "cheaper_model": cheaper.spec.name,
                    "cheaper_cost": str(cheaper.cost),
                    "saving": str(saving),
                },
            )
        )
    if prompt_tokens > LONG_PROMPT_TOKENS:
        input_cost = prices.cost(chosen.model, Usage(input_tokens=prompt_tokens))
        suggestions.append(
            Suggestion(
                "long_question",
                f"The prompt is {prompt_tokens} tokens (over {LONG_PROMPT_TOKENS}): shorten the question or "
                f"send a summary; its input alone costs ${input_cost} on {chosen.name}.",
                {
                    "prompt_tokens": str(prompt_tokens),
                    "threshold": str(LONG_PROMPT_TOKENS),
                    "input_cost": str(input_cost),
                },
            )
        )
    if repeated_count >= REPEATED_QUESTION:
        repeats_cost = chosen_cost * (repeated_count - 1)
        how = (
            "it stands alone, so the cache can answer every ask after the first"
            if self_contained
            else "but it reads as a follow-up, so the cache cannot serve it: ask it as a full question"
        )
        suggestions.append(
            Suggestion(
                "repeated_question",
                f"Asked {repeated_count} times; {how} (about ${repeats_cost} for the repeats).",
                {
                    "times": str(repeated_count),
                    "threshold": str(REPEATED_QUESTION),
                    "self_contained": str(self_contained).lower(),
                    "repeats_cost": str(repeats_cost),
                },
            )
        )
    if not self_contained:
        suggestions.append(
            Suggestion(
                "not_self_contained",
                "A follow-up depends on the conversation before it, so it can never be answered from the cache.",
                {"self_contained": "false"},
            )
        )
    return Optimization(
        complexity=complexity,
        expected_output_tokens=expected,
        output_samples=len(history),
        estimates=estimates,
        chosen=chosen,
        chosen_cost=chosen_cost,
        why=reason or _why(complexity, chosen),
        cache_hit=cache_hit,
        self_contained=self_contained,
        suggestions=suggestions,
    )


def _why(complexity: Complexity, chosen: ModelSpec) -> str:
    needed = TIER_FOR[complexity]
    if chosen.tier is needed:
        return f"a {complexity.value} question goes to the {needed.value} tier"
    order = list(Tier)
    side = "above" if order.index(chosen.tier) > order.index(needed) else "below"
    return f"the {chosen.tier.value} tier, {side} the {needed.value} tier a {complexity.value} question needs"


def _cheaper_for(complexity: Complexity, chosen_cost: Decimal, estimates: Sequence[Estimate]) -> Estimate | None:
    """The cheapest model of the tier ``complexity`` needs (with none there, of any tier below
    premium) if it costs less than the chosen one."""
    cheaper = [e for e in estimates if e.cost < chosen_cost and e.spec.tier is not Tier.PREMIUM]
    fits = [e for e in cheaper if e.spec.tier is TIER_FOR[complexity]] or cheaper
    return min(fits, key=lambda e: e.cost, default=None)


def nearest_rank(values: Sequence[Decimal], percent: int) -> Decimal:
    """The ``percent``-th percentile by the nearest-rank method: the smallest value such that at
    least ``percent``% of the values are at or below it, i.e. the ceil(percent/100 * n)-th smallest."""
    if not values:
        raise ValueError("no values")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100]: {percent}")
    rank = -(-percent * len(values) // 100)
    return sorted(values)[rank - 1]


def recommendations(
    rows: Sequence[AIRequest],
    *,
    prices: PriceBook,
    catalog: Sequence[ModelSpec],
    subject: str | None = None,
    tz: tzinfo = UTC,
    now: datetime | None = None,
) -> list[Recommendation]:
    """Recommendations for ``subject`` (a user key; ``None``: the whole bot) from past rows.

    Months are calendar months in ``tz``; with ``now`` given, its month and later ones are left
    out of ``monthly_limit`` as incomplete. The cheap model for ``cheap_tier_savings`` is the
    catalog's cheap-tier model of the row's provider, else the first cheap-tier model.
    """
    mine = [r for r in rows if subject is None or r.user_key == subject]
    found = [
        _monthly_limit(mine, subject, tz, now),
        _cheap_tier_savings(mine, subject, prices, catalog),
        _cache_savings(mine, subject),
        _error_rate(mine, subject),
    ]
    return [r for r in found if r is not None]


def _who(subject: str | None) -> str:
    return "the bot" if subject is None else f"user {subject}"


def _monthly_limit(
    rows: Sequence[AIRequest], subject: str | None, tz: tzinfo, now: datetime | None
) -> Recommendation | None:
    months = monthly_costs(rows, tz)
    if now is not None:
        if now.utcoffset() is None:
            raise ValueError("now has no time zone")
        current = now.astimezone(tz).date().replace(day=1)
        months = {m: cost for m, cost in months.items() if m < current}
    if not months:
        return None
    # Months with no rows between the first and the last are months spent nothing: they count.
    first, last = min(months), max(months)
    spans = (last.year - first.year) * 12 + last.month - first.month + 1
    series = [*months.values(), *[ZERO] * (spans - len(months))]
    p = nearest_rank(series, LIMIT_PERCENTILE)
    limit = p.quantize(_CENT, rounding=ROUND_CEILING)
    return Recommendation(
        "monthly_limit",
        subject,
        f"Set a monthly limit of ${limit} for {_who(subject)}: {LIMIT_PERCENTILE}% of its {spans} past months "
        f"spent at most ${p} (nearest rank).",
        {
            "limit": str(limit),
            "percentile": str(LIMIT_PERCENTILE),
            "percentile_spend": str(p),
            "months": str(spans),
            "max_month": str(max(series)),
        },
    )


def _cheap_tier_savings(
    rows: Sequence[AIRequest], subject: str | None, prices: PriceBook, catalog: Sequence[ModelSpec]
) -> Recommendation | None:
    cheap = [s for s in catalog if s.tier is Tier.CHEAP]
    if not cheap:
        return None
    tiers = {(s.provider, s.model): s.tier for s in catalog}
    count, cost, cheap_cost = 0, ZERO, ZERO
    used: set[str] = set()
    for r in rows:
        if r.kind is not Kind.ANSWER or r.status is not Status.OK or r.complexity != Complexity.SIMPLE:
            continue
        tier = r.tier or tiers.get((r.provider, r.model))
        if tier is None or tier == Tier.CHEAP:
            continue
        model = next((s for s in cheap if s.provider == r.provider), cheap[0])
        count += 1
        cost += r.cost
        cheap_cost += prices.cost(model.model, r.usage)
        used.add(model.name)
    savings = cost - cheap_cost
    if savings <= 0:
        return None
    return Recommendation(
        "cheap_tier_savings",
        subject,
        f"{count} simple questions of {_who(subject)} went to dearer models for ${cost}; the cheap tier "
        f"would have cost ${cheap_cost}, saving ${savings}.",
        {
            "answers": str(count),
            "cost": str(cost),
            "cheap_cost": str(cheap_cost),
            "savings": str(savings),
            "cheap_models": ",".join(sorted(used)),
        },
    )


def _cache_savings(rows: Sequence[AIRequest], subject: str | None) -> Recommendation | None:
    s = summarize(rows)
    if s.cache_hit_rate is None:
        return None
    rate = _percent(s.cache_hit_rate)
    return Recommendation(
        "cache_savings",
        subject,
        f"The cache answered {s.cache_hits} of {s.answers} answers of {_who(subject)} ({rate}%) and saved ${s.saved}.",
        {"saved": str(s.saved), "hits": str(s.cache_hits), "answers": str(s.answers), "hit_rate": str(rate)},
    )


def _error_rate(rows: Sequence[AIRequest], subject: str | None) -> Recommendation | None:
    errors = sum(1 for r in rows if r.status is Status.ERROR)
    if not rows or Decimal(errors) / len(rows) <= ERROR_RATE_LIMIT:
        return None
    rate = _percent(Decimal(errors) / len(rows))
    answered = sum(1 for r in rows if is_answer(r))
    return Recommendation(
        "error_rate",
        subject,
        f"{errors} of {len(rows)} AI calls of {_who(subject)} failed ({rate}%, over "
        f"{_percent(ERROR_RATE_LIMIT)}%): check the providers' keys, limits and health.",
        {
            "errors": str(errors),
            "requests": str(len(rows)),
            "answers": str(answered),
            "error_rate": str(rate),
            "threshold": str(_percent(ERROR_RATE_LIMIT)),
        },
    )


def _percent(rate: Decimal) -> Decimal:
    """A rate as a percentage with two decimals (for people; the rule compares exact rates)."""
    return (rate * 100).quantize(_CENT)
