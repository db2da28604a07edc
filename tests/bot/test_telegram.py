"""Telegram end to end: updates in Telegram's JSON posted to the real app on uvicorn, replies
sent by python-telegram-bot to a local Bot API server, and what that server received."""

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from budget.records import Status
from tests.bot.server_harness import Served, channel_settings, serve, until
from tests.fakes.llm_servers import FakeOpenAIServer, Ok
from tests.fakes.telegram_server import (
    BOT_USERNAME,
    FakeTelegramServer,
    blocked_by_user,
    chat_migrated,
    document_update,
    edited_message_update,
    location_update,
    photo_update,
    retry_after,
    service_update,
    sticker_update,
    text_update,
    voice_update,
)

ONE_MODEL = [{"provider": "openai", "model": "gpt-4o-mini", "tier": "cheap"}]


async def answers(served: Served) -> list[Any]:
    now = datetime.now(UTC)
    rows = await served.runtime.built.deps.db.requests(now - timedelta(hours=1), now + timedelta(hours=1))
    return [r for r in rows if r.status is not Status.ERROR]


async def inbox_done(served: Served) -> bool:
    return not await served.runtime.built.deps.db.open_inbox()


async def test_a_text_message_is_answered_and_recorded(telegram_server: FakeTelegramServer) -> None:
    async with serve(**channel_settings(telegram_server, None)) as s:
        r = await s.telegram(text_update(1001, 42, 42, "What is the capital of France?"))
        assert r.status_code == 200
        await until(lambda: len(telegram_server.sent_texts()) == 1)
        assert telegram_server.sent_texts(42)[0].startswith("[simulated] ")
        [row] = await answers(s)
        assert (row.user_key, row.channel, row.message_id) == ("telegram:42", "telegram", "1001")
        send = telegram_server.calls_to("sendMessage")[0]
        assert "parse_mode" not in send.params  # plain text: nothing to escape
        await until(lambda: inbox_done(s))


async def test_forged_or_missing_secret_is_403_and_nothing_is_stored(telegram_server: FakeTelegramServer) -> None:
    async with serve(**channel_settings(telegram_server, None)) as s:
        assert (await s.telegram(text_update(1, 42, 42, "hi"), secret="wrong")).status_code == 403
        assert (await s.telegram(text_update(2, 42, 42, "hi"), secret=None)).status_code == 403
        await asyncio.sleep(0.1)
        assert telegram_server.sent_texts() == []
        assert await s.runtime.built.deps.db.open_inbox() == []


async def test_malformed_and_oversized_bodies(telegram_server: FakeTelegramServer) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-webhook-token", "Content-Type": "application/json"}
    async with serve(**channel_settings(telegram_server, None, max_body_bytes=2000)) as s:
        assert (await s.http.post("/webhook/telegram", content=b"{not json", headers=headers)).status_code == 400
        assert (await s.http.post("/webhook/telegram", content=b"[1, 2]", headers=headers)).status_code == 400
        assert (await s.http.post("/webhook/telegram", json={"update_id": "x"}, headers=headers)).status_code == 400
        bad = {"update_id": 5, "message": {"message_id": "oops"}}
        assert (await s.http.post("/webhook/telegram", json=bad, headers=headers)).status_code == 400
        big = b'{"update_id": 1, "pad": "' + b"x" * 3000 + b'"}'
        assert (await s.http.post("/webhook/telegram", content=big, headers=headers)).status_code == 413

        async def chunks() -> Any:  # no Content-Length: chunked transfer
            for _ in range(3):
                yield b"x" * 1000

        assert (await s.http.post("/webhook/telegram", content=chunks(), headers=headers)).status_code == 413
        assert (await s.http.get("/healthz")).status_code == 200  # still up
        assert telegram_server.sent_texts() == []


async def test_redelivered_update_gets_one_reply_and_one_charge(telegram_server: FakeTelegramServer) -> None:
    async with serve(**channel_settings(telegram_server, None, simulated_latency_ms=100)) as s:
        update = text_update(2002, 7, 7, "Tell me a joke about budgets.")
        codes = await asyncio.gather(*(s.telegram(update) for _ in range(3)))
        assert [c.status_code for c in codes] == [200, 200, 200]
        await until(lambda: len(telegram_server.sent_texts()) == 1)
        assert (await s.telegram(update)).status_code == 200  # after the reply
        await asyncio.sleep(0.3)
        assert len(telegram_server.sent_texts()) == 1
        assert len(await answers(s)) == 1


async def test_every_non_text_kind_gets_one_short_reply(telegram_server: FakeTelegramServer) -> None:
    async with serve(**channel_settings(telegram_server, None)) as s:
        for update in (
            photo_update(1, 9, 9), voice_update(2, 9, 9), sticker_update(3, 9, 9),
            location_update(4, 9, 9), document_update(5, 9, 9),
        ):  # fmt: skip
            assert (await s.telegram(update)).status_code == 200
        await until(lambda: len(telegram_server.sent_texts()) == 5)
        assert set(telegram_server.sent_texts()) == {"Sorry, I only understand text messages."}
        for update in (edited_message_update(6, 9, 9, "edited", message_id=1), service_update(7, 9, -100)):
            assert (await s.telegram(update)).status_code == 200
        await asyncio.sleep(0.2)
        assert len(telegram_server.sent_texts()) == 5
        assert await answers(s) == []


