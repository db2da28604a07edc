"""What a call costs, in exact Decimal dollars, from genai-prices' data resolved once at start-up.

genai-prices takes tens of microseconds a call; the price book looks each model up once, turns its
prices into per-token rates, and does the arithmetic itself. Usage follows genai-prices'
convention (see ``providers.base.Usage``): ``input_tokens`` holds every input token, cache reads and
writes included, and ``cache_write_tokens`` holds every cache write, the 1-hour ones
(``cache_write_1h_tokens``) included, as genai-prices' own Anthropic usage extractor fills them.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import genai_prices
from genai_prices import types as gp

from budget.money import NANO, ZERO, quantize
from providers.base import Usage

_PER_MTOK = Decimal(1_000_000)
_PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok",
               "cache_write_1h_mtok")  # fmt: skip


@dataclass(frozen=True, slots=True, init=False)
class Price:
    """Dollars per million tokens. Cache reads and writes default to the input rate, 1-hour cache
    writes to the (5-minute) cache write rate, as genai-prices bills a model that lacks them."""

    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal
    cache_write_mtok: Decimal
    cache_write_1h_mtok: Decimal

    def __init__(
        self,
        input_mtok: Decimal,
        output_mtok: Decimal,
        cache_read_mtok: Decimal | None = None,
        cache_write_mtok: Decimal | None = None,
        cache_write_1h_mtok: Decimal | None = None,
    ) -> None:
        cache_write = input_mtok if cache_write_mtok is None else cache_write_mtok
        values = (
            input_mtok,
            output_mtok,
            input_mtok if cache_read_mtok is None else cache_read_mtok,
            cache_write,
            cache_write if cache_write_1h_mtok is None else cache_write_1h_mtok,
        )
        for key, value in zip(_PRICE_KEYS, values, strict=True):
            # Money is never a float, and a negative or NaN rate would corrupt every budget.
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"price {key} must be a finite, non-negative Decimal: {value!r}")
            object.__setattr__(self, key, value)


class UnknownModelPrice(ValueError):
    """A model with no price: neither genai-prices nor the configuration knows it."""

    def __init__(self, model: str, provider_id: str | None = None) -> None:
        where = f" for provider {provider_id!r}" if provider_id else ""
        super().__init__(
            f"no price known for model {model!r}{where}: genai-prices does not list it. Configure "
            "its price (dollars per million input and output tokens) in the model's settings."
        )
        self.model = model


@dataclass(frozen=True, slots=True)
class _Rates:
    """Dollars per token, for one tier bracket."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    # For worst cases: the dearest way an input token (or an output token) can be billed here or
    # in any cheaper-threshold bracket, so fewer input tokens can never cost more.
    worst_input: Decimal
    worst_output: Decimal


@dataclass(frozen=True, slots=True)
class _Entry:
    """A model's rates: ``brackets[i]`` applies when ``starts[i-1] < input_tokens <= starts[i]``."""

    price: Price
    starts: tuple[int, ...]
    brackets: tuple[_Rates, ...]
    request_fee: Decimal

    def rates(self, input_tokens: int) -> _Rates:
        # genai-prices' tiers are cliffs: above a threshold of total input, every token of the
        # call pays the tier's rate; bisect_left counts the thresholds strictly below.
        if not self.starts:
            return self.brackets[0]
        return self.brackets[bisect_left(self.starts, input_tokens)]


