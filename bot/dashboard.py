"""``GET /dashboard``: the cost dashboard, for the holder of ADMIN_API_TOKEN.

A browser cannot send a bearer header by itself, so the page takes either the header or a
session cookie set by ``POST /dashboard/login``. The cookie holds an expiry and an HMAC over it,
keyed by a slow derivation of the token: never the token, and worthless once the token changes.
It is HttpOnly, SameSite=Strict, Path=/dashboard, and Secure when the request came over https.
A login or logout from another origin is refused (the Origin and Sec-Fetch-Site headers), and
failed logins are counted in the hot store, per client and in all, so N replicas share the count.
While ADMIN_API_TOKEN is unset the dashboard is off, as the cost API is.

The page and its files carry a strict Content-Security-Policy; its charts are drawn by
``bot/static/dashboard.js`` from the figures embedded in the page, with nothing fetched from
elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import struct
import zlib
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from bot.api import admin_token, bearer_matches
from bot.dashboard_figures import figures
from bot.dashboard_html import dashboard_page, login_page
from bot.turn import Deps

if TYPE_CHECKING:
    from bot.server import Runtime

log = logging.getLogger("pennybot.dashboard")

PATH = "/dashboard"
COOKIE = "pb_dashboard"
SESSION_S = 12 * 3600
FAILS_PER_CLIENT = 5  # failed logins per client address in one window
FAILS_IN_ALL = 50  # from every address together: a slow, spread-out guess meets this one
FAIL_WINDOW_S = 15 * 60
MAX_FORM_BYTES = 4096
KDF_ROUNDS = 100_000
OFF = "The dashboard is off: set ADMIN_API_TOKEN to turn it on."
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make a form's Origin "null"
    "X-Frame-Options": "DENY",
}
STATIC_TYPES = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}


@lru_cache(maxsize=4)
def _session_key(token: str) -> bytes:
    # Slow on purpose: a stolen cookie must not be a cheap way to guess a weak token offline.
    return hashlib.pbkdf2_hmac("sha256", token.encode(), b"pennybot-dashboard-session", KDF_ROUNDS)


def session_value(token: str, expires: int) -> str:
    """The cookie's value: ``<expiry>.<HMAC of it under a key derived from the token>``."""
    mac = hmac.new(_session_key(token), f"dashboard-session:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def valid_session(token: str, value: str, now: float) -> bool:
    """Whether a cookie was made with this token and has not expired."""
    expires, _, _ = value.partition(".")
    if not expires.isdigit() or len(expires) > 12 or int(expires) <= now:
        return False
    return hmac.compare_digest(session_value(token, int(expires)).encode(), value.encode())


def same_origin(request: Request, public_base_url: str | None) -> bool:
    """A POST from our own page: browsers send Origin (and Sec-Fetch-Site) on every POST, so a
    form on another site is refused; a client without them (curl) is no cross-site attack."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    allowed = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    if public_base_url:
        public = urlsplit(public_base_url)
        allowed.add(f"{public.scheme}://{public.netloc}".lower())
    return origin.lower() in allowed


def _page(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status, headers={**SECURITY_HEADERS, "Cache-Control": "no-store", **(headers or {})})


def _fail_keys(client: str, slot: int) -> list[str]:
    return [f"pb:{{dashboard}}:login_failed:{client}:{slot}", f"pb:{{dashboard}}:login_failed:*:{slot}"]


def favicon() -> bytes:
    """A 32x32 ICO (a PNG inside): a copper coin, drawn here so no binary file is shipped."""
    size, rows = 32, []
    for y in range(size):
        row = bytearray(b"\x00")  # PNG filter: none
        for x in range(size):
            r = math.hypot(x - 15.5, y - 15.5)
            rgba = (0, 0, 0, 0) if r > 15 else (146, 84, 26, 255) if r > 12.5 else (214, 140, 62, 255)
            if r <= 12.5 and abs(x - 15.5) < 2 and 6 < y < 26:
                rgba = (146, 84, 26, 255)
            row += bytes(rgba)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(png), 22) + png


def dashboard_router(runtime: Runtime) -> APIRouter:
    """The page, its login and logout, its two static files and /favicon.ico."""
    deps: Deps = runtime.built.deps
    settings = runtime.settings
    router = APIRouter(include_in_schema=False)
    static = {name: resources.files("bot").joinpath("static", name).read_bytes() for name in STATIC_TYPES}
    icon = favicon()

    def token() -> str:
        return admin_token(settings)

    @router.get(PATH)
    async def dashboard(request: Request, days: Annotated[int, Query(ge=1, le=366)] = 30) -> Response:
        secret = token()
        if not secret:
            return _page(login_page(OFF, form=False), 401)
        header = request.headers.get("authorization")
        if header is not None:
            if not bearer_matches(header, secret):
                return _page(login_page("Wrong bearer token."), 401, {"WWW-Authenticate": "Bearer"})
        else:
            cookie = request.cookies.get(COOKIE)
            if cookie is None or not valid_session(secret, cookie, deps.clock().timestamp()):
                page = _page(login_page("The session has ended: log in again." if cookie else ""))
                if cookie is not None:
                    page.delete_cookie(COOKIE, path=PATH)
                return page
        try:
            data = await figures(deps, days, deps.clock())
        except Exception as error:
            log.warning("dashboard figures unavailable (%s)", type(error).__name__)
            return _page(login_page("The stores did not answer; try again shortly.", form=False), 503)
        return _page(dashboard_page(data))

    @router.post(f"{PATH}/login")
    async def login(request: Request) -> Response:
        secret = token()
        if not secret:
            return _page(login_page(OFF, form=False), 401)
        if not same_origin(request, settings.public_base_url):
            return _page(login_page("Refused: the form was not sent from this site."), 403)
        now = deps.clock().timestamp()
        slot = int(now // FAIL_WINDOW_S)
        client = request.client.host if request.client else "unknown"
        keys = _fail_keys(client, slot)
        try:
            per_client, in_all = await deps.hot.get_counters(keys)
        except Exception as error:  # no count, no guessing: refuse rather than let it through
            log.warning("dashboard login refused: failed-login counts unavailable (%s)", type(error).__name__)
            return _page(login_page("Cannot check login attempts now; try again shortly."), 503)
        if (per_client or 0) >= FAILS_PER_CLIENT or (in_all or 0) >= FAILS_IN_ALL:
            wait = math.ceil((slot + 1) * FAIL_WINDOW_S - now)
            return _page(login_page(f"Too many failed logins: try again in {wait} s."), 429, {"Retry-After": str(wait)})
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return _page(login_page("The form is too large."), 413)
        try:
            form = dict(parse_qsl(body.decode("utf-8"), max_num_fields=8))
        except (UnicodeDecodeError, ValueError):
            form = {}
        if not hmac.compare_digest(form.get("token", "").strip().encode(), secret.encode()):
            for key in keys:
                await deps.hot.seed_counter(key, 0, FAIL_WINDOW_S * 2)
                await deps.hot.incr(key)
            log.warning("dashboard login failed from %s", client)
            return _page(login_page("Wrong token."), 401)
        expires = int(now) + SESSION_S
        done = RedirectResponse(PATH, status_code=303, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
        done.set_cookie(
            COOKIE, session_value(secret, expires), max_age=SESSION_S, path=PATH,
            secure=request.url.scheme == "https", httponly=True, samesite="strict",
        )  # fmt: skip
        return done

    @router.post(f"{PATH}/logout")
    async def logout(request: Request) -> Response:
        if not same_origin(request, settings.public_base_url):
            return _page(login_page("Refused: the form was not sent from this site."), 403)
        done = RedirectResponse(PATH, status_code=303, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
        done.delete_cookie(COOKIE, path=PATH, secure=request.url.scheme == "https", httponly=True, samesite="strict")
        return done

    @router.get(PATH + "/static/{name}")
    async def asset(name: str) -> Response:
        if name not in static:
            return Response("not found", 404, media_type="text/plain")
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return Response(static[name], media_type=STATIC_TYPES[name], headers=headers)

    @router.get("/favicon.ico")
    async def favicon_ico() -> Response:
        return Response(icon, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"})

    return router
