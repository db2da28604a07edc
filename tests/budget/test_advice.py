from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from budget.advice import (
    DEFAULT_OUTPUT_TOKENS,
    LONG_PROMPT_TOKENS,
    REPEATED_QUESTION,
    Estimate,
    Optimization,
    Recommendation,
    expected_output_tokens,
    nearest_rank,
    optimize,
    recommendations,
)
from budget.complexity import Complexity
from budget.pricing import PriceBook
from budget.records import AIRequest, Kind, Status
from providers.base import Usage
from providers.catalog import ModelSpec, Tier

D = Decimal
# Real genai-prices rates (offline): gpt-4o-mini $0.15 / $0.60 per million tokens in / out (cache
# reads $0.075); gpt-4.1-mini $0.40 / $1.60; gpt-4.1 $2 / $8 (cache reads $0.50).
PRICES = PriceBook([("gpt-4o-mini", "openai", None), ("gpt-4.1", "openai", None), ("gpt-4.1-mini", "openai", None)])
MINI = ModelSpec("openai", "gpt-4o-mini", Tier.CHEAP, "openai")
STANDARD = ModelSpec("openai", "gpt-4.1-mini", Tier.STANDARD, "openai")
BIG = ModelSpec("openai", "gpt-4.1", Tier.PREMIUM, "openai")
CATALOG = [MINI, BIG]

SIMPLE_Q = "What is the capital of France?"  # simple, self-contained
MEDIUM_Q = "How do I boil an egg?"  # medium, self-contained
COMPLEX_Q = "Compare the pros and cons of Rust and Go for a web server"
FOLLOW_UP = "and in Germany?"  # simple, a follow-up


def advise(question: str = SIMPLE_Q, **kw: Any) -> Optimization:
    args: dict[str, Any] = {
        "prompt_tokens": 1000,
        "history_output_tokens": {},
        "catalog": CATALOG,
        "prices": PRICES,
        "chosen": MINI,
        "cache_hit": False,
        "repeated_count": 1,
    }
    return optimize(question, **{**args, **kw})


def rules(opt: Optimization) -> list[str]:
    return [s.rule for s in opt.suggestions]


# -- optimize ---------------------------------------------------------------------------------


def test_estimates_on_every_catalog_model_with_the_default_output() -> None:
    opt = advise(chosen=BIG, catalog=[MINI, STANDARD, BIG])
    assert opt.complexity is Complexity.SIMPLE
    assert opt.expected_output_tokens == DEFAULT_OUTPUT_TOKENS[Complexity.SIMPLE] == 150
    assert opt.output_samples == 0
    # 1,000 tokens in, 150 out
    assert opt.estimates == [
        Estimate(MINI, D("0.00024")),  # 1000 * 0.15e-6 + 150 * 0.6e-6
        Estimate(STANDARD, D("0.00064")),  # 1000 * 0.4e-6 + 150 * 1.6e-6
        Estimate(BIG, D("0.0032")),  # 1000 * 2e-6 + 150 * 8e-6
    ]
    assert opt.chosen is BIG and opt.chosen_cost == D("0.0032")
    assert opt.why == "the premium tier, above the cheap tier a simple question needs"
    assert opt.cache_hit is False and opt.self_contained is True


def test_why_names_the_matching_tier_or_the_given_reason() -> None:
    assert advise().why == "a simple question goes to the cheap tier"
    assert advise(COMPLEX_Q, chosen=STANDARD).why == (
        "the standard tier, below the premium tier a complex question needs"
    )
    assert advise(reason="budget warn: cheaper tier").why == "budget warn: cheaper tier"


def test_expected_output_is_the_median_of_enough_history() -> None:
    history = {"simple": [100, 300, 200, 500, 400], "medium": [1, 2, 3, 4]}
    opt = advise(history_output_tokens=history)
    assert (opt.expected_output_tokens, opt.output_samples) == (300, 5)
    assert opt.estimates[0] == Estimate(MINI, D("0.00033"))  # 1000 * 0.15e-6 + 300 * 0.6e-6
    # four medium samples are too few: the default stands
    medium = advise(MEDIUM_Q, history_output_tokens=history)
    assert (medium.expected_output_tokens, medium.output_samples) == (400, 4)


