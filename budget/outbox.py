"""Where ai_request rows go first: written straight to the database, or through a durable
local outbox that a background task flushes in batches (DESIGN invariant 3: none is lost).

With the outbox, a message never waits on Postgres: the row is committed to a local SQLite file
(tens of microseconds), and the flusher writes batches to the ledger, retrying while it is down.
Rows carry a unique request_id and the ledger ignores one it has, so a retried batch never
doubles a row. Spend counts the rows still waiting as well, and those a flush wrote while it read
the ledger (its snapshot may predate that commit): such a row may count twice for a moment, which
errs on the safe side, but is never missed. So a flushed row is deleted only once no spend that
began before its flush is still reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from budget.records import AIRequest, Kind, Spend, Status
from budget.stores import Database
from providers.base import Usage

log = logging.getLogger("pennybot.outbox")


class Recorder(Protocol):
    """Takes ai_request rows and answers what the ledger holds, rows in flight included."""

    async def record(self, rows: Sequence[AIRequest]) -> None: ...

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend: ...

    async def recorded(self, request_ids: Collection[str]) -> set[str]: ...

    async def flush(self) -> int: ...

    async def aclose(self) -> None: ...


class DirectRecorder:
    """Writes each row to the database at once (the embedded SQLite default)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, rows: Sequence[AIRequest]) -> None:
        await self.db.record(rows)

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend:
        return await self.db.spend(user_key, start, end)

    async def recorded(self, request_ids: Collection[str]) -> set[str]:
        return await self.db.recorded(request_ids)

    async def flush(self) -> int:
        return 0

    async def aclose(self) -> None:
        return None


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


_ROW_FIELDS = tuple(f.name for f in fields(AIRequest))
_USAGE_FIELDS = tuple(f.name for f in fields(Usage))


def encode(row: AIRequest) -> str:
    """A row as JSON text: Decimals and datetimes as strings, exact. (The fields are read one
    by one: ``dataclasses.asdict`` deep-copies every value, 5 times the cost, on each answer.)"""
    data = {name: getattr(row, name) for name in _ROW_FIELDS}
    usage = row.usage
    data.update(
        usage={name: getattr(usage, name) for name in _USAGE_FIELDS}, created_at=row.created_at.isoformat(),
        cost=str(row.cost), saved=str(row.saved),
    )  # fmt: skip
    return json.dumps(data)


def decode(text: str) -> AIRequest:
    data = json.loads(text)
    data.update(
        created_at=datetime.fromisoformat(data["created_at"]), cost=Decimal(data["cost"]),
        saved=Decimal(data["saved"]), usage=Usage(**data["usage"]), kind=Kind(data["kind"]),
        status=Status(data["status"]),
    )  # fmt: skip
    return AIRequest(**data)


def open_local(path: Path) -> sqlite3.Connection:
    """A local SQLite file for what must outlive a crash of the process: WAL, ``synchronous=normal``
    (a commit is tens of microseconds; it survives the process, not a crash of the host)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    local = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    local.execute("pragma journal_mode=wal")
    local.execute("pragma synchronous=normal")
    return local


class OutboxRecorder:
    """A durable local outbox in front of a network database, flushed in the background."""

    def __init__(self, db: Database, path: Path, *, batch: int = 500, interval_s: float = 0.05) -> None:
        self.db = db
        self.batch = batch
        self.interval_s = interval_s
        self._local = open_local(path)
        self._local.execute(
            "create table if not exists outbox (seq integer primary key autoincrement, request_id text unique,"
            " user_key text not null, created_at text not null, cost_nano integer not null, tokens integer not null,"
            " row text not null, flushed integer)"
        )
        columns = {c[1] for c in self._local.execute("pragma table_info(outbox)")}
        if "flushed" not in columns:  # a file from before flushed rows were kept a moment
            self._local.execute("alter table outbox add column flushed integer")
        self._local.execute("delete from outbox where flushed is not null")  # in the ledger already
        self._flushes = 0  # batches written to the ledger by this process; a flushed row keeps its number
        self._reading = 0  # spends reading the ledger now
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def record(self, rows: Sequence[AIRequest]) -> None:
        from budget.money import to_nano

        self._local.executemany(
            "insert or ignore into outbox (request_id, user_key, created_at, cost_nano, tokens, row)"
            " values (?, ?, ?, ?, ?, ?)",
            [
                (r.request_id, r.user_key, _ts(r.created_at), to_nano(r.cost), r.usage.total_tokens, encode(r))
                for r in rows
            ],
        )
        if self._task is None:
            self.start()  # first use: now there is a running loop
        self._wake.set()

    def pending(self) -> int:
        (n,) = self._local.execute("select count(*) from outbox where flushed is null").fetchone()
        return int(n)

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend:
        began = self._flushes
        self._reading += 1
        try:
            stored = await self.db.spend(user_key, start, end)
        finally:
            self._reading -= 1
        sql = (
            "select coalesce(sum(cost_nano), 0), coalesce(sum(tokens), 0) from outbox"
            " where (flushed is null or flushed > ?) and created_at >= ? and created_at < ?"
        )
        args: list[str | int] = [began, _ts(start), _ts(end)]
        if user_key is not None:
            sql += " and user_key = ?"
            args.append(user_key)
        nanos, tokens = self._local.execute(sql, args).fetchone()
        return Spend(stored.nanos + int(nanos), stored.tokens + int(tokens))

    async def recorded(self, request_ids: Collection[str]) -> set[str]:
        """Rows in this outbox (a later ``spend`` counts them, waiting or flushed meanwhile), then
        those in the ledger: looked up in that order, a row flushed and dropped between is found."""
        ids = list(request_ids)
        marks = ",".join("?" * len(ids))
        rows = self._local.execute(f"select request_id from outbox where request_id in ({marks})", ids).fetchall()
        here = {r for (r,) in rows}
        rest = [r for r in ids if r not in here]
        return here | (await self.db.recorded(rest) if rest else set())

    async def flush(self) -> int:
        """Write every waiting row to the ledger; returns how many. Raises if the ledger is down."""
        written = 0
        while True:
            batch = self._local.execute(
                "select seq, row from outbox where flushed is null order by seq limit ?", (self.batch,)
            ).fetchall()
            if not batch:
                return written
            await self.db.record([decode(text) for _, text in batch])
            self._flushes += 1
            self._local.execute(
                "update outbox set flushed = ? where seq <= ? and flushed is null", (self._flushes, batch[-1][0])
            )
            if not self._reading:  # else a spend reading now may have missed the commit: kept for it
                self._local.execute("delete from outbox where flushed is not null")
            written += len(batch)

    async def _run(self) -> None:
        delay = self.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: on 3.11 it starts a task a wait
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                self.failures, delay = 0, self.interval_s
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.failures += 1
                delay = min(self.interval_s * 2**self.failures, 5.0)
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning(
                        "ledger unreachable (%s); %d rows wait in the outbox", type(error).__name__, self.pending()
                    )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.warning("ledger unreachable at shutdown; %d rows wait in the outbox", self.pending())
        self._local.close()
