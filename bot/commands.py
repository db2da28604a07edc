"""Chat commands: /start, /help, /usage, /reset. Every reply is text for the user."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot import admin, conversations
from bot.calls import exempt
from bot.turn import Turn
from budget.money import fmt_usd, from_nano
from budget.periods import Period
from budget.rules import Meter, Scope, Unit


async def run(turn: Turn) -> str:
    """The reply to a command; unknown ones get a pointer to /help. Admin power is checked on
    every call, and a refusal is audited (DESIGN invariant 7)."""
    words = turn.inbound.text.split()
    name = words[0].split("@", 1)[0].lower()
    if name in admin.ADMIN:
        if not turn.is_admin:
            await turn.deps.db.audit(turn.user, "command.refused", None, {"command": name}, turn.deps.clock())
            return turn.deps.texts.not_allowed.format(command=name)
        try:
            return await admin.ADMIN[name](turn, words[1:])
        except admin.Usage as usage:
            return str(usage)
    handler = COMMANDS.get(name)
    if handler is None:
        return turn.deps.texts.unknown_command.format(command=name)
    return await handler(turn)


async def start(turn: Turn) -> str:
    return turn.deps.texts.start


async def help_(turn: Turn) -> str:
    return turn.deps.texts.help + (f"\n{admin.HELP}" if turn.is_admin else "")


async def reset(turn: Turn) -> str:
    await turn.deps.db.reset_conversation(turn.user)
    await conversations.changed(turn.deps.hot, turn.deps.conversations, turn.user)
    return turn.deps.texts.reset_done


async def usage(turn: Turn) -> str:
    """The user's spend today and this month, what is left and when each resets."""
    d = turn.deps
    meters = await d.budget.meters(turn.user, turn.now, exempt=exempt(turn))
    mine = {m.period: m for m in meters if m.scope is Scope.USER and m.unit is Unit.USD}
    day, month = mine[Period.DAY], mine[Period.MONTH]
    return d.texts.usage.format(
        day_spent=fmt_usd(from_nano(day.used)),
        day_limit=_limit(turn, day),
        month_spent=fmt_usd(from_nano(month.used)),
        month_limit=_limit(turn, month),
        day_reset=_when(turn, day),
        month_reset=_when(turn, month),
    )


def _limit(turn: Turn, meter: Meter) -> str:
    if meter.limit is None:
        return " (no limit)"
    return turn.deps.texts.usage_limit.format(
        limit=fmt_usd(from_nano(meter.limit), 2),
        percent=f"{100 * meter.used / meter.limit:.1f}" if meter.limit else "100",
        left=fmt_usd(from_nano(meter.remaining or 0)),
    )


def _when(turn: Turn, meter: Meter) -> str:
    return meter.window.end.strftime("%Y-%m-%d %H:%M ") + turn.deps.settings.budget_timezone


COMMANDS: dict[str, Callable[[Turn], Awaitable[str]]] = {
    "/start": start,
    "/help": help_,
    "/usage": usage,
    "/reset": reset,
}
