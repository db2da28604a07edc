"""The answers a process computed, kept on its own host until the database has them.

With a network database, a message's replies (and the exchange's turns) are committed to this
local SQLite file before they are sent, rather than to the database: tens of microseconds against
a round trip. The dispatcher writes them to the database in the background, with the done mark of
those it sent. A process that crashed finds here, at its restart, what it answered and whether it
sent it, and writes that to the database before it takes any message over: nothing is paid for
or sent twice. The file's durability is the outbox's (WAL, ``synchronous=normal``): it survives a
crash of the process, not of the host.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from budget.outbox import open_local
from budget.records import Answer, Exchange

Key = tuple[str, str]  # (channel, message_id)


def _exchange(text: str | None) -> Exchange | None:
    if text is None:
        return None
    data = json.loads(text)
    turns = [(role, content, int(tokens), int(size)) for role, content, tokens, size in data["turns"]]
    return Exchange(data["user_key"], turns, datetime.fromisoformat(data["at"]))


class AnswerJournal:
    """Answers not yet in the database, in a local SQLite file (the outbox's, in its own table)."""

    def __init__(self, path: Path) -> None:
        self._local = open_local(path)
        self._local.execute(
            "create table if not exists answers (channel text not null, message_id text not null,"
            " epoch integer not null, replies text not null, exchange text, sent integer not null default 0,"
            " primary key (channel, message_id))"
        )

    def put(self, key: Key, epoch: int, replies: Sequence[str], exchange: Exchange | None) -> None:
        """Keep an answer before it is sent (a later answer of the same message replaces it)."""
        kept = None
        if exchange is not None:
            kept = json.dumps(
                {"user_key": exchange.user_key, "turns": list(exchange.turns), "at": exchange.at.isoformat()}
            )
        self._local.execute(
            "insert or replace into answers (channel, message_id, epoch, replies, exchange) values (?, ?, ?, ?, ?)",
            (*key, epoch, json.dumps(list(replies)), kept),
        )

    def sent(self, key: Key) -> None:
        self._local.execute("update answers set sent = 1 where channel = ? and message_id = ?", key)

    def drop(self, keys: Sequence[Key]) -> None:
        """Forget answers the database has now (or that another process took over)."""
        self._local.executemany("delete from answers where channel = ? and message_id = ?", keys)

    def kept(self, sent_at: datetime) -> list[Answer]:
        """The answers kept, each at the epoch it was written at; one sent is done at ``sent_at``."""
        rows = self._local.execute(
            "select channel, message_id, epoch, replies, exchange, sent from answers order by rowid"
        ).fetchall()
        return [
            Answer(channel, mid, json.loads(replies), _exchange(exchange), epoch, sent_at if sent else None)
            for channel, mid, epoch, replies, exchange, sent in rows
        ]

    def close(self) -> None:
        self._local.close()
