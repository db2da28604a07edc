"""Each user's conversation as this process last knew it, checked against a version in the hot store.

With messages claimed on their host (``bot.dispatch``), a message's run would read its user's
conversation from the database before it could plan anything: the one synchronous database round
trip left. Instead the process keeps what it read, with what it stored since, and the rate limit's
round trip (which the message makes anyway) reads the user's version: a random number that every
process sets anew after it changed the conversation in the database (an exchange, a fold, a reset).
The same version means no other process changed it since; another, that the run reads it again.

A process that changed it itself swaps in a new version and learns the one it replaced: if that is
the one its copy had, no other process changed the conversation meanwhile, and its copy (with its
own change in it) stays good under the new version. A copy is kept for ``MAX_AGE_S`` at most, so a
version lost with a Redis restart, or a write whose version could not be set, is not trusted for
long; turns the copy got from this process have no database id (0) until it is read again.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from budget.records import Conversation, Exchange, StoredTurn
from budget.stores import HotStore

log = logging.getLogger("pennybot.conversations")

VERSION_TTL_S = 7 * 86_400  # a version outlives a quiet week; then the next message reads again
MAX_USERS = 10_000
MAX_AGE_S = 600.0


def version_key(user: str) -> str:
    return f"pb:{{{user}}}:conv"


def fresh_version() -> int:
    return secrets.randbits(62) + 1  # never 0, never what a missing key reads as


@dataclass(slots=True)
class Known:
    """A user's conversation as this process knows it, and the version it had then."""

    version: int | None
    conversation: Conversation
    since: float
    edits: int = 0  # changes made to this copy here: a run that read it puts back only an unchanged one


class Conversations:
    """The copies, least recently used dropped first."""

    def __init__(
        self, max_users: int = MAX_USERS, max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_users = max_users
        self.max_age_s = max_age_s
        self._clock = clock
        self._known: OrderedDict[str, Known] = OrderedDict()

    def get(self, user: str) -> Known | None:
        known = self._known.get(user)
        if known is None:
            return None
        if self._clock() - known.since > self.max_age_s:
            del self._known[user]
            return None
        self._known.move_to_end(user)
        return known

    def put(
        self, user: str, version: int | None, conversation: Conversation, *, began: tuple[Known, int] | None = None
    ) -> None:
        """Keep a copy read (or made) under ``version``. ``began``: the copy a run began from, and its
        edits then; if this process changed it since (or dropped it), the run's is older: none is kept."""
        if began is not None:
            now = self._known.get(user)
            if now is not began[0] or now.edits != began[1]:
                self._known.pop(user, None)
                return
        self._known[user] = Known(version, conversation, self._clock())
        self._known.move_to_end(user)
        if len(self._known) > self.max_users:
            self._known.popitem(last=False)

    def put_new(self, user: str, version: int | None, conversation: Conversation) -> Known | None:
        """Keep a copy read because there was none; if another run made one meanwhile (two messages
        of the user at once), which is newer is unknown: neither is kept."""
        if user in self._known:
            del self._known[user]
            return None
        self.put(user, version, conversation)
        return self._known[user]

    def drop(self, user: str) -> None:
        self._known.pop(user, None)

    def add(self, exchange: Exchange) -> None:
        """This process is storing an exchange: its turns join the copy (with no id yet)."""
        known = self._known.get(exchange.user_key)
        if known is None:
            return
        added = [StoredTurn(0, role, content, tokens, size) for role, content, tokens, size in exchange.turns]
        known.conversation = Conversation(known.conversation.summary, [*known.conversation.turns, *added])
        known.edits += 1

    def folded(self, user: str, old: list[StoredTurn], summary: StoredTurn) -> None:
        """This process folded ``old`` (the oldest turns) into ``summary``: the copy follows, if it
        still begins with them; else it is dropped."""
        known = self._known.get(user)
        if known is None:
            return
        turns = known.conversation.turns
        if [(t.role, t.content) for t in turns[: len(old)]] != [(t.role, t.content) for t in old]:
            del self._known[user]
            return
        known.conversation = Conversation(summary, turns[len(old) :])
        known.edits += 1

    def swapped(self, user: str, before: int | None, after: int) -> None:
        """This process set ``after`` as the user's version, over ``before``: its copy stays good if
        it was of ``before`` (no other process changed the conversation meanwhile)."""
        known = self._known.get(user)
        if known is None:
            return
        if known.version != before:
            del self._known[user]
            return
        known.version = after


async def changed(hot: HotStore, conversations: Conversations | None, user: str) -> None:
    """The user's conversation changed in the database, outside a dispatcher's writes (a reset, or a
    message not claimed through the inbox): a new version, so every process reads it again."""
    if conversations is None:
        return
    conversations.drop(user)
    try:
        await hot.set_counters({version_key(user): fresh_version()}, VERSION_TTL_S)
    except Exception as error:
        log.warning("conversation version not set (%s): copies elsewhere are trusted for up to %ds",
                    type(error).__name__, int(MAX_AGE_S))  # fmt: skip
