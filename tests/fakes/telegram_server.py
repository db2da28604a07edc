"""A real local HTTP server speaking the Telegram Bot API as python-telegram-bot 22 calls it.

``POST /bot<TOKEN>/<method>`` with the parameters form-encoded (what PTB sends: every value a
string, lists and objects as JSON text), multipart (uploads) or JSON. Every call is recorded;
failures are scripted per method::

    with FakeTelegramServer() as server:
        server.script("sendMessage", retry_after(3), blocked_by_user())
        bot = Bot(TEST_TOKEN, base_url=server.base_url, base_file_url=server.base_file_url)
        ...
        assert server.sent_texts() == ["hi"]

The ``*_update`` functions build the JSON Telegram posts to a webhook, ready for
``telegram.Update.de_json(data, bot)``.

``LocalServer`` (uvicorn + starlette on 127.0.0.1 in a daemon thread, as tests/fakes/llm_servers.py
runs its servers) is shared with tests/fakes/twilio_server.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes.llm_servers import Drop, Hang, _Abort, _Delayed

# A token of the real shape (bot id, colon, 35 characters); the bot id is the part before the colon.
TEST_TOKEN = "123456789:AAHpennybot-fake-token_0123456789ab"
BOT_ID = 123456789
BOT_USERNAME = "pennybot_test_bot"
BOT_FIRST_NAME = "PennyBot"
TEXT_LIMIT = 4096


class LocalServer:
    """uvicorn serving ``routes`` on 127.0.0.1 (a free port) from a daemon thread."""

    def __init__(self, routes: Sequence[BaseRoute], *, host: str = "127.0.0.1", name: str = "fake") -> None:
        self.host = host
        self.port = 0
        self._name = name
        config = uvicorn.Config(Starlette(routes=list(routes)), log_level="warning", lifespan="off", http="h11")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Bind a free port and serve from a daemon thread; returns once accepting."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(sock),), daemon=True, name=f"{self._name}-{self.port}"
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._name} server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop at once; requests still hanging or delayed see their connection dropped."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._abort_connections)
        self._server.should_exit = self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        await self._server.serve(sockets=[sock])

    def _abort_connections(self) -> None:
        for connection in list(self._server.server_state.connections):
            connection.transport.abort()

    def _stall(self, outcome: Hang | Drop) -> Response:
        """The response for a Hang or Drop outcome."""
        if isinstance(outcome, Hang):
            return _Delayed(outcome.seconds, _Abort(self._server))
        return _Abort(self._server)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def parse_form(content_type: str, raw: bytes) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    """Fields of a form-encoded or multipart body, in order, and the uploaded files by field name."""
    if not content_type.startswith("multipart/form-data"):
        return parse_qsl(raw.decode(), keep_blank_values=True), {}
    header = Message()
    header["content-type"] = content_type
    boundary = str(header.get_param("boundary"))
    fields: list[tuple[str, str]] = []
    files: dict[str, bytes] = {}
    for chunk in raw.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part = Message()
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            part[name.strip()] = value.strip()
        body = body.removesuffix(b"\r\n")
        field_name = str(part.get_param("name", header="content-disposition"))
        if part.get_param("filename", header="content-disposition") is not None:
            files[field_name] = body
        else:
            fields.append((field_name, body.decode()))
    return fields, files


# ---- recorded calls and scripted outcomes ----


@dataclass(frozen=True, slots=True)
class TelegramCall:
    """One Bot API call as the server saw it."""

    token: str
    method: str  # as sent, e.g. "sendMessage"
    params: Mapping[str, Any]  # form fields are strings, as sent; a JSON body keeps its types
    received_at: float
    files: Mapping[str, bytes] = field(default_factory=dict)  # multipart uploads by field name
    content_type: str = ""  # the request's Content-Type, without parameters

    def arg(self, name: str, default: Any = None) -> Any:
        """Parameter ``name`` decoded from JSON where it is JSON text: ``"42"`` -> 42, ``'["message"]'`` -> a list."""
        value = self.params.get(name, default)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value


@dataclass(frozen=True, slots=True)
class Ok:
    """Answer ``{"ok": true, "result": result}``; ``result=None`` gives the method's usual result."""

    result: Any = None
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ApiError:
    """Answer HTTP ``error_code`` with Telegram's error body."""

    error_code: int
    description: str
    parameters: Mapping[str, Any] | None = None


