"""The real python-telegram-bot and twilio libraries against the fake platform servers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from telegram import Bot, Message, Update
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters
from telegram.request import HTTPXRequest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.fakes import telegram_server as tg
from tests.fakes.telegram_server import (
    BOT_ID,
    BOT_USERNAME,
    TEST_TOKEN,
    ApiError,
    Drop,
    FakeTelegramServer,
    Hang,
    TelegramCall,
    blocked_by_user,
    chat_migrated,
    retry_after,
)
from tests.fakes.twilio_server import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    WHATSAPP_SANDBOX,
    FakeTwilioServer,
    num_segments,
    server_error,
    sign,
    too_many_requests,
    whatsapp_form,
)

pytest_plugins = ["tests.fakes.platform_fixtures"]

USER = "whatsapp:+15551234567"


# PTB 22 reads RetryAfter.retry_after in its own __init__, which warns on every 429 unless the
# environment has PTB_TIMEDELTA=1 (then it is a timedelta rather than an int).
PTB_TIMEDELTA_WARNING = "ignore::telegram.warnings.PTBDeprecationWarning"
# twilio's AsyncTwilioHttpClient passes aiohttp's deprecated BasicAuth on every request.
AIOHTTP_AUTH_WARNINGS = (
    "ignore:BasicAuth is deprecated:DeprecationWarning",
    "ignore:The 'auth' parameter is deprecated:DeprecationWarning",
)


def seconds(delay: int | float | timedelta) -> float:
    """RetryAfter.retry_after is an int (deprecated) or, with PTB_TIMEDELTA=1, a timedelta."""
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


@pytest.fixture
async def bot(telegram_server: FakeTelegramServer) -> AsyncIterator[Bot]:
    async with Bot(TEST_TOKEN, base_url=telegram_server.base_url, base_file_url=telegram_server.base_file_url) as bot:
        yield bot


# ---- Telegram ----


async def test_bot_api_methods_answer_and_are_recorded(telegram_server: FakeTelegramServer, bot: Bot) -> None:
    assert (bot.id, bot.username) == (BOT_ID, BOT_USERNAME)  # getMe, from `async with`

    first = await bot.send_message(42, "hello")
    second = await bot.send_message(-100777, "group hello")
    assert (first.message_id, second.message_id) == (1, 2)
    assert (first.chat.id, first.chat.type, first.text) == (42, "private", "hello")
    assert (second.chat.type, first.from_user and first.from_user.id) == ("supergroup", BOT_ID)
    assert await bot.send_chat_action(42, "typing") is True

    assert await bot.set_webhook(
        "https://bot.example.com/telegram", secret_token="s3cret-Token_1", allowed_updates=["message", "edited_message"]
    )
    info = await bot.get_webhook_info()
    assert (info.url, info.allowed_updates, info.pending_update_count) == (
        "https://bot.example.com/telegram",
        ("message", "edited_message"),
        0,
    )
    assert info.api_kwargs == {}  # no secret_token in getWebhookInfo, as on Telegram
    assert telegram_server.webhook.secret_token == "s3cret-Token_1"
    assert await bot.delete_webhook()
    assert (await bot.get_webhook_info()).url == ""

    calls = telegram_server.calls
    assert [c.method for c in calls] == [
        "getMe",
        "sendMessage",
        "sendMessage",
        "sendChatAction",
        "setWebhook",
        "getWebhookInfo",
        "deleteWebhook",
        "getWebhookInfo",
    ]
    assert {c.token for c in calls} == {TEST_TOKEN}
    # PTB form-encodes: every value a string, lists as JSON text
    assert calls[1].content_type == "application/x-www-form-urlencoded"
    assert calls[1].params == {"chat_id": "42", "text": "hello"}
    assert calls[3].params == {"chat_id": "42", "action": "typing"}
    assert calls[4].params["allowed_updates"] == '["message", "edited_message"]'
    assert calls[4].arg("allowed_updates") == ["message", "edited_message"]
    assert calls[4].params["secret_token"] == "s3cret-Token_1"
    assert telegram_server.sent_texts() == ["hello", "group hello"]
    assert telegram_server.sent_texts(chat_id=42) == ["hello"]
    assert calls[0].received_at <= calls[-1].received_at


async def test_application_initialize_and_process_update(telegram_server: FakeTelegramServer) -> None:
    app = (
        Application.builder()
        .token(TEST_TOKEN)
        .base_url(telegram_server.base_url)
        .base_file_url(telegram_server.base_file_url)
        .updater(None)
        .build()
    )

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"echo: {update.effective_message.text}")

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, "welcome")

    app.add_handler(CommandHandler("start", start))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    async with app:
        assert [c.method for c in telegram_server.calls] == ["getMe"]
        await app.process_update(Update.de_json(tg.text_update(1, 5, 5, "hi there"), app.bot))
        await app.process_update(Update.de_json(tg.text_update(2, 5, 5, "/start"), app.bot))
        await app.process_update(
            Update.de_json(tg.text_update(3, 6, -100, f"/start@{BOT_USERNAME}", chat_type="group"), app.bot)
        )
    assert telegram_server.sent_texts() == ["echo: hi there", "welcome", "welcome"]
    assert [c.arg("chat_id") for c in telegram_server.calls_to("sendMessage")] == [5, 5, -100]


@pytest.mark.filterwarnings(PTB_TIMEDELTA_WARNING)
async def test_scripted_errors_raise_ptb_exceptions(telegram_server: FakeTelegramServer, bot: Bot) -> None:
    telegram_server.script("sendMessage", retry_after(7), blocked_by_user(), chat_migrated(-1001234567890))

    assert await bot.send_chat_action(1, "typing")  # scripts are per method
    with pytest.raises(RetryAfter) as flood:
        await bot.send_message(1, "a")
    assert seconds(flood.value.retry_after) == 7
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(1, "b")
    with pytest.raises(ChatMigrated) as migrated:
        await bot.send_message(-55, "c")
    assert migrated.value.new_chat_id == -1001234567890
    assert (await bot.send_message(1, "d")).text == "d"  # script used up
    assert len(telegram_server.calls_to("sendmessage")) == 4  # failed calls are recorded too


async def test_responder_and_usual_refusals(telegram_server: FakeTelegramServer, bot: Bot) -> None:
    def blocked_chat_13(call: TelegramCall) -> ApiError | None:
        return blocked_by_user() if call.arg("chat_id") == 13 else None

    telegram_server.respond_with(blocked_chat_13)
    with pytest.raises(Forbidden):
        await bot.send_message(13, "x")
    assert (await bot.send_message(14, "x")).chat.id == 14

    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(14, "x" * 4097)
    assert (await bot.send_message(14, "x" * 4096)).text == "x" * 4096
    with pytest.raises(BadRequest, match="Bad webhook: an https url must be provided"):
        await bot.set_webhook("http://bot.example.com/hook")
    with pytest.raises(BadRequest, match="Secret token contains unallowed characters"):
        await bot.set_webhook("https://bot.example.com/hook", secret_token="not allowed!")
    assert telegram_server.webhook.url == ""
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message("not-a-chat", "x")
    edited = await bot.edit_message_text("new text", chat_id=14, message_id=2)
    assert isinstance(edited, Message) and (edited.message_id, edited.text) == (2, "new text")
    assert edited.edit_date is not None


async def test_wrong_token_is_refused(telegram_server: FakeTelegramServer, bot: Bot) -> None:
    telegram_server.script("getMe", blocked_by_user())
    with pytest.raises(InvalidToken):
        await Bot("999:wrong", base_url=telegram_server.base_url).initialize()
    assert telegram_server.calls[-1].token == "999:wrong"
    with pytest.raises(Forbidden):  # the refused call left the script alone
        await bot.get_me()


async def test_any_token_without_one_set_and_a_hang_or_drop() -> None:
    with FakeTelegramServer() as server:
        request = HTTPXRequest(read_timeout=0.2, connect_timeout=1)
        async with Bot("777:any", base_url=server.base_url, request=request) as bot:
            assert bot.id == 777
            server.script("sendMessage", Hang(5), Drop())
            with pytest.raises(TimedOut):
                await bot.send_message(1, "slow")
            with pytest.raises(NetworkError):
                await bot.send_message(1, "dropped")


async def test_uploads_and_downloads(telegram_server: FakeTelegramServer, bot: Bot) -> None:
    content = b"line one\r\n--not-a-boundary\r\n\x00\xff"
    assert await bot.send_document(42, content, filename="notes.bin", caption="my notes")
    upload = telegram_server.calls_to("sendDocument")[0]
    assert upload.content_type == "multipart/form-data"
    assert upload.params == {"chat_id": "42", "caption": "my notes"}
    assert upload.files == {"document": content}

    path = telegram_server.add_file("voice-1", b"OggS fake voice", file_path="voice/file_1.oga")
    file = await bot.get_file("voice-1")
    assert file.file_path == f"{telegram_server.base_file_url}{TEST_TOKEN}/{path}"
    assert bytes(await file.download_as_bytearray()) == b"OggS fake voice"
    with pytest.raises(BadRequest, match="Invalid file_id"):
        await bot.get_file("unknown")


UPDATES: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[Message], object]]] = {
    "text": (lambda: tg.text_update(1, 5, 5, "hello"), lambda m: m.text == "hello" and m.chat.type == "private"),
    "group text": (
        lambda: tg.text_update(2, 5, -100, "hi", chat_type="group", username="alice"),
        lambda m: m.chat.type == "group" and m.from_user is not None and m.from_user.username == "alice",
    ),
    "reply to bot": (
        lambda: tg.text_update(3, 5, -1005, "and?", chat_type="supergroup", reply_to_bot=True),
        lambda m: (
            m.reply_to_message is not None
            and m.reply_to_message.from_user is not None
            and m.reply_to_message.from_user.id == BOT_ID
        ),
    ),
    "photo": (
        lambda: tg.photo_update(4, 5, 5, caption="look"),
        lambda m: len(m.photo) == 3 and m.photo[-1].width == 1280 and m.caption == "look",
    ),
    "voice": (lambda: tg.voice_update(5, 5, 5), lambda m: m.voice is not None and m.voice.mime_type == "audio/ogg"),
    "sticker": (lambda: tg.sticker_update(6, 5, 5), lambda m: m.sticker is not None and m.sticker.emoji == "😀"),
    "location": (
        lambda: tg.location_update(7, 5, 5, latitude=1.5, longitude=2.5),
        lambda m: m.location is not None and (m.location.latitude, m.location.longitude) == (1.5, 2.5),
    ),
    "document": (
        lambda: tg.document_update(8, 5, 5, caption="pdf"),
        lambda m: m.document is not None and m.document.file_name == "notes.pdf",
    ),
    "bot added": (
        lambda: tg.service_update(9, 5, -77),
        lambda m: [u.id for u in m.new_chat_members] == [BOT_ID] and m.text is None,
    ),
    "user left": (
        lambda: tg.service_update(10, 5, -77, left_chat_member=tg.user(6)),
        lambda m: m.left_chat_member is not None and m.left_chat_member.id == 6,
    ),
    "title": (lambda: tg.service_update(11, 5, -77, new_chat_title="New"), lambda m: m.new_chat_title == "New"),
    "migrate to": (
        lambda: tg.migrate_update(12, 5, -77, -100077),
        lambda m: m.migrate_to_chat_id == -100077 and m.chat.id == -77,
    ),
    "migrate from": (
        lambda: tg.migrate_update(13, 5, -77, -100077, in_new_chat=True),
        lambda m: m.migrate_from_chat_id == -77 and m.chat.type == "supergroup",
    ),
}


@pytest.mark.parametrize("name", list(UPDATES))
def test_update_helpers_parse(name: str) -> None:
    build, check = UPDATES[name]
    data = build()
    update = Update.de_json(data, Bot(TEST_TOKEN))
    assert update.update_id == data["update_id"]
    assert update.message is not None and update.effective_user is not None
    assert check(update.message)
    # Nothing PTB does not know, except the legacy single-member fields Telegram still sends.
    assert set(update.message.api_kwargs) <= {
        "new_chat_participant",
        "new_chat_member",
        "left_chat_participant",
    }


def test_edited_message_update_parses() -> None:
    update = Update.de_json(tg.edited_message_update(20, 5, 5, "fixed", message_id=3), Bot(TEST_TOKEN))
    assert update.message is None and update.edited_message is not None
    assert (update.edited_message.message_id, update.edited_message.text) == (3, "fixed")
    assert update.edited_message.edit_date is not None
    assert update.effective_message is update.edited_message


def test_entities_are_found_with_utf16_offsets() -> None:
    text = f"/ask@{BOT_USERNAME} 😀 what does @someone_else think?"
    update = Update.de_json(tg.text_update(30, 5, -100, text, chat_type="group"), Bot(TEST_TOKEN))
    assert update.message is not None
    parsed = update.message.parse_entities()
    assert [(e.type, value) for e, value in parsed.items()] == [
        ("bot_command", f"/ask@{BOT_USERNAME}"),
        ("mention", "@someone_else"),
    ]
    assert update.message.entities[1].offset == len(f"/ask@{BOT_USERNAME} 😀 what does ") + 1  # the emoji is 2
    no_entities = Update.de_json(tg.text_update(31, 5, 5, "/start", entities=[]), Bot(TEST_TOKEN))
    assert no_entities.message is not None and no_entities.message.entities == ()


# ---- Twilio ----


def twilio_client(server: FakeTwilioServer, *, token: str = TEST_AUTH_TOKEN, **kwargs: Any) -> Client:
    client = Client(TEST_ACCOUNT_SID, token, **kwargs)
    client.api.base_url = server.base_url
    return client


def test_messages_create_reaches_the_fake(twilio_server: FakeTwilioServer) -> None:
    message = twilio_client(twilio_server).messages.create(from_=WHATSAPP_SANDBOX, to=USER, body="hello ☃")
    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid or "")
    assert (message.status, message.body, message.to, message.from_) == ("queued", "hello ☃", USER, WHATSAPP_SANDBOX)
    assert (message.price, message.num_segments, message.account_sid) == (None, "1", TEST_ACCOUNT_SID)
    assert message.date_created is not None

    [request] = twilio_server.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    assert request.auth_user == TEST_ACCOUNT_SID
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form == {"To": USER, "From": WHATSAPP_SANDBOX, "Body": "hello ☃"}
    assert twilio_server.sent_bodies() == ["hello ☃"]


@pytest.mark.filterwarnings(*AIOHTTP_AUTH_WARNINGS)
async def test_messages_create_async_reaches_the_fake(twilio_server: FakeTwilioServer) -> None:
    # AsyncTwilioHttpClient opens an aiohttp session when built, so it needs a running loop.
    async with AsyncTwilioHttpClient(timeout=5) as http:
        client = twilio_client(twilio_server, http_client=http)
        first = await client.messages.create_async(from_=WHATSAPP_SANDBOX, to=USER, body="async one")
        second = await client.messages.create_async(
            from_=WHATSAPP_SANDBOX, to=USER, body="with media", media_url=["https://example.com/a.png"]
        )
    assert first.sid != second.sid
    assert second.num_media == "1"
    assert twilio_server.sent_bodies(to=USER) == ["async one", "with media"]
    assert twilio_server.requests[1].fields[-1] == ("MediaUrl", "https://example.com/a.png")
    assert {r.auth_user for r in twilio_server.requests} == {TEST_ACCOUNT_SID}


def test_rate_limit_and_server_errors_raise_without_retry(twilio_server: FakeTwilioServer) -> None:
    client = twilio_client(twilio_server)
    twilio_server.script(too_many_requests(), server_error(503))
    with pytest.raises(TwilioRestException) as limited:
        client.messages.create(from_=WHATSAPP_SANDBOX, to=USER, body="a")
    assert (limited.value.status, limited.value.code) == (429, 20429)
    with pytest.raises(TwilioRestException) as unavailable:
        client.messages.create(from_=WHATSAPP_SANDBOX, to=USER, body="b")
    assert (unavailable.value.status, unavailable.value.code) == (503, 20503)
    assert len(twilio_server.requests) == 2  # one attempt each: the SDK does not retry


@pytest.mark.filterwarnings(*AIOHTTP_AUTH_WARNINGS)
async def test_async_rate_limit(twilio_server: FakeTwilioServer) -> None:
    twilio_server.script(too_many_requests())
    async with AsyncTwilioHttpClient() as http:
        with pytest.raises(TwilioRestException) as limited:
            await twilio_client(twilio_server, http_client=http).messages.create_async(
                from_=WHATSAPP_SANDBOX, to=USER, body="a"
            )
    assert limited.value.status == 429
    assert len(twilio_server.requests) == 1


def test_wrong_credentials_are_refused(twilio_server: FakeTwilioServer) -> None:
    with pytest.raises(TwilioRestException) as refused:
        twilio_client(twilio_server, token="wrong").messages.create(from_=WHATSAPP_SANDBOX, to=USER, body="a")
    assert (refused.value.status, refused.value.code) == (401, 20003)
    assert twilio_server.requests[0].auth_user == TEST_ACCOUNT_SID
    assert twilio_server.sent_bodies() == ["a"]  # recorded, though refused


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"from_": WHATSAPP_SANDBOX, "to": USER, "body": "x" * 1601}, 21617),
        ({"from_": "+14155238886", "to": USER, "body": "x"}, 21910),
        ({"from_": WHATSAPP_SANDBOX, "to": USER}, 21602),
    ],
)
def test_messages_twilio_refuses(twilio_server: FakeTwilioServer, kwargs: dict[str, Any], code: int) -> None:
    with pytest.raises(TwilioRestException) as refused:
        twilio_client(twilio_server).messages.create(**kwargs)
    assert (refused.value.status, refused.value.code) == (400, code)


def test_a_1600_character_body_is_accepted(twilio_server: FakeTwilioServer) -> None:
    assert twilio_client(twilio_server).messages.create(from_=WHATSAPP_SANDBOX, to=USER, body="y" * 1600).sid


def test_sms_segments() -> None:
    assert [num_segments("a" * n, "+1555") for n in (1, 160, 161, 306, 307)] == [1, 1, 2, 2, 3]
    assert [num_segments("😀" * n, "+1555") for n in (35, 36)] == [1, 2]
    assert num_segments("a" * 1600, USER) == 1


def test_signed_webhook_form_validates_and_tampering_does_not() -> None:
    url = "https://bot.example.com/whatsapp"
    form = whatsapp_form("SM" + "a" * 32, "+15551234567", "hello bot", profile_name="Alice")
    signature = sign(TEST_AUTH_TOKEN, url, form)
    validator = RequestValidator(TEST_AUTH_TOKEN)
    assert validator.validate(url, form, signature)
    assert not validator.validate(url, form | {"Body": "hello b0t"}, signature)
    assert not validator.validate(url + "?x=1", form, signature)
    assert not RequestValidator("f" * 32).validate(url, form, signature)


def test_whatsapp_form_fields() -> None:
    form = whatsapp_form("MM" + "b" * 32, "whatsapp:+15557654321", "", num_media=2, media_type="image/png")
    assert form["From"] == "whatsapp:+15557654321" and form["WaId"] == "15557654321"
    assert (form["To"], form["AccountSid"], form["NumMedia"], form["MessageType"]) == (
        WHATSAPP_SANDBOX,
        TEST_ACCOUNT_SID,
        "2",
        "image",
    )
    assert form["MessageSid"] == form["SmsMessageSid"] == form["SmsSid"]
    assert form["MediaContentType0"] == form["MediaContentType1"] == "image/png"
    assert form["MediaUrl1"].startswith(f"https://api.twilio.com/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages/MM")
    text = whatsapp_form("SM" + "c" * 32, "+1555", "hi")
    assert (text["MessageType"], text["NumMedia"], text["ProfileName"]) == ("text", "0", "Test User")
    assert "MediaUrl0" not in text
    location = whatsapp_form("SM" + "d" * 32, "+1555", "", MessageType="location", Latitude="1.5", Longitude="2.5")
    assert (location["MessageType"], location["Latitude"]) == ("location", "1.5")


def test_unknown_twilio_path_is_a_twilio_404(twilio_server: FakeTwilioServer) -> None:
    client = twilio_client(twilio_server)
    response = client.request("GET", f"{twilio_server.base_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls.json")
    assert response.status_code == 404
    assert '"code":20404' in response.text.replace(" ", "")
    assert twilio_server.requests[0].path.endswith("/Calls.json")
