"""The HTTP app: webhooks for Telegram and WhatsApp, health and readiness.

Order on a webhook: size limit (413), authentication (403), parsing (400), the inbox (stored
before the 200 goes out), then the work in the background.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot import metrics
from bot.api import cost_router
from bot.channels import telegram as tg
from bot.channels import whatsapp as wa
from bot.dashboard import dashboard_router
from bot.dispatch import Dispatcher
from bot.factory import Built, build, close
from bot.jobs import Scheduler
from bot.logs import protect, secrets_of
from bot.metrics import metrics_router
from bot.pipeline import Pipeline
from bot.settings import Settings
from bot.usage import UsageRecorder

log = logging.getLogger("pennybot.server")


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, with or without Content-Length: the body
    is read here first (webhook bodies are small) and replayed to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _too_large(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _too_large(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class AsciiJSONResponse(JSONResponse):
    """JSON escaped to ASCII. A validation error echoes the input, and JSON text may carry a lone
    surrogate (``"\\ud800"``) that UTF-8 cannot encode: FastAPI's own 422 then fails with a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


async def _invalid(_: Request, error: Exception) -> Response:
    """The 422 of a request that failed validation, for any input. Decimals echo as their text: as
    numbers, ``1e5000`` became a 5,001-digit int that json refuses to write (a 500)."""
    assert isinstance(error, RequestValidationError)
    detail = jsonable_encoder(error.errors(), custom_encoder={Decimal: str})
    return AsciiJSONResponse({"detail": detail}, status_code=422)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


async def _http_error(request: Request, error: Exception) -> Response:
    """FastAPI's answer, except that a 405's ``Allow`` names the methods of every route of the path
    (Starlette names only those of the first: ``GET`` for a path that takes ``PUT`` too)."""
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 405:
        routes = request.app.router.routes
        allowed = [
            method
            for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
        ]
        error.headers = {**(error.headers or {}), "Allow": ", ".join(allowed)}
    return await http_exception_handler(request, error)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"error": "request body too large"}, status_code=413)(scope, receive, send)


def _store_down(error: Exception) -> Response:
    """The inbox cannot store the message: 503, so the platform delivers it again later."""
    log.warning("inbox unreachable (%s): webhook refused with 503 for redelivery", type(error).__name__)
    return JSONResponse({"error": "temporarily unavailable"}, status_code=503, headers={"Retry-After": "5"})


@dataclass
class Runtime:
    """What the app holds while it runs."""

    settings: Settings
    built: Built
    dispatcher: Dispatcher
    telegram: Any = None  # telegram.ext.Application when the channel is on
    validator: Any = None  # twilio RequestValidator when WhatsApp is on
    channels: list[str] = field(default_factory=list)


def _telegram(settings: Settings, runtime: Runtime) -> None:
    from telegram import Update
    from telegram.ext import Application, TypeHandler

    assert settings.telegram_bot_token is not None
    app = (
        Application.builder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(settings.telegram_api_base_url)
        .updater(None)
        .build()
    )

    async def on_update(update: Update, _: Any) -> None:
        inbound = tg.inbound_of(update, app.bot.id, app.bot.username, settings.telegram_group_mode)
        if inbound is not None:
            await runtime.dispatcher.run(inbound)

    app.add_handler(TypeHandler(Update, on_update))
    runtime.telegram = app
    runtime.dispatcher.repliers["telegram"] = tg.TelegramReplier(app.bot, runtime.built.deps.db)
    runtime.channels.append("telegram")


def _whatsapp(settings: Settings, runtime: Runtime) -> None:
    from twilio.request_validator import RequestValidator

    assert settings.twilio_auth_token is not None
    runtime.validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    runtime.channels.append("whatsapp")


def _whatsapp_replier(settings: Settings, runtime: Runtime) -> None:
    """Twilio's async HTTP client must be built inside the running event loop."""
    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_whatsapp_from
    token = settings.twilio_auth_token.get_secret_value()
    client = wa.twilio_client(settings.twilio_account_sid, token, settings.twilio_api_base_url)
    deps = runtime.built.deps
    runtime.dispatcher.repliers["whatsapp"] = wa.WhatsAppReplier(
        client, settings.twilio_whatsapp_from, deps.db, settings.twilio_price_per_message, deps.clock
    )


