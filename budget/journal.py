"""What a process claimed and answered, kept on its own host until the database has it.

With a network database, a webhook's message is committed to this local SQLite file before the
webhook is acknowledged, and its replies (with the exchange's turns) before they are sent, rather
than to the database: tens of microseconds against a round trip each. The dispatcher writes both
to the database in the background: the claims first (``Database.land_claims``), then the answers,
with the done mark of those it sent. A process that crashed finds here, at its restart, what it
claimed, what it answered and whether it sent it, and writes that to the database before it takes
any message over: nothing acknowledged is lost, and nothing is paid for or sent twice. The file's
durability is the outbox's (WAL, ``synchronous=normal``): it survives a crash of the process, not
of the host. The file has a token of its own, written into every claim it lands, so a write that
is retried knows its own rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from budget.outbox import open_local
from budget.records import Answer, Claim, Exchange

Key = tuple[str, str]  # (channel, message_id)


def _exchange(text: str | None) -> Exchange | None:
    if text is None:
        return None
    data = json.loads(text)
    turns = [(role, content, int(tokens), int(size)) for role, content, tokens, size in data["turns"]]
    return Exchange(data["user_key"], turns, datetime.fromisoformat(data["at"]))


class Journal:
    """Claims and answers not yet in the database, in a local SQLite file (the outbox's, in tables
    of their own)."""

    def __init__(self, path: Path) -> None:
        self._local = open_local(path)
        self._local.execute(
            "create table if not exists claims (channel text not null, message_id text not null,"
            " user_key text not null, payload text not null, received_at text not null,"
            " primary key (channel, message_id))"
        )
        self._local.execute("create table if not exists meta (name text primary key, value text not null)")
        self._local.execute("insert or ignore into meta values ('token', ?)", (uuid.uuid4().hex,))
        self.token: str = self._local.execute("select value from meta where name = 'token'").fetchone()[0]
        self._local.execute(
            "create table if not exists answers (channel text not null, message_id text not null,"
            " epoch integer not null, replies text not null, exchange text, sent integer not null default 0,"
            " primary key (channel, message_id))"
        )

    def claim(self, claim: Claim) -> bool:
        """Keep a message claimed here before its webhook is acknowledged; False if it is kept already
        (a redelivery, while its claim waits for the database)."""
        cursor = self._local.execute(
            "insert or ignore into claims values (?, ?, ?, ?, ?)",
            (claim.channel, claim.message_id, claim.user_key, json.dumps(claim.payload), claim.received_at.isoformat()),
        )
        return cursor.rowcount == 1

    def landed(self, keys: Sequence[Key]) -> None:
        """Forget claims the database has now."""
        self._local.executemany("delete from claims where channel = ? and message_id = ?", keys)

    def claims(self) -> list[Claim]:
        """The claims kept, oldest first."""
        rows = self._local.execute(
            "select channel, message_id, user_key, payload, received_at from claims order by rowid"
        ).fetchall()
        return [Claim(c, m, u, json.loads(p), datetime.fromisoformat(at)) for c, m, u, p, at in rows]

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
