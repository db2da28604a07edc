"""Admin chat commands: /stats /quota /alerts /cache /budget. Who may run them is checked in
bot.commands on every call; bad arguments get a usage line."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from bot.turn import Turn
from budget.analytics import CostSummary, daily_costs, summarize
from budget.forecast import forecast_month_end
from budget.money import fmt_usd, from_nano
from budget.periods import Period
from budget.records import Quota
from budget.rules import Meter, Scope, Unit, degradation


class Usage(ValueError):
    """Bad arguments: the message is the usage line."""


def _money_list(items: dict[str, Decimal], n: int = 5) -> str:
    return ", ".join(f"{k} {fmt_usd(v)}" for k, v in list(items.items())[:n]) or "none"


def _bot_meter(meters: list[Meter], period: Period) -> Meter | None:
    return next((m for m in meters if m.scope is Scope.GLOBAL and m.period is period and m.unit is Unit.USD), None)


async def _forecast(turn: Turn) -> tuple[Decimal, Decimal]:
    """This month's spend and its month-end forecast (budget.forecast, on daily costs)."""
    d = turn.deps
    month = d.calendar.window(Period.MONTH, turn.now)
    rows = await d.db.requests(month.start, month.end)
    daily = daily_costs(rows, d.calendar.tz)
    f = forecast_month_end(daily, turn.now.astimezone(d.calendar.tz).date())
    return f.spent, f.projected


async def stats(turn: Turn, args: list[str]) -> str:
    d = turn.deps
    period = args[0] if args else "today"
    if period not in ("today", "week", "month") or len(args) > 1:
        raise Usage("Usage: /stats [today|week|month]")
    if period == "today":
        start = d.calendar.window(Period.DAY, turn.now).start
    elif period == "week":
        start = turn.now - timedelta(days=7)
    else:
        start = d.calendar.window(Period.MONTH, turn.now).start
    rows = await d.db.requests(start, turn.now + timedelta(seconds=1))
    s: CostSummary = summarize(rows, await d.db.fees(start, turn.now + timedelta(seconds=1)))
    spent, projected = await _forecast(turn)
    month = _bot_meter(await d.budget.meters(turn.user, turn.now), Period.MONTH)
    budget = (
        "no monthly budget"
        if month is None or month.limit is None
        else (
            f"{fmt_usd(spent, 2)} of {fmt_usd(from_nano(month.limit), 2)} this month "
            f"({100 * spent / from_nano(month.limit):.1f}%), forecast {fmt_usd(projected, 2)} by month end"
        )
    )
    hit_rate = "n/a" if s.cache_hit_rate is None else f"{100 * s.cache_hit_rate:.1f}%"
    return "\n".join([
        f"Stats ({period}, since {start:%Y-%m-%d %H:%M} {d.settings.budget_timezone})",
        f"Cost: {fmt_usd(s.total_cost)} (LLM {fmt_usd(s.llm_cost)}, channel fees {fmt_usd(s.fees)})",
        f"Requests: {s.requests} (answers {s.answers}, errors {s.errors}); tokens {s.tokens.prompt:,} in, "
        f"{s.tokens.completion:,} out",
        f"Cache: {s.cache_hits} hits ({hit_rate}), saved {fmt_usd(s.saved)}",
        f"By provider: {_money_list(s.by_provider)}",
        f"By model: {_money_list(s.by_model)}",
        f"Users: {s.active_users} active; {fmt_usd(s.cost_per_active_user or Decimal(0))} per user, "
        f"{fmt_usd(s.cost_per_answer or Decimal(0))} per message",
        f"Top users: {', '.join(f'{u} {fmt_usd(c)}' for u, c in s.top_users) or 'none'}",
        f"Budget: {budget}",
    ])  # fmt: skip


QUOTA_USAGE = "Usage: /quota <user> or /quota <user> set <daily|monthly> <usd|tokens> <value|none>"