def create_app(settings: Settings, built: Built | None = None) -> FastAPI:
    """The ASGI app. ``built`` lets tests hand in services built with their own clock."""
    protect(secrets_of(settings))
    built = built or build(settings)
    runtime = Runtime(settings, built, Dispatcher(Pipeline(built.deps), {}, built.deps.journal))
    if settings.telegram_on:
        _telegram(settings, runtime)
    if settings.whatsapp_on:
        _whatsapp(settings, runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await built.deps.db.migrate()
        if runtime.telegram is not None:
            await runtime.telegram.initialize()  # getMe: the bot's id and username for groups
        if runtime.validator is not None:
            _whatsapp_replier(settings, runtime)
        resumed = await runtime.dispatcher.resume()
        sweeper = asyncio.create_task(runtime.dispatcher.sweep(settings.inbox_sweep_s))
        usage = UsageRecorder(built.deps.db, built.deps.clock)
        metering = asyncio.create_task(usage.run())
        jobs = Scheduler.from_deps(built.deps, runtime.telegram.bot if runtime.telegram is not None else None)
        jobs.start()
        log.warning(
            "pennybot serving: channels %s; provider %s; %d unfinished messages resumed",
            ", ".join(runtime.channels) or "none (set TELEGRAM_BOT_TOKEN or TWILIO_* to turn one on)",
            "simulated (no API key set)" if built.simulated else ", ".join(settings.providers_on),
            resumed,
        )
        try:
            yield
        finally:
            sweeper.cancel()
            metering.cancel()
            await jobs.shutdown(settings.shutdown_grace_s)
            left = await runtime.dispatcher.drain(settings.shutdown_grace_s)
            if left:
                log.warning("%d messages still running at shutdown; they finish after the restart", left)
            if runtime.telegram is not None:
                await runtime.telegram.shutdown()
            replier = runtime.dispatcher.repliers.get("whatsapp")
            if isinstance(replier, wa.WhatsAppReplier):
                await replier.aclose()
            await usage.record()  # the last window, before the database closes
            await close(built.deps)

    app = FastAPI(title="pennybot", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.include_router(cost_router(runtime))
    app.include_router(dashboard_router(runtime))
    app.include_router(metrics_router())
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        deps = built.deps
        checks: dict[str, str] = {}
        for name, probe in (("database", deps.db.ping()), ("hot_store", deps.hot.get_counters(["pb:{ready}"]))):
            try:
                await probe
                checks[name] = "ok"
            except Exception as error:
                checks[name] = f"error: {type(error).__name__}"
        now = deps.clock().timestamp()
        healthy = [p for p in deps.router.providers if deps.router.healthy(p, now)]
        checks["providers"] = "ok" if healthy else "error: every provider is in cooldown"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    @app.post("/webhook/telegram")
    async def telegram_webhook(request: Request) -> Response:
        if runtime.telegram is None:
            return JSONResponse({"error": "telegram is not configured"}, status_code=404)
        secret = settings.telegram_webhook_secret
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        if secret is None or not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        if not runtime.dispatcher.accepting:
            return JSONResponse({"error": "shutting down"}, status_code=503)
        try:
            data = json.loads(await request.body())
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("not a Telegram update")
            from telegram import Update

            update = Update.de_json(data, runtime.telegram.bot)
        except Exception as error:
            return JSONResponse({"error": f"malformed update: {type(error).__name__}"}, status_code=400)
        bot = runtime.telegram.bot
        inbound = tg.inbound_of(update, bot.id, bot.username, settings.telegram_group_mode)
        if inbound is not None:
            try:
                claimed = await runtime.dispatcher.claim(inbound, tg.update_payload(data))
            except Exception as error:
                return _store_down(error)
            if claimed:
                runtime.dispatcher.spawn(runtime.telegram.process_update(update))
        return Response(status_code=200)

    @app.post("/webhook/whatsapp")
    async def whatsapp_webhook(request: Request) -> Response:
        if runtime.validator is None:
            return JSONResponse({"error": "whatsapp is not configured"}, status_code=404)
        try:
            # Twilio posts application/x-www-form-urlencoded; strict parsing refuses anything else.
            raw = (await request.body()).decode("utf-8")
            form = dict(parse_qsl(raw, keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, ValueError):
            return JSONResponse({"error": "malformed form body"}, status_code=400)
        url = f"{(settings.public_base_url or '').rstrip('/')}{request.url.path}"
        if not runtime.validator.validate(url, form, request.headers.get("x-twilio-signature", "")):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        if not runtime.dispatcher.accepting:
            return JSONResponse({"error": "shutting down"}, status_code=503)
        try:
            inbound = wa.inbound_of(form)
        except wa.BadForm as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        try:
            claimed = await runtime.dispatcher.claim(inbound)
        except Exception as error:
            return _store_down(error)
        if claimed:
            runtime.dispatcher.spawn(runtime.dispatcher.run(inbound))  # not waiting for the fee's write
            deps = built.deps
            fee = settings.twilio_price_per_message
            try:
                await deps.db.record_fee("whatsapp", inbound.user_key, "in", inbound.message_id, fee, deps.clock())
                metrics.channel_fee("whatsapp", "in", fee)
            except Exception as error:  # the message is stored: answer it, even if its fee is not
                log.warning("channel fee not recorded (%s)", type(error).__name__)
        return Response(wa.EMPTY_TWIML, media_type="text/xml")

    return app
