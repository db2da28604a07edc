"""Hostile input against every endpoint of the real app (on uvicorn, with both channels, the admin API
and Postgres and Redis behind it): malformed JSON, wrong content types, oversized bodies, bad or
missing Telegram secret tokens and Twilio signatures, odd Unicode (lone surrogates, RTL overrides,
zero-width characters, NUL, 100k-character text), deep nesting and huge numbers. Never a 5xx; a clear
4xx where refused; the process stays up and still answers; no secret in any response or log line.

The channel corpus states the exact answer for each request. The generic corpus is sent to every
route the app has when the test runs (so an endpoint added later is probed too), with and without
the admin token."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route

from tests.bot.server_harness import PUBLIC, SECRET, channel_settings
from tests.drills.app_thread import AppInThread, Captured
from tests.drills.conftest import fresh_shared_stores
from tests.fakes.telegram_server import TEST_TOKEN, FakeTelegramServer, text_update
from tests.fakes.twilio_server import TEST_AUTH_TOKEN, FakeTwilioServer, sign, whatsapp_form

ADMIN = "adm-hostile-0123456789abcdef"
DB_PASSWORD = "pg-hostile-pass-98765"
SECRETS = (TEST_TOKEN, TEST_TOKEN.split(":")[1], SECRET, TEST_AUTH_TOKEN, ADMIN, DB_PASSWORD)
MAX_BODY = 1_000_000  # the default MAX_BODY_BYTES
BIG = b"a" * MAX_BODY
WA_URL = f"{PUBLIC}/webhook/whatsapp"
ODD = {
    "lone surrogate": "\ud800 and \udfff alone",
    "rtl override": "abc\u202edcba\u202c and \u2067isolate\u2069",
    "zero width": "zero\u200bwidth\u200d\ufeffjoiners\u2060",
    "nul": "before\x00after",
    "controls": "\x01\x02\x1b[31mred\x7f\x9f",
    "combining": "e" + "\u0301" * 500,
    "emoji zwj": "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "long": "word " * 20_000,  # 100k characters
    "private use and nonchar": "\ue000\uffff\U0010ffff",
}


@dataclass(frozen=True)
class Probe:
    """One request and the statuses it may get."""

    name: str
    method: str
    path: str
    expect: frozenset[int]
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reply_to: str | None = None  # a chat that must get a reply (an accepted message)


def _tg(update: Any, *, secret: str | None = SECRET, raw: bytes | None = None, **headers: str) -> dict[str, Any]:
    h = {"content-type": "application/json"} | headers
    if secret is not None:
        h["x-telegram-bot-api-secret-token"] = secret
    content = raw if raw is not None else json.dumps(update).encode()
    return {"content": content, "headers": h}


def _wa(form: dict[str, str] | None, *, raw: bytes | None = None, signature: str | None = None) -> dict[str, Any]:
    h = {"content-type": "application/x-www-form-urlencoded"}
    if form is not None:
        h["x-twilio-signature"] = sign(TEST_AUTH_TOKEN, WA_URL, form) if signature is None else signature
    elif signature is not None:
        h["x-twilio-signature"] = signature
    content = raw if raw is not None else urlencode(form or {}).encode()
    return {"content": content, "headers": h}


def _wa_raw(raw: bytes) -> dict[str, Any]:
    """A raw form body, signed over the fields as the app will read them."""
    form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    return _wa(form, raw=raw)


def _nested(depth: int) -> bytes:
    return b'{"update_id": 7, "x": ' + b"[" * depth + b"]" * depth + b"}"


def channel_corpus() -> list[Probe]:
    tg, wa = "/webhook/telegram", "/webhook/whatsapp"
    ok, bad, forbidden, large = frozenset({200}), frozenset({400}), frozenset({403}), frozenset({413})
    probes = [
        Probe("tg no secret", "POST", tg, forbidden, **_tg(text_update(1, 1, 1, "hi"), secret=None)),
        Probe("tg wrong secret", "POST", tg, forbidden, **_tg(text_update(2, 1, 1, "hi"), secret="nope")),
        Probe("tg secret prefix", "POST", tg, forbidden, **_tg(text_update(3, 1, 1, "hi"), secret=SECRET[:-1])),
        Probe("tg empty", "POST", tg, bad, **_tg(None, raw=b"")),
        Probe("tg truncated json", "POST", tg, bad, **_tg(None, raw=b'{"update_id": 4, "message": {')),
        Probe("tg not utf-8", "POST", tg, bad, **_tg(None, raw=b'{"update_id": 5, "x": "\xff\xfe"}')),
        Probe("tg array", "POST", tg, bad, **_tg([1, 2, 3])),
        Probe("tg null", "POST", tg, bad, **_tg(None, raw=b"null")),
        Probe("tg id as text", "POST", tg, bad, **_tg({"update_id": "6"})),
        Probe("tg deep nesting", "POST", tg, bad, **_tg(None, raw=_nested(200_000))),
        Probe("tg 5000-digit number", "POST", tg, bad, **_tg(None, raw=b'{"update_id": ' + b"9" * 5000 + b"}")),
        Probe("tg huge id, no message", "POST", tg, ok, **_tg({"update_id": 10**40})),
        Probe("tg 1e999", "POST", tg, bad, **_tg(None, raw=b'{"update_id": 8, "edited_message": 1e999}')),
        Probe("tg NaN", "POST", tg, bad, **_tg(None, raw=b'{"update_id": 9, "poll": NaN}')),
        Probe("tg message without chat", "POST", tg, bad | ok, **_tg({"update_id": 10, "message": {"text": "x"}})),
        Probe("tg form body", "POST", tg, bad, **_tg(None, raw=b"update_id=11", **{"content-type": "text/plain"})),
        Probe("tg oversized", "POST", tg, large, **_tg(None, raw=b'{"update_id": 12, "x": "' + BIG + b'"}')),
        Probe("wa no signature", "POST", wa, forbidden, **_wa(None, raw=urlencode(_form(1, "hi")).encode())),
        Probe("wa wrong signature", "POST", wa, forbidden, **_wa(_form(2, "hi"), signature="AAAA")),
        Probe("wa other url", "POST", wa, forbidden, **_wa(_form(3, "hi"), signature=_sign_elsewhere(_form(3, "hi")))),
        Probe("wa empty signed", "POST", wa, bad, **_wa({})),
        Probe("wa not utf-8", "POST", wa, bad, **_wa(None, raw=b"Body=\xff\xfe", signature="x")),
        Probe("wa not a form", "POST", wa, bad, **_wa(None, raw=b'{"Body": "hi"}', signature="x")),
        Probe("wa NumMedia text", "POST", wa, bad, **_wa(_form(4, "hi", NumMedia="many"))),
        Probe("wa NumMedia huge", "POST", wa, ok, **_wa(_form(5, "hi", NumMedia="9" * 50)), reply_to=_from(5)),
        Probe("wa oversized", "POST", wa, large, **_wa(_form(6, "a" * MAX_BODY))),
    ]
    for n, (name, text) in enumerate(ODD.items()):
        update = text_update(100 + n, 700 + n, 700 + n, text)
        probes.append(Probe(f"tg text {name}", "POST", tg, ok, **_tg(update), reply_to=f"tg:{700 + n}"))
        if name == "lone surrogate":  # not encodable in a form: its CESU-8 bytes, which decode to U+FFFD
            raw = urlencode(_form(100 + n, "SURROGATE")).replace("SURROGATE", "%ED%A0%80").encode()
            probe = _wa_raw(raw)
        else:  # "long" is 100k characters: Twilio's own limit is 1,600
            probe = _wa(_form(100 + n, text))
        probes.append(Probe(f"wa body {name}", "POST", wa, ok, **probe, reply_to=_from(100 + n)))
    # The same odd text as user and chat identifiers, where the platforms put numbers.
    weird = text_update(200, 1, 1, "hi")
    weird["message"]["chat"]["id"] = weird["message"]["from"]["id"] = 10**30
    probes.append(Probe("tg huge chat id", "POST", tg, ok, **_tg(weird)))
    probes.append(Probe("wa odd sender", "POST", wa, ok, **_wa(_form(200, "hi", From="whatsapp:\u202e\x00+1"))))
    return probes


def _form(n: int, body: str, **extra: str) -> dict[str, str]:
    return whatsapp_form(f"SM{n:032x}", f"+1555111{n:04d}", body, **extra)


def _from(n: int) -> str:
    return f"wa:whatsapp:+1555111{n:04d}"


def _sign_elsewhere(form: dict[str, str]) -> str:
    return sign(TEST_AUTH_TOKEN, "https://evil.example.com/webhook/whatsapp", form)


# Sent to every route of the app, with and without the admin token.
GENERIC: dict[str, dict[str, Any]] = {
    "truncated json": {"content": b'{"daily_usd": ', "headers": {"content-type": "application/json"}},
    "json with a lone surrogate": {"content": b'{"question": "\\ud800", "user_id": "a:\\udfff"}'},
    "json with NUL": {"content": b'{"question": "a\\u0000b", "user_id": "telegram:\\u0000"}'},
    "deep nesting": {"content": b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"},
    "huge numbers": {"content": b'{"daily_usd": 1e999, "monthly_usd": -1e-999, "daily_tokens": ' + b"9" * 5000 + b"}"},
    "big decimals": {"content": b'{"daily_usd": 0.0000000001, "monthly_usd": 1000000000.000000001}'},
    "wrong content type": {"content": b"<xml/>", "headers": {"content-type": "application/xml"}},
    "multipart junk": {"content": b"--x\r\n\r\n--", "headers": {"content-type": "multipart/form-data; boundary=x"}},
    "oversized": {"content": b'{"question": "' + b"q" * MAX_BODY + b'"}'},
    "infinite amount": {"content": b'{"daily_usd": 1e999}'},
    "huge exponents": {"content": b'{"daily_usd": 1e5000}'},
    "huge exponent tokens": {"content": b'{"daily_tokens": 1e5000, "monthly_tokens": 1.5e-5000}'},
    "NUL in query": {"query": "user_id=telegram:%00"},
    "odd unicode in query": {"query": "user_id=a:%E2%80%AEb%E2%80%8B&days=%ED%A0%80"},
    "huge numbers in query": {"query": "days=" + "9" * 5000},
    "repeated query": {"query": "days=1&days=2&user_id=a:b&user_id=c:d"},
    "odd path values": {"path_value": ["telegram:%00", "telegram:%ED%A0%80", "a:%E2%80%AEb", "a:" + "z" * 10_000]},
}


@dataclass
class Hostile:
    app: AppInThread
    http: httpx.Client
    logs: Captured
    tg: FakeTelegramServer
    tw: FakeTwilioServer


@pytest.fixture(scope="module")
def hostile(telegram_server_session: FakeTelegramServer, twilio_server_session: FakeTwilioServer) -> Iterator[Hostile]:
    telegram_server_session.reset()
    twilio_server_session.reset()
    with fresh_shared_stores() as stores, Captured() as logs:
        parts = urlsplit(stores.database_url)
        db_url = urlunsplit(parts._replace(netloc=parts.netloc.replace("@", f":{DB_PASSWORD}@", 1)))
        settings = channel_settings(
            telegram_server_session, twilio_server_session, database_url=db_url, redis_url=stores.redis_url,
            admin_api_token=ADMIN, max_body_bytes=MAX_BODY, rate_limit_per_minute=10_000,
        )  # fmt: skip
        with AppInThread(**settings) as app, httpx.Client(base_url=app.url, timeout=30) as http:
            yield Hostile(app, http, logs, telegram_server_session, twilio_server_session)


@pytest.mark.parametrize("probe", channel_corpus(), ids=lambda p: p.name)
def test_channel_corpus(hostile: Hostile, probe: Probe) -> None:
    r = hostile.http.request(probe.method, probe.path, content=probe.content, headers=probe.headers)
    assert r.status_code in probe.expect, (r.status_code, r.text[:300])
    _clear_and_clean(r)
    if probe.reply_to is not None:
        _wait_for_reply(hostile, probe.reply_to)


@pytest.mark.parametrize("kind", list(GENERIC))
@pytest.mark.parametrize("token", [True, False], ids=["admin token", "no token"])
def test_generic_corpus_on_every_route(hostile: Hostile, kind: str, token: bool) -> None:
    probe = GENERIC[kind]
    headers = {"content-type": "application/json"} | probe.get("headers", {})
    if token:
        headers["authorization"] = f"Bearer {ADMIN}"
    routes = dict(_routes(hostile.app.app.routes))
    assert {"/webhook/telegram", "/webhook/whatsapp", "/healthz", "/readyz", "/metrics", "/api/cost/analytics"} <= set(
        routes
    )
    failures = []
    for template, methods in routes.items():
        for method in [*sorted(methods - {"HEAD"}), "DELETE"]:
            for path in _paths(template, probe.get("path_value")):
                url = path + (f"?{probe['query']}" if "query" in probe else "")
                content = probe.get("content") if method in ("POST", "PUT", "PATCH") else None
                r = hostile.http.request(method, url, content=content, headers=headers)
                if r.status_code >= 500 or not _clean(r):
                    failures.append((method, url[:80], r.status_code, r.text[:200]))
                elif r.status_code >= 400 and not _clear(r):
                    failures.append((method, url[:80], r.status_code, "unclear: " + r.text[:200]))
    assert not failures, failures


def test_the_bot_survived_and_kept_every_secret(hostile: Hostile) -> None:
    h = hostile
    assert h.app.alive()
    assert h.http.get("/healthz").status_code == 200
    assert h.http.get("/readyz").status_code == 200, h.http.get("/readyz").text
    probe = _tg(text_update(9_999, 4242, 4242, "After all that, what is 2 + 2?"))
    assert h.http.post("/webhook/telegram", **probe).status_code == 200
    _wait_for_reply(h, "tg:4242")
    sent = "\n".join(h.tg.sent_texts()) + "\n".join(h.tw.sent_bodies())
    text = h.logs.text
    assert len(h.logs.records) > 20
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked into the logs: {secret[:4]}…"
        assert secret not in sent, f"a secret leaked into a reply: {secret[:4]}…"
    errors = [
        f"{r.name}: {r.getMessage()[:200]}"
        for r in h.logs.records
        if r.levelno >= logging.ERROR and r.name.startswith(("pennybot", "uvicorn.error"))
    ]
    assert not errors, errors  # nothing failed inside the bot (a 500, or a message failing in the background)


def _routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every route, through included routers (FastAPI 0.16x keeps them nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes, prefix + getattr(route.include_context, "prefix", ""))  # type: ignore[attr-defined]
        elif isinstance(route, Route) and route.methods:
            yield prefix + route.path, set(route.methods)
        elif isinstance(route, Mount):
            yield prefix + route.path, {"GET", "POST"}


def _paths(template: str, values: list[str] | None) -> list[str]:
    if "{" not in template:
        return [template]
    filled = values or ["telegram:123"]
    return [template.split("{")[0] + v + template.split("}", 1)[1] for v in filled]


def _clean(r: httpx.Response) -> bool:
    """No secret in the body or any header."""
    blob = r.text + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
    return not any(s in blob for s in SECRETS)


def _clear(r: httpx.Response) -> bool:
    """A refusal says why: a JSON object with ``error`` or ``detail``, or a page or text for people
    (the dashboard's login page)."""
    if r.headers.get("content-type", "").startswith(("text/html", "text/plain")):
        return bool(r.text.strip())
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body.get("error") or body.get("detail"))


def _clear_and_clean(r: httpx.Response) -> None:
    assert _clean(r), "a secret in the response"
    if r.status_code >= 400:
        assert _clear(r), r.text[:300]


def _wait_for_reply(h: Hostile, chat: str, timeout_s: float = 15.0) -> None:
    """An accepted message is answered (by text, whatever it says) and its inbox entry finished."""
    channel, _, chat_id = chat.partition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sent = h.tg.sent_texts(chat_id=chat_id) if channel == "tg" else h.tw.sent_bodies(to=chat_id)
        if sent:
            assert all(s.strip() for s in sent)
            return
        time.sleep(0.05)
    raise AssertionError(f"no reply reached {chat}")