TelegramOutcome = Ok | ApiError | Hang | Drop
Responder = Callable[[TelegramCall], TelegramOutcome | None]


def retry_after(seconds: int) -> ApiError:
    """Flood control: PTB raises ``RetryAfter`` with ``retry_after`` = ``seconds``."""
    return ApiError(429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds})


def blocked_by_user() -> ApiError:
    """The user blocked the bot: PTB raises ``Forbidden``."""
    return ApiError(403, "Forbidden: bot was blocked by the user")


def chat_migrated(new_chat_id: int) -> ApiError:
    """The group became a supergroup: PTB raises ``ChatMigrated`` with ``new_chat_id``."""
    return ApiError(
        400, "Bad Request: group chat was upgraded to a supergroup chat", {"migrate_to_chat_id": new_chat_id}
    )


def bad_request(description: str) -> ApiError:
    """A 400 ``Bad Request: <description>``: PTB raises ``BadRequest``."""
    return ApiError(400, f"Bad Request: {description}")


@dataclass(frozen=True, slots=True)
class WebhookState:
    """What setWebhook stored; ``secret_token`` is kept here but, as on Telegram, not in getWebhookInfo."""

    url: str = ""
    secret_token: str | None = None
    allowed_updates: list[str] | None = None
    max_connections: int = 40
    ip_address: str | None = None
    drop_pending_updates: bool = False


_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


