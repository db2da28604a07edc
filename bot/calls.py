"""One AI call, budgeted: clamp, reserve, call, settle, record; then the next model on failure.

Every attempt becomes exactly one ai_request row (DESIGN invariant 3), and a reservation is
always settled or released, whatever happens to the call (invariant 2).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot import metrics
from bot.turn import Turn
from budget.ledger import Reservation
from budget.money import ZERO, from_nano
from budget.records import AIRequest, Kind, Status
from budget.rules import Meter, Unit, output_cap, remaining
from budget.tokens import Counted
from providers.base import CompletionRequest, CompletionResult, ProviderError, Usage
from providers.catalog import ModelSpec


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer, or why there is none: ``over_budget`` (nothing could be paid for) or not."""

    result: CompletionResult | None
    spec: ModelSpec | None
    cost: Decimal
    over_budget: bool


async def call_chain(
    turn: Turn, chain: Sequence[ModelSpec], prompt: Sequence[Counted], kind: Kind, wanted: int
) -> Outcome:
    """Try each model of the chain in order until one answers within budget."""
    over_budget = False
    for spec in chain:
        held = await _reserve(turn, spec, prompt, wanted, ready=kind is Kind.ANSWER)
        if held is None:
            over_budget = True
            continue
        outcome = await _attempt(turn, spec, prompt, kind, *held)
        if outcome is not None:
            return outcome
        over_budget = False  # a provider failed: that is not a budget problem
    return Outcome(None, None, ZERO, over_budget)


def exempt(turn: Turn) -> bool:
    """Admins skip their own limits only when ADMINS_EXEMPT is set; the bot's never."""
    return turn.is_admin and turn.deps.settings.admins_exempt


async def _reserve(
    turn: Turn, spec: ModelSpec, prompt: Sequence[Counted], wanted: int, *, ready: bool = False
) -> tuple[Reservation, int] | None:
    """Hold the worst case of the call; ``ready``: the reservation made with the rate limit's
    read (``bot.stages.rate_limit``) is this one if its plan is this call's, to the token and the
    nano-dollar, else it is released first."""
    d = turn.deps
    meters = turn.meters
    if ready and turn.held is not None:
        model, made = turn.held
        plan = _plan(turn, spec, prompt, meters, wanted)
        if plan is not None and model == spec.model and (plan[2], plan[0] + plan[1]) == (made.cost, made.tokens):
            turn.held = None
            return made.reservation, plan[1]
        await release_held(turn)
    for _ in range(2):
        plan = _plan(turn, spec, prompt, meters, wanted)
        if plan is None:
            return None
        input_tokens, cap, worst = plan
        reservation = await d.budget.reserve(meters, worst, input_tokens + cap, turn.now)
        if reservation is not None:
            return reservation, cap
        # Another message of this user took the money since the meters were read: read again.
        meters = await d.budget.meters(turn.user, turn.now, exempt=exempt(turn))
    return None


async def release_held(turn: Turn) -> None:
    """Give back the reservation made with the rate limit's read, unused."""
    assert turn.held is not None
    _, admission = turn.held
    turn.held = None
    try:
        await turn.deps.budget.release(admission.reservation)
    except Exception as error:
        turn.deps.log.error("release failed (%s); the reservation will expire", type(error).__name__)


def _plan(
    turn: Turn, spec: ModelSpec, prompt: Sequence[Counted], meters: Sequence[Meter], wanted: int
) -> tuple[int, int, Decimal] | None:
    """(input tokens, max_tokens, worst-case cost), or None if not even the minimum reply fits."""
    d = turn.deps
    input_tokens = d.counter.prompt_tokens(prompt, spec.model)
    usd_left = remaining(meters, Unit.USD)
    affordable = None if usd_left is None else d.prices.max_output_tokens(spec.model, input_tokens, from_nano(usd_left))
    cap = output_cap(
        input_tokens=input_tokens, wanted=wanted, tokens_left=remaining(meters, Unit.TOKENS), affordable=affordable
    )
    if cap < min(d.settings.min_reply_tokens, wanted):
        return None
    return input_tokens, cap, d.prices.worst_case(spec.model, input_tokens, cap)


