"""The path of one message, in one place, top to bottom (DESIGN: "The path of one message")."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from bot import stages
from bot.turn import Deps, Inbound, Next, Once, Stage, Turn
from budget.records import Conversation

STAGES: tuple[Stage, ...] = (
    stages.dedupe,  # first: a redelivered message must cost nothing, not even a rate-limit slot
    stages.only_text,  # a photo or an empty message gets one short reply and costs nothing
    stages.command,  # commands need no budget and must work when the budget is gone
    stages.rate_limit,  # before budget work: a flood costs a round trip at most, then none
    stages.budget_gate,  # block or warn before anything is spent
    stages.classify_message,  # complexity and budget state pick the tier, which the cache key needs
    stages.cache,  # a hit ends here at no cost; after the answer, stores it if it had no history
    stages.context,  # the prompt (folding old turns); after the answer, stores the exchange
    stages.choose,  # the fallback chain for the tier, by health and price
    stages.answer,  # reserve, call, settle, record, for each model until one answers
)


async def _end(turn: Turn) -> Turn:
    return turn


def _link(stage: Stage, after: Next) -> Next:
    async def run(turn: Turn) -> Turn:
        return await stage(turn, after)

    return run


def wrap(chain: Sequence[Stage]) -> Next:
    """Nest the stages so that each one's ``next`` is the one after it."""
    handler: Next = _end
    for stage in reversed(chain):
        handler = _link(stage, handler)
    return handler


class Pipeline:
    """Runs inbound messages through the stages."""

    def __init__(self, deps: Deps, chain: Sequence[Stage] = STAGES) -> None:
        self.deps = deps
        self._run = wrap(chain)

    async def handle(
        self,
        inbound: Inbound,
        *,
        claimed: bool = False,
        conversation: Conversation | None = None,
        once: Once | None = None,
        known_at: tuple[str, int | None] | None = None,
    ) -> Turn:
        """Run one message; ``claimed``: the webhook stored it in the inbox already (and then
        the caller stores the turn's exchange with its replies); ``conversation``: the user's,
        read with the claim or before the run, or this process's copy of it at the version ``known_at``
        (its key and the version); ``once``: claimed on this host only (``Once``)."""
        d = self.deps
        started = time.perf_counter()
        turn = Turn(
            inbound=inbound,
            deps=d,
            now=d.clock(),
            request_id=uuid.uuid4().hex[:12],
            claimed=claimed,
            once=once,
            conversation=conversation,
            known_at=known_at,
            is_admin=inbound.user_key in d.settings.admin_user_ids,
        )
        turn = await self._run(turn)
        line: dict[str, object] = {
            "request_id": turn.request_id, "user": turn.user, "channel": inbound.channel, "outcomes": turn.outcomes,
            "model": turn.answered_by.name if turn.answered_by else None, "cost": str(turn.cost),
            "tokens_in": turn.usage.input_tokens if turn.usage else 0,
            "tokens_out": turn.usage.output_tokens if turn.usage else 0,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }  # fmt: skip
        if d.settings.log_message_text:
            line["text"] = inbound.text
        d.log.info("message handled", extra=line)
        return turn

    async def done(self, turn: Turn) -> None:
        """Mark the inbound message handled, once its replies were sent."""
        ib = turn.inbound
        await self.deps.db.finish_inbox([(ib.channel, ib.message_id, self.deps.clock())])
