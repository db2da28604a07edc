"""Pytest fixtures for the fake platform APIs: ``pytest_plugins = ["tests.fakes.platform_fixtures"]``.

One server of each kind runs for the whole session; the function-scoped fixtures hand it out
reset (no recorded calls, no queued outcomes, no responder, no webhook), so tests stay independent.
The Telegram server accepts only ``TEST_TOKEN``; the Twilio server only ``TEST_ACCOUNT_SID`` and
``TEST_AUTH_TOKEN``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.telegram_server import TEST_TOKEN, FakeTelegramServer
from tests.fakes.twilio_server import FakeTwilioServer


@pytest.fixture(scope="session")
def telegram_server_session() -> Iterator[FakeTelegramServer]:
    """The session's fake Telegram Bot API; prefer ``telegram_server``, which resets it."""
    with FakeTelegramServer(token=TEST_TOKEN) as server:
        yield server


@pytest.fixture(scope="session")
def twilio_server_session() -> Iterator[FakeTwilioServer]:
    """The session's fake Twilio REST API; prefer ``twilio_server``, which resets it."""
    with FakeTwilioServer() as server:
        yield server


@pytest.fixture
def telegram_server(telegram_server_session: FakeTelegramServer) -> FakeTelegramServer:
    """A fake Telegram Bot API with a clean slate; hand ``base_url`` to PTB with ``TEST_TOKEN``."""
    telegram_server_session.reset()
    return telegram_server_session


@pytest.fixture
def twilio_server(twilio_server_session: FakeTwilioServer) -> FakeTwilioServer:
    """A fake Twilio Messages API with a clean slate; set ``client.api.base_url = twilio_server.base_url``."""
    twilio_server_session.reset()
    return twilio_server_session