def test_expected_output_tokens_thresholds_and_even_median() -> None:
    assert expected_output_tokens(Complexity.COMPLEX, [5, 5, 5, 5]) == 1000  # 4 samples: default
    assert expected_output_tokens(Complexity.COMPLEX, [5, 5, 5, 5, 5]) == 5  # 5 samples: median
    assert expected_output_tokens(Complexity.SIMPLE, [60, 10, 50, 20, 41, 30]) == 36  # (30 + 41) / 2 rounded up
    with pytest.raises(ValueError, match="negative"):
        expected_output_tokens(Complexity.SIMPLE, [1, 2, 3, 4, -5])


def test_nothing_to_suggest_for_a_simple_question_on_the_cheap_model() -> None:
    assert advise().suggestions == []


def test_cache_hit_is_free_and_saves_the_chosen_estimate() -> None:
    opt = advise(cache_hit=True)
    assert rules(opt) == ["cache_hit"]
    assert opt.cache_hit is True
    assert opt.suggestions[0].figures == {"saved": "0.000240000", "model": "openai/gpt-4o-mini"}


def test_premium_for_a_simple_question_names_the_cheap_model_and_the_saving() -> None:
    opt = advise(chosen=BIG)
    assert rules(opt) == ["premium_chosen"]
    f = opt.suggestions[0].figures
    assert f["cheaper_model"] == "openai/gpt-4o-mini"
    assert D(f["chosen_cost"]) == D("0.0032")
    assert D(f["cheaper_cost"]) == D("0.00024")
    assert D(f["saving"]) == D("0.00296")


def test_premium_for_a_medium_question_prefers_the_standard_tier() -> None:
    # 1,000 in, 400 out: gpt-4.1 0.0052, gpt-4.1-mini 0.00104, gpt-4o-mini 0.00039
    opt = advise(MEDIUM_Q, chosen=BIG, catalog=[MINI, STANDARD, BIG])
    f = opt.suggestions[0].figures
    assert (opt.suggestions[0].rule, f["cheaper_model"]) == ("premium_chosen", "openai/gpt-4.1-mini")
    assert D(f["saving"]) == D("0.0052") - D("0.00104")
    # with no standard model, the cheapest model below premium
    f = advise(MEDIUM_Q, chosen=BIG).suggestions[0].figures
    assert (f["cheaper_model"], D(f["saving"])) == ("openai/gpt-4o-mini", D("0.0052") - D("0.00039"))


@pytest.mark.parametrize(
    ("question", "chosen", "cache_hit", "fires"),
    [
        (SIMPLE_Q, BIG, False, True),
        (MEDIUM_Q, BIG, False, True),
        (COMPLEX_Q, BIG, False, False),  # it needs the premium tier
        (SIMPLE_Q, STANDARD, False, False),  # not premium
        (SIMPLE_Q, BIG, True, False),  # a cache hit pays nothing
    ],
)
def test_premium_chosen_fires_only_for_a_paid_premium_call_below_complex(
    question: str, chosen: ModelSpec, cache_hit: bool, fires: bool
) -> None:
    opt = advise(question, chosen=chosen, cache_hit=cache_hit, catalog=[MINI, STANDARD, BIG])
    assert ("premium_chosen" in rules(opt)) is fires


def test_premium_chosen_needs_a_cheaper_model() -> None:
    assert "premium_chosen" not in rules(advise(chosen=BIG, catalog=[BIG]))


@pytest.mark.parametrize(("tokens", "fires"), [(LONG_PROMPT_TOKENS, False), (LONG_PROMPT_TOKENS + 1, True)])
def test_long_question_just_under_and_over(tokens: int, fires: bool) -> None:
    opt = advise(prompt_tokens=tokens, chosen=STANDARD, catalog=[STANDARD])
    assert rules(opt) == (["long_question"] if fires else [])
    if fires:
        assert opt.suggestions[0].figures == {
            "prompt_tokens": "1501",
            "threshold": "1500",
            "input_cost": "0.000600400",  # 1501 * 0.4e-6 on gpt-4.1-mini
        }


@pytest.mark.parametrize(("count", "fires"), [(REPEATED_QUESTION - 1, False), (REPEATED_QUESTION, True)])
def test_repeated_question_just_under_and_over(count: int, fires: bool) -> None:
    opt = advise(repeated_count=count)
    assert rules(opt) == (["repeated_question"] if fires else [])
    if fires:
        s = opt.suggestions[0]
        assert s.figures == {
            "times": "3",
            "threshold": "3",
            "self_contained": "true",
            "repeats_cost": "0.000480000",  # two repeats at 0.00024
        }
        assert "the cache can answer" in s.message


