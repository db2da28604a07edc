"""The shapes of the cost API (bot.api): what it accepts and what it answers.

Money and ratios go out as exact decimal strings (``"0.000001234"``), never as JSON numbers
(DESIGN invariant 1). Amounts coming in may be strings or JSON numbers; a number is read from its
text, so ``0.1`` is exactly one dime (bot.api parses request bodies with ``parse_float=Decimal``).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema


def _text(amount: Decimal) -> str:
    """Fixed-point text without trailing zeros: ``10``, ``0.0000015`` (not ``1E+1`` or ``0.000001500``);
    no rounding, whatever the number of digits."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# Out: a Decimal as exact text.
Exact = Annotated[Decimal, PlainSerializer(_text, return_type=str, when_used="json")]
# In: dollars to the nano-dollar; the bound keeps nano-dollars inside a signed 64-bit counter. As text,
# exactly what the schema's pattern says (pydantic's own pattern for decimals allows "-5" and "1e12",
# which are then refused: a schema promising more than the API takes).
AMOUNT_TEXT = r"^\+?0*(\d{1,9}(\.\d{0,9}0*)?|\.\d{1,9}0*)$"


def _amount_text(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(AMOUNT_TEXT, value):
        raise ValueError("an amount in dollars: digits, at most 9 after the point, below 1000000000")
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_amount_text),
    Field(ge=0, lt=1_000_000_000, decimal_places=9, allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "exclusiveMaximum": 1_000_000_000},
                {"type": "string", "pattern": AMOUNT_TEXT},
            ]
        }
    ),
]


def _json_integer(value: object) -> object:
    """A JSON integer, as the schema says: ``5`` or ``5.0`` or ``5e0`` (JSON Schema's integers), not
    ``"5"`` or ``true`` (pydantic's lax mode takes both)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("a whole number")
    if isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value):
        return int(value)
    return value


TokenCount = Annotated[
    int,
    BeforeValidator(_json_integer),
    Field(ge=0, le=10**15),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 10**15}),
]
# No control characters: a NUL would reach Postgres, which refuses it in text (a 500, not a 422).
USER_KEY = r"^[a-z][a-z0-9_]*:[^\s:\x00-\x1f\x7f]+$"
UserKey = Annotated[str, Field(pattern=USER_KEY, max_length=200, examples=["telegram:123"])]


class Closed(BaseModel):
    """A request body: an unknown field is an error naming it, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# -- analytics ---------------------------------------------------------------------------------


class TokenTotals(BaseModel):
    prompt: int
    completion: int
    cached: int
    cache_write: int
    reasoning: int


class CacheEfficiency(BaseModel):
    hits: int = Field(description="answers served from the cache")
    answers: int
    hit_rate: Exact | None = Field(description="hits / answers; null with no answers")
    saved: Exact = Field(description="what the cache hits would have cost, USD")


class UserCost(BaseModel):
    user_id: str
    cost: Exact


class Analytics(BaseModel):
    """Spend over [start, end): LLM cost, channel fees (bot-wide only), breakdowns dearest first."""

    start: datetime
    end: datetime
    user_id: str | None
    llm_cost: Exact
    fees: Exact
    total_cost: Exact
    requests: int
    answers: int
    errors: int
    tokens: TokenTotals
    cache: CacheEfficiency
    by_model: dict[str, Exact]
    by_provider: dict[str, Exact]
    by_channel: dict[str, Exact]
    by_user: dict[str, Exact]
    active_users: int
    cost_per_active_user: Exact | None
    cost_per_answer: Exact | None
    top_users: list[UserCost]
    premium_share: Exact | None


# -- quotas ------------------------------------------------------------------------------------


class Limits(BaseModel):
    """One set of user limits; null: none of that kind (for overrides: the configured one applies)."""

    daily_usd: Exact | None
    monthly_usd: Exact | None
    daily_tokens: int | None
    monthly_tokens: int | None


class Used(BaseModel):
    """What the user has used in the current periods (settled plus reserved)."""

    daily_usd: Exact
    monthly_usd: Exact
    daily_tokens: int
    monthly_tokens: int
    day_resets_at: datetime
    month_resets_at: datetime


class QuotaView(BaseModel):
    user_id: str
    exempt: bool = Field(description="an admin exempt from user limits (ADMINS_EXEMPT)")
    defaults: Limits = Field(description="the configured limits")
    overrides: Limits = Field(description="this user's quota")
    effective: Limits = Field(description="what the budget enforces now")
    used: Used


class QuotaUpdate(Closed):
    """A field left out keeps its override; null clears it; a value (>= 0) sets it."""

    daily_usd: Amount | None = None
    monthly_usd: Amount | None = None
    daily_tokens: TokenCount | None = None
    monthly_tokens: TokenCount | None = None


# -- optimize ----------------------------------------------------------------------------------


class OptimizeRequest(Closed):
    question: Annotated[str, Field(min_length=1, max_length=20_000)]
    user_id: UserKey | None = Field(default=None, description="count this user's conversation and history")


class ModelCost(BaseModel):
    model: str = Field(description="provider/model")
    provider: str
    tier: str
    cost: Exact


class Advice(BaseModel):
    rule: str
    message: str
    figures: dict[str, str]


class Optimization(BaseModel):
    complexity: str
    tier: str
    chosen: ModelCost = Field(description="the model the router would pick now")
    why: str
    prompt_tokens: int
    expected_output_tokens: int
    output_samples: int = Field(description="past answers behind the expectation; under 5: a default")
    estimates: list[ModelCost] = Field(description="one per catalog model")
    cache_hit: bool
    self_contained: bool
    repeated: int = Field(description="times asked, counting this one")
    suggestions: list[Advice]


# -- cache, alerts, recommendations ------------------------------------------------------------


class CacheStats(BaseModel):
    hits: int
    misses: int
    size: int
    hit_rate: Exact | None = Field(description="hits / (hits + misses); null before any lookup")


class CacheCleared(BaseModel):
    removed: int


class Alert(BaseModel):
    rule: str
    subject: str
    period_key: str
    level: str
    message: str
    created_at: datetime


class Alerts(BaseModel):
    since: datetime
    alerts: list[Alert] = Field(description="newest first")


class Recommendation(BaseModel):
    rule: str
    subject: str | None
    message: str
    figures: dict[str, str]


class Recommendations(BaseModel):
    start: datetime
    end: datetime
    user_id: str | None
    recommendations: list[Recommendation]
