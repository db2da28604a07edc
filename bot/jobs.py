"""Scheduled jobs: threshold alerts, the daily report, retention.

Each job is a plain async function of ``now`` (APScheduler 3 has no clock to inject), so tests
drive any time. Each run happens in one process only: it first takes a once-marker in the shared
hot store (``pb:{jobs}:<job>:<slot>``, the slot being its time window), so N replicas running the
same schedule do the work once. Alerts are also fired once by the database (``add_alert``): only
the new ones are delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from bot import metrics
from bot.notify import Notifier, SmtpConfig
from bot.settings import Settings
from bot.turn import Deps
from budget import alerts
from budget.alerts import BOT, Alert, AlertInputs, AlertSettings, BudgetUse, hour_period
from budget.analytics import CostSummary, hourly_costs, summarize
from budget.forecast import WINDOW_DAYS, Forecast, forecast_month_end
from budget.ledger import BudgetUnavailable
from budget.money import ZERO, fmt_usd, from_nano
from budget.periods import Period
from budget.records import AIRequest, Status, StoredAlert
from budget.rules import Meter, Scope, Unit
from providers.catalog import Tier

if TYPE_CHECKING:
    from telegram import Bot

log = logging.getLogger("pennybot.jobs")

ALERTS, DAILY_REPORT, RETENTION = "alerts", "daily_report", "retention"
RETENTION_HOUR = 3  # local time, away from the report and from most traffic
DAY_LOCK_TTL_S = 2 * 86_400
RATE_LIMITED_TTL_S = 3 * 3600  # read in its own hour and in the next one
# Retention must keep this month's ledger (a budget counter lost with Redis is seeded again from it)
# and the forecast's trailing week before the 1st: 31 days + 7.
MIN_RETENTION_DAYS = 38


@dataclass(frozen=True, slots=True)
class JobSettings:
    """The jobs' settings (env names in capitals: ALERT_DAILY_COST_THRESHOLD, ...)."""

    alert_daily_cost_threshold: Decimal = alerts.DAILY_COST
    alert_monthly_cost_threshold: Decimal = alerts.MONTHLY_COST
    retention_days: int = 90
    alert_webhook_url: SecretStr | None = None  # a Slack-style webhook URL is a credential
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_starttls: bool | None = None  # None: STARTTLS when the server offers it
    alert_email_to: tuple[str, ...] = ()
    alert_every_minutes: float = 5
    daily_report_hour: int = 8

    def __post_init__(self) -> None:
        problems = []
        if self.alert_daily_cost_threshold < 0 or self.alert_monthly_cost_threshold < 0:
            problems.append("ALERT_*_COST_THRESHOLD must be 0 or more")
        if self.retention_days < MIN_RETENTION_DAYS:
            problems.append(f"RETENTION_DAYS must be at least {MIN_RETENTION_DAYS} (this month's ledger and a week)")
        if not self.alert_every_minutes > 0:
            problems.append("ALERT_EVERY_MINUTES must be over 0")
        if not 0 <= self.daily_report_hour <= 23:
            problems.append("DAILY_REPORT_HOUR must be 0 to 23")
        if not 0 < self.smtp_port < 65536:
            problems.append("SMTP_PORT must be a TCP port")
        if self.smtp_host and self.alert_email_to and not self.smtp_from:
            problems.append("SMTP_FROM must be set with SMTP_HOST and ALERT_EMAIL_TO")
        if bool(self.smtp_username) != bool(self.smtp_password):
            problems.append("SMTP_USERNAME and SMTP_PASSWORD go together")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_settings(cls, settings: Settings) -> JobSettings:
        """From the app's settings; a field Settings lacks keeps its default here."""
        default = cls()
        values: dict[str, Any] = {f.name: getattr(settings, f.name, getattr(default, f.name)) for f in fields(cls)}
        for name in ("alert_webhook_url", "smtp_password"):
            if isinstance(values[name], str):
                values[name] = SecretStr(values[name]) if values[name] else None
        to = values["alert_email_to"]
        if isinstance(to, str):
            to = to.split(",")
        elif isinstance(to, set | frozenset):
            to = sorted(to)
        values["alert_email_to"] = tuple(a.strip() for a in to if a.strip())
        return cls(**values)

    def smtp(self) -> SmtpConfig | None:
        """The email channel, when SMTP_HOST and ALERT_EMAIL_TO are set."""
        if not self.smtp_host or not self.alert_email_to or not self.smtp_from:
            return None
        return SmtpConfig(
            self.smtp_host, self.smtp_from, self.alert_email_to, self.smtp_port,
            self.smtp_username, self.smtp_password, self.smtp_starttls,
        )  # fmt: skip


