"""A real local HTTP server speaking Twilio's Messages API as the twilio 9 SDK sends it.

``POST /2010-04-01/Accounts/<SID>/Messages.json``, form-encoded (``From``, ``To``, ``Body``...),
HTTP Basic auth with the account SID and auth token. Every request is recorded; outcomes are
scripted as in tests/fakes/llm_servers.py::

    with FakeTwilioServer() as server:
        server.script(too_many_requests())
        client = Client(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        client.api.base_url = server.base_url
        ...
        assert server.sent_bodies() == ["hi"]

``whatsapp_form`` and ``sign`` build what Twilio posts to a WhatsApp webhook, signed as Twilio does.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from tests.fakes.llm_servers import Drop, Hang, _Delayed
from tests.fakes.telegram_server import LocalServer, parse_form

# Shaped like real credentials: "AC" + 32 hex digits, and 32 hex digits.
TEST_ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
TEST_AUTH_TOKEN = "fedcba9876543210fedcba9876543210"
WHATSAPP_SANDBOX = "whatsapp:+14155238886"
SIGNATURE_HEADER = "X-Twilio-Signature"
API_VERSION = "2010-04-01"
BODY_LIMIT = 1600

_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


@dataclass(frozen=True, slots=True)
class TwilioCall:
    """One request as the server saw it."""

    method: str
    path: str
    path_account_sid: str | None  # the SID in the URL
    auth_user: str | None  # the Basic-auth user name (the account SID the client used)
    form: Mapping[str, str]  # the form fields (the first value of a repeated one)
    fields: tuple[tuple[str, str], ...]  # every form field in order, repeats included (MediaUrl)
    headers: Mapping[str, str]  # lower-case names
    received_at: float


@dataclass(frozen=True, slots=True)
class Ok:
    """Answer 201 with a Message resource; ``overrides`` are set over its fields (e.g. ``status``)."""

    delay_s: float = 0.0
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TwilioError:
    """Answer HTTP ``status`` with Twilio's error JSON (``code``, ``message``, ``more_info``, ``status``)."""

    status: int
    code: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


TwilioOutcome = Ok | TwilioError | Hang | Drop
Responder = Callable[[TwilioCall], TwilioOutcome | None]


def too_many_requests() -> TwilioError:
    """A 429 (Twilio error 20429); the SDK raises ``TwilioRestException`` with status 429 and does not retry."""
    return TwilioError(429, 20429, "Too Many Requests")


def server_error(status: int = 500) -> TwilioError:
    """A 5xx with Twilio's error code for it (20500 Internal Server Error, 20503 Service Unavailable)."""
    messages = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    return TwilioError(status, 20000 + status, messages.get(status, "Server Error"))