def test_repeated_follow_up_says_it_cannot_be_cached() -> None:
    opt = advise(FOLLOW_UP, repeated_count=4)
    assert rules(opt) == ["repeated_question", "not_self_contained"]
    assert opt.suggestions[0].figures["self_contained"] == "false"
    assert "cannot serve it" in opt.suggestions[0].message


@pytest.mark.parametrize(("question", "fires"), [(SIMPLE_Q, False), (FOLLOW_UP, True)])
def test_not_self_contained_on_a_stand_alone_question_and_a_follow_up(question: str, fires: bool) -> None:
    opt = advise(question)
    assert opt.self_contained is not fires
    assert rules(opt) == (["not_self_contained"] if fires else [])


def test_all_rules_together_in_order() -> None:
    opt = advise(FOLLOW_UP, chosen=BIG, cache_hit=True, prompt_tokens=2000, repeated_count=5)
    assert rules(opt) == ["cache_hit", "long_question", "repeated_question", "not_self_contained"]
    opt = advise(FOLLOW_UP, chosen=BIG, prompt_tokens=2000, repeated_count=5)
    assert rules(opt) == ["premium_chosen", "long_question", "repeated_question", "not_self_contained"]


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        advise(prompt_tokens=-1)
    with pytest.raises(ValueError):
        advise(repeated_count=-1)


# -- recommendations --------------------------------------------------------------------------

_n = 0


def req(
    user: str = "u",
    model: str = "gpt-4.1",
    *,
    cost: str = "0",
    saved: str = "0",
    at: datetime = datetime(2026, 11, 23, 12, tzinfo=UTC),
    kind: Kind = Kind.ANSWER,
    status: Status = Status.OK,
    usage: Usage | None = None,
    tier: str | None = None,
    complexity: str | None = None,
) -> AIRequest:
    global _n
    _n += 1
    return AIRequest(
        request_id=str(_n), created_at=at, user_key=user, channel="telegram", message_id=None, kind=kind,
        provider="openai", model=model, status=status, usage=usage or Usage(), cost=D(cost), saved=D(saved),
        tier=tier, complexity=complexity,
    )  # fmt: skip


def month(i: int) -> datetime:
    """The 15th of the i-th month from January 2025 (i = 1)."""
    year, m = divmod(i - 1, 12)
    return datetime(2025 + year, m + 1, 15, tzinfo=UTC)


def by_rule(recs: list[Recommendation]) -> dict[str, Recommendation]:
    return {r.rule: r for r in recs}


def test_nearest_rank_percentiles() -> None:
    assert nearest_rank([D(i) for i in range(20, 0, -1)], 95) == 19  # rank ceil(0.95 * 20) = 19
    assert nearest_rank([D(i) for i in range(1, 11)], 95) == 10  # rank ceil(9.5) = 10
    assert nearest_rank([D(i) for i in range(1, 5)], 50) == 2
    assert nearest_rank([D(i) for i in range(1, 5)], 100) == 4
    assert nearest_rank([D(7)], 1) == 7
    with pytest.raises(ValueError):
        nearest_rank([], 95)
    with pytest.raises(ValueError):
        nearest_rank([D(1)], 0)


def test_monthly_limit_is_the_95th_percentile_of_twenty_months() -> None:
    rows = [req(cost=str(i), at=month(i)) for i in (5, 17, 1, 20, 3, 8, 12, 19, 2, 4, 6, 7, 9, 10, 11, 13, 14, 15, 16)]
    rows.append(req(cost="0.004", at=month(18)))
    rows.append(req(cost="17.996", at=month(18)))  # month 18 spends 18 over two rows
    rec = by_rule(recommendations(rows, prices=PRICES, catalog=CATALOG, subject="u"))["monthly_limit"]
    assert rec.subject == "u"
    assert rec.figures == {
        "limit": "19.00",
        "percentile": "95",
        "percentile_spend": "19",
        "months": "20",
        "max_month": "20",
    }


def test_monthly_limit_leaves_out_the_current_month_counts_empty_ones_and_rounds_up_to_the_cent() -> None:
    rows = [req(cost="1.231", at=month(1)), req(cost="0.5", at=month(3)), req(cost="1000", at=month(4))]
    rec = by_rule(recommendations(rows, prices=PRICES, catalog=CATALOG, now=month(4)))["monthly_limit"]
    # months 1..3, month 2 spent nothing: [1.231, 0, 0.5], rank ceil(2.85) = 3
    assert rec.subject is None
    assert (rec.figures["months"], rec.figures["percentile_spend"], rec.figures["limit"]) == ("3", "1.231", "1.24")
    # no complete month: no limit to recommend
    assert "monthly_limit" not in by_rule(recommendations(rows[2:], prices=PRICES, catalog=CATALOG, now=month(4)))
    with pytest.raises(ValueError, match="time zone"):
        recommendations(rows, prices=PRICES, catalog=CATALOG, now=datetime(2025, 4, 1))


