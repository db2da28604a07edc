"""WhatsApp through Twilio: a signed form post in, REST Messages API replies out.

The webhook answers at once with empty TwiML and the reply goes out later through the REST API,
since an LLM can outlast Twilio's 15-second webhook timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from bot import metrics
from bot.channels import storable
from bot.split import split_message
from bot.turn import Inbound
from budget.stores import Database

log = logging.getLogger("pennybot.whatsapp")

LIMIT = 1600  # Twilio's longest WhatsApp message body
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
MEDIA_KINDS = {"image": "photo", "audio": "voice", "video": "video", "application": "document", "text": "document"}


class BadForm(ValueError):
    """A webhook form without the fields every Twilio message has."""


def inbound_of(form: Mapping[str, str]) -> Inbound:
    """The message a Twilio WhatsApp webhook carries; media messages keep their kind."""
    sid, sender = storable(form.get("MessageSid") or ""), storable(form.get("From") or "")
    if not sid or not sender:
        raise BadForm("MessageSid and From are required")
    try:
        media = int(form.get("NumMedia") or 0)
    except ValueError:
        raise BadForm("NumMedia must be a number") from None
    if media:
        kind = MEDIA_KINDS.get((form.get("MediaContentType0") or "").split("/")[0], "document")
    elif form.get("Latitude"):
        kind = "location"
    else:
        kind = "text"
    number = sender.removeprefix("whatsapp:")
    return Inbound("whatsapp", sender, number, sid, storable(form.get("Body") or ""), kind)


def twilio_client(account_sid: str, auth_token: str, base_url: str | None) -> Client:
    client = Client(account_sid, auth_token, http_client=AsyncTwilioHttpClient())
    if base_url:
        client.api.base_url = base_url.rstrip("/")
    return client


class WhatsAppReplier:
    """Sends each part through the Messages API; 429s are retried with backoff."""

    name = "whatsapp"

    def __init__(
        self,
        client: Client,
        sender: str,
        db: Database,
        fee: Decimal,
        clock: Callable[[], datetime],
        *,
        backoff_s: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    ) -> None:
        self.client = client
        self.sender = sender
        self.db = db
        self.fee = fee
        self.clock = clock
        self.backoff_s = tuple(backoff_s)

    async def send(self, inbound: Inbound, parts: Sequence[str]) -> None:
        for part in [p for reply in parts for p in split_message(reply, LIMIT, units="utf16")]:
            sid = await self._send(inbound.chat_id, part)
            metrics.channel_fee("whatsapp", "out", self.fee)
            try:
                await self.db.record_fee("whatsapp", inbound.user_key, "out", sid, self.fee, self.clock())
            except Exception as error:  # the part is out: failing here would send it again
                log.warning("channel fee not recorded (%s)", type(error).__name__)

    async def _send(self, to: str, body: str) -> str:
        for wait in (*self.backoff_s, None):
            try:
                message = await self.client.messages.create_async(from_=self.sender, to=to, body=body)
                return str(message.sid)
            except TwilioRestException as error:
                if error.status != 429 or wait is None:
                    raise
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def typing(self, inbound: Inbound) -> AsyncIterator[None]:
        yield  # WhatsApp through Twilio has no typing indicator

    async def aclose(self) -> None:
        http = self.client.http_client
        if isinstance(http, AsyncTwilioHttpClient):
            await http.close()
