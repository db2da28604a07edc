"""The durable store protocol: the ai_request ledger, conversations, the inbox, quotas, audit."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from budget.records import (
    AIRequest,
    Answer,
    AuditEntry,
    Claim,
    Conversation,
    Exchange,
    InboxItem,
    Landing,
    Lease,
    Quota,
    ResourceUse,
    Spend,
    StoredAlert,
    StoredTurn,
)


async def answer_each(db: Database, answers: Sequence[Answer]) -> list[bool]:
    """``store_answers`` as one ``answer_inbox`` each, then one ``finish_inbox``: for the stores
    without a single write for it."""
    stored = [await db.answer_inbox(a.channel, a.message_id, a.replies, a.exchange, a.epoch) for a in answers]
    await db.finish_inbox(
        [(a.channel, a.message_id, a.done_at) for a, mine in zip(answers, stored, strict=True) if mine and a.done_at]
    )
    return stored


class Database(Protocol):
    """SQLite (embedded default) or Postgres; chosen by ``DATABASE_URL``."""

    async def migrate(self) -> None: ...

    async def record(self, rows: Sequence[AIRequest]) -> None:
        """Write ai_request rows; a row whose request_id is already stored is skipped."""
        ...

    async def spend(self, user_key: str | None, start: datetime, end: datetime) -> Spend:
        """What the ledger holds for a user (None: everyone) in [start, end)."""
        ...

    async def recorded(self, request_ids: Collection[str]) -> set[str]:
        """Which of these ai_request rows the ledger holds."""
        ...

    async def requests(self, start: datetime, end: datetime, user_key: str | None = None) -> list[AIRequest]: ...

    async def record_fee(
        self, channel: str, user_key: str, direction: str, message_id: str, fee: Decimal, now: datetime
    ) -> None:
        """A platform's per-message fee (once per channel, direction and message id)."""
        ...

    async def fees(self, start: datetime, end: datetime) -> Decimal: ...

    async def record_resources(
        self, process: str, start: datetime, end: datetime, cpu_us: int, memory_byte_seconds: int
    ) -> None:
        """What one process used in [start, end) (stored once per process and start)."""
        ...

    async def resources(self, start: datetime, end: datetime) -> ResourceUse:
        """What every process used in windows ending in [start, end)."""
        ...

    async def set_user_active(self, user_key: str, active: bool) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""
        ...

    async def conversation(self, user_key: str) -> Conversation: ...

    async def add_turns(
        self, user_key: str, turns: Sequence[tuple[str, str, int, int]], now: datetime
    ) -> list[StoredTurn]:
        """Append (role, content, tokens, size) turns; returns them with their ids."""
        ...

    async def fold(
        self, user_key: str, turn_ids: Sequence[int], summary: tuple[str, int, int], now: datetime
    ) -> StoredTurn:
        """In one transaction: mark the turns and the old summary folded, store the new summary
        (content, tokens, size). No turn is ever in neither the summary nor the prompt."""
        ...

    async def reset_conversation(self, user_key: str) -> int: ...

    async def upsert_user(self, user_key: str, channel: str, platform_id: str, now: datetime) -> None: ...

    async def claim_inbox(
        self, channel: str, message_id: str, user_key: str, payload: dict[str, Any], now: datetime, lease_s: float = 60
    ) -> bool:
        """Store an inbound message, leased to the caller for ``lease_s``; False if that platform
        message was seen before."""
        ...

    async def claim_inbox_reading(
        self, channel: str, message_id: str, user_key: str, payload: dict[str, Any], now: datetime, lease_s: float = 60
    ) -> Conversation | None:
        """``claim_inbox`` and, in the same round trip where the store can, the user's
        conversation (the message's next read); None if that platform message was seen before."""
        ...

    async def land_claims(self, claims: Sequence[Claim], token: str, now: datetime, lease_s: float) -> list[Landing]:
        """Write claims kept in a local journal to the inbox, many in one write where the store
        can: each message's row is inserted (its payload with ``"by": token`` added, received at
        the claim's time, leased until ``now + lease_s`` at epoch 0, pending) unless the message is
        there already. Per claim, in order: MINE if inserted now, ANSWERED if there with its replies
        stored or done (a redelivery, to this claimant too), MINE if there, unanswered, with this
        ``token``, else PENDING. Idempotent: a retried call (its commit's reply lost) gets MINE for
        the claims it inserted. No claims: [] with no round trip."""
        ...

    async def renew_lease(self, channel: str, message_id: str, now: datetime, lease_s: float, epoch: int = 0) -> bool:
        """Keep owning a message that is still being worked on; False if it is no longer the
        caller's (taken over at another ``epoch``, or done)."""
        ...

    async def lease_open(
        self, now: datetime, lease_s: float, limit: int = 100, owner: str | None = None
    ) -> list[InboxItem]:
        """Take, atomically, the messages not done whose lease ran out (their owner died or
        failed): nobody else gets them until the new lease runs out. Each taking moves the
        message's ``epoch`` on by one, which fences off the owner it was taken from, and marks it
        with the taker's ``owner``, so a taker whose result was lost (the commit ran, its reply never
        came) can tell its own epoch from another's (``lease_holder``)."""
        ...

    async def lease_holder(self, channel: str, message_id: str) -> Lease | None:
        """The message's lease as it stands: its epoch, the owner that took it there, and until
        when; None if there is no such message or it is done."""
        ...

    async def decide_inbox(self, channel: str, message_id: str, owner: str) -> bool:
        """Give a message claimed from a journal (``land_claims``) to ``owner``, unless another owner
        has it: True if ``owner`` has it now (a retry of a won call wins again). Only while it is
        pending at epoch 0 and its row came from a journal claim (``"by"`` in its payload): a
        message claimed straight in the database belongs to that claimant, and a taken-over one to
        its taker. For two processes that may both think the message theirs (one won Redis's
        once-key, the other could not ask Redis and has the database's claim): whichever wins this
        answers (bot.dispatch). Marks the row with ``owner`` (``lease_owner``, at epoch 0)."""
        ...

    async def answer_inbox(
        self, channel: str, message_id: str, replies: Sequence[str], exchange: Exchange | None = None, epoch: int = 0
    ) -> bool:
        """Keep the computed replies before they are sent (status answered) and, all or nothing
        with them, the exchange's turns (``add_turns``), if the message is still the caller's
        (its ``epoch`` unchanged); True once they are stored (a retry of a stored answer stores
        nothing twice), False if another process took the message over: then neither is stored,
        and the caller must not send."""
        ...

    async def finish_inbox(self, sent: Sequence[tuple[str, str, datetime]]) -> None:
        """These messages' replies were sent (status done): (channel, message_id, sent at) each,
        all in one write where the store can."""
        ...

    async def store_answers(self, answers: Sequence[Answer]) -> list[bool]:
        """``answer_inbox`` for each, and the done mark of each sent (``done_at`` set) whose answer
        is the caller's, all in one write where the store can: whether each is the caller's."""
        ...

    async def open_inbox(self, owner: str | None = None) -> list[InboxItem]:
        """Messages not done, oldest first, with their epochs: what a crash left unfinished. With
        ``owner``, only those whose lease that owner's take-over holds (``lease_open``: epoch 1 or
        more): what a take-over whose result was lost took."""
        ...

    async def get_quota(self, user_key: str) -> Quota | None: ...

    async def set_quota(self, quota: Quota, actor: str, now: datetime) -> Quota | None:
        """Store a user's limits and audit the change, in one transaction; returns the old ones."""
        ...

    async def audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any], now: datetime
    ) -> None: ...

    async def audit_entries(self, since: datetime, limit: int = 100) -> list[AuditEntry]: ...

    async def add_alert(self, alert: StoredAlert) -> bool:
        """Store a fired alert; False if that (rule, subject, period, level) fired already."""
        ...

    async def alerts(self, since: datetime, limit: int = 50) -> list[StoredAlert]:
        """Alerts fired since then, newest first."""
        ...

    async def known_user(self, user_key: str) -> bool:
        """Whether the bot has seen this user (a users row or any ai_request)."""
        ...

    async def purge_before(self, cutoff: datetime) -> tuple[int, int]:
        """Retention: delete messages and ai_requests older than ``cutoff``; (messages, requests)."""
        ...

    async def aclose(self) -> None: ...


async def claim_then_read(
    db: Database, channel: str, message_id: str, user_key: str, payload: dict[str, Any], now: datetime, lease_s: float
) -> Conversation | None:
    """``claim_inbox_reading`` as two calls, for a store with no round trip to save by one."""
    if not await db.claim_inbox(channel, message_id, user_key, payload, now, lease_s):
        return None
    return await db.conversation(user_key)