class FakeTelegramServer(LocalServer):
    """The Bot API on 127.0.0.1. With ``token`` set, other tokens get 401 (PTB: ``InvalidToken``).

    A call's outcome: the next one scripted for its method, else ``respond_with``'s answer, else
    the method's usual result (getMe, sendMessage, editMessageText, sendChatAction, the webhook
    methods, getFile, getUpdates; ``true`` for any other method).
    """

    def __init__(self, *, token: str | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(
            [
                Route("/bot{token}/{method}", self._api, methods=["GET", "POST"]),
                Route("/file/bot{token}/{file_path:path}", self._file, methods=["GET"]),
            ],
            host=host,
            name="fake-telegram",
        )
        self.token = token
        self._lock = threading.Lock()
        self._calls: list[TelegramCall] = []
        self._scripts: dict[str, deque[TelegramOutcome]] = {}
        self._responder: Responder | None = None
        self._webhook = WebhookState()
        self._files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, content)
        self._message_ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """For ``Bot(base_url=...)`` / ``ApplicationBuilder().base_url(...)``: PTB appends the token."""
        return self.root_url + "/bot"

    @property
    def base_file_url(self) -> str:
        """For ``base_file_url``: downloads of files registered with ``add_file``."""
        return self.root_url + "/file/bot"

    @property
    def calls(self) -> list[TelegramCall]:
        """Every call so far, oldest first (failed ones too)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[TelegramCall]:
        """The calls of one method (case-insensitive, as Telegram's method names are)."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def sent_texts(self, chat_id: int | str | None = None) -> list[str]:
        """``text`` of every sendMessage call (to ``chat_id`` only, if given), oldest first."""
        return [
            str(c.params.get("text"))
            for c in self.calls_to("sendMessage")
            if chat_id is None or str(c.params.get("chat_id")) == str(chat_id)
        ]

    @property
    def webhook(self) -> WebhookState:
        """The webhook as last set (secret token included)."""
        with self._lock:
            return self._webhook

    def script(self, method: str, *outcomes: TelegramOutcome) -> None:
        """Queue outcomes for the next calls of ``method``, one each."""
        with self._lock:
            self._scripts.setdefault(method.lower(), deque()).extend(outcomes)

    def respond_with(self, responder: Responder | None) -> None:
        """Decide unscripted calls with ``responder`` (returning None: the usual result); runs in the server thread."""
        self._responder = responder

    def add_file(self, file_id: str, content: bytes, *, file_path: str | None = None) -> str:
        """Make ``file_id`` known to getFile and downloadable; returns its ``file_path``."""
        path = file_path or f"documents/{file_id}"
        with self._lock:
            self._files[file_id] = (path, content)
        return path

    def reset(self) -> None:
        """Forget calls, scripts, the responder, the webhook and files; message ids start again at 1."""
        with self._lock:
            self._calls.clear()
            self._scripts.clear()
            self._webhook = WebhookState()
            self._files.clear()
            self._message_ids = itertools.count(1)
        self._responder = None

    async def _api(self, request: Request) -> Response:
        token, method = request.path_params["token"], request.path_params["method"]
        params: dict[str, Any] = dict(request.query_params)
        files: dict[str, bytes] = {}
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            body = json.loads(raw) if raw else {}
            params.update(body if isinstance(body, dict) else {})
        elif raw:
            fields, files = parse_form(content_type, raw)
            params.update(fields)
        call = TelegramCall(token, method, params, time.monotonic(), files, content_type.partition(";")[0].strip())
        outcome: TelegramOutcome | None = None
        with self._lock:
            self._calls.append(call)
            if self.token is not None and token != self.token:
                outcome = ApiError(401, "Unauthorized")  # before the script, which it leaves alone
            elif queue := self._scripts.get(method.lower()):
                outcome = queue.popleft()
        if outcome is None and self._responder is not None:
            outcome = self._responder(call)
        if outcome is None:
            outcome = Ok()
        match outcome:
            case Ok(result=result, delay_s=delay_s):
                if result is None:
                    answer = self._result(call)
                    if isinstance(answer, ApiError):
                        return _error(answer)
                    result = answer
                return _Delayed(delay_s, JSONResponse({"ok": True, "result": result}))
            case ApiError():
                return _error(outcome)
            case Hang() | Drop():
                return self._stall(outcome)
        raise TypeError(f"not an outcome: {outcome!r}")

    async def _file(self, request: Request) -> Response:
        wanted = request.path_params["file_path"]
        with self._lock:
            found = [content for path, content in self._files.values() if path == wanted]
        if not found:
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, 404)
        return Response(found[0], media_type="application/octet-stream")

    def _result(self, call: TelegramCall) -> Any:
        """The usual result of ``call``, or the ApiError Telegram would give."""
        match call.method.lower():
            case "getme":
                return bot_user(call.token) | {
                    "can_join_groups": True,
                    "can_read_all_group_messages": False,
                    "supports_inline_queries": False,
                    "can_connect_to_business": False,
                    "has_main_web_app": False,
                }
            case "sendmessage":
                text = str(call.params.get("text", ""))
                if not text.strip():
                    return bad_request("message text is empty")
                # Telegram counts the length after entity parsing; with a parse_mode the markup is not counted here.
                if call.params.get("parse_mode") is None and len(text) > TEXT_LIMIT:
                    return bad_request("message is too long")
                return self._message(call, next(self._message_ids), text)
            case "editmessagetext":
                message_id = int(call.arg("message_id", 0))
                return self._message(call, message_id, str(call.params.get("text", "")), edit_date=int(time.time()))
            case "sendchataction" | "deletemessage" | "close" | "logout":
                return True
            case "setwebhook":
                return self._set_webhook(call)
            case "deletewebhook":
                with self._lock:
                    self._webhook = WebhookState()
                return True
            case "getwebhookinfo":
                return self._webhook_info()
            case "getupdates":
                return []
            case "getfile":
                file_id = str(call.params.get("file_id", ""))
                with self._lock:
                    known = self._files.get(file_id)
                if known is None:
                    return bad_request("invalid file_id")
                return {
                    "file_id": file_id,
                    "file_unique_id": f"u-{file_id}",
                    "file_size": len(known[1]),
                    "file_path": known[0],
                }
        return True

    def _message(self, call: TelegramCall, message_id: int, text: str, **extra: Any) -> dict[str, Any] | ApiError:
        chat = _chat_of(call.params.get("chat_id", ""))
        if chat is None:
            return bad_request("chat not found")
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": bot_user(call.token),
            "chat": chat,
            "date": int(time.time()),
            "text": text,
            **extra,
        }
        entities = call.arg("entities")
        if isinstance(entities, list):
            message["entities"] = entities
        return message

    def _set_webhook(self, call: TelegramCall) -> bool | ApiError:
        url = str(call.params.get("url", ""))
        secret = call.params.get("secret_token")
        if url and not url.startswith("https://"):
            return bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if secret is not None and not _SECRET_TOKEN.fullmatch(str(secret)):
            return bad_request("secret token contains unallowed characters")
        allowed = call.arg("allowed_updates")
        with self._lock:
            self._webhook = (
                WebhookState(
                    url=url,
                    secret_token=None if secret is None else str(secret),
                    allowed_updates=allowed if isinstance(allowed, list) else None,
                    max_connections=int(call.arg("max_connections", 40)),
                    ip_address=call.params.get("ip_address"),
                    drop_pending_updates=bool(call.arg("drop_pending_updates", False)),
                )
                if url
                else WebhookState()
            )
        return True

    def _webhook_info(self) -> dict[str, Any]:
        with self._lock:
            hook = self._webhook
        info: dict[str, Any] = {"url": hook.url, "has_custom_certificate": False, "pending_update_count": 0}
        if hook.url:
            info["max_connections"] = hook.max_connections
        if hook.ip_address:
            info["ip_address"] = hook.ip_address
        if hook.allowed_updates is not None:
            info["allowed_updates"] = hook.allowed_updates
        return info


