"""Telegram through python-telegram-bot: an update in, plain-text replies out.

Updates reach python-telegram-bot's Application from our own webhook (no polling in serve):
the webhook stores the message first, then hands the update to ``Application.process_update``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from telegram import Bot, Message, Update
from telegram.constants import ChatAction, MessageEntityType
from telegram.error import ChatMigrated, Forbidden, RetryAfter, TelegramError

from bot.channels import storable
from bot.split import split_message
from bot.turn import Inbound
from budget.stores import Database

log = logging.getLogger("pennybot.telegram")

LIMIT = 4096  # Telegram's longest text message
NON_TEXT = (
    "photo", "voice", "audio", "video", "video_note", "sticker", "animation", "document",
    "location", "venue", "contact", "poll", "dice", "story", "game", "invoice",
)  # fmt: skip


def inbound_of(update: Update, bot_id: int, bot_username: str, group_mode: str) -> Inbound | None:
    """The message an update carries, or None for what the bot ignores: edits, service
    messages (joins, migrations, pins), other bots, and group chatter not addressed to it."""
    msg = update.message
    if msg is None or msg.from_user is None or msg.from_user.is_bot:
        return None
    kind = "text" if msg.text is not None else next((k for k in NON_TEXT if getattr(msg, k, None)), None)
    if kind is None:
        return None  # a service message
    text = msg.text or ""
    if msg.chat.type != "private" and group_mode == "mention":
        if not _addressed(msg, bot_id, bot_username):
            return None
        text = text.replace(f"@{bot_username}", "").strip()
    return Inbound("telegram", str(msg.chat.id), str(msg.from_user.id), str(update.update_id), storable(text), kind)


def _addressed(msg: Message, bot_id: int, bot_username: str) -> bool:
    replied = msg.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        return True
    mention = f"@{bot_username}".lower()
    for entity in msg.entities or ():
        if entity.type == MessageEntityType.MENTION and msg.parse_entity(entity).lower() == mention:
            return True
        if entity.type == MessageEntityType.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            return True
    return False


def _seconds(value: int | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


TYPING_AFTER_S = 0.3  # a reply sooner than this needs no "typing..." first


class TelegramReplier:
    """Sends plain text (no parse mode, so nothing needs escaping), split at 4,096 characters."""

    name = "telegram"

    def __init__(
        self,
        bot: Bot,
        db: Database,
        *,
        max_attempts: int = 4,
        typing_every_s: float = 4.0,
        typing_after_s: float = TYPING_AFTER_S,
    ) -> None:
        self.bot = bot
        self.db = db
        self.max_attempts = max_attempts
        self.typing_every_s = typing_every_s
        self.typing_after_s = typing_after_s
        self.migrated: dict[str, str] = {}

    async def send(self, inbound: Inbound, parts: Sequence[str]) -> None:
        chat_id = self.migrated.get(inbound.chat_id, inbound.chat_id)
        for part in [p for reply in parts for p in split_message(reply, LIMIT, units="utf16")]:
            sent_to = await self._send(chat_id, part, inbound)
            if sent_to is None:
                return
            chat_id = sent_to

    async def _send(self, chat_id: str, text: str, inbound: Inbound) -> str | None:
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self.bot.send_message(chat_id=chat_id, text=text)
                return chat_id
            except RetryAfter as error:
                if attempt == self.max_attempts:
                    raise
                await asyncio.sleep(_seconds(error.retry_after))
            except ChatMigrated as error:
                # A group became a supergroup: follow its new id, now and for later replies.
                self.migrated[inbound.chat_id] = chat_id = str(error.new_chat_id)
            except Forbidden:
                # The user blocked the bot: retrying cannot help. Remember they are gone.
                await self.db.set_user_active(inbound.user_key, False)
                log.info("user %s blocked the bot; reply dropped", inbound.user_key)
                return None
        raise TelegramError(f"could not send to chat after {self.max_attempts} attempts")

    @contextlib.asynccontextmanager
    async def typing(self, inbound: Inbound) -> AsyncIterator[None]:
        """Telegram shows 'typing' for 5 s; refresh it every 4 s while the bot works. Not sent for an
        answer ready within ``typing_after_s`` (a cache hit, a fast model): the reply itself comes
        before a user would notice, and each message saves a Bot API request."""
        task = asyncio.create_task(self._keep_typing(inbound.chat_id))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep_typing(self, chat_id: str) -> None:
        await asyncio.sleep(self.typing_after_s)
        while True:
            with contextlib.suppress(TelegramError):
                await self.bot.send_chat_action(chat_id=chat_id, action=ChatAction.TYPING)
            await asyncio.sleep(self.typing_every_s)


def update_payload(data: dict[str, Any]) -> dict[str, Any]:
    """What the inbox keeps of a Telegram update besides the Inbound fields."""
    return {"update_id": data.get("update_id")}
