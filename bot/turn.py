"""What flows through the pipeline: one inbound message, its Turn, and the services it uses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from bot.conversations import Conversations
from bot.settings import Settings
from bot.texts import Texts
from budget.cache import AnswerCache
from budget.complexity import Complexity
from budget.context import ContextPolicy
from budget.journal import Journal
from budget.ledger import Admission, Budget
from budget.money import ZERO
from budget.outbox import Recorder
from budget.periods import Calendar
from budget.pricing import PriceBook
from budget.ratelimit import RateLimiter, Refusals
from budget.records import Conversation, Exchange
from budget.rules import Ladder, Level, Meter, Step, Thresholds
from budget.stores import Database, HotStore
from budget.tokens import Counted, TokenCounter
from providers.base import Usage
from providers.catalog import ModelSpec, Tier
from providers.router import Router


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from any channel, in one shape."""

    channel: str
    chat_id: str
    user_id: str
    message_id: str
    text: str
    kind: str = "text"  # text, photo, voice, sticker, ...

    @property
    def user_key(self) -> str:
        return f"{self.channel}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Once:
    """A webhook's message claimed on this host only (bot.dispatch): the first step that reaches the
    hot store sets ``key`` for ``ttl_s`` if no process did, else the message is a redelivery another
    process (or this one) has, and it is dropped. ``mine``: the database's word instead, for when
    the hot store cannot be reached or cannot tell every process's keys (it waits for the claim's
    write). ``decided``: for a run that set the key, whether the message is still its own (a
    process cut off from Redis goes by the database), if the claim's write has answered yet (None:
    not yet, asked again before the answer is kept or sent: ``Turn.once_won``)."""

    key: str
    ttl_s: int
    mine: Callable[[], Awaitable[bool]]
    decided: Callable[[], Awaitable[bool | None]]


@dataclass(slots=True)
class Deps:
    """The services every stage may use, built once from settings (bot.factory)."""

    settings: Settings
    db: Database
    recorder: Recorder  # where ai_request rows go: the database, or a durable outbox in front of it
    hot: HotStore
    budget: Budget
    limiter: RateLimiter
    refusals: Refusals  # counts of rate-limited messages, written in the background
    cache: AnswerCache
    counter: TokenCounter
    prices: PriceBook
    router: Router
    texts: Texts
    calendar: Calendar
    thresholds: Thresholds
    ladder: Ladder
    policy: ContextPolicy
    system: Counted  # the system prompt, counted once
    persona: str  # a digest of the system prompt, part of every cache key
    clock: Callable[[], datetime]
    log: logging.Logger
    seen_users: set[str] = field(default_factory=set)  # registered in the users table by this process
    # Where a network database's claims and answers wait, on this host, until it has them (bot.dispatch).
    journal: Journal | None = None
    # With a network database: users' conversations as this process knows them (bot.conversations).
    conversations: Conversations | None = None


@dataclass(slots=True)
class Turn:
    """One message's way through the stages; each stage reads and fills its part."""

    inbound: Inbound
    deps: Deps
    now: datetime
    request_id: str
    claimed: bool = False  # stored in the inbox already, by the webhook that received it
    once: Once | None = None  # claimed on this host only: to be checked against every process's claims
    repeated: bool = False  # a redelivery (``once``): dropped, no reply
    # ``once`` was set by this message in the hot store: a process that could not reach it may hold
    # the database's claim, so the run asks before its answer is kept or sent (bot.dispatch).
    once_won: bool = False
    # The conversation came from this process's copy, at this version (its key, the version): the
    # rate limit's round trip reads the version, and a different one means it is read again.
    known_at: tuple[str, int | None] | None = None
    version: int | None = None  # the version the rate limit's round trip read (with ``known_at``)
    stale: bool = False  # the copy was not the database's: the conversation was read again
    folded: bool = False  # old turns were folded into the summary (the database changed)
    is_admin: bool = False
    replies: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    meters: list[Meter] = field(default_factory=list)
    counters: list[int | None] | None = None  # the budget's counters, read with the rate limit
    warned: frozenset[str] = frozenset()  # the once-a-period warning flags already set, read with them
    level: Level = Level.OK
    step: Step = Step.NORMAL  # the degradation ladder on the bot's own budget
    complexity: Complexity | None = None
    tier: Tier | None = None
    conversation: Conversation | None = None  # read by the webhook's claim, or by the cache stage
    message: Counted | None = None
    prompt: list[Counted] = field(default_factory=list)
    # The prompt the early reservation was planned with, and the conversation it was built from:
    # the context stage takes it as it is when it folds nothing first and has that conversation.
    planned_prompt: tuple[Conversation, list[Counted]] | None = None
    history_in_prompt: bool = False
    # The answer's reservation made with the rate limit's read: its model and what it holds.
    held: tuple[str, Admission] | None = None
    fold_later: int = 0  # the oldest turns to fold once the reply is sent (bot.stages.folds)
    self_contained: bool | None = None  # budget.queries.is_self_contained of the text, once worked out
    # The cache entries read with the rate limit, by tier: (key, the live entry or None).
    peeked: dict[Tier, tuple[str, str | None]] = field(default_factory=dict)
    chain: list[ModelSpec] = field(default_factory=list)
    answer: str | None = None
    answered_by: ModelSpec | None = None
    usage: Usage | None = None  # of the answer call (its tokens, for the log line)
    cost: Decimal = ZERO
    # The exchange to store; on a claimed message the dispatcher stores it with the replies (one
    # write), otherwise the context stage already did.
    exchange: Exchange | None = None

    @property
    def user(self) -> str:
        return self.inbound.user_key

    def outcome(self, stage: str, result: str) -> None:
        self.outcomes[stage] = result


Next = Callable[[Turn], Awaitable[Turn]]
Stage = Callable[[Turn, Next], Awaitable[Turn]]
