"""Admin notices delivered for real: to the fake Telegram Bot API, to a webhook receiver and to an
aiosmtpd SMTP server, all on 127.0.0.1. One channel failing never stops the others, and no log
line shows a secret."""

import logging
import shutil
import ssl
import subprocess
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from telegram import Bot

from bot.notify import Notifier, SmtpConfig, telegram_admins
from tests.conftest import IN_CI
from tests.drills.servers import free_port
from tests.fakes.telegram_server import TEST_TOKEN, FakeTelegramServer, LocalServer, blocked_by_user, retry_after

HOOK_SECRET = "hook-s3cr3t-0123456789"
SMTP_PASSWORD = "smtp-pa55word-xyz"
PAYLOAD = {"rule": "daily_cost", "subject": "bot", "period_key": "2026-11-10", "level": "warning",
           "message": "Today's AI cost $5.0000 is over the $5.0000 daily threshold (2026-11-10).",
           "figures": {"cost": "5.000000001", "threshold": "5"}}  # fmt: skip


# --- local receivers, shared with tests/bot/test_jobs.py ----------------------------------------


class WebhookReceiver(LocalServer):
    """An HTTP endpoint on 127.0.0.1 that records JSON bodies and answers scripted statuses (200 by default)."""

    def __init__(self) -> None:
        super().__init__([Route("/hook/{secret}", self._hook, methods=["POST"])], name="fake-webhook")
        self._lock = threading.Lock()
        self._bodies: list[Any] = []
        self.statuses: deque[int] = deque()

    @property
    def url(self) -> str:
        return f"{self.root_url}/hook/{HOOK_SECRET}"

    @property
    def bodies(self) -> list[Any]:
        with self._lock:
            return list(self._bodies)

    def reset(self) -> None:
        with self._lock:
            self._bodies.clear()
            self.statuses.clear()

    async def _hook(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self._bodies.append(body)
            status = self.statuses.popleft() if self.statuses else 200
        return JSONResponse({"ok": status < 400}, status)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    tls: bool
    login: str | None


@dataclass
class SmtpInbox:
    """An aiosmtpd handler keeping what it received, and who logged in."""

    received: list[Received] = field(default_factory=list)
    auth_attempts: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        tls = session.ssl is not None
        mail = Received(str(envelope.mail_from), list(envelope.rcpt_tos), message_from_bytes(content), tls, login)
        self.received.append(mail)
        return "250 OK"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.auth_attempts.append(data.login.decode())
        ok = data.login == b"alerts" and data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


@dataclass
class SmtpServer:
    inbox: SmtpInbox
    port: int


@contextmanager
def smtp_server(**options: Any) -> Iterator[SmtpServer]:
    """aiosmtpd on 127.0.0.1 (a free port); ``options`` go to its SMTP class (tls_context, ...)."""
    inbox = SmtpInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate, **options)
    controller.start()
    try:
        yield SmtpServer(inbox, port)
    finally:
        controller.stop()


@dataclass(frozen=True)
class Cert:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts the self-signed certificate, for 127.0.0.1


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1, made by the openssl command line."""
    if shutil.which("openssl") is None:
        if IN_CI:
            pytest.fail("openssl is missing: CI must run the STARTTLS tests")
        pytest.skip("openssl is missing")
    folder: Path = tmp_path_factory.mktemp("cert")
    key, crt = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(crt, key)
    return Cert(server, ssl.create_default_context(cafile=str(crt)))


@pytest.fixture(scope="session")
def webhook_session() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def webhook(webhook_session: WebhookReceiver) -> WebhookReceiver:
    webhook_session.reset()
    return webhook_session


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
async def tg_bot(telegram_server: FakeTelegramServer) -> AsyncIterator[Bot]:
    async with Bot(TEST_TOKEN, base_url=telegram_server.base_url) as bot:
        yield bot


def email_to(server: SmtpServer, **kw: Any) -> SmtpConfig:
    return SmtpConfig("127.0.0.1", "pennybot@example.com", ("ops@example.com", "cto@example.com"), server.port, **kw)


def our_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What pennybot itself logged. (httpx logs request URLs at INFO: bot.logs.protect raises it to
    WARNING and redacts the configured secrets in the app.)"""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pennybot"))


