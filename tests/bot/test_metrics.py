"""GET /metrics: exact figures after real pipeline messages, bounded labels, no user anywhere,
CPU and memory, and several worker processes merged in prometheus-client's multiprocess mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from bot import metrics
from budget.money import to_nano
from budget.periods import Period, Window
from budget.records import AIRequest, Status
from budget.rules import Meter, Scope, Unit
from providers.base import Usage
from tests.bot.test_pipeline import ONE_MODEL, spend_row
from tests.conftest import Bot
from tests.fakes.llm_servers import Fail, FakeAnthropicServer, FakeOpenAIServer, Ok, anthropic_usage

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    """Metrics are process-global: every test starts from no labelled series."""
    metrics.reset()
    yield
    metrics.reset()


async def scrape(accept: str | None = None) -> httpx.Response:
    app = FastAPI()
    app.include_router(metrics.metrics_router())
    headers = {"Accept": accept} if accept else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200
    return response


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def rows(bot: Bot) -> list[AIRequest]:
    now = bot.clock.now
    return await bot.deps.db.requests(now - timedelta(days=40), now + timedelta(days=1))


async def test_metrics_are_prometheus_text_or_openmetrics_when_asked() -> None:
    plain = await scrape()
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE cost_request_cost_usd histogram" in plain.text
    om = await scrape("application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert om.text.endswith("# EOF\n")


async def test_messages_show_with_exact_values_and_no_user(make_bot: Any) -> None:
    bot: Bot = await make_bot(model_catalog=ONE_MODEL)
    await bot.send("What is the capital of France?", user="alice-4711")  # a miss, then a call
    hit = await bot.send("  what is the CAPITAL of france ", user="bob-4712")  # a hit: no call
    await bot.send("Tell me about the rivers of Spain.", user="carol-4713")  # a miss, then a call
    assert hit.outcomes["cache"] == "hit"
    recorded = await rows(bot)
    calls = [r for r in recorded if r.status is Status.OK]
    assert len(calls) == 2 and len(recorded) == 3

    text = (await scrape()).text
    labels = 'endpoint="console",model="gpt-4o-mini",provider="simulated"'  # the exposition sorts labels
    assert 'cost_provider_api_calls_total{model="gpt-4o-mini",provider="simulated",status="ok"} 2.0\n' in text
    assert "_created" not in text
    cost_sum = floatToGoString(sum(float(r.cost) for r in recorded))  # type: ignore[no-untyped-call]
    assert f"cost_request_cost_usd_sum{{{labels}}} {cost_sum}\n" in text
    assert f"cost_request_cost_usd_count{{{labels}}} 2.0\n" in text
    s = parse(text)
    tokens = {k: value(s, "cost_provider_tokens_total", provider="simulated", model="gpt-4o-mini", kind=k)
              for k in metrics.TOKEN_KINDS}  # fmt: skip
    assert tokens == {
        "input": sum(r.usage.input_tokens for r in calls), "output": sum(r.usage.output_tokens for r in calls),
        "cached": 0, "cache_write": 0, "reasoning": 0,
    }  # fmt: skip
    assert value(s, "cost_cache_hits_total", endpoint="console") == 1
    assert value(s, "cost_cache_misses_total", endpoint="console") == 2
    # The last message's gate read the bot's month: the first answer's cost of the $100 default.
    assert value(s, "cost_budget_used_ratio", scope="global", period="month") == to_nano(calls[0].cost) / to_nano(
        Decimal(100)
    )
    for who in ("alice", "bob", "carol", "4711", "console:"):
        assert who not in text


async def test_label_values_come_from_fixed_sets(make_bot: Any) -> None:
    bot: Bot = await make_bot(model_catalog=ONE_MODEL)
    await bot.send("Hello there?")
    metrics.observe_call("sms", "simulated", "gpt-4o-mini", "teapot", Usage(1, 1), Decimal("0.000001"))
    for n in range(metrics.MAX_CALL_SERIES + 20):  # a catalog far larger than any real one
        metrics.observe_call("console", "p", f"model-{n}", "ok", Usage(1, 1), Decimal(0))
    metrics.cache_lookup("carrier-pigeon", hit=True)
    metrics.rate_limited("carrier-pigeon")
    metrics.alert_fired("daily_cost", "warning")
    metrics.alert_fired("made_up", "loud")
    metrics.budget_used("everyone", "fortnight", 0.5)
    s = parse((await scrape()).text)
    allowed = {
        "endpoint": metrics.ENDPOINTS | {"other"},
        "status": metrics.STATUSES | {"other"},
        "kind": set(metrics.TOKEN_KINDS),
        "scope": {"user", "global", "other"},
        "period": {"day", "month", "other"},
        "rule": metrics.RULES | {"other"},
        "level": metrics.LEVELS | {"other"},
        "direction": {"in", "out"},
    }
    for name, labels in s:
        for label, v in labels:
            assert label in allowed or label in ("provider", "model", "channel", "le"), (name, label)
            if label in allowed:
                assert v in allowed[label], (name, label, v)
    calls = {dict(labels)["model"] for name, labels in s if name == "cost_provider_api_calls_total"}
    assert len(calls) <= metrics.MAX_CALL_SERIES + 1 and "other" in calls
    assert value(s, "cost_provider_api_calls_total", provider="simulated", model="gpt-4o-mini", status="other") == 1
    assert value(s, "cost_cache_hits_total", endpoint="other") == 1
    assert value(s, "cost_rate_limited_messages_total", endpoint="other") == 1
    assert value(s, "cost_alerts_fired_total", rule="daily_cost", level="warning") == 1
    assert value(s, "cost_alerts_fired_total", rule="other", level="other") == 1
    assert value(s, "cost_budget_used_ratio", scope="other", period="other") == 0.5


async def test_a_warning_counts_once_per_period_and_a_block_per_message(make_bot: Any) -> None:
    bot: Bot = await make_bot(user_monthly_limit=Decimal(1), model_catalog=ONE_MODEL)
    await spend_row(bot, "0.80")
    warned = await bot.send("Explain in detail why the sky is blue, step by step.")
    await bot.send("And another question about rainbows, please?")  # warned before: no new warning
    assert warned.outcomes["budget"] == "warn user month"
    await spend_row(bot, "0.95", user="console:bob")
    for text in ("Hello?", "Hello again?"):
        assert (await bot.send(text, user="bob")).outcomes["budget"] == "blocked user month"
    s = parse((await scrape()).text)
    assert value(s, "cost_budget_warnings_total", scope="user", period="month") == 1
    assert value(s, "cost_budget_blocks_total", scope="user", period="month") == 2
    assert value(s, "cost_budget_warnings_total", scope="user", period="day") == 0
    assert value(s, "cost_budget_blocks_total", scope="global", period="month") == 0


async def test_the_bots_own_budget_warns_blocks_and_shows_its_use(make_bot: Any) -> None:
    bot: Bot = await make_bot(global_monthly_limit=Decimal(2), global_daily_limit=Decimal("0.5"))
    await spend_row(bot, "0.5", user="console:zed")
    turn = await bot.send("Hello?", user="newcomer")
    assert turn.outcomes["answer"] == "cache only"
    s = parse((await scrape()).text)
    assert value(s, "cost_budget_warnings_total", scope="global", period="day") == 1
    assert value(s, "cost_budget_blocks_total", scope="global", period="day") == 1
    assert value(s, "cost_budget_used_ratio", scope="global", period="day") == 1.0
    assert value(s, "cost_budget_used_ratio", scope="global", period="month") == 0.25
    assert ("cost_budget_used_ratio", frozenset({("scope", "user"), ("period", "month")})) not in s


async def test_rate_limited_messages_are_counted(make_bot: Any) -> None:
    bot: Bot = await make_bot(rate_limit_per_minute=2, model_catalog=ONE_MODEL)
    for text in ("one", "two", "three"):
        await bot.send(text)
    s = parse((await scrape()).text)
    assert value(s, "cost_rate_limited_messages_total", endpoint="console") == 1
    assert value(s, "cost_rate_limited_messages_total", endpoint="telegram") == 0


async def test_a_failed_attempt_and_its_fallback_are_both_counted(
    make_bot: Any, openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer
) -> None:
    bot: Bot = await make_bot(
        openai_api_key="sk-test", openai_base_url=openai_server.base_url, anthropic_api_key="sk-ant-test",
        anthropic_base_url=anthropic_server.base_url, llm_timeout_s=0.5, llm_max_retries=0,
        model_catalog=[{"provider": "openai", "model": "gpt-4o-mini", "tier": "cheap"},
                       {"provider": "anthropic", "model": "claude-haiku-4-5", "tier": "cheap"}],
    )  # fmt: skip
    openai_server.script(Fail(500))
    anthropic_server.script(Ok(text="Bonjour.", usage=anthropic_usage(100, 10, cache_read_input_tokens=50)))
    await bot.send("Say hello in French.")
    failed, ok = await rows(bot)
    s = parse((await scrape()).text)
    assert value(s, "cost_provider_api_calls_total", provider="openai", model="gpt-4o-mini", status="error") == 1
    assert value(s, "cost_provider_api_calls_total", provider="anthropic", model="claude-haiku-4-5", status="ok") == 1
    haiku = {"provider": "anthropic", "model": "claude-haiku-4-5"}
    assert value(s, "cost_provider_tokens_total", kind="cached", **haiku) == ok.usage.cache_read_tokens == 50
    assert value(s, "cost_provider_tokens_total", kind="input", **haiku) == ok.usage.input_tokens
    assert value(s, "cost_request_cost_usd_sum", endpoint="console", **haiku) == float(ok.cost)
    assert value(s, "cost_request_cost_usd_count", endpoint="console", provider="openai", model="gpt-4o-mini") == 1
    assert failed.cost == 0


def test_the_fullest_user_sets_the_user_scope() -> None:
    window = Window(Period.MONTH, "2026-11", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))

    def meter(scope: Scope, unit: Unit, limit: int | None, used: int) -> Meter:
        return Meter(scope, Period.MONTH, unit, "k", limit, used, window)

    metrics.fullest_user([
        meter(Scope.USER, Unit.USD, 1000, 300), meter(Scope.USER, Unit.TOKENS, 100, 70),  # one user: 70 %
        meter(Scope.USER, Unit.USD, 1000, 500), meter(Scope.USER, Unit.USD, None, 10**9),  # another: 50 %
        meter(Scope.GLOBAL, Unit.USD, 1000, 990),  # the bot's: not a user's
    ])  # fmt: skip
    assert metrics.REGISTRY.get_sample_value("cost_budget_used_ratio", {"scope": "user", "period": "month"}) == 0.7
    assert metrics.REGISTRY.get_sample_value("cost_budget_used_ratio", {"scope": "user", "period": "day"}) == 0.0


def test_cpu_is_cpu_time_over_wall_time_between_samples() -> None:
    registry = CollectorRegistry()
    cpu, memory = Gauge("t_cpu", "", registry=registry), Gauge("t_mem", "", registry=registry)
    ticks = {"cpu": 10.0, "wall": 100.0, "rss": 1000}
    r = metrics.Resources(cpu, memory, lambda: ticks["cpu"], lambda: ticks["wall"], lambda: int(ticks["rss"]))
    ticks.update(cpu=11.5, wall=103.0, rss=2000)
    r.sample()
    assert (registry.get_sample_value("t_cpu"), registry.get_sample_value("t_mem")) == (0.5, 2000)
    ticks.update(cpu=11.6, wall=103.1)  # too short a window: the figure stays
    r.sample()
    assert registry.get_sample_value("t_cpu") == 0.5
    ticks.update(cpu=13.5, wall=104.0)  # two cores busy over the second since the last figure
    r.sample()
    assert registry.get_sample_value("t_cpu") == pytest.approx(2.0)


async def test_this_process_cpu_and_memory_are_measured_at_scrape() -> None:
    await scrape()
    started = time.monotonic()
    while time.monotonic() - started < 2 * metrics.Resources.MIN_WINDOW_S:
        pass  # busy: CPU time between two scrapes
    s = parse((await scrape()).text)
    assert value(s, "cost_memory_usage_bytes") > 10_000_000
    assert value(s, "cost_cpu_usage_cores") > 0


# --- several worker processes --------------------------------------------------------------------

WORKER = """
import sys
from decimal import Decimal
from bot import metrics
from providers.base import Usage
n = int(sys.argv[1])
usage = Usage(100, 20, cache_read_tokens=n)
metrics.observe_call("telegram", "simulated", "gpt-4o-mini", "ok", usage, Decimal("0.000027"))
metrics.cache_lookup("telegram", hit=n == 1)
metrics.budget_used("global", "month", 0.25 * n)
metrics.sample_resources()
print(metrics.MEMORY_BYTES.collect()[0].samples[0].value, flush=True)
sys.stdin.readline()
"""

SCRAPER = """
from fastapi import FastAPI
from fastapi.testclient import TestClient
from bot import metrics
app = FastAPI()
app.include_router(metrics.metrics_router())
with TestClient(app) as client:
    body = client.get("/metrics").text
