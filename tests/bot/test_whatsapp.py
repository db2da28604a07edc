"""WhatsApp end to end: form posts signed as Twilio signs them, the empty TwiML answer, and the
reply through the twilio client's async REST calls to a local Twilio server."""

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.bot.server_harness import PUBLIC, Served, channel_settings, serve, until
from tests.fakes.llm_servers import FakeOpenAIServer, Ok
from tests.fakes.twilio_server import (
    TEST_AUTH_TOKEN,
    WHATSAPP_SANDBOX,
    FakeTwilioServer,
    server_error,
    sign,
    too_many_requests,
    whatsapp_form,
)

URL = f"{PUBLIC}/webhook/whatsapp"
USER = "whatsapp:+15551234567"


async def post(s: Served, form: dict[str, str], signature: str | None = None) -> Any:
    sig = sign(TEST_AUTH_TOKEN, URL, form) if signature is None else signature
    return await s.http.post("/webhook/whatsapp", data=form, headers={"X-Twilio-Signature": sig})


async def fees(s: Served) -> Decimal:
    now = datetime.now(UTC)
    return await s.runtime.built.deps.db.fees(now - timedelta(hours=1), now + timedelta(hours=1))


async def test_a_signed_message_is_acknowledged_at_once_and_answered_by_rest(twilio_server: FakeTwilioServer) -> None:
    async with serve(**channel_settings(None, twilio_server)) as s:
        r = await post(s, whatsapp_form("SM" + "1" * 32, "+15551234567", "What is the capital of Spain?"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/xml")
        assert r.text == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
        await until(lambda: len(twilio_server.sent_bodies()) == 1)
        [call] = twilio_server.requests
        assert (call.form["From"], call.form["To"]) == (WHATSAPP_SANDBOX, USER)
        assert call.form["Body"].startswith("[simulated] ")
        await until(lambda: _fees_are(s, Decimal("0.010")))  # one in, one out, at $0.005


async def _fees_are(s: Served, amount: Decimal) -> bool:
    return await fees(s) == amount


async def test_forged_or_missing_signature_is_403(twilio_server: FakeTwilioServer) -> None:
    async with serve(**channel_settings(None, twilio_server)) as s:
        form = whatsapp_form("SM" + "2" * 32, "+15551234567", "hi")
        assert (await post(s, form, signature="forged")).status_code == 403
        signed_elsewhere = sign(TEST_AUTH_TOKEN, "https://evil.example.com/webhook/whatsapp", form)
        assert (await post(s, form, signature=signed_elsewhere)).status_code == 403
        tampered = form | {"Body": "something else"}
        assert (await post(s, tampered, signature=sign(TEST_AUTH_TOKEN, URL, form))).status_code == 403
        assert (await s.http.post("/webhook/whatsapp", data=form)).status_code == 403
        await asyncio.sleep(0.1)
        assert twilio_server.requests == []


async def test_bad_forms_are_400_and_huge_ones_413(twilio_server: FakeTwilioServer) -> None:
    async with serve(**channel_settings(None, twilio_server, max_body_bytes=5000)) as s:
        no_sid = {"From": USER, "Body": "hi"}
        assert (await post(s, no_sid)).status_code == 400
        huge = whatsapp_form("SM" + "3" * 32, "+15551234567", "x" * 6000)
        assert (await post(s, huge)).status_code == 413


async def test_redelivered_message_sid_is_answered_once(twilio_server: FakeTwilioServer) -> None:
    async with serve(**channel_settings(None, twilio_server, simulated_latency_ms=100)) as s:
        form = whatsapp_form("SM" + "4" * 32, "+15551234567", "Tell me about budgets.")
        results = await asyncio.gather(*(post(s, form) for _ in range(3)))
        assert {r.status_code for r in results} == {200}
        await until(lambda: len(twilio_server.sent_bodies()) == 1)
        await post(s, form)
        await asyncio.sleep(0.3)
        assert len(twilio_server.sent_bodies()) == 1
        assert await fees(s) == Decimal("0.010")


async def test_media_gets_the_only_text_reply(twilio_server: FakeTwilioServer) -> None:
    async with serve(**channel_settings(None, twilio_server)) as s:
        await post(s, whatsapp_form("SM" + "5" * 32, "+15551234567", "", num_media=1, media_type="audio/ogg"))
        await until(lambda: twilio_server.sent_bodies() == ["Sorry, I only understand text messages."])


async def test_429_is_retried_with_backoff_and_5xx_leaves_the_message_open(twilio_server: FakeTwilioServer) -> None:
    twilio_server.script(too_many_requests(), too_many_requests())
    async with serve(**channel_settings(None, twilio_server)) as s:
        await post(s, whatsapp_form("SM" + "6" * 32, "+15551234567", "hello"))
        await until(lambda: len(twilio_server.requests) == 3, timeout=10)
        assert len(twilio_server.sent_bodies()) == 3  # two refused, the third accepted
        await until(lambda: _open(s, 0))
        twilio_server.script(server_error(500))
        await post(s, whatsapp_form("SM" + "7" * 32, "+15551234567", "hello again"))
        await until(lambda: len(twilio_server.requests) == 4)
        await until(lambda: _open(s, 1))  # kept in the inbox: the next start-up re-sends it


async def _open(s: Served, n: int) -> bool:
    return len(await s.runtime.built.deps.db.open_inbox()) == n


async def test_a_10000_character_reply_is_split_at_1600(
    twilio_server: FakeTwilioServer, openai_server: FakeOpenAIServer
) -> None:
    sentence = "Budgets keep spending inside limits. "
    long = (sentence * 271)[:10_000]
    openai_server.script(Ok(text=long))
    settings = channel_settings(
        None, twilio_server, openai_api_key="sk-test", openai_base_url=openai_server.base_url,
        model_catalog=[{"provider": "openai", "model": "gpt-4o-mini", "tier": "cheap"}],
    )  # fmt: skip
    async with serve(**settings) as s:
        await post(s, whatsapp_form("SM" + "8" * 32, "+15551234567", "Write a long essay."))
        await until(lambda: len(twilio_server.sent_bodies()) == 7)
        parts = twilio_server.sent_bodies()
        assert all(len(p) <= 1600 for p in parts)
        assert all(p.endswith(".") for p in parts[:-1])  # cut after whole sentences
        assert " ".join(parts) == long.strip()
        await until(lambda: _fees_are(s, Decimal("0.040")))  # 1 in + 7 out


async def test_the_app_serves_metrics_with_the_channel_fees(twilio_server: FakeTwilioServer) -> None:
    from bot import metrics

    metrics.reset()
    async with serve(**channel_settings(None, twilio_server)) as s:
        await post(s, whatsapp_form("SM" + "a" * 32, "+15551234567", "What is the capital of Peru?"))
        await until(lambda: len(twilio_server.sent_bodies()) == 1)
        await until(lambda: _fees_are(s, Decimal("0.010")))
        text = (await s.http.get("/metrics")).text
    assert 'cost_channel_fees_usd_total{channel="whatsapp",direction="in"} 0.005' in text
    assert 'cost_channel_fees_usd_total{channel="whatsapp",direction="out"} 0.005' in text
    assert "cost_cpu_usage_cores" in text and "+15551234567" not in text


async def test_a_reply_whose_fee_cannot_be_recorded_is_still_done_and_sent_once(
    twilio_server: FakeTwilioServer,
) -> None:
    # The database refuses the outbound fee's row after the part went out: the message is marked
    # done all the same (failing the send would leave it open, to be sent again).
    async with serve(**channel_settings(None, twilio_server)) as s:
        db = s.runtime.built.deps.db
        record = db.record_fee

        async def refusing(channel: str, user: str, direction: str, *args: Any) -> None:
            if direction == "out":
                raise ConnectionError("database down")
            await record(channel, user, direction, *args)

        db.record_fee = refusing
        await post(s, whatsapp_form("SM" + "9" * 32, "+15551234567", "hello"))
        await until(lambda: len(twilio_server.sent_bodies()) == 1)
        await until(lambda: _open(s, 0))
        await until(lambda: _fees_are(s, Decimal("0.005")))  # the inbound fee only
        assert len(twilio_server.sent_bodies()) == 1
