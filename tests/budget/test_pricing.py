"""Prices to the nano-dollar, checked by hand and against genai-prices itself."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget.money import NANO, quantize
from budget.pricing import Price, PriceBook, UnknownModelPrice
from providers.base import Usage

D = Decimal
GRID = [
    ("gpt-4o-mini", "openai"),
    ("gpt-4.1-mini", "openai"),
    ("gpt-4.1", "openai"),
    ("gpt-5-mini", "openai"),
    ("claude-haiku-4-5", "anthropic"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-haiku-4-5-20251001", "anthropic"),
]
PROVIDER = dict(GRID)

# Dollars per million tokens, written out from the providers' price pages (FACTS.md):
# input, cache read, cache write (5 min), cache write (1 h), output.
RATES = {
    "gpt-4o-mini": ("0.15", "0.075", "0.15", "0.15", "0.60"),
    "gpt-4.1-mini": ("0.40", "0.10", "0.40", "0.40", "1.60"),
    "gpt-4.1": ("2.00", "0.50", "2.00", "2.00", "8.00"),
    "gpt-5-mini": ("0.25", "0.025", "0.25", "0.25", "2.00"),
    "claude-haiku-4-5": ("1.00", "0.10", "1.25", "2.00", "5.00"),
    "claude-haiku-4-5-20251001": ("1.00", "0.10", "1.25", "2.00", "5.00"),
    "claude-sonnet-4-5": ("3.00", "0.30", "3.75", "6.00", "15.00"),
    "claude-sonnet-4-5 >200k": ("6.00", "0.60", "7.50", "12.00", "22.50"),
}
USAGES = [
    Usage(input_tokens=1000, output_tokens=500),
    Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200),
    Usage(input_tokens=10_000, output_tokens=0, cache_write_tokens=4000),
    Usage(
        input_tokens=10_000, output_tokens=1, cache_write_tokens=4000, cache_write_1h_tokens=1500
    ),
    Usage(input_tokens=3000, output_tokens=3000, reasoning_tokens=2500, cache_read_tokens=1000),
    Usage(input_tokens=1, output_tokens=1),
    Usage(),
    Usage(input_tokens=200_000, output_tokens=2000, cache_read_tokens=50_000),
    Usage(input_tokens=200_001, output_tokens=2000, cache_read_tokens=50_000),
    Usage(
        input_tokens=400_000,
        output_tokens=64_000,
        cache_read_tokens=100_000,
        cache_write_tokens=30_000,
        cache_write_1h_tokens=10_000,
        reasoning_tokens=20_000,
    ),
]


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook([(model, provider, None) for model, provider in GRID])


def by_hand(model: str, usage: Usage) -> Decimal:
    """The bill, worked out from the rate table with the Usage convention spelled out."""
    key = (
        f"{model} >200k" if model == "claude-sonnet-4-5" and usage.input_tokens > 200_000 else model
    )
    inp, read, write, write_1h, out = (D(r) / 1_000_000 for r in RATES[key])
    uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    write_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens  # writes include the 1h ones
    return quantize(
        uncached * inp
        + usage.cache_read_tokens * read
        + write_5m * write
        + usage.cache_write_1h_tokens * write_1h
        + usage.output_tokens * out  # reasoning is inside output
    )


# -- Exact costs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        # 800 * 0.15 + 200 * 0.075 + 500 * 0.6, per million
        ("gpt-4o-mini", Usage(1000, 500, cache_read_tokens=200), "0.000435"),
        # 1000 * 0.25 + 1000 * 0.025 + 3000 * 2 (2500 of them reasoning)
        ("gpt-5-mini", Usage(2000, 3000, 1000, reasoning_tokens=2500), "0.006275"),
        # 5000 * 1 + 2000 * 0.1 + 2000 * 1.25 (5 min) + 1000 * 2 (1 h) + 1000 * 5
        ("claude-haiku-4-5", Usage(10_000, 1000, 2000, 3000, 1000), "0.0147"),
        ("claude-haiku-4-5-20251001", Usage(10_000, 1000, 2000, 3000, 1000), "0.0147"),
        # At the threshold: base rates. 200000 * 3 + 2000 * 15
        ("claude-sonnet-4-5", Usage(200_000, 2000), "0.63"),
        # One token over: every token at the tier. 200000 * 6 + 50000 * 0.6 + 2000 * 22.5
        ("claude-sonnet-4-5", Usage(250_000, 2000, 50_000), "1.275"),
        # No cache write price: writes are billed as input. 1000 * 0.4 + 100 * 1.6
        ("gpt-4.1-mini", Usage(1000, 100, cache_write_tokens=600), "0.00056"),
        ("gpt-4.1", Usage(1, 0), "0.000002"),
        ("gpt-4o-mini", Usage(0, 0), "0"),
    ],
)
def test_cost_by_hand(book: PriceBook, model: str, usage: Usage, expected: str) -> None:
    cost = book.cost(model, usage)
    assert type(cost) is Decimal
    assert cost == D(expected)
    assert cost.as_tuple().exponent == -9  # to the nano-dollar


@pytest.mark.parametrize("usage", USAGES)
@pytest.mark.parametrize("model", [m for m, _ in GRID])
def test_cost_grid(book: PriceBook, model: str, usage: Usage) -> None:
    assert book.cost(model, usage) == by_hand(model, usage)


def test_cost_rounds_up_to_the_nano_dollar() -> None:
    book = PriceBook([("tiny", "openai", Price(D("0.0001"), D("0.0001")))])
    assert book.cost("tiny", Usage(1, 0)) == NANO  # 0.0000000001 rounds up, never down
    assert book.cost("tiny", Usage(10, 0)) == NANO
    assert book.cost("tiny", Usage(11, 0)) == 2 * NANO


@st.composite
def usages(draw: st.DrawFn, max_input: int = 1_000_000) -> Usage:
    """Consistent usages: cache reads and writes within the input, 1 h writes within writes."""
    input_tokens = draw(st.integers(0, max_input))
    read = draw(st.integers(0, input_tokens))
    write = draw(st.integers(0, input_tokens - read))
    output = draw(st.integers(0, 200_000))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=draw(st.integers(0, write)),
        reasoning_tokens=draw(st.integers(0, output)),
    )


@given(model=st.sampled_from([m for m, _ in GRID]), usage=usages())
def test_cost_matches_genai_prices(book: PriceBook, model: str, usage: Usage) -> None:
    theirs = genai_prices.calc_price(usage, model, provider_id=PROVIDER[model]).total_price
    assert book.cost(model, usage) == quantize(theirs)
    assert book.cost(model, usage) == by_hand(model, usage)


def test_inconsistent_usage_is_refused(book: PriceBook) -> None:
    with pytest.raises(ValueError, match="inconsistent usage"):
        book.cost("gpt-4o-mini", Usage(100, 0, cache_read_tokens=101))
    with pytest.raises(ValueError, match="inconsistent usage"):  # 1h writes are part of writes
        book.cost("claude-haiku-4-5", Usage(100, 0, cache_write_1h_tokens=10))


def test_time_of_day_prices_bill_the_dearer_one() -> None:
    # deepseek-chat is cheaper off-peak in genai-prices' data; the book never under-counts.
    book = PriceBook([("deepseek-chat", "deepseek", None)])
    usage = Usage(100_000, 5000, cache_read_tokens=30_000)
    at = [datetime(2026, 1, 5, hour, tzinfo=UTC) for hour in (3, 20)]
    theirs = [
        quantize(genai_prices.calc_price(usage, "deepseek-chat", provider_id="deepseek",
                                         genai_request_timestamp=t).total_price)
        for t in at
    ]  # fmt: skip
    assert theirs[0] != theirs[1]
    assert book.cost("deepseek-chat", usage) == max(theirs)


# -- Worst case and the output cap --------------------------------------------------------------


def test_worst_case_by_hand(book: PriceBook) -> None:
    # Input at the dearest input rate (haiku: 1h cache writes, 2.00), output at 5.00.
    assert book.worst_case("claude-haiku-4-5", 1000, 500) == D("0.0045")
    # No cache write price: input 0.15, output 0.60.
    assert book.worst_case("gpt-4o-mini", 1000, 500) == D("0.00045")
    # Sonnet below and above its 200k tier: 6.00 / 15.00, then 12.00 / 22.50.
    assert book.worst_case("claude-sonnet-4-5", 200_000, 1000) == D("1.215")
    assert book.worst_case("claude-sonnet-4-5", 200_001, 1000) == D("2.422512")


@given(
    model=st.sampled_from([m for m, _ in GRID]),
    usage=usages(),
    extra_input=st.integers(0, 300_000),
    extra_output=st.integers(0, 10_000),
)
def test_worst_case_bounds_every_usage_within_it(
    book: PriceBook, model: str, usage: Usage, extra_input: int, extra_output: int
) -> None:
    worst = book.worst_case(
        model, usage.input_tokens + extra_input, usage.output_tokens + extra_output
    )
    assert type(worst) is Decimal
    assert book.cost(model, usage) <= worst


@given(
    model=st.sampled_from([m for m, _ in GRID]),
    input_tokens=st.integers(0, 400_000),
    nanos=st.integers(0, 5 * 10**9),
    fraction=st.sampled_from(["0", "0.0000000001", "0.0000000009", "-0.0000000001"]),
)
def test_max_output_tokens_is_exact(
    book: PriceBook, model: str, input_tokens: int, nanos: int, fraction: str
) -> None:
    available = nanos * NANO + D(fraction)
    n = book.max_output_tokens(model, input_tokens, available)
    assert n >= 0
    if book.worst_case(model, input_tokens, 0) > available:
        assert n == 0
    else:
        assert book.worst_case(model, input_tokens, n) <= available
        assert book.worst_case(model, input_tokens, n + 1) > available


def test_max_output_tokens_by_hand(book: PriceBook) -> None:
    # 1000 input at 0.15 = 0.00015; 0.01 - 0.00015 = 0.00985 buys 16416.67 outputs at 0.60.
    assert book.max_output_tokens("gpt-4o-mini", 1000, D("0.01")) == 16416
    assert book.max_output_tokens("gpt-4o-mini", 1000, D("0.00015")) == 0
    assert book.max_output_tokens("gpt-4o-mini", 1000, D("0.0001")) == 0
    assert book.max_output_tokens("gpt-4o-mini", 0, D(0)) == 0


# -- Configuration ------------------------------------------------------------------------------


def test_unknown_model_needs_a_configured_price() -> None:
    with pytest.raises(UnknownModelPrice, match=r"'my-local-llama'.*[Cc]onfigure") as caught:
        PriceBook([("my-local-llama", "openai", None)])
    assert isinstance(caught.value, ValueError)
    assert caught.value.model == "my-local-llama"
    with pytest.raises(UnknownModelPrice):
        PriceBook([("gpt-4o-mini", "no-such-provider", None)])


def test_a_model_not_in_the_book_is_unknown(book: PriceBook) -> None:
    with pytest.raises(UnknownModelPrice, match=r"gpt-3\.5-turbo"):
        book.cost("gpt-3.5-turbo", Usage(1, 1))
    with pytest.raises(UnknownModelPrice):
        book.worst_case("gpt-3.5-turbo", 1, 1)


def test_override_wins_and_prices_unknown_models() -> None:
    override = Price(D("1"), D("2"))
    book = PriceBook([("gpt-4o-mini", "openai", override), ("my-local-llama", "local", override)])
    for model in ("gpt-4o-mini", "my-local-llama"):
        assert book.price(model) is override
        assert book.cost(model, Usage(1_000_000, 1_000_000, cache_read_tokens=500_000)) == D(3)
        assert book.worst_case(model, 1_000_000, 1_000_000) == D(3)
    assert book.models() == ["gpt-4o-mini", "my-local-llama"]


def test_price_defaults_and_types(book: PriceBook) -> None:
    p = Price(D("1"), D("5"))
    assert (p.cache_read_mtok, p.cache_write_mtok, p.cache_write_1h_mtok) == (D(1), D(1), D(1))
    p = Price(D("1"), D("5"), cache_write_mtok=D("1.25"))
    assert p.cache_write_1h_mtok == D("1.25")  # a 1h write is a cache write
    haiku = book.price("claude-haiku-4-5")
    assert haiku == Price(D("1"), D("5"), D("0.1"), D("1.25"), D("2"))
    assert book.price("claude-sonnet-4-5").input_mtok == D("3")  # the base tier
    for model in book.models():
        price = book.price(model)
        assert all(type(getattr(price, f)) is Decimal for f in Price.__dataclass_fields__)


def test_money_is_never_a_float() -> None:
    with pytest.raises(ValueError, match="Decimal"):
        Price(0.15, 0.6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        Price(D("-1"), D("1"))
    with pytest.raises(ValueError, match="finite"):
        Price(D("NaN"), D("1"))


def test_same_model_twice_must_agree() -> None:
    PriceBook([("gpt-4o-mini", "openai", None), ("gpt-4o-mini", "azure", None)])
    with pytest.raises(ValueError, match="twice"):
        PriceBook([("gpt-4o-mini", "openai", None), ("gpt-4o-mini", "openai", Price(D(1), D(1)))])


def test_dated_name_resolves_to_the_same_price(book: PriceBook) -> None:
    assert book.price("claude-haiku-4-5-20251001") == book.price("claude-haiku-4-5")