def _now_rfc2822() -> str:
    return datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def num_segments(body: str, to: str) -> int:
    """How many segments Twilio bills: 1 on WhatsApp; SMS splits GSM-7 at 153 (160 alone), UCS-2 at 67 (70)."""
    if to.startswith("whatsapp:") or not body:
        return 1
    if set(body) <= _GSM7:
        return 1 if len(body) <= 160 else math.ceil(len(body) / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


class FakeTwilioServer(LocalServer):
    """Twilio's REST API on 127.0.0.1: creating Messages, with Twilio's auth and validation errors.

    A request's outcome: 401 if its Basic auth is not this server's SID and token, else the next
    scripted outcome, else ``respond_with``'s answer, else the usual one (a 400 for a message
    Twilio would refuse, or 201 with a queued Message).
    """

    def __init__(
        self, *, account_sid: str = TEST_ACCOUNT_SID, auth_token: str = TEST_AUTH_TOKEN, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(
            [
                Route(f"/{API_VERSION}/Accounts/{{sid}}/Messages.json", self._messages, methods=["POST"]),
                Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            ],
            host=host,
            name="fake-twilio",
        )
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._lock = threading.Lock()
        self._calls: list[TwilioCall] = []
        self._script: deque[TwilioOutcome] = deque()
        self._responder: Responder | None = None
        self._sids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """For ``client.api.base_url`` (the SDK adds ``/2010-04-01/Accounts/...``)."""
        return self.root_url

    @property
    def requests(self) -> list[TwilioCall]:
        """Every request so far, oldest first (refused ones too)."""
        with self._lock:
            return list(self._calls)

    def sent_bodies(self, to: str | None = None) -> list[str]:
        """``Body`` of every Messages.json POST (to ``to`` only, if given), oldest first."""
        return [
            c.form.get("Body", "")
            for c in self.requests
            if c.path.endswith("/Messages.json") and (to is None or c.form.get("To") == to)
        ]

    def script(self, *outcomes: TwilioOutcome) -> None:
        """Queue outcomes for the next authenticated requests, one each."""
        with self._lock:
            self._script.extend(outcomes)

    def respond_with(self, responder: Responder | None) -> None:
        """Decide unscripted requests with ``responder`` (None: the usual outcome); runs in the server thread."""
        self._responder = responder

    def reset(self) -> None:
        """Forget recorded requests, queued outcomes and the responder; message SIDs start again."""
        with self._lock:
            self._calls.clear()
            self._script.clear()
            self._sids = itertools.count(1)
        self._responder = None

    async def _record(self, request: Request) -> TwilioCall:
        raw = await request.body()
        fields, _ = parse_form(request.headers.get("content-type", ""), raw) if raw else ([], {})
        form: dict[str, str] = {}
        for name, value in fields:
            form.setdefault(name, value)
        call = TwilioCall(
            request.method,
            request.url.path,
            request.path_params.get("sid"),
            _basic_user_and_password(request.headers.get("authorization"))[0],
            form,
            tuple(fields),
            dict(request.headers),
            time.monotonic(),
        )
        with self._lock:
            self._calls.append(call)
        return call

    async def _not_found(self, request: Request) -> Response:
        await self._record(request)
        return _error(TwilioError(404, 20404, f"The requested resource {request.url.path} was not found"))

    async def _messages(self, request: Request) -> Response:
        call = await self._record(request)
        user, password = _basic_user_and_password(request.headers.get("authorization"))
        if (user, password) != (self.account_sid, self.auth_token) or call.path_account_sid != self.account_sid:
            return _error(TwilioError(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}))
        with self._lock:
            outcome: TwilioOutcome | None = self._script.popleft() if self._script else None
        if outcome is None and self._responder is not None:
            outcome = self._responder(call)
        if outcome is None:
            outcome = Ok()
        match outcome:
            case Ok(delay_s=delay_s, overrides=overrides):
                refused = _refusal(call)
                if refused is not None:
                    return _error(refused)
                return _Delayed(delay_s, JSONResponse(self._message(call) | dict(overrides), 201))
            case TwilioError():
                return _error(outcome)
            case Hang() | Drop():
                return self._stall(outcome)
        raise TypeError(f"not an outcome: {outcome!r}")

    def _message(self, call: TwilioCall) -> dict[str, Any]:
        sid = f"SM{next(self._sids):032x}"
        form = call.form
        account = self.account_sid
        body = form.get("Body", "")
        to = form.get("To", "")
        now = _now_rfc2822()
        media = [value for name, value in call.fields if name == "MediaUrl"]
        return {
            "account_sid": account,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": str(len(media)),
            "num_segments": str(num_segments(body, to)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if form.get("From") else "accepted",
            "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media.json"},
            "to": to,
            "uri": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json",
        }


def _refusal(call: TwilioCall) -> TwilioError | None:
    """The 400 Twilio gives a message it will not send, if any."""
    form = call.form
    to, from_ = form.get("To", ""), form.get("From", "")
    if not to:
        return TwilioError(400, 21604, "A 'To' phone number is required.")
    if not from_ and not form.get("MessagingServiceSid"):
        return TwilioError(400, 21603, "A 'From' phone number is required.")
    if not (form.get("Body") or form.get("MediaUrl") or form.get("ContentSid")):
        return TwilioError(400, 21602, "Message body is required.")
    if from_ and to.startswith("whatsapp:") != from_.startswith("whatsapp:"):
        return TwilioError(400, 21910, "Invalid From and To pair. From and To should be of the same channel")
    if len(form.get("Body", "")) > BODY_LIMIT:
        return TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    return None


def _error(error: TwilioError) -> JSONResponse:
    body = {
        "code": error.code,
        "message": error.message,
        "more_info": f"https://www.twilio.com/docs/errors/{error.code}",
        "status": error.status,
    }
    return JSONResponse(body, error.status, dict(error.headers))


def _basic_user_and_password(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, _, password = decoded.partition(":")
    return user, password


# ---- inbound WhatsApp webhooks ----


def _media_kind(media_type: str) -> str:
    kind = media_type.partition("/")[0]
    return kind if kind in ("image", "audio", "video") else "document"


def whatsapp_form(
    message_sid: str,
    from_number: str,
    body: str,
    *,
    num_media: int = 0,
    media_type: str | None = None,
    profile_name: str = "Test User",
    to: str = WHATSAPP_SANDBOX,
    account_sid: str = TEST_ACCOUNT_SID,
    **extra: str,
) -> dict[str, str]:
    """The form fields Twilio posts to a WhatsApp webhook for one inbound message.

    ``from_number`` may be ``+15551234567`` or ``whatsapp:+15551234567``. ``extra`` adds or replaces
    fields, e.g. ``Latitude``/``Longitude`` with ``MessageType="location"``.
    """
    sender = from_number if from_number.startswith("whatsapp:") else f"whatsapp:{from_number}"
    kind = "text" if num_media == 0 else _media_kind(media_type or "image/jpeg")
    form = {
        "SmsMessageSid": message_sid,
        "NumMedia": str(num_media),
        "ProfileName": profile_name,
        "MessageType": kind,
        "SmsSid": message_sid,
        "WaId": sender.removeprefix("whatsapp:").lstrip("+"),
        "SmsStatus": "received",
        "Body": body,
        "To": to,
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": message_sid,
        "AccountSid": account_sid,
        "From": sender,
        "ApiVersion": API_VERSION,
    }
    for i in range(num_media):
        form[f"MediaContentType{i}"] = media_type or "image/jpeg"
        form[f"MediaUrl{i}"] = (
            f"https://api.twilio.com/{API_VERSION}/Accounts/{account_sid}/Messages/{message_sid}/Media/ME{i:032x}"
        )
    return form | extra


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` Twilio sends with a webhook POST of ``params`` to ``url``."""
    signature: str = RequestValidator(auth_token).compute_signature(url, dict(params))
    return signature


__all__ = [
    "SIGNATURE_HEADER",
    "TEST_ACCOUNT_SID",
    "TEST_AUTH_TOKEN",
    "WHATSAPP_SANDBOX",
    "Drop",
    "FakeTwilioServer",
    "Hang",
    "Ok",
    "TwilioCall",
    "TwilioError",
    "TwilioOutcome",
    "num_segments",
    "server_error",
    "sign",
    "too_many_requests",
    "whatsapp_form",
]
