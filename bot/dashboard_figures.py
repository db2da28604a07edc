"""The dashboard's figures: every amount computed here with Decimal and handed on as text.

The page's script sizes bars with ``Number(value)`` and shows only the ``text`` made here, so no
money is ever added up in a browser's floats. The whole bill is read from ``bot.report`` (its
``as_dict``), so a line added to the report shows up here without a change.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from bot.jobs import month_forecast
from bot.report import as_dict, build_report
from bot.turn import Deps
from budget.analytics import daily_costs
from budget.money import ZERO, fmt_usd
from budget.periods import Period

NICE_STEPS = (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10))
BILL_LABELS = {
    "llm": "LLM",
    "channel_fees": "Channel fees",
    "infra": "Infrastructure",
    "cpu": "CPU",
    "memory": "Memory",
    "total": "Total",
    "per_active_user": "Per active user",
    "per_message": "Per message",
}
ALERTS_SHOWN = 50


def usd_text(amount: Decimal | None) -> str:
    """Dollars exactly as stored, without trailing zeros but with at least cents: ``$12.345678``."""
    if amount is None:
        return "n/a"
    return f"${amount:,.{max(2, _places(amount))}f}"


def pct_text(ratio: Decimal | None) -> str:
    return "n/a" if ratio is None else f"{100 * ratio:.1f}%"


def ticks(top: Decimal, n: int = 5) -> dict[str, Any]:
    """A round axis from 0 to at least ``top`` in at most ``n`` steps of 1, 2, 2.5 or 5 x 10^k."""
    if top <= 0:
        top = Decimal(1)
    raw = top / n
    power = Decimal(1).scaleb(raw.adjusted())
    step = next(s * power for s in NICE_STEPS if s * power >= raw)
    count = int((top / step).to_integral_value(ROUND_CEILING))
    marks = [step * k for k in range(count + 1)]
    places = max(_places(v) for v in marks)  # one format for the whole axis: $0, $2.50, $5.00
    places = 2 if places == 1 else places
    return {"max": str(marks[-1]), "ticks": [{"value": str(v), "text": f"${v:,.{places}f}"} for v in marks]}


def _places(amount: Decimal) -> int:
    exponent = amount.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _money(v: Decimal) -> dict[str, str]:
    return {"value": str(v), "text": usd_text(v)}


def _bars(items: dict[str, Decimal], total: Decimal, extra: dict[str, dict[str, str]] | None = None) -> list[Any]:
    return [
        {"name": k, **_money(v), "share": pct_text(v / total if total else None), **(extra or {}).get(k, {})}
        for k, v in items.items()
    ]


async def figures(deps: Deps, days: int, now: datetime) -> dict[str, Any]:
    """Everything the page shows for the last ``days`` days as of ``now``, as JSON-ready text."""
    tz = deps.calendar.tz
    report = await build_report(deps, days, now)
    s = report.summary
    month = deps.calendar.window(Period.MONTH, now)
    until = now + timedelta(microseconds=1)  # rows stamped at ``now`` count, as in the report
    rows = await deps.db.requests(min(report.start, month.start), until)
    in_window = [r for r in rows if r.created_at >= report.start]
    in_month = [r for r in rows if r.created_at >= month.start]

    # Spend per local day, split by provider; every day of the window has a bar, quiet ones too.
    per_day: dict[date, dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    for r in in_window:
        per_day[r.created_at.astimezone(tz).date()][r.provider] += r.cost
    first, last = report.start.astimezone(tz).date(), now.astimezone(tz).date()
    day_list = [first + timedelta(days=k) for k in range((last - first).days + 1)]
    day_totals = {d: sum(per_day[d].values(), ZERO) for d in day_list}
    busiest = max(day_list, key=lambda d: day_totals[d])
    daily = {
        "days": [
            {
                "date": d.isoformat(), "label": f"{d.day} {d:%b}", **_money(day_totals[d]),
                "parts": [{"name": p, **_money(c)} for p, c in per_day[d].items() if c],
            }
            for d in day_list
        ],
        "scale": ticks(day_totals[busiest]),
        "summary": f"{len(day_list)} days, {usd_text(s.llm_cost)} in all; the dearest day {busiest:%d %b} "
        f"at {usd_text(day_totals[busiest])}" if s.llm_cost else f"{len(day_list)} days, no spend yet",
        "empty": not s.llm_cost,
    }  # fmt: skip

    model_provider = {r.model: r.provider for r in in_window}
    providers = list(s.by_provider)
    cache_total = s.llm_cost + s.saved

    return {
        "window": {
            "days": days, "tz": str(tz), "start": report.start.astimezone(tz).strftime("%d %b %Y %H:%M"),
            "end": now.astimezone(tz).strftime("%d %b %Y %H:%M"),
        },
        "activity": {"requests": s.requests, "answers": s.answers, "errors": s.errors, "users": s.active_users},
        "providers": providers,
        "daily": daily,
        "by_provider": _bars(s.by_provider, s.llm_cost),
        "by_model": _bars(s.by_model, s.llm_cost, {m: {"provider": p} for m, p in model_provider.items()}),
        "top_users": _bars(dict(s.top_users), s.llm_cost),
        "cache": {
            "hits": s.cache_hits, "answers": s.answers, "rate": None if s.cache_hit_rate is None
            else str(s.cache_hit_rate), "rate_text": pct_text(s.cache_hit_rate), "saved": usd_text(s.saved),
            "without": usd_text(cache_total),
            "saved_share": pct_text(s.saved / cache_total if cache_total else None),
        },
        "burn": await _burn(deps, now, in_month),
        "alerts": await _alerts(deps, report.start),
        "bill": _bill(as_dict(report)["bill"]),
        "llm": usd_text(s.llm_cost),
    }  # fmt: skip


async def _burn(deps: Deps, now: datetime, rows: list[Any]) -> dict[str, Any]:
    """This month's cumulative LLM spend (what the global limit counts) and the alerts' forecast."""
    tz = deps.calendar.tz
    today = now.astimezone(tz).date()
    length = calendar.monthrange(today.year, today.month)[1]
    per_day = daily_costs(rows, tz)
    forecast = await month_forecast(deps, now, per_day.get(today, ZERO))
    running, actual = ZERO, [{"day": 0, **_money(ZERO)}]
    for day in range(1, today.day + 1):
        running += per_day.get(today.replace(day=day), ZERO)
        actual.append({"day": day, **_money(running)})
    limit = deps.budget.limits.global_monthly_usd
    settings = deps.settings
    projected = fmt_usd(forecast.projected, 2)
    top = max(forecast.projected, running, limit or ZERO)
    marks: list[dict[str, str]] = []
    if limit is not None:
        marks = [
            {"name": pct_text(t).replace(".0%", "%"), "kind": kind, **_money(limit * t)}
            for t, kind in ((settings.warning_threshold, "warn"), (settings.critical_threshold, "crit"))
        ]
    used = pct_text(running / limit if limit else None)
    return {
        "month": f"{today:%B %Y}", "days_in_month": length, "today": today.day,
        "actual": actual,
        # An estimate: shown to the cent (its exact value still sizes the line).
        "forecast": [
            {"day": today.day, **_money(running)},
            {"day": length, "value": str(forecast.projected), "text": projected},
        ],
        "limit": None if limit is None else _money(limit), "thresholds": marks,
        "scale": ticks(top * Decimal("1.05")),
        "spent": usd_text(running), "projected": projected, "rate": fmt_usd(forecast.daily_rate),
        "method": forecast.method.value, "used": used,
        "projected_used": pct_text(forecast.projected / limit if limit else None),
        "empty": not running and not rows,
        "summary": f"{usd_text(running)} spent by day {today.day} of {length}"
        + (f" ({used} of the {usd_text(limit)} limit)" if limit else "")
        + f"; forecast {projected} by month end",
    }  # fmt: skip


async def _alerts(deps: Deps, since: datetime) -> list[dict[str, str]]:
    tz = deps.calendar.tz
    return [
        {
            "time": a.created_at.astimezone(tz).strftime("%d %b %H:%M"), "level": a.level, "rule": a.rule,
            "subject": a.subject, "period": a.period_key, "message": a.message,
        }
        for a in await deps.db.alerts(since, ALERTS_SHOWN)
    ]  # fmt: skip


def _bill(bill: dict[str, str | None]) -> dict[str, Any]:
    """Each line of the report's bill; the parts (not the total or an average) make the bar."""
    lines = []
    for key, value in bill.items():
        amount = None if value is None else Decimal(value)
        part = key != "total" and not key.startswith("per_")
        label = BILL_LABELS.get(key, key.replace("_", " ").capitalize())
        lines.append({"key": key, "label": label, "value": value, "text": usd_text(amount), "part": part})
    total = Decimal(bill.get("total") or 0)
    for line in lines:
        if line["part"]:
            share = Decimal(line["value"] or 0) / total if total else None
            line["share"] = pct_text(share)
    parts = [x for x in lines if x["part"] and Decimal(x["value"] or 0) > 0]
    return {"lines": lines, "total": usd_text(total), "empty": not parts}