def _error(error: ApiError) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": error.error_code, "description": error.description}
    if error.parameters:
        body["parameters"] = dict(error.parameters)
    return JSONResponse(body, error.error_code)


# ---- update JSON, as Telegram posts it to a webhook ----


def bot_user(token: str = TEST_TOKEN) -> dict[str, Any]:
    """The bot as a Telegram User; its id is the token's number before the colon."""
    prefix = token.partition(":")[0]
    return {
        "id": int(prefix) if prefix.isdigit() else BOT_ID,
        "is_bot": True,
        "first_name": BOT_FIRST_NAME,
        "username": BOT_USERNAME,
    }


def user(user_id: int, *, username: str | None = None, first_name: str | None = None) -> dict[str, Any]:
    """A human Telegram User."""
    found: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name or f"User{user_id}"}
    if username is not None:
        found["username"] = username
    found["language_code"] = "en"
    return found


def _chat_of(chat_id: Any) -> dict[str, Any] | None:
    """The Chat a bot's message to ``chat_id`` lands in, guessed from the id as Telegram numbers them."""
    text = str(chat_id)
    if text.startswith("@"):
        return {"id": -1001000000001, "type": "channel", "title": text[1:], "username": text[1:]}
    if not re.fullmatch(r"-?[1-9][0-9]*", text):
        return None
    number = int(text)
    if number > 0:
        return {"id": number, "type": "private", "first_name": f"User{number}"}
    if text.startswith("-100"):
        return {"id": number, "type": "supergroup", "title": "Test supergroup"}
    return {"id": number, "type": "group", "title": "Test group"}


def _chat(chat_id: int, chat_type: str, sender: Mapping[str, Any]) -> dict[str, Any]:
    if chat_type == "private":
        chat = {"id": chat_id, "first_name": sender["first_name"], "type": "private"}
        if "username" in sender:
            chat["username"] = sender["username"]
        return chat
    titles = {"group": "Test group", "supergroup": "Test supergroup", "channel": "Test channel"}
    return {"id": chat_id, "title": titles[chat_type], "type": chat_type}


def utf16_offset(text: str, index: int) -> int:
    """Telegram's entity offsets count UTF-16 code units."""
    return len(text[:index].encode("utf-16-le")) // 2


_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_MENTION = re.compile(r"(?<![\w@])@[A-Za-z0-9_]{4,32}\b")


def auto_entities(text: str) -> list[dict[str, Any]]:
    """The ``bot_command`` and ``mention`` entities Telegram would find in ``text`` (offsets in UTF-16)."""
    found = [("bot_command", m) for m in _COMMAND.finditer(text)] + [("mention", m) for m in _MENTION.finditer(text)]
    return [
        {
            "type": kind,
            "offset": utf16_offset(text, m.start()),
            "length": utf16_offset(text, m.end()) - utf16_offset(text, m.start()),
        }
        for kind, m in sorted(found, key=lambda pair: pair[1].start())
    ]