async def quota(turn: Turn, args: list[str]) -> str:
    d = turn.deps
    if len(args) not in (1, 5) or (len(args) == 5 and args[1] != "set"):
        raise Usage(QUOTA_USAGE)
    user = args[0]
    if ":" not in user:
        raise Usage(f"{QUOTA_USAGE}\nA user is channel:id, for example telegram:123456.")
    if len(args) == 5:
        period, unit, raw = args[2], args[3], args[4]
        if period not in ("daily", "monthly") or unit not in ("usd", "tokens"):
            raise Usage(QUOTA_USAGE)
        value = _parse_limit(unit, raw)
        old = await d.db.get_quota(user) or Quota(user)
        field = f"{period}_{unit}"
        new = Quota(**{**{f: getattr(old, f) for f in ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens")},
                       field: value}, user_key=user)  # fmt: skip
        await d.db.set_quota(new, turn.user, d.clock())  # audited in the same transaction
        await d.budget.apply_quota(new)  # at once, on every process
    return await _show_quota(turn, user)


def _parse_limit(unit: str, raw: str) -> Decimal | int | None:
    if raw.lower() in ("none", "default"):
        return None
    try:
        value = Decimal(raw.removeprefix("$")) if unit == "usd" else int(raw.replace(",", ""))
    except (InvalidOperation, ValueError):
        raise Usage(f"{raw!r} is not a number. {QUOTA_USAGE}") from None
    if value < 0 or (isinstance(value, Decimal) and not value.is_finite()):
        raise Usage(f"A limit is a number of 0 or more. {QUOTA_USAGE}")
    return value


async def _show_quota(turn: Turn, user: str) -> str:
    d = turn.deps
    meters = [m for m in await d.budget.meters(user, turn.now) if m.scope is Scope.USER]
    own = await d.db.get_quota(user)
    lines = [f"{user}" + ("" if own is None else " (own quota)")]
    for m in meters:
        limit = "no limit" if m.limit is None else _amount(m, m.limit)
        period = "daily" if m.period is Period.DAY else "monthly"
        lines.append(f"{period} {m.unit.value}: {_amount(m, m.used)} used of {limit}")
    return "\n".join(lines)


def _amount(meter: Meter, value: int) -> str:
    return fmt_usd(from_nano(value)) if meter.unit is Unit.USD else f"{value:,} tokens"


async def alerts(turn: Turn, args: list[str]) -> str:
    if args:
        raise Usage("Usage: /alerts")
    recent = await turn.deps.db.alerts(turn.now - timedelta(days=7))
    if not recent:
        return "No alerts in the last 7 days."
    return "\n".join(f"{a.created_at:%m-%d %H:%M} [{a.level}] {a.message}" for a in recent[:20])


async def cache(turn: Turn, args: list[str]) -> str:
    d = turn.deps
    if args == ["stats"]:
        s = await d.cache.stats(turn.now.timestamp())
        return f"Cache: {s.size} answers kept; {s.hits} hits, {s.misses} misses ({100 * s.hit_rate:.1f}% hit rate)"
    if args == ["clear"]:
        n = await d.cache.clear()
        await d.db.audit(turn.user, "cache.clear", None, {"removed": n}, d.clock())
        return f"Cache cleared: {n} answers removed."
    raise Usage("Usage: /cache stats or /cache clear")


async def budget(turn: Turn, args: list[str]) -> str:
    d = turn.deps
    if args:
        raise Usage("Usage: /budget")
    meters = await d.budget.meters(turn.user, turn.now)
    step, _ = degradation(meters, d.ladder)
    spent, projected = await _forecast(turn)
    lines = ["The bot's budget"]
    for period in (Period.DAY, Period.MONTH):
        m = _bot_meter(meters, period)
        if m is not None:
            limit = "no limit" if m.limit is None else fmt_usd(from_nano(m.limit), 2)
            lines.append(f"{period.value}: {fmt_usd(from_nano(m.used))} spent of {limit}")
    lines.append(f"Forecast: {fmt_usd(projected, 2)} by month end ({fmt_usd(spent, 2)} so far)")
    names = {0: "normal", 1: "cheaper models", 2: "cheaper models, short context", 3: "cache only"}
    lines.append(f"Degradation step: {int(step)} ({names[int(step)]})")
    return "\n".join(lines)


ADMIN: dict[str, Callable[[Turn, list[str]], Awaitable[str]]] = {
    "/stats": stats,
    "/quota": quota,
    "/alerts": alerts,
    "/cache": cache,
    "/budget": budget,
}
HELP = "Admin: /stats [today|week|month], /quota <user> [set ...], /alerts, /cache stats|clear, /budget"
