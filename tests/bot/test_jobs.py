"""The scheduled jobs' wiring under a controlled clock: figures read from the stores, alerts stored
and delivered once (to the fake Telegram Bot API, a webhook receiver and an SMTP server on
127.0.0.1), one daily report across two processes, retention to the microsecond, and APScheduler
really calling the job. The rules' thresholds themselves are tested in tests/budget/test_alerts.py."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr
from telegram import Bot as TelegramBot

from bot.jobs import (
    ALERTS,
    DAILY_REPORT,
    RETENTION,
    JobSettings,
    Scheduler,
    alert_inputs,
    build_notifier,
    daily_report,
    evaluate_alerts,
    rate_limited_key_at,
    retention,
)
from bot.notify import Notifier
from budget.alerts import BOT, Rule
from budget.records import AIRequest, Kind, Status
from tests.bot.server_harness import until
from tests.bot.test_notify import SmtpServer, WebhookReceiver, smtp_server
from tests.budget.test_redis_store import redis_namespace
from tests.conftest import Bot, Clock
from tests.fakes.telegram_server import TEST_TOKEN, FakeTelegramServer

D = Decimal
NANO = D("0.000000001")
NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # the conftest clock
ADMINS = "telegram:42,whatsapp:+15550001111"
JOBS = JobSettings()


def row(at: datetime, cost: Decimal | str = "0", *, user: str = "console:alice", status: Status = Status.OK,
        tier: str | None = None, saved: str = "0") -> AIRequest:  # fmt: skip
    return AIRequest(
        request_id=uuid.uuid4().hex, created_at=at, user_key=user, channel=user.partition(":")[0], message_id=None,
        kind=Kind.ANSWER, provider="simulated", model="gpt-4o-mini", status=status, cost=D(cost), saved=D(saved),
        tier=tier,
    )  # fmt: skip


def spread_today(total: Decimal, hours: int = 12) -> list[AIRequest]:
    """``total`` spread over the first ``hours`` hours of 2026-11-10, at most $0.50 an hour (under
    the hour-spike floor), plus one cent a week earlier (so the forecast has history)."""
    each = D("0.41")
    rows = [row(NOW.replace(hour=h, minute=30), each) for h in range(hours - 1)]
    rows.append(row(NOW.replace(hour=hours - 1, minute=30), total - each * (hours - 1)))
    assert all(r.cost <= D("0.5") for r in rows) and sum(r.cost for r in rows) == total
    return [*rows, row(NOW - timedelta(days=7), "0.01")]


@pytest.fixture(scope="module")
def hook_server() -> Any:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def hook(hook_server: WebhookReceiver) -> WebhookReceiver:
    hook_server.reset()
    return hook_server


@pytest.fixture
def smtp() -> Any:
    with smtp_server() as server:
        yield server


@pytest.fixture
async def tg(telegram_server: FakeTelegramServer) -> AsyncIterator[TelegramBot]:
    async with TelegramBot(TEST_TOKEN, base_url=telegram_server.base_url) as bot:
        yield bot


@pytest.fixture
def notifier_for(tg: TelegramBot, hook: WebhookReceiver, smtp: SmtpServer) -> Callable[[JobSettings], Notifier]:
    """A notifier on all three channels, built from JobSettings as the app builds it."""

    def make(settings: JobSettings = JOBS) -> Notifier:
        settings = JobSettings(**{
            **{f: getattr(settings, f) for f in JobSettings.__dataclass_fields__},
            "alert_webhook_url": SecretStr(hook.url), "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
            "smtp_from": "pennybot@example.com", "alert_email_to": ("ops@example.com",),
        })  # fmt: skip
        return build_notifier(settings, ADMINS.split(","), tg)

    return make


# --- alerts: stored and delivered once ---------------------------------------------------------


async def test_today_just_over_the_daily_threshold_fires_one_alert_delivered_once_everywhere(
    make_bot: Callable[..., Any], clock: Clock, notifier_for: Callable[..., Notifier],
    telegram_server: FakeTelegramServer, hook: WebhookReceiver, smtp: SmtpServer,
) -> None:  # fmt: skip
    bot: Bot = await make_bot(admin_user_ids=ADMINS)
    deps, notifier = bot.deps, notifier_for()
    await deps.db.record(spread_today(D(5) + NANO))

    [alert] = await evaluate_alerts(deps, notifier, JOBS, clock.now) or []

    assert (alert.rule, alert.subject, alert.period_key) == (Rule.DAILY_COST, BOT, "2026-11-10")
    assert [(a.rule, a.period_key, a.level) for a in await deps.db.alerts(NOW - timedelta(days=1))] == [
        ("daily_cost", "2026-11-10", "warning")
    ]
    text = f"pennybot alert (warning): {alert.message}"
    assert telegram_server.sent_texts(42) == [text] and len(telegram_server.sent_texts()) == 1
    assert hook.bodies == [{
        "rule": "daily_cost", "subject": "bot", "period_key": "2026-11-10", "level": "warning",
        "message": alert.message, "figures": {"cost": "5.000000001", "threshold": "5"},
    }]  # fmt: skip
    [mail] = smtp.inbox.received
    assert mail.message["Subject"] == "[pennybot] warning: daily_cost (bot, 2026-11-10)"
    assert mail.rcpt_tos == ["ops@example.com"]

    # The same 5-minute slot again (another replica, say): the run itself is taken.
    assert await evaluate_alerts(deps, notifier, JOBS, clock.now + timedelta(minutes=2)) is None
    # Later the same day, with more spend: the rule still fires, but once a day is once.
    await deps.db.record([row(NOW + timedelta(minutes=20), "0.4")])
    for minutes in (5, 30, 11 * 60):
        assert await evaluate_alerts(deps, notifier, JOBS, clock.now + timedelta(minutes=minutes)) == []
    assert len(await deps.db.alerts(NOW - timedelta(days=1))) == 1
    assert len(telegram_server.sent_texts()) == 1 and len(hook.bodies) == 1 and len(smtp.inbox.received) == 1

    # A new day over the threshold is a new period.
    tomorrow = NOW + timedelta(days=1)
    await deps.db.record([row(tomorrow.replace(hour=h), "0.5") for h in range(10)] + [row(tomorrow, "0.01")])
    [again] = await evaluate_alerts(deps, notifier, JOBS, tomorrow.replace(minute=1)) or []
    assert (again.rule, again.period_key) == (Rule.DAILY_COST, "2026-11-11")
    assert len(telegram_server.sent_texts()) == 2


async def test_today_just_under_or_at_the_threshold_fires_nothing(
    make_bot: Callable[..., Any], clock: Clock, notifier_for: Callable[..., Notifier],
    telegram_server: FakeTelegramServer, hook: WebhookReceiver, smtp: SmtpServer,
) -> None:  # fmt: skip
    for total in (D(5) - NANO, D(5)):
        bot: Bot = await make_bot(admin_user_ids=ADMINS)
        await bot.deps.db.record(spread_today(total))
        assert await evaluate_alerts(bot.deps, notifier_for(), JOBS, clock.now) == []
        assert await bot.deps.db.alerts(NOW - timedelta(days=1)) == []
    assert telegram_server.sent_texts() == [] and hook.bodies == [] and smtp.inbox.received == []


async def test_channel_fees_count_toward_the_daily_cost(make_bot: Callable[..., Any], clock: Clock) -> None:
    bot: Bot = await make_bot()
    await bot.deps.db.record(spread_today(D("4.99")))
    await bot.deps.db.record_fee("whatsapp", "whatsapp:+1555", "in", "SM1", D("0.010000001"), NOW)
    [alert] = await evaluate_alerts(bot.deps, Notifier(), JOBS, clock.now) or []
    assert alert.rule is Rule.DAILY_COST and alert.figures["cost"] == "5.000000001"


async def test_the_threshold_setting_is_used(make_bot: Callable[..., Any], clock: Clock) -> None:
    bot: Bot = await make_bot()
    await bot.deps.db.record(spread_today(D(2)))
    settings = JobSettings(alert_daily_cost_threshold=D("1.99"))
    [alert] = await evaluate_alerts(bot.deps, Notifier(), settings, clock.now) or []
    assert alert.figures == {"cost": "2.000000000", "threshold": "1.99"}


async def test_a_user_at_80_percent_of_a_budget_is_alerted_by_name(make_bot: Callable[..., Any], clock: Clock) -> None:
    bot: Bot = await make_bot(user_monthly_limit=D(1))
    await bot.deps.db.record([row(NOW.replace(hour=9), "0.4"), row(NOW.replace(hour=10), "0.4"),
                              row(NOW.replace(hour=11), "0.1", user="console:bob")])  # fmt: skip
    [alert] = await evaluate_alerts(bot.deps, Notifier(), JOBS, clock.now) or []
    assert (alert.rule, alert.subject, alert.period_key, alert.level) == (
        Rule.BUDGET_THRESHOLD,
        "console:alice",
        "2026-11",
        "warning",
    )
    assert alert.figures["unit"] == "usd" and alert.figures["used"] == "0.800000000"


async def test_rate_limited_counts_reach_the_rule_in_their_hour_and_the_next(
    make_bot: Callable[..., Any], clock: Clock
) -> None:
    bot: Bot = await make_bot()
    refusals, tz = bot.deps.refusals, bot.deps.calendar.tz
    refusals.flush_s = 3600  # the alert job writes what waits before it reads
    for _ in range(20):
        refusals.add(rate_limited_key_at(NOW + timedelta(minutes=10), tz))
    assert await evaluate_alerts(bot.deps, Notifier(), JOBS, NOW + timedelta(minutes=15)) == []  # 20: not over
    refusals.add(rate_limited_key_at(NOW + timedelta(minutes=58), tz))  # counted after the hour's last run
    [alert] = await evaluate_alerts(bot.deps, Notifier(), JOBS, NOW + timedelta(minutes=61)) or []
    assert (alert.rule, alert.period_key, alert.figures["count"]) == (Rule.RATE_LIMITED, "2026-11-10T12", "21")
    assert await evaluate_alerts(bot.deps, Notifier(), JOBS, NOW + timedelta(minutes=66)) == []


async def test_rate_limited_counts_are_written_together_and_kept_while_the_store_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from budget.ratelimit import Refusals
    from budget.stores.memory import MemoryHotStore

    hot = MemoryHotStore()
    seed, down = hot.seed_counter, 1

    async def flaky(key: str, value: int, ttl_s: int) -> bool:  # an outage on cue: no store fails on cue
        nonlocal down
        if down:
            down -= 1
            raise ConnectionError("redis down")
        return await seed(key, value, ttl_s)

    hot.seed_counter = flaky  # type: ignore[method-assign]
    refusals = Refusals(hot, ttl_s=3600, flush_s=0.01)
    first, second = rate_limited_key_at(NOW), rate_limited_key_at(NOW + timedelta(hours=1))
    for key in (first, first, second):
        refusals.add(key)
    task = refusals._later.task
    assert task is not None and await hot.get_counters([first, second]) == [None, None]  # not yet
    await task  # the store is down: logged, every count kept
    assert "rate-limited counts not written (ConnectionError)" in caplog.text
    refusals.add(first)  # the next refusal's timer writes them all
    await refusals.aclose()
    assert await hot.get_counters([first, second]) == [3, 1]


async def test_the_inputs_read_local_days_hours_and_the_last_hour(make_bot: Callable[..., Any]) -> None:
    bot: Bot = await make_bot(budget_timezone="America/New_York")  # UTC-5 in November
    db, now = bot.deps.db, NOW  # 07:00 local; the local day began at 05:00 UTC
    await db.record([
        row(datetime(2026, 11, 10, 4, 30, tzinfo=UTC), "1", user="console:bob"),  # 23:30 yesterday, local
        row(datetime(2026, 11, 10, 6, 0, tzinfo=UTC), "0.3", tier="cheap"),  # 01:00 local
        row(datetime(2026, 11, 10, 11, 30, tzinfo=UTC), "0.2", tier="premium"),  # in the last hour
        row(datetime(2026, 11, 10, 11, 45, tzinfo=UTC), status=Status.ERROR),
        row(datetime(2026, 11, 10, 11, 50, tzinfo=UTC), status=Status.CACHED, saved="0.1"),
        row(datetime(2026, 11, 2, 15, 0, tzinfo=UTC), "2"),
        row(now, "0.01"),  # stamped at ``now``: counts
    ])  # fmt: skip
    await db.record_fee("whatsapp", "whatsapp:1", "in", "SM1", D("0.05"), datetime(2026, 11, 10, 10, tzinfo=UTC))
    await db.record_fee("whatsapp", "whatsapp:1", "in", "SM2", D("0.07"), datetime(2026, 11, 10, 4, tzinfo=UTC))

    inputs, previous_hour = await alert_inputs(bot.deps, now)

    est = timezone(timedelta(hours=-5))
    assert (inputs.day_key, inputs.month_key, inputs.hour_key) == ("2026-11-10", "2026-11", "2026-11-10T07")
    assert inputs.today_cost == D("0.56")  # 0.3 + 0.2 + 0.01 + today's fee
    assert inputs.month_cost == D("3.63")  # 1 + 0.3 + 0.2 + 0.01 + 2 + both fees
    assert inputs.premium_cost_today == D("0.2")
    assert inputs.hourly_today == {datetime(2026, 11, 10, 1, tzinfo=est): D("0.3"),
                                   datetime(2026, 11, 10, 6, tzinfo=est): D("0.2"),
                                   datetime(2026, 11, 10, 7, tzinfo=est): D("0.01")}  # fmt: skip
    assert inputs.hourly_yesterday == {datetime(2026, 11, 9, 23, tzinfo=est): D(1)}
    assert inputs.yesterday_hours == 24
    assert (inputs.attempts_last_hour, inputs.errors_last_hour) == (3, 1)  # the cache hit called no model
    assert (inputs.cache_hits_today, inputs.answers_today) == (1, 4)
    assert (inputs.rate_limited_last_hour, previous_hour) == (0, 0)
    # bob spent only yesterday: his budgets cannot have moved since the last runs.
    subjects = {(b.subject, b.period_key, b.unit) for b in inputs.budgets}
    assert subjects == {
        ("console:alice", "2026-11-10", "usd"),
        ("console:alice", "2026-11", "usd"),
        ("console:alice", "2026-11-10", "tokens"),
        ("console:alice", "2026-11", "tokens"),
        ("bot", "2026-11-10", "usd"),
        ("bot", "2026-11", "usd"),
    }
    bot_month = next(b for b in inputs.budgets if b.subject == BOT and b.period_key == "2026-11")
    assert (bot_month.used, bot_month.limit) == (D("3.51"), D(100))
    assert inputs.forecast is not None and inputs.forecast.spent == D("3.51")
    assert inputs.monthly_budget == D(100)


async def test_the_day_after_clocks_go_back_had_25_hours(make_bot: Callable[..., Any]) -> None:
    bot: Bot = await make_bot(budget_timezone="America/New_York")  # DST ended on 2026-11-01
    inputs, _ = await alert_inputs(bot.deps, datetime(2026, 11, 2, 12, tzinfo=UTC))
    assert inputs.yesterday_hours == 25


# --- the daily report --------------------------------------------------------------------------


async def test_the_daily_report_sends_yesterday_once(
    make_bot: Callable[..., Any], notifier_for: Callable[..., Notifier],
    telegram_server: FakeTelegramServer, hook: WebhookReceiver, smtp: SmtpServer,
) -> None:  # fmt: skip
    bot: Bot = await make_bot(admin_user_ids=ADMINS)
    yesterday = NOW - timedelta(days=1)
    await bot.deps.db.record(
        [
            row(yesterday.replace(hour=1), "1.25", tier="premium"),
            row(yesterday.replace(hour=2), "0.5", user="console:bob"),
            row(yesterday.replace(hour=3), status=Status.CACHED, saved="0.5"),
            row(yesterday.replace(hour=4), status=Status.ERROR),
            row(NOW.replace(hour=1), "7"),  # today: not in yesterday's report
        ]
    )
    report_time = NOW.replace(hour=8, minute=0)

    text = await daily_report(bot.deps, notifier_for(), JOBS, report_time)

    assert text is not None
    assert text.startswith("pennybot daily report for 2026-11-09 (UTC)\nCost: $1.7500 (LLM $1.7500")
    assert "answers 3, errors 1" in text and "Cache: 1 hits (33.3%), saved $0.5000" in text
    assert "Top users: console:alice $1.2500, console:bob $0.5000" in text
    assert telegram_server.sent_texts(42) == [text]
    [body] = hook.bodies
    assert [body[k] for k in ("rule", "subject", "period_key", "level")] == [DAILY_REPORT, "bot", "2026-11-09", "info"]
    assert body["figures"]["total_cost"] == "1.750000000" and body["figures"]["errors"] == "1"
    [mail] = smtp.inbox.received
    assert mail.message["Subject"] == "[pennybot] daily report 2026-11-09"
    # Again the same day, on this process or another: nothing more.
    assert await daily_report(bot.deps, notifier_for(), JOBS, report_time + timedelta(hours=3)) is None
    assert len(telegram_server.sent_texts()) == 1


async def test_two_processes_on_one_database_and_redis_send_one_report(
    make_bot: Callable[..., Any], telegram_server: FakeTelegramServer, tg: TelegramBot, tmp_path: Any
) -> None:
    async with redis_namespace() as redis_url:
        shared = {"database_url": f"sqlite:///{tmp_path / 'shared.db'}", "redis_url": redis_url,
                  "admin_user_ids": ADMINS}  # fmt: skip
        a: Bot = await make_bot(**shared)
        b: Bot = await make_bot(**shared)
        await a.deps.db.record([row(NOW - timedelta(days=1), "0.42")])
        notifiers = [build_notifier(JOBS, ADMINS.split(","), tg) for _ in range(2)]
        report_time = NOW.replace(hour=8)

        # Both schedulers fire at 08:00 (APScheduler runs them off the same wall clock).
        runs = [daily_report(p.deps, n, JOBS, report_time) for p, n in zip((a, b), notifiers, strict=True)]
        texts = await asyncio.gather(*runs)

        assert sorted(t is None for t in texts) == [False, True]
        assert len(telegram_server.sent_texts(42)) == 1
        assert "Cost: $0.4200" in telegram_server.sent_texts(42)[0]
        # Alerts, likewise: one run per 5-minute slot across both.
        alerted = await asyncio.gather(*(evaluate_alerts(p.deps, Notifier(), JOBS, NOW) for p in (a, b)))
        assert sorted(r is None for r in alerted) == [False, True]
        # The next day is a new report, from whichever process gets there first.
        assert await daily_report(b.deps, notifiers[1], JOBS, report_time + timedelta(days=1)) is not None
        assert len(telegram_server.sent_texts(42)) == 2


# --- retention ---------------------------------------------------------------------------------


async def test_retention_deletes_what_is_older_than_retention_days_exactly(
    make_bot: Callable[..., Any], clock: Clock
) -> None:
    bot: Bot = await make_bot()
    db = bot.deps.db
    cutoff = NOW - timedelta(days=90)
    before, at, recent = cutoff - timedelta(microseconds=1), cutoff, NOW - timedelta(days=1)
    await db.record([row(before, "1"), row(at, "2"), row(recent, "3")])
    for moment in (before, at, recent):
        await db.add_turns("console:alice", [("user", f"hello at {moment}", 3, 20)], moment)

    assert await retention(bot.deps, JOBS, NOW) == (1, 1)

    assert [r.cost for r in await db.requests(NOW - timedelta(days=400), NOW)] == [D(2), D(3)]
    turns = (await db.conversation("console:alice")).turns
    assert [t.content for t in turns] == [f"hello at {at}", f"hello at {recent}"]
    [entry] = await db.audit_entries(NOW - timedelta(minutes=1))
    assert (entry.actor, entry.action, entry.details["requests"]) == ("system", "retention.purge", 1)
    assert await retention(bot.deps, JOBS, NOW + timedelta(hours=1)) is None  # once a day
    # Tomorrow, with 40 days kept: the row at the old cutoff goes too.
    assert await retention(bot.deps, JobSettings(retention_days=40), NOW + timedelta(days=1)) == (1, 1)


def test_retention_shorter_than_a_month_and_a_week_is_refused() -> None:
    with pytest.raises(ValueError, match="RETENTION_DAYS must be at least 38"):
        JobSettings(retention_days=37)
    JobSettings(retention_days=38)


# --- settings ----------------------------------------------------------------------------------


def test_job_settings_from_the_app_settings() -> None:
    settings = SimpleNamespace(
        alert_daily_cost_threshold=D("2.5"), alert_webhook_url="https://hooks.example.com/T0/B0/secret",
        smtp_host="smtp.example.com", smtp_password="pw", smtp_username="u", smtp_from="bot@example.com",
        alert_email_to="ops@example.com, cto@example.com ,", alert_every_minutes=1,
    )  # fmt: skip
    job = JobSettings.from_settings(settings)  # type: ignore[arg-type]
    assert job.alert_daily_cost_threshold == D("2.5") and job.alert_monthly_cost_threshold == D(100)
    assert isinstance(job.alert_webhook_url, SecretStr) and "secret" not in repr(job)
    assert job.alert_email_to == ("ops@example.com", "cto@example.com")
    assert (job.retention_days, job.smtp_port, job.daily_report_hour, job.alert_every_minutes) == (90, 587, 8, 1)
    smtp = job.smtp()
    assert smtp is not None and (smtp.host, smtp.port, smtp.sender) == ("smtp.example.com", 587, "bot@example.com")
    assert JobSettings.from_settings(SimpleNamespace()) == JobSettings()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"alert_every_minutes": 0}, "ALERT_EVERY_MINUTES"),
        ({"daily_report_hour": 24}, "DAILY_REPORT_HOUR"),
        ({"smtp_host": "h", "alert_email_to": ("a@b",)}, "SMTP_FROM"),
        ({"smtp_username": "u"}, "SMTP_USERNAME and SMTP_PASSWORD"),
        ({"alert_daily_cost_threshold": D(-1)}, "THRESHOLD"),
    ],
)
def test_bad_job_settings_name_the_variable(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobSettings(**fields)


# --- APScheduler -------------------------------------------------------------------------------


async def test_apscheduler_runs_the_alert_job_on_its_interval(
    make_bot: Callable[..., Any], clock: Clock, telegram_server: FakeTelegramServer, tg: TelegramBot
) -> None:
    bot: Bot = await make_bot(admin_user_ids=ADMINS)
    await bot.deps.db.record(spread_today(D(5) + NANO))
    settings = JobSettings(alert_every_minutes=0.002)  # every 0.12 s
    scheduler = Scheduler(bot.deps, build_notifier(settings, ADMINS.split(","), tg), settings)
    scheduler.start()
    try:
        assert scheduler.running
        jobs = {job.id: job for job in scheduler._scheduler.get_jobs()}
        assert set(jobs) == {ALERTS, DAILY_REPORT, RETENTION}
        assert (jobs[DAILY_REPORT].next_run_time.hour, jobs[DAILY_REPORT].next_run_time.minute) == (8, 0)
        assert (jobs[RETENTION].next_run_time.hour, jobs[RETENTION].next_run_time.minute) == (3, 30)
        await until(lambda: len(telegram_server.sent_texts(42)) == 1, timeout=5)
        clock.advance(minutes=5)  # the hand clock moves on; the runs after that see the alert fired already
        await asyncio.sleep(0.3)
    finally:
        await scheduler.shutdown()
    assert not scheduler.running
    assert len(telegram_server.sent_texts(42)) == 1
    assert [a.rule for a in await bot.deps.db.alerts(NOW - timedelta(days=1))] == ["daily_cost"]


async def test_a_failing_run_is_logged_and_the_schedule_goes_on(
    make_bot: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    bot: Bot = await make_bot()
    scheduler = Scheduler.from_deps(bot.deps)

    class Broken:
        async def set_once(self, key: str, ttl_s: int) -> bool:
            raise ConnectionError("hot store down")

    hot, bot.deps.hot = bot.deps.hot, Broken()  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.WARNING):
            await scheduler.run(ALERTS)
    finally:
        bot.deps.hot = hot
    assert "job alerts failed (ConnectionError)" in caplog.text
    await scheduler.shutdown()  # never started: nothing to stop