def _message(
    user_id: int,
    chat_id: int,
    *,
    message_id: int,
    chat_type: str = "private",
    username: str | None = None,
    date: int | None = None,
    **content: Any,
) -> dict[str, Any]:
    sender = user(user_id, username=username)
    return {
        "message_id": message_id,
        "from": sender,
        "chat": _chat(chat_id, chat_type, sender),
        "date": int(time.time()) if date is None else date,
        **content,
    }


def _update(update_id: int, message: dict[str, Any], kind: str = "message") -> dict[str, Any]:
    return {"update_id": update_id, kind: message}


def text_update(
    update_id: int,
    user_id: int,
    chat_id: int,
    text: str,
    *,
    chat_type: str = "private",
    username: str | None = None,
    reply_to_bot: bool = False,
    entities: list[dict[str, Any]] | None = None,
    message_id: int | None = None,
    date: int | None = None,
) -> dict[str, Any]:
    """A text message; ``entities=None`` finds commands and mentions as Telegram does, ``[]`` gives none."""
    message_id = update_id if message_id is None else message_id
    found = auto_entities(text) if entities is None else entities
    extra: dict[str, Any] = {"text": text}
    if found:
        extra["entities"] = found
    if reply_to_bot:
        extra["reply_to_message"] = {
            "message_id": message_id - 1 if message_id > 1 else message_id + 1_000_000,
            "from": bot_user(),
            "chat": _chat(chat_id, chat_type, user(user_id, username=username)),
            "date": int(time.time()) - 60 if date is None else date - 60,
            "text": "An earlier answer from the bot.",
        }
    message = _message(
        user_id, chat_id, message_id=message_id, chat_type=chat_type, username=username, date=date, **extra
    )
    return _update(update_id, message)


def _caption(caption: str | None) -> dict[str, Any]:
    return {} if caption is None else {"caption": caption}


def photo_update(
    update_id: int, user_id: int, chat_id: int, *, caption: str | None = None, chat_type: str = "private"
) -> dict[str, Any]:
    """A photo in three sizes, as Telegram sends one."""
    sizes = [
        {
            "file_id": f"AgACAgIAAxkBAAIB-photo-{update_id}-{i}",
            "file_unique_id": f"AQADphoto{update_id}{i}",
            "file_size": size,
            "width": width,
            "height": height,
        }
        for i, (width, height, size) in enumerate([(90, 68, 1432), (320, 240, 18211), (1280, 960, 120533)])
    ]
    message = _message(user_id, chat_id, message_id=update_id, chat_type=chat_type, photo=sizes, **_caption(caption))
    return _update(update_id, message)


def voice_update(
    update_id: int, user_id: int, chat_id: int, *, duration: int = 3, chat_type: str = "private"
) -> dict[str, Any]:
    """A voice note (OGG/Opus)."""
    voice = {
        "file_id": f"AwACAgIAAxkBAAIB-voice-{update_id}",
        "file_unique_id": f"AgADvoice{update_id}",
        "duration": duration,
        "mime_type": "audio/ogg",
        "file_size": 4000 * duration,
    }
    return _update(update_id, _message(user_id, chat_id, message_id=update_id, chat_type=chat_type, voice=voice))


def sticker_update(
    update_id: int, user_id: int, chat_id: int, *, emoji: str = "😀", chat_type: str = "private"
) -> dict[str, Any]:
    """A regular (static) sticker."""
    sticker = {
        "file_id": f"CAACAgIAAxkBAAIB-sticker-{update_id}",
        "file_unique_id": f"AgADsticker{update_id}",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": emoji,
        "set_name": "PennyTestStickers",
        "file_size": 23000,
    }
    message = _message(user_id, chat_id, message_id=update_id, chat_type=chat_type, sticker=sticker)
    return _update(update_id, message)


