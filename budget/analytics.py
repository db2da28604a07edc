"""What the bot spent, from ai_request rows: totals, breakdowns and time series. Pure, no I/O.

Counting, over the rows given (DESIGN invariant 3: one row per AI call attempt):

* ``requests``: every row (answers, cache hits, failed attempts, summaries).
* ``answers``: rows of kind ``answer`` with status ``ok`` or ``cached`` (answered messages).
* ``errors``: rows with status ``error``, of any kind.
* ``llm_cost``: the sum of ``cost``; ``total_cost`` adds the channel fees (Twilio and the like),
  which are passed in because no row carries them. The breakdowns (provider, model, channel,
  user) and the time series split ``llm_cost`` only, so each of them sums to it exactly.
* Averages divide ``total_cost`` (what the operator pays) and are rounded up to the nano-dollar,
  like every amount in the budget; they are ``None`` when there is nothing to divide by.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import TypeVar

from budget.money import ZERO, quantize
from budget.records import AIRequest, Kind, Status
from providers.catalog import Tier

_K = TypeVar("_K", date, datetime)


@dataclass(frozen=True, slots=True)
class TokenTotals:
    """Token sums, in ``providers.base.Usage``'s convention: ``prompt`` includes ``cached`` (cache
    reads) and ``cache_write``; ``completion`` includes ``reasoning``."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(frozen=True, slots=True)
class CostSummary:
    """Spend and activity over a set of rows. Each ``by_*`` dict is sorted by cost, dearest first
    (ties by name), and sums to ``llm_cost``."""

    llm_cost: Decimal
    fees: Decimal
    total_cost: Decimal  # llm_cost + fees
    requests: int
    answers: int
    errors: int
    tokens: TokenTotals
    cache_hits: int
    cache_hit_rate: Decimal | None  # cache_hits / answers
    saved: Decimal  # what cache hits would have cost
    by_provider: dict[str, Decimal]
    by_model: dict[str, Decimal]
    by_channel: dict[str, Decimal]
    by_user: dict[str, Decimal]
    active_users: int  # distinct users with at least one row
    cost_per_active_user: Decimal | None
    cost_per_answer: Decimal | None
    top_users: list[tuple[str, Decimal]]
    premium_share: Decimal | None  # premium-tier cost / cost of rows whose tier is known


def is_answer(row: AIRequest) -> bool:
    """An answered message: an answer row that succeeded or came from the cache."""
    return row.kind is Kind.ANSWER and row.status in (Status.OK, Status.CACHED)


def summarize(rows: Sequence[AIRequest], fees: Decimal = ZERO, *, top: int = 5) -> CostSummary:
    """Totals and breakdowns of ``rows``; ``fees`` are the channel fees of the same period."""
    if not isinstance(fees, Decimal) or not fees.is_finite() or fees < 0:
        raise ValueError(f"fees must be a finite, non-negative Decimal: {fees!r}")
    if top < 0:
        raise ValueError(f"top must be >= 0: {top}")
    llm = sum((r.cost for r in rows), ZERO)
    total = llm + fees
    answers = sum(1 for r in rows if is_answer(r))
    hits = sum(1 for r in rows if r.kind is Kind.ANSWER and r.status is Status.CACHED)
    by_user = _by(rows, lambda r: r.user_key)
    tiered = [r for r in rows if r.tier is not None]
    tiered_cost = sum((r.cost for r in tiered), ZERO)
    premium = sum((r.cost for r in tiered if r.tier == Tier.PREMIUM), ZERO)
    return CostSummary(
        llm_cost=llm,
        fees=fees,
        total_cost=total,
        requests=len(rows),
        answers=answers,
        errors=sum(1 for r in rows if r.status is Status.ERROR),
        tokens=TokenTotals(
            prompt=sum(r.usage.input_tokens for r in rows),
            completion=sum(r.usage.output_tokens for r in rows),
            cached=sum(r.usage.cache_read_tokens for r in rows),
            cache_write=sum(r.usage.cache_write_tokens for r in rows),
            reasoning=sum(r.usage.reasoning_tokens for r in rows),
        ),
        cache_hits=hits,
        cache_hit_rate=Decimal(hits) / answers if answers else None,
        saved=sum((r.saved for r in rows), ZERO),
        by_provider=_by(rows, lambda r: r.provider),
        by_model=_by(rows, lambda r: r.model),
        by_channel=_by(rows, lambda r: r.channel),
        by_user=by_user,
        active_users=len(by_user),
        cost_per_active_user=quantize(total / len(by_user)) if by_user else None,
        cost_per_answer=quantize(total / answers) if answers else None,
        top_users=list(by_user.items())[:top],
        premium_share=premium / tiered_cost if tiered_cost else None,
    )


def daily_costs(rows: Iterable[AIRequest], tz: tzinfo = UTC) -> dict[date, Decimal]:
    """LLM cost per calendar day in ``tz``, oldest first; days with no rows are absent."""
    return _series(rows, lambda local: local.date(), tz)


def hourly_costs(rows: Iterable[AIRequest], tz: tzinfo = UTC) -> dict[datetime, Decimal]:
    """LLM cost per local hour in ``tz``, oldest first; hours with no rows are absent.

    A key is the start of the hour as an aware datetime with the fixed UTC offset in force then,
    so the two 01:00 hours of a day when clocks go back stay two keys (datetimes sharing one
    zoneinfo compare by wall clock and would merge).
    """

    def hour(local: datetime) -> datetime:
        offset = local.utcoffset() or timedelta(0)
        return local.replace(minute=0, second=0, microsecond=0, tzinfo=timezone(offset))

    return _series(rows, hour, tz)


def monthly_costs(rows: Iterable[AIRequest], tz: tzinfo = UTC) -> dict[date, Decimal]:
    """LLM cost per calendar month in ``tz``, keyed by the month's first day, oldest first; months
    with no rows are absent."""
    return _series(rows, lambda local: local.date().replace(day=1), tz)


def _series(rows: Iterable[AIRequest], bucket: Callable[[datetime], _K], tz: tzinfo) -> dict[_K, Decimal]:
    sums: dict[_K, Decimal] = defaultdict(lambda: ZERO)
    for r in rows:
        if r.created_at.tzinfo is None or r.created_at.utcoffset() is None:
            # A naive time would be read as the host's local time: a silent wrong bucket.
            raise ValueError(f"created_at of request {r.request_id} has no time zone")
        sums[bucket(r.created_at.astimezone(tz))] += r.cost
    return dict(sorted(sums.items()))


def _by(rows: Iterable[AIRequest], key: Callable[[AIRequest], str]) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for r in rows:
        sums[key(r)] += r.cost
    return dict(sorted(sums.items(), key=lambda kv: (-kv[1], kv[0])))