class PriceBook:
    """The price of each configured model, resolved once; prices calls in a few microseconds."""

    def __init__(self, models: Iterable[tuple[str, str, Price | None]]) -> None:
        self._entries: dict[str, _Entry] = {}
        for model, provider_id, override in models:
            entry = (
                _entry_from_genai(model, provider_id)
                if override is None
                else _entry_from_price(override)
            )
            if self._entries.setdefault(model, entry) != entry:
                raise ValueError(f"model {model!r} is configured twice with different prices")

    def models(self) -> list[str]:
        """The models this book prices."""
        return list(self._entries)

    def price(self, model: str) -> Price:
        """A model's rates (for a tiered model: those below its first tier)."""
        return self._entry(model).price

    def cost(self, model: str, usage: Usage) -> Decimal:
        """What ``usage`` costs on ``model``, rounded up to the nano-dollar."""
        entry = self._entry(model)
        r = entry.rates(usage.input_tokens)
        read = usage.cache_read_tokens
        write_1h = usage.cache_write_1h_tokens
        write_5m = usage.cache_write_tokens - write_1h
        uncached = usage.input_tokens - read - usage.cache_write_tokens
        if uncached < 0 or write_5m < 0 or read < 0 or write_1h < 0 or usage.output_tokens < 0:
            raise ValueError(f"inconsistent usage (see providers.base.Usage): {usage}")
        total = (
            uncached * r.input
            + read * r.cache_read
            + write_5m * r.cache_write
            + write_1h * r.cache_write_1h
            + usage.output_tokens * r.output
            + entry.request_fee
        )
        return quantize(total)

    def worst_case(self, model: str, input_tokens: int, max_output_tokens: int) -> Decimal:
        """The most a call can cost with up to ``input_tokens`` in and ``max_output_tokens`` out."""
        entry = self._entry(model)
        # The bracket of input_tokens: its worst rates also cover every bracket below it, so a
        # call with fewer input tokens stays within the bound without pricing the dearest tier.
        r = entry.rates(input_tokens)
        return quantize(
            input_tokens * r.worst_input + max_output_tokens * r.worst_output + entry.request_fee
        )

    def max_output_tokens(self, model: str, input_tokens: int, available: Decimal) -> int:
        """The most output tokens whose worst case fits in ``available`` (0 if none fit).

        Returns ``sys.maxsize`` when output costs nothing on this model.
        """
        entry = self._entry(model)
        r = entry.rates(input_tokens)
        # worst_case rounds up to the nano-dollar, so it fits exactly when the unrounded
        # amount is at most ``available`` rounded down to the nano-dollar.
        room = available.quantize(NANO, rounding=ROUND_FLOOR) - (
            input_tokens * r.worst_input + entry.request_fee
        )
        if room < 0:
            return 0
        if r.worst_output == 0:
            return sys.maxsize
        return int(room // r.worst_output)

    def _entry(self, model: str) -> _Entry:
        try:
            return self._entries[model]
        except KeyError:
            raise UnknownModelPrice(model) from None


def _brackets(per_mtok: Iterable[tuple[Decimal, ...]]) -> tuple[_Rates, ...]:
    """Per-token rates from per-million ones, one bracket per tuple, lowest threshold first."""
    brackets: list[_Rates] = []
    worst_input = worst_output = ZERO
    for inp, out, read, write, write_1h in ((p / _PER_MTOK for p in t) for t in per_mtok):
        worst_input = max(worst_input, inp, read, write, write_1h)
        worst_output = max(worst_output, out)
        brackets.append(_Rates(inp, out, read, write, write_1h, worst_input, worst_output))
    return tuple(brackets)


def _entry_from_price(price: Price) -> _Entry:
    return _Entry(price, (), _brackets([tuple(getattr(price, key) for key in _PRICE_KEYS)]), ZERO)


def _entry_from_genai(model: str, provider_id: str) -> _Entry:
    try:
        calc = genai_prices.calc_price(genai_prices.Usage(), model, provider_id=provider_id)
    except LookupError:
        raise UnknownModelPrice(model, provider_id) from None
    candidates = [calc.model_price]
    prices = calc.model.prices
    if isinstance(prices, list):
        # Time-of-day prices (off-peak discounts) change while the bot runs: bill every token at
        # the dearest of them, so spend is never under-counted. Dated price changes are resolved
        # once, here: a restart picks up the next one.
        candidates += [
            c.prices for c in prices if isinstance(c.constraint, gp.TimeOfDateConstraint)
        ]
    starts = sorted(
        {
            tier.start
            for mp in candidates
            for key in _PRICE_KEYS
            if isinstance(value := getattr(mp, key), gp.TieredPrices)
            for tier in value.tiers
        }
    )
    # A representative total input for each bracket: at or below the first threshold, then just
    # above each threshold in turn.
    points = [starts[0] if starts else 0, *(start + 1 for start in starts)]
    per_mtok = [
        tuple(max(_per_mtok(mp, key, point) for mp in candidates) for key in _PRICE_KEYS)
        for point in points
    ]
    fees = [fee for mp in candidates if isinstance(fee := mp.requests_kcount, Decimal)]
    return _Entry(
        Price(*per_mtok[0]),
        tuple(starts),
        _brackets(per_mtok),
        max(fees, default=ZERO) / 1000,  # requests_kcount: dollars per thousand requests
    )


# The rate genai-prices falls back to when a model lacks one: the tokens then belong to the
# broader unit (a 1-hour cache write is a cache write, a cache write is input).
_FALLBACK: dict[str, str | None] = {
    "input_mtok": None,
    "output_mtok": None,
    "cache_read_mtok": "input_mtok",
    "cache_write_mtok": "input_mtok",
    "cache_write_1h_mtok": "cache_write_mtok",
}


def _per_mtok(mp: gp.ModelPrice, key: str, total_input: int) -> Decimal:
    """One of a model's rates at a total input, with genai-prices' defaults for missing ones."""
    value: Decimal | gp.TieredPrices | None = getattr(mp, key)
    if value is None:
        fallback = _FALLBACK[key]
        return ZERO if fallback is None else _per_mtok(mp, fallback, total_input)
    if isinstance(value, gp.TieredPrices):
        for tier in reversed(value.tiers):
            if total_input > tier.start:
                return tier.price
        return value.base
    return value
