"""Shared fixtures. The network guard is pytest-socket's ``--allow-hosts=127.0.0.1,::1`` in
pyproject: any connection elsewhere fails the test (tests/test_network_guard.py proves it)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.factory import build, close
from bot.pipeline import Pipeline
from bot.settings import Settings, load_settings
from bot.turn import Deps, Inbound, Turn
from budget.tokens import TokenCounter
from providers.base import Provider

pytest_plugins = ["tests.fakes.llm_fixtures", "tests.fakes.platform_fixtures"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_DSN = os.environ.get("PENNYBOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def counter() -> TokenCounter:
    return TokenCounter()


@dataclass
class Clock:
    """A clock tests move by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class Bot:
    """A pipeline on in-memory stores, with a hand-driven clock, and a way to send it text."""

    pipeline: Pipeline
    deps: Deps
    clock: Clock
    _n: int = 0

    async def send(self, text: str, user: str = "alice", channel: str = "console") -> Turn:
        self._n += 1
        # Unique across Bot instances: two of them may share one database (a restart).
        turn = await self.pipeline.handle(Inbound(channel, user, user, f"m{self._n}-{id(self):x}", text))
        await self.pipeline.done(turn)
        return turn


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
async def make_bot(counter: TokenCounter, clock: Clock) -> AsyncIterator[Callable[..., Any]]:
    made: list[Deps] = []

    async def factory(providers: dict[str, Provider] | None = None, **overrides: Any) -> Bot:
        base: dict[str, Any] = {"database_url": "memory://", "redis_url": "memory://"}
        settings: Settings = load_settings(None, **(base | overrides))
        built = build(settings, clock=clock, providers=providers, counter=counter)
        await built.deps.db.migrate()
        made.append(built.deps)
        return Bot(Pipeline(built.deps), built.deps, clock)

    yield factory
    for deps in made:
        await close(deps)


def require_server(reachable: bool, what: str) -> None:
    """Skip where the server is missing, except in CI, where it must be there."""
    if reachable:
        return
    if IN_CI:
        pytest.fail(f"{what} is not reachable, and CI must run these tests (.ci/run starts it)")
    pytest.skip(f"{what} is not reachable on this machine")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    import psycopg

    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
        ok = True
    except psycopg.OperationalError:
        ok = False
    require_server(ok, f"PostgreSQL at {PG_DSN}")
    yield PG_DSN
