"""Counting what a message costs in store work: Redis and Postgres round trips, SQLite statements.

Counted at the client libraries' lowest Python level, so whatever the code above them does is
counted as it happens, nothing is assumed:

- Redis: each ``send_packed_command`` of a redis-py asyncio connection is one round trip (a
  pipeline or a Lua script is one; a connection's handshake counts too).
- Postgres: each call into asyncpg's wire protocol object is one exchange with the server
  (``prepare``, ``bind_execute``, ``bind_execute_many``, ``query``, ...). With no statement cache
  a parameterised query is two (prepare, then bind and execute); a pool's connection reset on
  release is one more.
- SQLite: each statement run (``sqlite3`` trace callback), the embedded store's and the outbox's.

Each event is attributed to the message whose task made it. A round trip is *synchronous* when
the message's own task made it, or a task started during the message that finished before the
message did (gathered work); anything else (the outbox flusher, a task left running, the
dispatcher's writer, which runs in a context of its own whichever message started it) is
*background*.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MESSAGE: ContextVar[int | None] = ContextVar("pennybot_bench_message", default=None)
STORES = ("redis", "postgres", "sqlite")


@dataclass(slots=True)
class Event:
    store: str
    label: str
    task: asyncio.Task[Any] | None
    message: int | None
    stage: str


@dataclass
class MessageCount:
    """One message's store work: synchronous counts per store, by label and by stage."""

    sync: Counter[str] = field(default_factory=Counter)
    labels: Counter[tuple[str, str]] = field(default_factory=Counter)
    stages: Counter[tuple[str, str]] = field(default_factory=Counter)


class Tally:
    """Collects store events while active and splits them per message into synchronous and background."""

    def __init__(self) -> None:
        self.active = False
        self.stage = "-"
        self.events: list[Event] = []
        self._begin = 0
        self._owner: asyncio.Task[Any] | None = None
        self._message: int | None = None

    def note(self, store: str, label: str) -> None:
        if not self.active:
            return
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        self.events.append(Event(store, label, task, MESSAGE.get(), self.stage))

    def begin(self, message: int) -> None:
        """The calling task starts working on ``message`` (tasks it starts inherit the tag)."""
        MESSAGE.set(message)
        self._owner = asyncio.current_task()
        self._message = message
        self._begin = len(self.events)

    def end(self) -> MessageCount:
        """Classify the events since ``begin``: the message's synchronous work, by store, label and stage."""
        counted = MessageCount()
        for event in self.events[self._begin :]:
            if event.message != self._message:
                continue
            owned = event.task is self._owner or (event.task is not None and event.task.done())
            if owned:
                counted.sync[event.store] += 1
                counted.labels[(event.store, event.label)] += 1
                counted.stages[(event.stage, event.store)] += 1
        MESSAGE.set(None)
        self._message = None
        return counted

    def background(self, sync_total: Counter[str]) -> Counter[str]:
        """Everything counted while active that was not synchronous to some message."""
        every = Counter(e.store for e in self.events)
        return every - sync_total


TALLY = Tally()


# ---- labels ----

_SCHEMA = re.compile(r'"[^"]+"\.')
_DML = re.compile(r"^\s*(insert\s+(?:or\s+\w+\s+)?into|update|delete\s+from)\s+(\w+)", re.I)
_WITH = re.compile(r"^\s*with\s+(\w+)\s+as\s*\(", re.I)
_SELECT = re.compile(r"^\s*(?:with\b.*?\)\s*)?select\b.*?\bfrom\s+(\w+)", re.I | re.S)


def sql_label(sql: str) -> str:
    """A short name for a statement: ``insert inbox``, ``select messages``, ``begin``, ``pool reset``."""
    text = _SCHEMA.sub("", sql).strip()
    lowered = text.lower()
    if lowered.startswith("select pg_advisory_unlock_all"):
        return "pool reset"
    if m := _DML.match(text):
        verb = m.group(1).split()[0].lower()
        return f"{verb} {m.group(2)}"
    if m := _WITH.match(text):  # a statement of several steps: named by its first
        return f"with {m.group(1)}"
    if m := _SELECT.match(text):
        return f"select {m.group(1)}"
    return " ".join(lowered.split()[:2])[:40] or "?"


def _lua_names() -> dict[str, str]:
    """sha1 of each Lua script the Redis store sends -> its name (EVALSHA's first argument)."""
    from budget.stores.redis import script_source

    folder = Path(__file__).resolve().parent.parent / "budget" / "stores" / "lua"
    return {
        hashlib.sha1(script_source(p.stem).encode()).hexdigest(): p.stem  # noqa: S324
        for p in folder.glob("*.lua")
    }


_LUA = _lua_names()


