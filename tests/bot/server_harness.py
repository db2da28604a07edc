"""Runs the real app on uvicorn on 127.0.0.1 inside the test's event loop."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from bot.server import Runtime, create_app
from bot.settings import load_settings
from tests.drills.servers import free_port
from tests.fakes.telegram_server import TEST_TOKEN, FakeTelegramServer
from tests.fakes.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, WHATSAPP_SANDBOX, FakeTwilioServer

SECRET = "s3cret-webhook-token"
PUBLIC = "https://bot.example.com"


@dataclass
class Served:
    url: str
    http: httpx.AsyncClient
    runtime: Runtime

    async def telegram(self, update: Any, secret: str | None = SECRET, **kw: Any) -> httpx.Response:
        headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
        return await self.http.post("/webhook/telegram", json=update, headers=headers, **kw)


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait for background work to show (a check may be sync or async); fail after ``timeout``."""
    deadline = time.monotonic() + timeout

    async def ok() -> bool:
        result = check()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    while not await ok():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def channel_settings(tg: FakeTelegramServer | None, tw: FakeTwilioServer | None, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"database_url": "memory://", "redis_url": "memory://", "shutdown_grace_s": 5}
    if tg is not None:
        base |= {
            "telegram_bot_token": TEST_TOKEN,
            "telegram_webhook_secret": SECRET,
            "telegram_api_base_url": tg.base_url,
        }
    if tw is not None:
        base |= {
            "twilio_account_sid": TEST_ACCOUNT_SID, "twilio_auth_token": TEST_AUTH_TOKEN,
            "twilio_whatsapp_from": WHATSAPP_SANDBOX, "twilio_api_base_url": tw.base_url, "public_base_url": PUBLIC,
        }  # fmt: skip
    return base | overrides


@asynccontextmanager
async def serve(**settings: Any) -> AsyncIterator[Served]:
    app = create_app(load_settings(None, **settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done())
    if task.done():
        task.result()
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield Served(url, http, app.state.runtime)
    finally:
        server.should_exit = True
        await task
