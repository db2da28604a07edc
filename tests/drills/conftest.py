"""Fixtures the fault drills share: a fresh schema on the shared Postgres and a fresh key prefix on
the shared Redis, and a pipeline built the way the bot builds it (real clock, real stores)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from bot.factory import build, close
from bot.pipeline import Pipeline
from bot.settings import load_settings
from bot.turn import Deps, Inbound, Turn
from tests.budget.test_schema import drop
from tests.conftest import PG_DSN, require_server

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class SharedStores:
    """``database_url`` names a fresh schema, ``redis_url`` a fresh key prefix."""

    database_url: str
    redis_url: str
    prefix: str
    schema: str


def redis_up(url: str = SHARED_REDIS) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return True
    except redis.ConnectionError:
        return False


def pg_up(dsn: str = PG_DSN) -> bool:
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=3).close()
        return True
    except psycopg.OperationalError:
        return False


@contextmanager
def fresh_shared_stores(pg_dsn: str = PG_DSN) -> Iterator[SharedStores]:
    """A fresh schema and key prefix, dropped afterwards; skips (fails in CI) when a server is down."""
    require_server(pg_up(pg_dsn), f"PostgreSQL at {pg_dsn}")
    require_server(redis_up(), "Redis at 127.0.0.1:6379")
    schema, prefix = f"pb_{uuid.uuid4().hex[:10]}", f"d{uuid.uuid4().hex[:10]}"
    try:
        yield SharedStores(f"{pg_dsn}?schema={schema}", f"{SHARED_REDIS}?prefix={prefix}", prefix, schema)
    finally:
        drop(pg_dsn, schema)
        client = redis.Redis.from_url(SHARED_REDIS)
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)


@pytest.fixture
def shared_stores() -> Iterator[SharedStores]:
    with fresh_shared_stores() as stores:
        yield stores


@dataclass
class LiveBot:
    """The pipeline as ``pennybot serve`` builds it (wall clock, stores by URL), minus the HTTP app."""

    pipeline: Pipeline
    deps: Deps

    async def send(self, user: str, message_id: str, text: str) -> Turn:
        # The conversation comes with the message, as the webhook's claim reads it: the answer's
        # reservation can then ride in the rate limit's round trip, as in production.
        inbound = Inbound("console", user, user, message_id, text)
        conversation = await self.deps.db.conversation(inbound.user_key)
        turn = await self.pipeline.handle(inbound, conversation=conversation)
        await self.pipeline.done(turn)
        return turn


@asynccontextmanager
async def live_bot(**settings: Any) -> AsyncIterator[LiveBot]:
    built = build(load_settings(None, **settings))
    await built.deps.db.migrate()
    try:
        yield LiveBot(Pipeline(built.deps), built.deps)
    finally:
        await close(built.deps)