def _resp_commands(packed: bytes) -> list[list[bytes]]:
    """The commands in packed RESP (a pipeline holds several), each as its first two arguments."""
    commands: list[list[bytes]] = []
    i = 0
    while i < len(packed) and packed[i : i + 1] == b"*":
        end = packed.index(b"\r\n", i)
        n = int(packed[i + 1 : end])
        i = end + 2
        args: list[bytes] = []
        for _ in range(n):
            end = packed.index(b"\r\n", i)
            size = int(packed[i + 1 : end])
            start = end + 2
            if len(args) < 2:
                args.append(packed[start : start + size])
            i = start + size + 2
        commands.append(args)
    return commands


def redis_label(command: Any) -> str:
    """``MGET``, ``EVALSHA reserve`` or ``pipeline[SET SET]``."""
    if isinstance(command, str):
        command = command.encode()
    packed = command if isinstance(command, bytes) else b"".join(bytes(c) for c in command)
    try:
        commands = _resp_commands(packed)
    except ValueError:
        return "?"
    names = []
    for args in commands:
        name = args[0].decode(errors="replace").upper() if args else "?"
        if name == "EVALSHA" and len(args) > 1:
            name += " " + _LUA.get(args[1].decode(errors="replace").lower(), "script")
        names.append(name)
    return names[0] if len(names) == 1 else f"pipeline[{' '.join(names)}]"


# ---- hooks ----


class _CountingProtocol:
    """asyncpg's wire protocol, each exchange with the server counted before it is made."""

    _EXCHANGES = frozenset(
        {"prepare", "bind_execute", "bind_execute_many", "bind", "execute", "query", "close_statement",
         "copy_in", "copy_out", "close_portal"}
    )  # fmt: skip

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in self._EXCHANGES:
            return value

        async def counted(*args: Any, **kwargs: Any) -> Any:
            TALLY.note("postgres", f"{name}: {_pg_label(name, args, kwargs)}")
            return await value(*args, **kwargs)

        return counted

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)


def _pg_label(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if method == "prepare":
        query = args[1] if len(args) > 1 else kwargs.get("query")
    elif method == "query":
        query = args[0] if args else kwargs.get("query")
    else:  # a prepared statement's state carries its query
        query = getattr(args[0] if args else kwargs.get("state"), "query", None)
    return sql_label(query) if isinstance(query, str) else method


def install() -> Callable[[], None]:
    """Hook redis-py, asyncpg and sqlite3 for the whole process; returns the function that unhooks."""
    undo: list[Callable[[], None]] = []

    from redis.asyncio.connection import AbstractConnection

    send = AbstractConnection.send_packed_command

    async def send_counted(self: Any, command: Any, check_health: bool = True) -> None:
        TALLY.note("redis", redis_label(command))
        await send(self, command, check_health)

    AbstractConnection.send_packed_command = send_counted  # type: ignore[method-assign]
    undo.append(lambda: setattr(AbstractConnection, "send_packed_command", send))

    import asyncpg.connection

    init = asyncpg.connection.Connection.__init__

    def init_counted(self: Any, protocol: Any, *args: Any, **kwargs: Any) -> None:
        init(self, _CountingProtocol(protocol), *args, **kwargs)

    asyncpg.connection.Connection.__init__ = init_counted
    undo.append(lambda: setattr(asyncpg.connection.Connection, "__init__", init))

    connect = sqlite3.connect

    def connect_counted(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: TALLY.note("sqlite", sql_label(sql)))
        return conn

    sqlite3.connect = connect_counted  # type: ignore[assignment]
    undo.append(lambda: setattr(sqlite3, "connect", connect))

    def uninstall() -> None:
        for step in reversed(undo):
            step()

    return uninstall


def per_message(counts: Iterable[MessageCount]) -> dict[str, Any]:
    """Mean, min and max synchronous round trips per message, per store, with the mean by label and stage."""
    items = list(counts)
    n = max(1, len(items))
    out: dict[str, Any] = {"messages": len(items)}
    for store in STORES:
        values = [c.sync[store] for c in items]
        out[store] = {
            "mean": round(sum(values) / n, 2),
            "min": min(values, default=0),
            "max": max(values, default=0),
            "mode": Counter(values).most_common(1)[0][0] if values else 0,
        }
    labels: Counter[tuple[str, str]] = Counter()
    stages: Counter[tuple[str, str]] = Counter()
    for c in items:
        labels.update(c.labels)
        stages.update(c.stages)
    out["by_label"] = {
        store: {label: round(k / n, 2) for (s, label), k in labels.most_common() if s == store} for store in STORES
    }
    out["by_stage"] = {
        stage: {store: round(k / n, 2) for (st, store), k in stages.items() if st == stage}
        for stage in dict.fromkeys(st for st, _ in stages)
    }
    return out