def location_update(
    update_id: int,
    user_id: int,
    chat_id: int,
    *,
    latitude: float = 52.520008,
    longitude: float = 13.404954,
    chat_type: str = "private",
) -> dict[str, Any]:
    """A shared (static) location."""
    location = {"latitude": latitude, "longitude": longitude}
    message = _message(user_id, chat_id, message_id=update_id, chat_type=chat_type, location=location)
    return _update(update_id, message)


def document_update(
    update_id: int,
    user_id: int,
    chat_id: int,
    *,
    file_name: str = "notes.pdf",
    mime_type: str = "application/pdf",
    file_size: int = 52_431,
    caption: str | None = None,
    chat_type: str = "private",
) -> dict[str, Any]:
    """A file sent as a document."""
    document = {
        "file_name": file_name,
        "mime_type": mime_type,
        "file_id": f"BQACAgIAAxkBAAIB-doc-{update_id}",
        "file_unique_id": f"AgADdoc{update_id}",
        "file_size": file_size,
    }
    message = _message(
        user_id, chat_id, message_id=update_id, chat_type=chat_type, document=document, **_caption(caption)
    )
    return _update(update_id, message)


def edited_message_update(
    update_id: int,
    user_id: int,
    chat_id: int,
    text: str,
    *,
    message_id: int,
    chat_type: str = "private",
    edit_date: int | None = None,
) -> dict[str, Any]:
    """An ``edited_message`` update: ``message_id`` is the message edited, ``text`` its new text."""
    now = int(time.time())
    message = _message(
        user_id,
        chat_id,
        message_id=message_id,
        chat_type=chat_type,
        date=now - 30,
        edit_date=now if edit_date is None else edit_date,
        text=text,
    )
    return _update(update_id, message, "edited_message")


def service_update(
    update_id: int,
    user_id: int,
    chat_id: int,
    *,
    chat_type: str = "group",
    new_chat_members: list[dict[str, Any]] | None = None,
    left_chat_member: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A service message (no text). With nothing given: the bot was added to a group by ``user_id``.

    Other service fields go in ``fields``, e.g. ``new_chat_title="Renamed"``, ``group_chat_created=True``.
    """
    content: dict[str, Any] = dict(fields)
    if new_chat_members is None and left_chat_member is None and not fields:
        new_chat_members = [bot_user()]
    if new_chat_members is not None:
        # Telegram still sends the old single-member fields beside the list.
        content |= {
            "new_chat_participant": new_chat_members[0],
            "new_chat_member": new_chat_members[0],
            "new_chat_members": new_chat_members,
        }
    if left_chat_member is not None:
        content |= {"left_chat_participant": left_chat_member, "left_chat_member": left_chat_member}
    message = _message(user_id, chat_id, message_id=update_id, chat_type=chat_type, **content)
    return _update(update_id, message)


def migrate_update(
    update_id: int, user_id: int, chat_id: int, new_chat_id: int, *, in_new_chat: bool = False
) -> dict[str, Any]:
    """A group upgraded to a supergroup: the old group's ``migrate_to_chat_id`` message, or with
    ``in_new_chat`` the supergroup's ``migrate_from_chat_id`` message (Telegram sends both)."""
    if in_new_chat:
        message = _message(user_id, new_chat_id, message_id=1, chat_type="supergroup", migrate_from_chat_id=chat_id)
    else:
        message = _message(user_id, chat_id, message_id=update_id, chat_type="group", migrate_to_chat_id=new_chat_id)
    return _update(update_id, message)


__all__ = [
    "BOT_ID",
    "BOT_USERNAME",
    "TEST_TOKEN",
    "ApiError",
    "Drop",
    "FakeTelegramServer",
    "Hang",
    "LocalServer",
    "Ok",
    "TelegramCall",
    "TelegramOutcome",
    "WebhookState",
    "auto_entities",
    "bad_request",
    "blocked_by_user",
    "bot_user",
    "chat_migrated",
    "document_update",
    "edited_message_update",
    "location_update",
    "migrate_update",
    "parse_form",
    "photo_update",
    "retry_after",
    "service_update",
    "sticker_update",
    "text_update",
    "user",
    "voice_update",
]
