"""The benchmark harness still runs and reports what BENCHMARKS.md reads (its shape, not its speed),
its fake APIs speak what the real SDKs expect, and its round-trip counters count what goes over the wire."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import roundtrips
from benchmarks.fakeapis import TOKEN, FakeAPIs
from bot.pipeline import STAGES
from tests.conftest import require_server

ROOT = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379/0"


def test_quick_overhead_on_the_embedded_defaults_reports_every_figure(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "overhead", "--quick", "--stores", "embedded", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "overhead-quick.json").read_text())
    assert data["benchmark"] == "overhead-quick"
    assert {"cores", "cpu_model", "python", "postgres", "redis"} <= set(data["machine"])
    config = data["configs"]["embedded"]
    timed = config["timed"]
    assert timed["message_ms"]["n"] == 150
    for figures in (timed["message_ms"], timed["pipeline_handle_ms"]):
        assert 0 < figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]
    assert sum(timed["outcomes"].values()) == 150
    counted = config["counted"]
    assert counted["messages"] == 40
    # The embedded defaults make no network round trip; the SQLite store runs statements.
    assert counted["redis"] == {"mean": 0.0, "min": 0, "max": 0, "mode": 0}
    assert counted["postgres"] == {"mean": 0.0, "min": 0, "max": 0, "mode": 0}
    assert counted["sqlite"]["min"] > 0
    assert set(counted["stage_own_us"]) == {s.__name__ for s in STAGES} | {"(all stages)"}
    assert data["targets"] == []  # the targets are judged on Postgres + Redis only


async def test_the_fake_apis_answer_the_real_sdks() -> None:
    from openai import AsyncOpenAI
    from telegram import Bot

    got: list[tuple[str, str]] = []
    apis = await FakeAPIs(lambda chat, text: got.append((chat, text))).start()
    try:
        async with Bot(TOKEN, base_url=apis.bot_api_url) as bot:
            sent = await bot.send_message(chat_id=4242, text="hello")
            assert (sent.chat.id, sent.text, bot.username) == (4242, "hello", "pennybot_bench_bot")
        llm = AsyncOpenAI(api_key="k", base_url=apis.openai_url, max_retries=0)
        reply = await llm.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        await llm.close()
    finally:
        await apis.stop()
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens == 14
    assert got == [("4242", "hello")]
    assert apis.calls == {"getMe": 1, "sendMessage": 1, "chat.completions": 1}


@pytest.fixture
def counting() -> Iterator[roundtrips.Tally]:
    uninstall = roundtrips.install()
    roundtrips.TALLY.events.clear()
    roundtrips.TALLY.active = True
    yield roundtrips.TALLY
    roundtrips.TALLY.active = False
    roundtrips.TALLY.events.clear()
    uninstall()


async def test_a_redis_command_script_and_pipeline_count_one_round_trip_each(counting: roundtrips.Tally) -> None:
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = Redis.from_url(REDIS, decode_responses=True)
    try:
        await client.ping()
    except RedisConnectionError:
        await client.aclose()
        require_server(False, f"Redis at {REDIS}")
    key = f"benchsmoke:{uuid.uuid4().hex}"
    try:
        tally = roundtrips.TALLY
        tally.begin(1)
        await client.mget([key, key + "x"])
        async with client.pipeline(transaction=True) as pipe:
            pipe.set(key, 1, ex=5)
            pipe.set(key + "x", 2, ex=5)
            await pipe.execute()
        counted = tally.end()
    finally:
        await client.delete(key, key + "x")
        await client.aclose()
    assert dict(counted.labels) == {("redis", "MGET"): 1, ("redis", "pipeline[MULTI SET SET EXEC]"): 1}


async def test_a_pooled_asyncpg_query_without_statement_cache_is_three_exchanges(
    counting: roundtrips.Tally, pg_dsn: str
) -> None:
    import asyncpg

    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1, statement_cache_size=0)
    try:
        await pool.fetchval("select 1")  # the connection's own start-up is not a message's work
        tally = roundtrips.TALLY
        tally.begin(1)
        assert await pool.fetchval("select $1::int", 7) == 7
        counted = tally.end()
    finally:
        await pool.close()
    # Parse, then bind and execute, then the pool's reset of the connection on release.
    assert dict(counted.labels) == {
        ("postgres", "prepare: select $1::int"): 1,
        ("postgres", "bind_execute: select $1::int"): 1,
        ("postgres", "query: pool reset"): 1,
    }


def test_sql_labels_name_the_verb_and_table() -> None:
    assert roundtrips.sql_label('insert into "s_1".inbox (channel) values ($1)') == "insert inbox"
    assert roundtrips.sql_label('select id, role from "x".messages where user_key = $1') == "select messages"
    assert roundtrips.sql_label("SELECT pg_advisory_unlock_all();\nCLOSE ALL;") == "pool reset"
    assert roundtrips.sql_label('with claimed as (insert into "x".inbox values ($1)) select 1') == "with claimed"
    assert roundtrips.redis_label(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") == "GET"


def test_every_script_the_redis_store_sends_is_named() -> None:
    from budget.stores.redis import RedisHotStore

    store = RedisHotStore("redis://127.0.0.1:1/0")  # never connects: only its scripts are looked at
    sent = {name: s.sha for name, s in vars(store).items() if hasattr(s, "sha")}
    assert {name: roundtrips._LUA.get(sha) for name, sha in sent.items()} == {n: n[1:] for n in sent}