async def _attempt(
    turn: Turn, spec: ModelSpec, prompt: Sequence[Counted], kind: Kind, reservation: Reservation, cap: int
) -> Outcome | None:
    d = turn.deps
    started = time.perf_counter()
    try:
        request = CompletionRequest(spec.model, [c.message for c in prompt], cap, cache_prompt=kind is Kind.ANSWER)
        result = await d.router.provider(spec).complete(request)
    except ProviderError as error:
        cost = d.prices.cost(spec.model, error.usage)
        d.router.failed(spec, d.clock().timestamp(), error.retry_after)  # the bot's clock, as chain() reads it
        row = await _record(turn, spec, kind, Status.ERROR, error.usage, cost, started, error=str(error))
        await _settle(turn, reservation, cost, error.usage.total_tokens, row)
        d.log.warning("call failed, trying the next model: %s", error)
        return None
    except BaseException:
        await d.budget.release(reservation)  # cancelled or crashed mid-call: give the money back
        raise
    if result.usage.total_tokens == 0:
        # Some OpenAI-compatible servers report no usage; zero would read as free. Count it here.
        usage = Usage(
            input_tokens=d.counter.prompt_tokens(prompt, spec.model),
            output_tokens=min(cap, d.counter.count_text(result.text)),
        )
        result = CompletionResult(result.text, usage, result.provider, result.model, result.simulated)
    cost = d.prices.cost(spec.model, result.usage)
    d.router.succeeded(spec)
    # The row first: the ledger is the truth, and counters are rebuilt from it.
    row = await _record(turn, spec, kind, Status.OK, result.usage, cost, started)
    await _settle(turn, reservation, cost, result.usage.total_tokens, row)
    return Outcome(result, spec, cost, over_budget=False)


async def _settle(turn: Turn, reservation: Reservation, cost: Decimal, tokens: int, row: str) -> None:
    """Settle, retried: a hot store that stays down lets the reservation expire instead, and the
    counter is rebuilt from the ledger (which has the row, ``row``) when its key is seeded again."""
    for wait in (0.05, 0.2, None):
        try:
            await turn.deps.budget.settle(reservation, cost, tokens, row=row)
            return
        except Exception as error:
            if wait is None:
                turn.deps.log.error("settle failed (%s); the reservation will expire", type(error).__name__)
                return
            await asyncio.sleep(wait)


async def _record(
    turn: Turn,
    spec: ModelSpec,
    kind: Kind,
    status: Status,
    usage: Usage,
    cost: Decimal,
    started: float,
    *,
    error: str | None = None,
) -> str:
    """Record the attempt's ai_request row; returns its id."""
    row = await record_attempt(
        turn, kind=kind, provider=spec.provider, model=spec.model, status=status, usage=usage, cost=cost,
        latency_ms=int((time.perf_counter() - started) * 1000), tier=spec.tier.value, error=error,
        reason=turn.outcomes.get("choose"),
    )  # fmt: skip
    metrics.observe_call(turn.inbound.channel, spec.provider, spec.model, status, usage, cost)
    return row


async def record_attempt(turn: Turn, **fields: Any) -> str:
    """One ai_request row for this turn's message (DESIGN invariant 3); ``fields`` are the
    attempt's own (provider, model, status, usage, cost...). Returns the row's id."""
    row = uuid.uuid4().hex
    await turn.deps.recorder.record(
        [
            AIRequest(
                request_id=row,
                created_at=turn.now,
                user_key=turn.user,
                channel=turn.inbound.channel,
                message_id=turn.inbound.message_id,
                complexity=turn.complexity.value if turn.complexity else None,
                **fields,
            )
        ]
    )
    return row