def build_notifier(settings: JobSettings, admin_ids: Iterable[str], bot: Bot | None = None) -> Notifier:
    """The admins' channels: Telegram (with ``bot``), the webhook, email."""
    return Notifier(bot=bot, admin_ids=admin_ids, webhook_url=settings.alert_webhook_url, smtp=settings.smtp())


# --- rate-limit counts -------------------------------------------------------------------------


def _hour_start(now: datetime, tz: tzinfo) -> datetime:
    return now.astimezone(tz).replace(minute=0, second=0, microsecond=0)


def _hours(now: datetime, tz: tzinfo) -> tuple[str, str]:
    """The keys of the local hour of ``now`` and of the hour before (stepped in UTC, for DST)."""
    hour = _hour_start(now, tz)
    return hour_period(hour), hour_period(_hour_start(hour.astimezone(UTC) - timedelta(hours=1), tz))


def rate_limited_key(hour_key: str) -> str:
    return f"pb:{{stats}}:rate_limited:{hour_key}"


def rate_limited_key_at(now: datetime, tz: tzinfo = UTC) -> str:
    """Where a message turned away by the rate limiter at ``now`` is counted: its local hour."""
    return rate_limited_key(hour_period(_hour_start(now, tz)))


# --- alerts ------------------------------------------------------------------------------------


def _budget_use(meter: Meter, subject: str) -> BudgetUse:
    def amount(v: int) -> Decimal:
        return from_nano(v) if meter.unit is Unit.USD else Decimal(v)

    limit = None if meter.limit is None else amount(meter.limit)
    return BudgetUse(subject, amount(meter.used), limit, meter.window.key, meter.unit.value)


async def _budgets(deps: Deps, users: Iterable[str], now: datetime) -> list[BudgetUse]:
    """Each user's budgets and the bot's (which come with every user's meters)."""
    settings = deps.settings
    uses: list[BudgetUse] = []
    bot_seen = False
    every: list[Meter] = []
    for user in users:
        exempt = settings.admins_exempt and user in settings.admin_user_ids
        meters = await deps.budget.meters(user, now, exempt=exempt)
        every += meters
        uses += [_budget_use(m, user) for m in meters if m.scope is Scope.USER]
        if not bot_seen:
            uses += [_budget_use(m, BOT) for m in meters if m.scope is Scope.GLOBAL]
            bot_seen = True
    metrics.fullest_user(every)
    return uses


async def month_forecast(deps: Deps, now: datetime, today_llm_cost: Decimal) -> Forecast:
    """The month-end forecast from the ledger's spend per day (this month and the week before)."""
    cal = deps.calendar
    today = now.astimezone(cal.tz).date()
    first = min(today.replace(day=1), today - timedelta(days=WINDOW_DAYS))
    days = [first + timedelta(days=k) for k in range((today - first).days)]

    async def spent(day: date) -> Decimal:
        w = cal.window(Period.DAY, datetime.combine(day, time(12), tzinfo=cal.tz))
        return from_nano((await deps.db.spend(None, w.start, w.end)).nanos)

    costs = await asyncio.gather(*(spent(d) for d in days))
    # A quiet day is absent, as in a GROUP BY: the days before the bot's first spend are no data.
    daily = {d: c for d, c in zip(days, costs, strict=True) if c}
    if today_llm_cost:
        daily[today] = today_llm_cost
    return forecast_month_end(daily, today)


