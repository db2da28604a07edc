"""A webhook storm through the real app on uvicorn: every Telegram update and every WhatsApp message
delivered three times, shuffled, all at once (platforms redeliver on timeouts, and several deliveries
of one update can be in flight together). Each is answered exactly once, charged once, and its reply
reaches its own chat. Once on the embedded stores, once on Postgres and Redis."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from budget.records import Kind, Status
from tests.bot.server_harness import PUBLIC, SECRET, Served, channel_settings, serve, until
from tests.drills.conftest import SharedStores
from tests.fakes.llm_servers import FakeOpenAIServer
from tests.fakes.telegram_server import FakeTelegramServer, text_update
from tests.fakes.twilio_server import TEST_AUTH_TOKEN, FakeTwilioServer, sign, whatsapp_form

SEED = 14
CHATS, PER_CHAT, COPIES = 15, 2, 3  # per channel: 30 messages, 90 deliveries
FEE = Decimal("0.005")


@pytest.fixture(params=["embedded", "postgres+redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "embedded":
        return {"database_url": f"sqlite:///{tmp_path}/pb.db", "redis_url": "memory://"}
    shared: SharedStores = request.getfixturevalue("shared_stores")
    return {"database_url": shared.database_url, "redis_url": shared.redis_url}


def _tg_text(chat: int, n: int) -> str:
    return f"Telegram chat {chat}, message {n}: how far away is the moon?"


def _wa_text(chat: int, n: int) -> str:
    return f"WhatsApp chat {chat}, message {n}: how deep is the ocean?"


def _number(chat: int) -> str:
    return f"+1555000{chat:04d}"


async def test_each_update_three_times_at_once_gets_one_reply_and_one_charge(
    stores: dict[str, Any],
    telegram_server: FakeTelegramServer,
    twilio_server: FakeTwilioServer,
    openai_server: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    settings = channel_settings(
        telegram_server, twilio_server, **stores, outbox_path=tmp_path / "outbox.db",
        openai_api_key="sk-storm-key", openai_base_url=openai_server.base_url, llm_timeout_s=5, llm_max_retries=0,
        model_catalog=[{"provider": "openai", "model": "gpt-4o-mini", "tier": "cheap"}], twilio_price_per_message=FEE,
    )  # fmt: skip
    deliveries: list[tuple[str, Any]] = []
    for chat in range(CHATS):
        for n in range(PER_CHAT):
            update = text_update(1000 + chat * PER_CHAT + n, 5000 + chat, 5000 + chat, _tg_text(chat, n))
            form = whatsapp_form(f"SM{chat:016x}{n:016x}", _number(chat), _wa_text(chat, n))
            deliveries += [("telegram", update), ("whatsapp", form)] * COPIES
    random.Random(SEED).shuffle(deliveries)

    async with serve(**settings) as s:
        # 40 connections at once: Telegram's default max_connections for a webhook.
        async with httpx.AsyncClient(base_url=s.url, timeout=30, limits=httpx.Limits(max_connections=40)) as http:
            codes = await asyncio.gather(*(_deliver(http, channel, body) for channel, body in deliveries))
        assert codes == [200] * len(deliveries)
        messages = CHATS * PER_CHAT
        await until(
            lambda: len(telegram_server.sent_texts()) >= messages and len(twilio_server.sent_bodies()) >= messages,
            timeout=30,
        )
        await asyncio.sleep(0.5)  # a second reply to anything would show by now
        await s.runtime.built.deps.recorder.flush()
        rows, fees = await _ledger(s)

    # Exactly one reply per message, the right one, in the right chat.
    for chat in range(CHATS):
        tg = sorted(telegram_server.sent_texts(chat_id=5000 + chat))
        assert tg == sorted(f"echo: {_tg_text(chat, n)}" for n in range(PER_CHAT)), chat
        wa = sorted(twilio_server.sent_bodies(to=f"whatsapp:{_number(chat)}"))
        assert wa == sorted(f"echo: {_wa_text(chat, n)}" for n in range(PER_CHAT)), chat
    assert len(telegram_server.sent_texts()) == len(twilio_server.sent_bodies()) == messages

    # One LLM call and one charge per message; WhatsApp's fee once in and once out per message.
    assert len(openai_server.requests) == 2 * messages
    assert len(rows) == 2 * messages
    assert all(r.kind is Kind.ANSWER and r.status is Status.OK and r.cost > 0 for r in rows)
    assert sorted((r.channel, r.message_id) for r in rows) == sorted(
        [("telegram", str(1000 + i)) for i in range(messages)]
        + [("whatsapp", f"SM{c:016x}{n:016x}") for c in range(CHATS) for n in range(PER_CHAT)]
    )
    assert fees == 2 * messages * FEE


async def _deliver(http: httpx.AsyncClient, channel: str, body: Any) -> int:
    if channel == "telegram":
        r = await http.post("/webhook/telegram", json=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    else:
        signature = sign(TEST_AUTH_TOKEN, f"{PUBLIC}/webhook/whatsapp", body)
        r = await http.post("/webhook/whatsapp", data=body, headers={"X-Twilio-Signature": signature})
    return r.status_code


async def _ledger(s: Served) -> tuple[list[Any], Decimal]:
    deps = s.runtime.built.deps
    now = deps.clock()
    window = (now - timedelta(days=1), now + timedelta(days=1))
    return await deps.db.requests(*window), await deps.db.fees(*window)
