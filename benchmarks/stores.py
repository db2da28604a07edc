"""The stores a benchmark runs on, each its own and removed afterwards: a SQLite file in a temp
directory with the in-process hot store (the embedded defaults), or a fresh schema on the local
Postgres with a fresh key prefix on the local Redis. Never FLUSHALL, never a shared key."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from benchmarks.results import PG_DSN, REDIS_URL

KINDS = ("embedded", "pg_redis")


@dataclass
class BenchStores:
    """``embedded``: SQLite + memory hot store; ``pg_redis``: Postgres (own schema) + Redis (own prefix)."""

    kind: str
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pb-bench-")))
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def schema(self) -> str:
        return f"bench_{self.tag}"

    @property
    def prefix(self) -> str:
        return f"bench{self.tag}"

    @property
    def database_url(self) -> str:
        if self.kind == "embedded":
            return f"sqlite:///{self.tmp / 'pennybot.db'}"
        return f"{PG_DSN}?schema={self.schema}"

    @property
    def redis_url(self) -> str:
        if self.kind == "embedded":
            return "memory://"
        return f"{REDIS_URL}?prefix={self.prefix}"

    def outbox(self, name: str = "outbox") -> Path:
        return self.tmp / f"{name}.db"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Settings for a bot on these stores; the rate limit is lifted so every message goes the
        whole way (the limiter still counts each one)."""
        return {
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "outbox_path": self.outbox(),
            "rate_limit_per_minute": 1_000_000,
        } | overrides

    def env(self, **overrides: str) -> dict[str, str]:
        """The same as environment variables, for a ``pennybot serve`` process."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "OUTBOX_PATH": str(self.outbox()),
            "RATE_LIMIT_PER_MINUTE": "1000000",
        } | overrides

    async def count_answers(self) -> int:
        """ai_request rows of kind answer committed to the ledger (not those still in an outbox)."""
        if self.kind == "embedded":
            import sqlite3

            conn = sqlite3.connect(f"file:{self.tmp / 'pennybot.db'}?mode=ro", uri=True)
            try:
                (n,) = conn.execute("select count(*) from ai_requests where kind = 'answer'").fetchone()
            finally:
                conn.close()
            return int(n)
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        try:
            n = await conn.fetchval(f'select count(*) from "{self.schema}".ai_requests where kind = $1', "answer")
        finally:
            await conn.close()
        return int(n)

    async def drop(self) -> None:
        """Remove the schema, the keys and the temp directory."""
        if self.kind == "pg_redis":
            import asyncpg
            from redis.asyncio import Redis

            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f'drop schema if exists "{self.schema}" cascade')
            finally:
                await conn.close()
            client = Redis.from_url(REDIS_URL)
            try:
                batch: list[Any] = []
                async for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        await client.delete(*batch)
                        batch.clear()
                if batch:
                    await client.delete(*batch)
            finally:
                await client.aclose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.drop()


async def servers_up(kind: str) -> str | None:
    """None if the stores for ``kind`` answer, else why not."""
    if kind == "embedded":
        return None
    try:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN, timeout=3)
        await conn.close()
    except Exception as error:
        return f"PostgreSQL at {PG_DSN}: {type(error).__name__}"
    try:
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        await client.ping()
        await client.aclose()
    except Exception as error:
        return f"Redis at {REDIS_URL}: {type(error).__name__}"
    return None