print(metrics.MEMORY_BYTES.collect()[0].samples[0].value)
print(body)
"""


def env_for(directory: Path) -> dict[str, str]:
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT)}


def start_worker(directory: Path, n: int) -> tuple[subprocess.Popen[str], float]:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(n)], cwd=ROOT, env=env_for(directory), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert worker.stdout is not None
    return worker, float(worker.stdout.readline())


def scrape_in_a_process(directory: Path) -> tuple[float, Samples]:
    done = subprocess.run(
        [sys.executable, "-c", SCRAPER], cwd=ROOT, env=env_for(directory), text=True, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    memory, body = done.stdout.split("\n", 1)
    assert "pid=" not in body
    return float(memory), parse(body)


def test_two_worker_processes_are_merged(tmp_path: Path) -> None:
    first, rss1 = start_worker(tmp_path, 1)
    try:
        second, rss2 = start_worker(tmp_path, 2)  # after the first: its budget reading is the most recent
    except BaseException:
        first.kill()
        raise
    try:
        assert {f"gauge_livesum_{p.pid}.db" for p in (first, second)} <= {f.name for f in tmp_path.iterdir()}
        own, s = scrape_in_a_process(tmp_path)
    finally:
        assert first.stdin is not None
        first.stdin.close()  # exits cleanly: it marks itself dead
        second.send_signal(signal.SIGKILL)  # dies without a word: the next scrape drops it
        first.wait(30)
        second.wait(30)
    sim = {"provider": "simulated", "model": "gpt-4o-mini"}
    assert value(s, "cost_provider_api_calls_total", status="ok", **sim) == 2.0
    assert value(s, "cost_request_cost_usd_sum", endpoint="telegram", **sim) == 2 * 0.000027
    assert value(s, "cost_request_cost_usd_count", endpoint="telegram", **sim) == 2.0
    assert value(s, "cost_provider_tokens_total", kind="input", **sim) == 200.0
    assert value(s, "cost_provider_tokens_total", kind="cached", **sim) == 3.0
    assert value(s, "cost_cache_hits_total", endpoint="telegram") == 1.0
    assert value(s, "cost_cache_misses_total", endpoint="telegram") == 1.0
    assert value(s, "cost_budget_used_ratio", scope="global", period="month") == 0.5  # mostrecent
    assert value(s, "cost_memory_usage_bytes") == rss1 + rss2 + own  # livesum over three live processes
    assert value(s, "cost_cpu_usage_cores") >= 0

    assert not (tmp_path / f"gauge_livesum_{first.pid}.db").exists()  # removed on its way out
    assert (tmp_path / f"gauge_livesum_{second.pid}.db").exists()  # left behind by the killed one
    own, s = scrape_in_a_process(tmp_path)
    assert not (tmp_path / f"gauge_livesum_{second.pid}.db").exists()
    assert value(s, "cost_provider_api_calls_total", status="ok", **sim) == 2.0  # counters outlive their process
    assert value(s, "cost_budget_used_ratio", scope="global", period="month") == 0.5
    assert value(s, "cost_memory_usage_bytes") == own  # the dead workers use nothing
