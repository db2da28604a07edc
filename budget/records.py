"""The rows the ledger keeps, independent of any store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from budget.money import ZERO, quantize
from providers.base import Usage


class Kind(StrEnum):
    ANSWER = "answer"
    SUMMARY = "summary"


class Status(StrEnum):
    OK = "ok"
    CACHED = "cached"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class AIRequest:
    """One AI call attempt (DESIGN invariant 3). ``request_id`` is unique per attempt, so a
    retried write never doubles a row."""

    request_id: str
    created_at: datetime
    user_key: str
    channel: str
    message_id: str | None
    kind: Kind
    provider: str
    model: str
    status: Status
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = ZERO
    saved: Decimal = ZERO
    latency_ms: int = 0
    tier: str | None = None
    complexity: str | None = None
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """One message of a conversation as stored: its counts were computed once, when it came in."""

    id: int
    role: str  # user, assistant or summary
    content: str
    tokens: int
    size: int


@dataclass(frozen=True, slots=True)
class Conversation:
    summary: StoredTurn | None
    turns: list[StoredTurn]  # unfolded, oldest first

    @classmethod
    def of(cls, unfolded: Iterable[StoredTurn]) -> Conversation:
        """From a user's unfolded messages in id order: the summary apart, the turns in order."""
        summary, turns = None, []
        for turn in unfolded:
            if turn.role == "summary":
                summary = turn
            else:
                turns.append(turn)
        return cls(summary, turns)


@dataclass(frozen=True, slots=True)
class Exchange:
    """Turns to append to a user's conversation (role, content, tokens, size), stored with the
    message's replies in one step (``Database.answer_inbox``)."""

    user_key: str
    turns: Sequence[tuple[str, str, int, int]]
    at: datetime


@dataclass(frozen=True, slots=True)
class Spend:
    nanos: int
    tokens: int


US_PER_HOUR = 3_600_000_000
GIB_SECONDS_PER_HOUR = 2**30 * 3600


@dataclass(frozen=True, slots=True)
class ResourceUse:
    """CPU and memory the bot's processes used: CPU microseconds and RSS byte-seconds, exact."""

    cpu_us: int = 0
    memory_byte_seconds: int = 0

    @property
    def core_hours(self) -> Decimal:
        return Decimal(self.cpu_us) / US_PER_HOUR

    @property
    def gib_hours(self) -> Decimal:
        return Decimal(self.memory_byte_seconds) / GIB_SECONDS_PER_HOUR

    def cost(self, cpu_core_hour_price: Decimal, memory_gb_hour_price: Decimal) -> tuple[Decimal, Decimal]:
        """What the CPU and the memory cost at these rates (a GB-hour is a GiB held for an hour, as
        cloud providers bill it), each rounded up to the nano-dollar."""
        return (
            quantize(self.core_hours * cpu_core_hour_price),
            quantize(self.gib_hours * memory_gb_hour_price),
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """A message's computed replies and exchange to store (``Database.store_answers``), at the
    lease ``epoch`` its process holds; ``done_at`` is set if they were sent: marked done with them."""

    channel: str
    message_id: str
    replies: Sequence[str]
    exchange: Exchange | None
    epoch: int
    done_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """A message claimed on this host (its local journal) and not yet in the database's inbox:
    written there later, with many others at once (``Database.land_claims``)."""

    channel: str
    message_id: str
    user_key: str
    payload: dict[str, Any]
    received_at: datetime


class Landing(StrEnum):
    """What became of a claim written to the database (``Database.land_claims``)."""

    MINE = "mine"  # inserted now, or there already with this claimant's token (a write retried)
    ANSWERED = "answered"  # there before, from another claimant, with its replies stored or done
    PENDING = "pending"  # there before, from another claimant (or one the store cannot tell), not answered


@dataclass(frozen=True, slots=True)
class InboxItem:
    """An inbound message not yet done: ``replies`` is set once they were computed (status
    answered), so a restart sends them without running the message again. ``epoch`` counts the
    times its lease was taken over (0 as claimed): the owner names it in its writes, so a process
    whose lease ran out and was taken cannot store the message's replies or send them."""

    channel: str
    message_id: str
    payload: dict[str, Any]
    replies: list[str] | None
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds an inbound message's lease now (``Database.lease_holder``): its ``epoch``, the
    ``owner`` named by the take-over that moved it there (None while it is at 0, as claimed), and
    until when it runs."""

    epoch: int
    owner: str | None
    until: datetime | None


@dataclass(frozen=True, slots=True)
class Quota:
    """A user's own limits, overriding the configured ones; None keeps the configured limit."""

    user_key: str
    daily_usd: Decimal | None = None
    monthly_usd: Decimal | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """A fired alert; (rule, subject, period_key, level) fires once."""

    rule: str
    subject: str
    period_key: str
    level: str
    message: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    created_at: datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]


def quota_change(old: Quota | None, new: Quota) -> dict[str, Any]:
    """What the audit log keeps of a quota change: each limit before and after, as text."""

    def view(q: Quota | None) -> dict[str, str | None]:
        fields = ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens")
        return {f: None if q is None or getattr(q, f) is None else str(getattr(q, f)) for f in fields}

    return {"before": view(old), "after": view(new)}
