"""Secrets never reach a log: a whole run on both channels with every logger at DEBUG."""

import logging

import pytest

from tests.bot.server_harness import SECRET, channel_settings, serve, until
from tests.bot.test_whatsapp import post
from tests.fakes.llm_servers import Fail, FakeOpenAIServer
from tests.fakes.telegram_server import TEST_TOKEN, FakeTelegramServer, text_update
from tests.fakes.twilio_server import TEST_AUTH_TOKEN, FakeTwilioServer, whatsapp_form

OPENAI_KEY = "sk-live-0123456789abcdefSECRET"


async def test_no_token_or_key_in_any_log_line(
    caplog: pytest.LogCaptureFixture,
    telegram_server: FakeTelegramServer,
    twilio_server: FakeTwilioServer,
    openai_server: FakeOpenAIServer,
) -> None:
    caplog.set_level(logging.DEBUG)
    openai_server.script(Fail(401, "Incorrect API key provided: sk-live-0123456789abcdefSECRET"))
    settings = channel_settings(
        telegram_server, twilio_server, openai_api_key=OPENAI_KEY, openai_base_url=openai_server.base_url,
        model_catalog=[
            {"provider": "openai", "model": "gpt-4o-mini", "tier": "cheap"},
            {"provider": "simulated", "model": "gpt-4o-mini", "tier": "cheap"},
        ],
    )  # fmt: skip
    async with serve(**settings) as s:
        await s.telegram(text_update(1, 42, 42, "hello"))
        await post(s, whatsapp_form("SM" + "9" * 32, "+15551234567", "hello"))
        await s.telegram(text_update(2, 42, 42, "forged"), secret="wrong")
        await until(lambda: len(telegram_server.sent_texts()) == 1 and len(twilio_server.sent_bodies()) == 1)
    text = caplog.text
    assert len(caplog.records) > 5  # the run did log
    for secret in (TEST_TOKEN, TEST_TOKEN.split(":")[1], TEST_AUTH_TOKEN, OPENAI_KEY, SECRET):
        assert secret not in text, f"a secret leaked into the logs: {secret[:6]}…"


def test_the_record_factory_redacts_from_any_logger(caplog: pytest.LogCaptureFixture) -> None:
    from bot.logs import protect, secrets_of
    from bot.settings import load_settings

    settings = load_settings(None, telegram_bot_token="999:tok-abcdefgh", telegram_webhook_secret="whsec-123456",
                             database_url="postgresql://app:dbpass-987@db/x")  # fmt: skip
    protect(secrets_of(settings))
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info(
            "calling https://x/bot%s/getMe with %s", "999:tok-abcdefgh", "dbpass-987"
        )
        logging.getLogger("other").warning("secret header whsec-123456 and bare tok-abcdefgh")
    assert caplog.messages == [
        "calling https://x/bot[redacted]/getMe with [redacted]",
        "secret header [redacted] and bare [redacted]",
    ]
