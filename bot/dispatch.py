"""From an acknowledged webhook to a sent reply, exactly once (DESIGN invariant 4).

A message is stored in the inbox before its webhook is acknowledged; its replies are stored once
computed (so a crash after the LLM call never pays twice) and it is marked done once they were
sent. At start-up every message not done is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from bot.pipeline import Pipeline
from bot.stages import inbox_payload
from bot.turn import Inbound

log = logging.getLogger("pennybot.dispatch")


class Replier(Protocol):
    """A channel's outbound side: sends reply parts, shows typing while the bot works."""

    name: str

    async def send(self, inbound: Inbound, parts: Sequence[str]) -> None: ...

    def typing(self, inbound: Inbound) -> contextlib.AbstractAsyncContextManager[None]: ...


@contextlib.asynccontextmanager
async def no_typing() -> AsyncIterator[None]:
    yield


class Dispatcher:
    """Accepts inbound messages, runs them in the background and tracks them for shutdown."""

    def __init__(self, pipeline: Pipeline, repliers: Mapping[str, Replier]) -> None:
        self.pipeline = pipeline
        self.repliers = dict(repliers)
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = True

    @property
    def db(self) -> Any:
        return self.pipeline.deps.db

    async def claim(self, inbound: Inbound, payload: dict[str, Any] | None = None) -> bool:
        """Store the message; False if this platform message was seen before (drop it)."""
        deps = self.pipeline.deps
        body = inbox_payload(inbound) | (payload or {})
        return bool(
            await deps.db.claim_inbox(inbound.channel, inbound.message_id, inbound.user_key, body, deps.clock())
        )

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, inbound: Inbound, replies: list[str] | None = None) -> None:
        """Answer a claimed message (or re-send its stored replies) and mark it done."""
        deps = self.pipeline.deps
        replier = self.repliers[inbound.channel]
        try:
            if replies is None:
                async with replier.typing(inbound):
                    turn = await self.pipeline.handle(inbound, claimed=True)
                replies = turn.replies
                await deps.db.answer_inbox(inbound.channel, inbound.message_id, replies)
            if replies:
                await replier.send(inbound, replies)
            await deps.db.finish_inbox(inbound.channel, inbound.message_id, deps.clock())
        except Exception:
            # Left open in the inbox: the next start-up finishes it.
            log.exception("message %s:%s failed; it stays in the inbox", inbound.channel, inbound.message_id)

    async def resume(self) -> int:
        """Finish what a crash left: re-run pending messages, re-send answered ones."""
        items = await self.db.open_inbox()
        for item in items:
            if item.channel not in self.repliers:
                continue
            p = item.payload
            inbound = Inbound(
                item.channel, p["chat_id"], p["user_id"], item.message_id, p["text"], p.get("kind", "text")
            )
            self.spawn(self.run(inbound, item.replies))
        return len(items)

    async def drain(self, timeout_s: float) -> int:
        """Stop accepting; wait up to ``timeout_s`` for in-flight messages. Returns how many were
        still running (they stay in the inbox and finish after the restart)."""
        self.accepting = False
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        return len(pending)