async def alert_inputs(deps: Deps, now: datetime) -> tuple[AlertInputs, int]:
    """The figures the alert rules read, as of ``now``; and the previous hour's rate-limited count."""
    cal, db = deps.calendar, deps.db
    day, month = cal.window(Period.DAY, now), cal.window(Period.MONTH, now)
    yesterday = cal.window(Period.DAY, day.start - timedelta(microseconds=1))
    until = now + timedelta(microseconds=1)  # rows stamped at ``now`` count
    rows = await db.requests(yesterday.start, until)
    today = [r for r in rows if r.created_at >= day.start]
    hour_ago = now - timedelta(hours=1)
    last_hour = [r for r in rows if r.created_at >= hour_ago]
    summary = summarize(today, await db.fees(day.start, until))
    llm_today = summary.llm_cost
    month_cost = from_nano((await db.spend(None, month.start, until)).nanos) + await db.fees(month.start, until)

    hour_key, previous_key = _hours(now, cal.tz)
    try:
        await deps.refusals.flush()  # this process's refusals count at once
    except Exception as error:  # kept for the next write; the read below says what the store has
        log.warning("rate-limited counts not written (%s)", type(error).__name__)
    counts = await deps.hot.get_counters([rate_limited_key(hour_key), rate_limited_key(previous_key)])

    users = sorted({r.user_key for r in rows if r.created_at >= min(day.start, hour_ago)})
    try:
        budgets = await _budgets(deps, users, now)
    except BudgetUnavailable as error:
        log.warning("budget alerts skipped this run: %s", error)
        budgets = []
    utc_hours = (day.start.astimezone(UTC) - yesterday.start.astimezone(UTC)).total_seconds() / 3600
    inputs = AlertInputs(
        day_key=day.key,
        month_key=month.key,
        hour_key=hour_key,
        today_cost=summary.total_cost,
        month_cost=month_cost,
        premium_cost_today=sum((r.cost for r in today if r.tier == Tier.PREMIUM), ZERO),
        hourly_today=hourly_costs(today, cal.tz),
        hourly_yesterday=hourly_costs([r for r in rows if r.created_at < day.start], cal.tz),
        yesterday_hours=round(utc_hours),
        attempts_last_hour=sum(1 for r in last_hour if r.status is not Status.CACHED),  # a cache hit calls no model
        errors_last_hour=sum(1 for r in last_hour if r.status is Status.ERROR),
        cache_hits_today=summary.cache_hits,
        answers_today=summary.answers,
        rate_limited_last_hour=counts[0] or 0,
        budgets=budgets,
        forecast=await month_forecast(deps, now, llm_today),
        monthly_budget=deps.budget.limits.global_monthly_usd,
    )
    return inputs, counts[1] or 0


def alert_settings(job: JobSettings, settings: Settings) -> AlertSettings:
    """The rules' thresholds: the budget alerts fire where the budget gate warns and blocks."""
    return AlertSettings(
        daily_cost_threshold=job.alert_daily_cost_threshold,
        monthly_cost_threshold=job.alert_monthly_cost_threshold,
        budget_warning=settings.warning_threshold,
        budget_critical=settings.critical_threshold,
    )


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The webhook's JSON for an alert."""
    return {
        "rule": alert.rule.value,
        "subject": alert.subject,
        "period_key": alert.period_key,
        "level": alert.level.value,
        "message": alert.message,
        "figures": dict(alert.figures),
    }


async def _claim(deps: Deps, job: str, slot: str, ttl_s: int) -> bool:
    """The once-marker of one run: True in exactly one process per job and slot."""
    return await deps.hot.set_once(f"pb:{{jobs}}:{job}:{slot}", ttl_s)