def all_channels(bot: Bot, hook: WebhookReceiver, server: SmtpServer, **kw: Any) -> Notifier:
    return Notifier(
        bot=bot,
        admin_ids={"telegram:42", "telegram:43", "whatsapp:+15550001111", "console:root"},
        webhook_url=SecretStr(hook.url),
        smtp=email_to(server),
        retry_delay_s=0,
        **kw,
    )


# --- tests -------------------------------------------------------------------------------------


def test_telegram_admins_are_the_telegram_entries_of_admin_user_ids() -> None:
    ids = {"telegram:42", "telegram:-1001234", "whatsapp:+1555", "telegram:abc", "console:x", "telegram:"}
    assert telegram_admins(ids) == [-1001234, 42]


async def test_every_channel_delivers_once(
    tg_bot: Bot, telegram_server: FakeTelegramServer, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    notifier = all_channels(tg_bot, webhook, smtp)
    assert notifier.channels == ["telegram", "webhook", "email"]

    result = await notifier.send("[pennybot] warning: daily_cost", "Over the daily threshold.", PAYLOAD)

    assert result == {"telegram": True, "webhook": True, "email": True}
    assert telegram_server.sent_texts(42) == telegram_server.sent_texts(43) == ["Over the daily threshold."]
    assert len(telegram_server.sent_texts()) == 2  # the WhatsApp and console admins are not Telegram chats
    assert webhook.bodies == [PAYLOAD]
    [mail] = smtp.inbox.received
    assert mail.mail_from == "pennybot@example.com"
    assert mail.rcpt_tos == ["ops@example.com", "cto@example.com"]
    assert mail.message["Subject"] == "[pennybot] warning: daily_cost"
    assert mail.message["To"] == "ops@example.com, cto@example.com"
    assert mail.message["Message-ID"] and mail.message["Date"]
    assert mail.message.get_payload(decode=True).decode().strip() == "Over the daily threshold."
    assert not mail.tls  # the server offers no STARTTLS, no password is set: plain SMTP is fine


async def test_no_channel_configured_delivers_nothing() -> None:
    notifier = Notifier(admin_ids={"telegram:42"})  # no bot: Telegram is off
    assert notifier.channels == []
    assert await notifier.send("s", "t", PAYLOAD) == {}


async def test_a_blocked_admin_does_not_stop_the_other_admin_or_channels(
    tg_bot: Bot, telegram_server: FakeTelegramServer, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    telegram_server.script("sendMessage", blocked_by_user())
    result = await all_channels(tg_bot, webhook, smtp).send("s", "hello admins", PAYLOAD)
    assert result == {"telegram": False, "webhook": True, "email": True}
    assert len(telegram_server.calls_to("sendMessage")) == 2
    assert telegram_server.sent_texts(43) == ["hello admins"]  # 42 blocked the bot (called first)


async def test_telegram_flood_control_is_waited_out_once(tg_bot: Bot, telegram_server: FakeTelegramServer) -> None:
    telegram_server.script("sendMessage", retry_after(1))
    result = await Notifier(bot=tg_bot, admin_ids={"telegram:42"}).send("s", "after the flood", PAYLOAD)
    assert result == {"telegram": True}
    assert len(telegram_server.calls_to("sendMessage")) == 2


async def test_a_long_report_is_split_for_telegram(tg_bot: Bot, telegram_server: FakeTelegramServer) -> None:
    text = "\n".join(f"line {i}: " + "x" * 90 for i in range(60))  # about 6,000 characters
    assert await Notifier(bot=tg_bot, admin_ids={"telegram:42"}).send("s", text, PAYLOAD) == {"telegram": True}
    parts = telegram_server.sent_texts(42)
    assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
    assert "\n".join(parts) == text


@pytest.mark.parametrize(
    ("statuses", "delivered", "posts"),
    [([], True, 1), ([503], True, 2), ([500, 502], False, 2), ([400], False, 1), ([404, 500], False, 1)],
)
async def test_the_webhook_is_retried_once_on_a_5xx_only(
    webhook: WebhookReceiver, statuses: list[int], delivered: bool, posts: int, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.statuses.extend(statuses)
    notifier = Notifier(webhook_url=SecretStr(webhook.url), retry_delay_s=0)
    with caplog.at_level(logging.DEBUG):
        assert await notifier.send("s", "t", PAYLOAD) == {"webhook": delivered}
    assert webhook.bodies == [PAYLOAD] * posts
    assert HOOK_SECRET not in our_logs(caplog)


async def test_an_unreachable_webhook_fails_alone_and_logs_no_secret(
    tg_bot: Bot, telegram_server: FakeTelegramServer, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    dead = SecretStr(f"http://127.0.0.1:{free_port()}/hook/{HOOK_SECRET}")
    notifier = Notifier(bot=tg_bot, admin_ids={"telegram:42"}, webhook_url=dead, smtp=email_to(smtp), retry_delay_s=0)
    with caplog.at_level(logging.DEBUG):
        result = await notifier.send("s", "t", PAYLOAD)
    assert result == {"telegram": True, "webhook": False, "email": True}
    assert "webhook delivery of an admin notice failed (ConnectError)" in our_logs(caplog)
    assert HOOK_SECRET not in our_logs(caplog)


async def test_email_upgrades_with_starttls_when_offered_and_logs_in(cert: Cert) -> None:
    with smtp_server(tls_context=cert.server) as server:
        config = email_to(server, username="alerts", password=SecretStr(SMTP_PASSWORD), tls_context=cert.client)
        assert await Notifier(smtp=config).send("subject", "over TLS", PAYLOAD) == {"email": True}
    [mail] = server.inbox.received
    assert mail.tls and mail.login == "alerts"


async def test_email_required_starttls_not_offered_fails_alone(
    webhook: WebhookReceiver, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(webhook_url=SecretStr(webhook.url), smtp=email_to(smtp, starttls=True))
    assert await notifier.send("s", "t", PAYLOAD) == {"webhook": True, "email": False}
    assert smtp.inbox.received == []
    assert "email delivery of an admin notice failed" in caplog.text


async def test_the_password_is_never_sent_without_tls(caplog: pytest.LogCaptureFixture) -> None:
    # A server that would take AUTH in clear: the notifier refuses to send the password at all.
    with smtp_server(auth_require_tls=False) as server:
        config = email_to(server, username="alerts", password=SecretStr(SMTP_PASSWORD))
        with caplog.at_level(logging.DEBUG):
            assert await Notifier(smtp=config).send("s", "t", PAYLOAD) == {"email": False}
    assert server.inbox.auth_attempts == [] and server.inbox.received == []
    assert "email delivery of an admin notice failed (PlaintextLogin)" in caplog.text
    assert SMTP_PASSWORD not in caplog.text


async def test_a_wrong_password_fails_without_showing_it(cert: Cert, caplog: pytest.LogCaptureFixture) -> None:
    with smtp_server(tls_context=cert.server) as server:
        config = email_to(server, username="alerts", password=SecretStr("not-the-password"), tls_context=cert.client)
        with caplog.at_level(logging.DEBUG):
            assert await Notifier(smtp=config).send("s", "t", PAYLOAD) == {"email": False}
    assert set(server.inbox.auth_attempts) == {"alerts"} and server.inbox.received == []
    assert "not-the-password" not in caplog.text
    assert "not-the-password" not in repr(config)  # SecretStr
