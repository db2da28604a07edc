"""Delivery of alerts and reports to the admins: Telegram, a webhook, email.

Each channel is optional and on when configured: Telegram when a bot is given and an
ADMIN_USER_IDS entry is ``telegram:<id>``, the webhook when ALERT_WEBHOOK_URL is set, email when
SMTP_HOST and ALERT_EMAIL_TO are. A failure in one channel is logged (the error's type only: no
URL, address or password) and never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from bot.split import split_message

if TYPE_CHECKING:
    from telegram import Bot

log = logging.getLogger("pennybot.notify")

TELEGRAM_LIMIT = 4096
WEBHOOK_TIMEOUT_S = 10.0
SMTP_TIMEOUT_S = 30.0
SMTPS_PORT = 465  # implicit TLS from the first byte; any other port may upgrade with STARTTLS
MAX_RETRY_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where email goes. ``starttls``: None upgrades when the server offers it, True requires it,
    False never upgrades. A password is only ever sent over TLS."""

    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 587
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool | None = None
    tls_context: ssl.SSLContext | None = None  # None: the system's trusted CAs


class PlaintextLogin(Exception):
    """The SMTP connection is not encrypted, so the password is not sent."""


def telegram_admins(admin_ids: Iterable[str]) -> list[int]:
    """The Telegram chat ids among ADMIN_USER_IDS entries (``telegram:<id>``), sorted."""
    found = set()
    for entry in admin_ids:
        channel, _, ident = entry.partition(":")
        if channel == "telegram" and ident.lstrip("-").isdigit():
            found.add(int(ident))
    return sorted(found)


class Notifier:
    """Sends one alert or report to every configured channel."""

    def __init__(
        self,
        *,
        bot: Bot | None = None,
        admin_ids: Iterable[str] = (),
        webhook_url: SecretStr | None = None,
        smtp: SmtpConfig | None = None,
        http: httpx.AsyncClient | None = None,
        retry_delay_s: float = 1.0,
    ) -> None:
        self.bot = bot
        self.chats = telegram_admins(admin_ids) if bot is not None else []
        self.webhook_url = webhook_url
        self.smtp = smtp if smtp is not None and smtp.to else None
        self.http = http  # None: a client per delivery (alerts are rare)
        self.retry_delay_s = retry_delay_s

    @property
    def channels(self) -> list[str]:
        """The channels that are on, in delivery order."""
        on = [("telegram", bool(self.chats)), ("webhook", self.webhook_url is not None), ("email", self.smtp)]
        return [name for name, enabled in on if enabled]

    async def send(self, subject_line: str, text: str, payload: Mapping[str, Any]) -> dict[str, bool]:
        """Deliver on every channel at once: for each, whether it was delivered (to every admin)."""
        senders = {
            "telegram": lambda: self._telegram(text),
            "webhook": lambda: self._webhook(payload),
            "email": lambda: self._email(subject_line, text),
        }
        names = self.channels
        results = await asyncio.gather(*(self._guarded(name, senders[name]()) for name in names))
        return dict(zip(names, results, strict=True))

    async def _guarded(self, channel: str, delivery: Awaitable[bool]) -> bool:
        try:
            return bool(await delivery)
        except Exception as error:
            log.warning("%s delivery of an admin notice failed (%s)", channel, type(error).__name__)
            return False

    async def _telegram(self, text: str) -> bool:
        from telegram.error import RetryAfter

        assert self.bot is not None
        delivered = True
        for chat_id in self.chats:
            try:
                for part in split_message(text, TELEGRAM_LIMIT, units="utf16"):
                    try:
                        await self.bot.send_message(chat_id=chat_id, text=part)
                    except RetryAfter as error:  # flood control: wait once as told, then give up
                        wait = error.retry_after
                        seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
                        await asyncio.sleep(min(seconds, MAX_RETRY_AFTER_S))
                        await self.bot.send_message(chat_id=chat_id, text=part)
            except Exception as error:  # one admin (blocked the bot, say) must not cost the others theirs
                log.warning("telegram delivery to an admin failed (%s)", type(error).__name__)
                delivered = False
        return delivered

    async def _webhook(self, payload: Mapping[str, Any]) -> bool:
        assert self.webhook_url is not None
        url = self.webhook_url.get_secret_value()
        if self.http is not None:
            return await self._post(self.http, url, payload)
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S) as http:
            return await self._post(http, url, payload)

    async def _post(self, http: httpx.AsyncClient, url: str, payload: Mapping[str, Any]) -> bool:
        for attempt in (1, 2):
            try:
                response = await http.post(url, json=dict(payload), timeout=WEBHOOK_TIMEOUT_S)
            except httpx.ConnectError as error:  # nothing reached the receiver: safe to try again
                if attempt == 2:
                    raise
                log.warning("alert webhook unreachable (%s); retrying once", type(error).__name__)
            else:
                if response.status_code < 500 or attempt == 2:
                    if not response.is_success:
                        log.warning("alert webhook answered %d", response.status_code)
                    return response.is_success
                log.warning("alert webhook answered %d; retrying once", response.status_code)
            await asyncio.sleep(self.retry_delay_s)
        return False  # pragma: no cover - the loop returns or raises on its second attempt

    async def _email(self, subject_line: str, text: str) -> bool:
        import aiosmtplib

        cfg = self.smtp
        assert cfg is not None
        message = EmailMessage()
        message["Subject"] = subject_line
        message["From"] = cfg.sender
        message["To"] = ", ".join(cfg.to)
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=cfg.sender.rpartition("@")[2] or None)
        message.set_content(text)
        implicit = cfg.port == SMTPS_PORT
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            use_tls=implicit,
            start_tls=False if implicit else cfg.starttls,  # None: STARTTLS when the server offers it
            tls_context=cfg.tls_context,
            timeout=SMTP_TIMEOUT_S,
        )
        async with smtp:
            if cfg.username:
                if smtp.get_transport_info("sslcontext") is None:
                    raise PlaintextLogin("the SMTP server offers no TLS; the password is not sent in clear")
                password = cfg.password.get_secret_value() if cfg.password is not None else ""
                await smtp.login(cfg.username, password)
            await smtp.send_message(message)
        return True