async def test_a_10000_character_reply_is_split_on_boundaries(
    telegram_server: FakeTelegramServer, openai_server: FakeOpenAIServer
) -> None:
    paragraph = ("This sentence is part of a long answer. " * 24).strip()  # 959 characters
    long = "\n\n".join([paragraph] * 10)  # 9,608 characters
    long += "\n\n" + "x" * (10_000 - len(long) - 2)
    assert len(long) == 10_000
    openai_server.script(Ok(text=long))
    settings = channel_settings(
        telegram_server, None, openai_api_key="sk-test", openai_base_url=openai_server.base_url, model_catalog=ONE_MODEL
    )
    async with serve(**settings) as s:
        await s.telegram(text_update(3003, 8, 8, "Write me a long essay."))
        await until(lambda: len(telegram_server.sent_texts()) == 3)
        parts = telegram_server.sent_texts()
        assert all(len(p) <= 4096 for p in parts)
        assert [len(p) for p in parts] == [3842, 3842, 2312]  # 4 paragraphs (4 x 959 + 3 x 2), 4, the rest
        assert "\n\n".join(parts) == long


async def test_groups_answer_only_when_mentioned_or_replied_to(telegram_server: FakeTelegramServer) -> None:
    async with serve(**channel_settings(telegram_server, None)) as s:
        await s.telegram(text_update(10, 5, -100200, "just chatting, no bot here", chat_type="supergroup"))
        await s.telegram(text_update(11, 5, -100200, f"@{BOT_USERNAME} what is 2+2?", chat_type="supergroup"))
        await s.telegram(text_update(12, 6, -100200, "and you, what now?", chat_type="supergroup", reply_to_bot=True))
        await until(lambda: len(telegram_server.sent_texts()) == 2)
        await asyncio.sleep(0.2)
        assert len(telegram_server.sent_texts(-100200)) == 2
        users = sorted(r.user_key for r in await answers(s))
        assert users == ["telegram:5", "telegram:6"]  # budgets stay per person


async def test_a_user_who_blocked_the_bot_is_not_retried(telegram_server: FakeTelegramServer) -> None:
    telegram_server.script("sendMessage", blocked_by_user())
    async with serve(**channel_settings(telegram_server, None)) as s:
        await s.telegram(text_update(20, 77, 77, "hello"))
        await until(lambda: len(telegram_server.calls_to("sendMessage")) == 1)
        await until(lambda: inbox_done(s))
        assert len(telegram_server.calls_to("sendMessage")) == 1
        # marked inactive (read straight from the embedded SQLite store the harness uses)
        db: Any = s.runtime.built.deps.db
        assert db._db.execute("select active from users where user_key = 'telegram:77'").fetchone() == (0,)


async def test_429_retry_after_is_honoured(telegram_server: FakeTelegramServer) -> None:
    telegram_server.script("sendMessage", retry_after(1))
    async with serve(**channel_settings(telegram_server, None)) as s:
        await s.telegram(text_update(30, 78, 78, "hello"))
        await until(lambda: len(telegram_server.calls_to("sendMessage")) == 2, timeout=5)
        first, second = telegram_server.calls_to("sendMessage")
        assert second.received_at - first.received_at >= 1.0
        await until(lambda: inbox_done(s))


async def test_a_migrated_group_is_followed_to_its_new_id(telegram_server: FakeTelegramServer) -> None:
    telegram_server.script("sendMessage", chat_migrated(-1009999))
    async with serve(**channel_settings(telegram_server, None)) as s:
        await s.telegram(text_update(40, 5, -300, f"@{BOT_USERNAME} hi", chat_type="group"))
        await until(lambda: len(telegram_server.calls_to("sendMessage")) == 2)
        assert [c.params["chat_id"] for c in telegram_server.calls_to("sendMessage")] == ["-300", "-1009999"]


async def test_typing_is_refreshed_while_the_bot_works(telegram_server: FakeTelegramServer) -> None:
    from telegram import Bot

    from bot.channels.telegram import TelegramReplier
    from bot.turn import Inbound
    from tests.fakes.telegram_server import TEST_TOKEN

    async with Bot(TEST_TOKEN, base_url=telegram_server.base_url) as bot:
        replier = TelegramReplier(bot, None, typing_every_s=0.1, typing_after_s=0.1)  # type: ignore[arg-type]
        async with replier.typing(Inbound("telegram", "42", "42", "1", "hi")):
            await asyncio.sleep(0.05)  # answered before typing_after_s: nothing sent
        assert telegram_server.calls_to("sendChatAction") == []
        async with replier.typing(Inbound("telegram", "42", "42", "1", "hi")):
            await asyncio.sleep(0.45)
    actions = telegram_server.calls_to("sendChatAction")
    assert len(actions) >= 3  # refreshed, not sent once
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(actions)]
    assert all(g >= 0.09 for g in gaps)  # every refresh interval, not a burst
    assert {(c.params["chat_id"], c.params["action"]) for c in actions} == {("42", "typing")}


async def test_shutdown_lets_in_flight_messages_finish(telegram_server: FakeTelegramServer) -> None:
    async with serve(**channel_settings(telegram_server, None, simulated_latency_ms=500)) as s:
        await s.telegram(text_update(50, 90, 90, "a slow question"))
        await until(lambda: len(telegram_server.calls_to("sendChatAction")) >= 1)
    # The server has stopped: the message in flight was answered within the grace period.
    assert len(telegram_server.sent_texts(90)) == 1


async def test_readyz_checks_stores_and_providers(telegram_server: FakeTelegramServer) -> None:
    async with serve(**channel_settings(telegram_server, None)) as s:
        r = await s.http.get("/readyz")
        assert (r.status_code, r.json()) == (200, {"status": "ok", "checks": {
            "database": "ok", "hot_store": "ok", "providers": "ok"}})  # fmt: skip
        router = s.runtime.built.deps.router
        router.failed(router.catalog[0], now=time.time(), retry_after=60)
        r = await s.http.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["providers"] == "error: every provider is in cooldown"