def test_cheap_tier_savings_with_real_prices() -> None:
    u1 = Usage(input_tokens=1000, output_tokens=200)  # gpt-4.1 0.0036, gpt-4o-mini 0.00027
    u2 = Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=400)  # 0.0022 and 0.00018
    rows = [
        req(cost="0.0036", usage=u1, tier="premium", complexity="simple"),
        req(cost="0.0036", usage=u1, complexity="simple"),  # tier from the catalog
        req(cost="0.0022", usage=u2, tier="premium", complexity="simple"),
        # none of these count:
        req(cost="0.0036", usage=u1, tier="premium", complexity="medium"),
        req("u", "gpt-4o-mini", cost="0.00027", usage=u1, tier="cheap", complexity="simple"),
        req(status=Status.CACHED, saved="0.0036", tier="premium", complexity="simple"),
        req(status=Status.ERROR, tier="premium", complexity="simple"),
        req(kind=Kind.SUMMARY, cost="0.0036", usage=u1, tier="premium", complexity="simple"),
        req(cost="0.0036", usage=u1, tier="premium"),  # complexity unknown
        req("v", cost="0.0036", usage=u1, tier="premium", complexity="simple"),  # another user
    ]
    rec = by_rule(recommendations(rows, prices=PRICES, catalog=CATALOG, subject="u"))["cheap_tier_savings"]
    assert {k: v if k == "cheap_models" else D(v) for k, v in rec.figures.items()} == {
        "answers": 3,
        "cost": D("0.0094"),
        "cheap_cost": D("0.00072"),  # 0.00027 * 2 + 0.00018
        "savings": D("0.00868"),
        "cheap_models": "openai/gpt-4o-mini",
    }
    # the whole bot counts user v too
    rec = by_rule(recommendations(rows, prices=PRICES, catalog=CATALOG))["cheap_tier_savings"]
    assert D(rec.figures["savings"]) == D("0.00868") + D("0.00333")


def test_no_cheap_tier_savings_without_simple_answers_on_dearer_models() -> None:
    rows = [req(cost="0.0036", usage=Usage(1000, 200), tier="premium", complexity="medium")]
    assert "cheap_tier_savings" not in by_rule(recommendations(rows, prices=PRICES, catalog=CATALOG))
    assert "cheap_tier_savings" not in by_rule(recommendations(rows, prices=PRICES, catalog=[BIG]))


def test_cache_savings_reports_the_saving_and_the_hit_rate() -> None:
    rows = [
        req(status=Status.CACHED, saved="0.0036"),
        req(status=Status.CACHED, saved="0.0012"),
        req(cost="0.0036"),
        req(status=Status.ERROR),
        req(kind=Kind.SUMMARY, cost="0.001"),
    ]
    rec = by_rule(recommendations(rows, prices=PRICES, catalog=CATALOG))["cache_savings"]
    assert rec.figures == {"saved": "0.0048", "hits": "2", "answers": "3", "hit_rate": "66.67"}
    assert "cache_savings" not in by_rule(recommendations([], prices=PRICES, catalog=CATALOG))


@pytest.mark.parametrize(("requests", "fires"), [(20, False), (19, True)])
def test_error_rate_just_under_and_over_five_percent(requests: int, fires: bool) -> None:
    rows = [req(status=Status.ERROR), *(req(cost="0.001") for _ in range(requests - 1))]
    recs = by_rule(recommendations(rows, prices=PRICES, catalog=CATALOG))
    assert ("error_rate" in recs) is fires
    if fires:
        assert recs["error_rate"].figures == {
            "errors": "1",
            "requests": "19",
            "answers": "18",
            "error_rate": "5.26",
            "threshold": "5.00",
        }


def test_recommendations_come_in_rule_order() -> None:
    rows = [
        req(status=Status.ERROR, at=month(1)),
        req(cost="0.0036", usage=Usage(1000, 200), tier="premium", complexity="simple", at=month(1)),
    ]
    recs = recommendations(rows, prices=PRICES, catalog=CATALOG)
    assert [r.rule for r in recs] == ["monthly_limit", "cheap_tier_savings", "cache_savings", "error_rate"]
    assert recommendations([], prices=PRICES, catalog=CATALOG) == []