async def evaluate_alerts(deps: Deps, notifier: Notifier, settings: JobSettings, now: datetime) -> list[Alert] | None:
    """Run the alert rules; store each alert and deliver the ones not fired before in their
    period. Returns the new alerts, or None when another process has this run."""
    window_s = settings.alert_every_minutes * 60
    if not await _claim(deps, ALERTS, str(int(now.timestamp() // window_s)), int(window_s) + 60):
        return None
    inputs, previous_hour = await alert_inputs(deps, now)
    rules = alert_settings(settings, deps.settings)
    fired = alerts.evaluate(inputs, rules)
    # The previous hour's last minutes were counted after its last run: look at it once more.
    previous_key = _hours(now, deps.calendar.tz)[1]
    fired += alerts.rate_limited(previous_hour, previous_key, rules.rate_limited_threshold)
    new = []
    for alert in fired:
        stored = StoredAlert(alert.rule.value, alert.subject, alert.period_key, alert.level.value, alert.message, now)
        if await deps.db.add_alert(stored):
            new.append(alert)
    for alert in new:
        metrics.alert_fired(alert.rule.value, alert.level.value)
        level = alert.level.value
        subject_line = f"[pennybot] {level}: {alert.rule.value} ({alert.subject}, {alert.period_key})"
        await notifier.send(subject_line, f"pennybot alert ({level}): {alert.message}", alert_payload(alert))
    return new


# --- the daily report --------------------------------------------------------------------------


def _top(items: dict[str, Decimal], n: int = 5) -> str:
    return ", ".join(f"{k} {fmt_usd(v)}" for k, v in list(items.items())[:n]) or "none"


def _pct(ratio: Decimal | None) -> str:
    return "n/a" if ratio is None else f"{100 * ratio:.1f}%"


def report_text(day_key: str, tz_name: str, s: CostSummary, forecast: Forecast, budget: Decimal | None, n: int) -> str:
    """The daily report: one day's figures, the month so far and its forecast."""
    month = f"{fmt_usd(forecast.spent, 2)} so far, forecast {fmt_usd(forecast.projected, 2)} by month end"
    if budget is not None:
        month += f" (budget {fmt_usd(budget, 2)})"
    return "\n".join([
        f"pennybot daily report for {day_key} ({tz_name})",
        f"Cost: {fmt_usd(s.total_cost)} (LLM {fmt_usd(s.llm_cost)}, channel fees {fmt_usd(s.fees)})",
        f"Requests: {s.requests} (answers {s.answers}, errors {s.errors}); tokens {s.tokens.prompt:,} in, "
        f"{s.tokens.completion:,} out",
        f"Cache: {s.cache_hits} hits ({_pct(s.cache_hit_rate)}), saved {fmt_usd(s.saved)}",
        f"By provider: {_top(s.by_provider)}",
        f"By model: {_top(s.by_model)}",
        f"Users: {s.active_users} active; {fmt_usd(s.cost_per_active_user or ZERO)} per user, "
        f"{fmt_usd(s.cost_per_answer or ZERO)} per answer; premium share {_pct(s.premium_share)}",
        f"Top users: {_top(dict(s.top_users))}",
        f"Month: {month}",
        f"Alerts fired: {n}",
    ])  # fmt: skip


async def daily_report(deps: Deps, notifier: Notifier, settings: JobSettings, now: datetime) -> str | None:
    """The previous day's figures to the admins, once per day. Returns the text, or None when
    another process has sent (or is sending) it."""
    cal, db = deps.calendar, deps.db
    day = cal.window(Period.DAY, cal.window(Period.DAY, now).start - timedelta(microseconds=1))
    if not await _claim(deps, DAILY_REPORT, day.key, DAY_LOCK_TTL_S):
        return None
    rows: list[AIRequest] = await db.requests(day.start, day.end)
    summary = summarize(rows, await db.fees(day.start, day.end))
    # The month of the reported day, as it stood at that day's end.
    end = day.end - timedelta(microseconds=1)
    forecast = await month_forecast(deps, end, summary.llm_cost)
    fired = [a for a in await db.alerts(day.start, limit=10_000) if a.created_at < day.end]
    budget = deps.budget.limits.global_monthly_usd
    text = report_text(day.key, deps.settings.budget_timezone, summary, forecast, budget, len(fired))
    payload = {
        "rule": DAILY_REPORT,
        "subject": BOT,
        "period_key": day.key,
        "level": "info",
        "message": text,
        "figures": {
            "total_cost": str(summary.total_cost), "llm_cost": str(summary.llm_cost), "fees": str(summary.fees),
            "requests": str(summary.requests), "answers": str(summary.answers), "errors": str(summary.errors),
            "cache_hits": str(summary.cache_hits), "saved": str(summary.saved),
            "active_users": str(summary.active_users), "month_spent": str(forecast.spent),
            "month_forecast": str(forecast.projected), "alerts": str(len(fired)),
        },
    }  # fmt: skip
    await notifier.send(f"[pennybot] daily report {day.key}", text, payload)
    return text


# --- retention ---------------------------------------------------------------------------------


async def retention(deps: Deps, settings: JobSettings, now: datetime) -> tuple[int, int] | None:
    """Delete messages and ai_requests older than RETENTION_DAYS; (messages, requests), or None
    when another process has today's run."""
    slot = now.astimezone(deps.calendar.tz).date().isoformat()
    if not await _claim(deps, RETENTION, slot, DAY_LOCK_TTL_S):
        return None
    cutoff = now - timedelta(days=settings.retention_days)
    messages, requests = await deps.db.purge_before(cutoff)
    details = {"cutoff": cutoff.isoformat(), "messages": messages, "requests": requests}
    await deps.db.audit("system", "retention.purge", None, details, now)
    log.info("retention: %d messages and %d AI requests before %s deleted", messages, requests, cutoff.isoformat())
    return messages, requests


# --- the scheduler -----------------------------------------------------------------------------


class Scheduler:
    """APScheduler's AsyncIOScheduler running the jobs: alerts every ALERT_EVERY_MINUTES, the
    report at DAILY_REPORT_HOUR and retention at 03:30, in BUDGET_TIMEZONE. Each run passes
    ``deps.clock()`` (the wall clock, outside tests) as ``now``."""

    def __init__(self, deps: Deps, notifier: Notifier, settings: JobSettings) -> None:
        self.deps = deps
        self.notifier = notifier
        self.settings = settings
        self._scheduler: Any = None
        self._running: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_deps(cls, deps: Deps, bot: Bot | None = None) -> Scheduler:
        """From ``deps.settings``; ``bot`` sends the Telegram notices."""
        settings = JobSettings.from_settings(deps.settings)
        return cls(deps, build_notifier(settings, deps.settings.admin_user_ids, bot), settings)

    @property
    def running(self) -> bool:
        return self._scheduler is not None and bool(self._scheduler.running)

    def start(self) -> None:
        """Schedule the jobs; call inside the running event loop."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        tz = self.deps.calendar.tz
        scheduler = AsyncIOScheduler(timezone=tz)
        once = {"coalesce": True, "max_instances": 1}
        every = IntervalTrigger(seconds=self.settings.alert_every_minutes * 60, timezone=tz)
        scheduler.add_job(self.run, every, args=[ALERTS], id=ALERTS, misfire_grace_time=60, **once)
        report = CronTrigger(hour=self.settings.daily_report_hour, minute=0, timezone=tz)
        scheduler.add_job(self.run, report, args=[DAILY_REPORT], id=DAILY_REPORT, misfire_grace_time=3600, **once)
        purge = CronTrigger(hour=RETENTION_HOUR, minute=30, timezone=tz)
        scheduler.add_job(self.run, purge, args=[RETENTION], id=RETENTION, misfire_grace_time=3600, **once)
        scheduler.start()
        self._scheduler = scheduler

    async def run(self, job: str) -> None:
        """One run of ``job`` now; a failure is logged (its type only) and the schedule goes on."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            now = self.deps.clock()
            if job == ALERTS:
                await evaluate_alerts(self.deps, self.notifier, self.settings, now)
            elif job == DAILY_REPORT:
                await daily_report(self.deps, self.notifier, self.settings, now)
            elif job == RETENTION:
                await retention(self.deps, self.settings, now)
            else:
                raise ValueError(f"unknown job {job!r}")
        except Exception as error:
            log.warning("job %s failed (%s)", job, type(error).__name__)
        finally:
            if task is not None:
                self._running.discard(task)

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop scheduling; let runs under way finish for up to ``grace_s``, then cancel them."""
        if self._scheduler is None:
            return
        self._scheduler.pause()
        if self._running:
            await asyncio.wait(list(self._running), timeout=grace_s)
        self._scheduler.shutdown(wait=False)
        self._scheduler = None
