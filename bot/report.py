"""`pennybot report`: the bot's figures over the last N days, as a table, JSON or CSV.

The bill counts LLM spend, channel fees, the fixed monthly costs (INFRA_MONTHLY_COST, spread
evenly over the year's days) and the CPU and memory the bot's processes used (bot/usage.py stores
it; CPU_CORE_HOUR_PRICE and MEMORY_GB_HOUR_PRICE price it), so that the cost per active user and
per message include everything.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.turn import Deps
from budget.analytics import CostSummary, summarize
from budget.money import fmt_usd, quantize
from budget.records import ResourceUse

DAYS_PER_MONTH = Decimal("365.25") / 12
USAGE_PLACES = Decimal("0.000001")  # core-hours and GB-hours shown to the micro-unit


@dataclass(frozen=True, slots=True)
class Report:
    start: datetime
    end: datetime
    days: int
    summary: CostSummary
    infra: Decimal
    resources: ResourceUse
    cpu: Decimal
    memory: Decimal

    @property
    def total(self) -> Decimal:
        return self.summary.total_cost + self.infra + self.cpu + self.memory

    @property
    def per_user(self) -> Decimal | None:
        n = self.summary.active_users
        return quantize(self.total / n) if n else None

    @property
    def per_message(self) -> Decimal | None:
        n = self.summary.answers
        return quantize(self.total / n) if n else None


async def build_report(deps: Deps, days: int, now: datetime) -> Report:
    start, end = now - timedelta(days=days), now + timedelta(microseconds=1)
    rows = await deps.db.requests(start, end)
    summary = summarize(rows, await deps.db.fees(start, end))
    settings = deps.settings
    infra = quantize(settings.infra_monthly_cost * days / DAYS_PER_MONTH)
    used = await deps.db.resources(start, end)
    cpu, memory = used.cost(settings.cpu_core_hour_price, settings.memory_gb_hour_price)
    return Report(start, now, days, summary, infra, used, cpu, memory)


def as_dict(r: Report) -> dict[str, Any]:
    s = r.summary

    def money(v: Decimal | None) -> str | None:
        return None if v is None else str(v)

    return {
        "start": r.start.isoformat(), "end": r.end.isoformat(), "days": r.days,
        "bill": {"llm": money(s.llm_cost), "channel_fees": money(s.fees), "infra": money(r.infra),
                 "cpu": money(r.cpu), "memory": money(r.memory), "total": money(r.total),
                 "per_active_user": money(r.per_user), "per_message": money(r.per_message)},
        "resources": {"cpu_core_hours": str(r.resources.core_hours.quantize(USAGE_PLACES)),
                      "memory_gb_hours": str(r.resources.gib_hours.quantize(USAGE_PLACES))},
        "requests": s.requests, "answers": s.answers, "errors": s.errors, "active_users": s.active_users,
        "tokens": {"input": s.tokens.prompt, "output": s.tokens.completion, "cached": s.tokens.cached,
                   "cache_write": s.tokens.cache_write, "reasoning": s.tokens.reasoning},
        "cache": {"hits": s.cache_hits, "hit_rate": money(s.cache_hit_rate), "saved": money(s.saved)},
        "by_provider": {k: str(v) for k, v in s.by_provider.items()},
        "by_model": {k: str(v) for k, v in s.by_model.items()},
        "by_channel": {k: str(v) for k, v in s.by_channel.items()},
        "top_users": [{"user": u, "cost": str(c)} for u, c in s.top_users],
    }  # fmt: skip


def render(r: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(as_dict(r), indent=2)
    if fmt == "csv":
        return _csv(as_dict(r))
    return _table(r)


def _csv(data: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["section", "name", "value"])
    for section in ("bill", "resources", "tokens", "cache", "by_provider", "by_model", "by_channel"):
        for name, value in data[section].items():
            w.writerow([section, name, "" if value is None else value])
    for name in ("requests", "answers", "errors", "active_users"):
        w.writerow(["activity", name, data[name]])
    for row in data["top_users"]:
        w.writerow(["top_users", row["user"], row["cost"]])
    return out.getvalue()


def _table(r: Report) -> str:
    from rich.console import Console
    from rich.table import Table

    s = r.summary
    bill = Table(title=f"pennybot: the last {r.days} days ({r.start:%Y-%m-%d} to {r.end:%Y-%m-%d})")
    bill.add_column("cost")
    bill.add_column("USD", justify="right")
    rows = [
        ("LLM", s.llm_cost), ("channel fees", s.fees), ("infrastructure", r.infra), ("CPU", r.cpu),
        ("memory", r.memory), ("total", r.total),
        ("per active user", r.per_user), ("per message", r.per_message), ("saved by the cache", s.saved),
    ]  # fmt: skip
    for name, value in rows:
        bill.add_row(name, "n/a" if value is None else fmt_usd(value, 6 if value and value < 1 else 2))
    split = Table(title="LLM cost by provider and model")
    split.add_column("provider / model")
    split.add_column("USD", justify="right")
    for name, value in [*s.by_provider.items(), *s.by_model.items()]:
        split.add_row(name, fmt_usd(value))
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(bill)
    console.print(split)
    rate = "n/a" if s.cache_hit_rate is None else f"{100 * s.cache_hit_rate:.1f}%"
    console.print(
        f"{s.requests} AI calls, {s.answers} answers ({s.errors} errors), {s.active_users} active users; "
        f"tokens {s.tokens.prompt:,} in, {s.tokens.completion:,} out; cache hit rate {rate}"
    )
    used = r.resources
    console.print(f"resources: {used.core_hours:.4f} CPU core-hours, {used.gib_hours:.4f} GB-hours of memory")
    top = ", ".join(f"{u} {fmt_usd(c)}" for u, c in s.top_users) or "none"
    console.print(f"top users: {top}")
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()

