"""The floor of the end-to-end benchmark: the libraries alone, no pennybot.

The same server stack as ``pennybot serve`` (FastAPI on uvicorn, one process) and the same clients,
doing only what any Telegram LLM bot must: check the secret, parse the webhook with
``Update.de_json``, answer 200, then one openai SDK chat call and one python-telegram-bot
``sendMessage``. No inbox, budget, cache, history or ledger. Run by benchmarks.e2e as

    python -m benchmarks.floor --port PORT

with TELEGRAM_BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET, TELEGRAM_API_BASE_URL, OPENAI_API_KEY and
OPENAI_BASE_URL in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response


def create_app() -> FastAPI:
    from openai import AsyncOpenAI
    from telegram import Bot, Update

    token = os.environ["TELEGRAM_BOT_TOKEN"]
    secret = os.environ["TELEGRAM_WEBHOOK_SECRET"].encode()
    bot = Bot(token, base_url=os.environ["TELEGRAM_API_BASE_URL"])
    llm = AsyncOpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url=os.environ["OPENAI_BASE_URL"], max_retries=1)
    tasks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await bot.initialize()
        try:
            yield
        finally:
            await bot.shutdown()
            await llm.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None)

    async def answer(update: Any) -> None:
        message = update.message
        completion = await llm.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": message.text or ""}],
            max_completion_tokens=256,
        )
        await bot.send_message(chat_id=message.chat.id, text=completion.choices[0].message.content or "")

    @app.post("/webhook/telegram")
    async def webhook(request: Request) -> Response:
        given = request.headers.get("x-telegram-bot-api-secret-token", "").encode()
        if not hmac.compare_digest(given, secret):
            return Response(status_code=403)
        update = Update.de_json(json.loads(await request.body()), bot)
        if update.message is not None:
            task = asyncio.create_task(answer(update))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return Response(status_code=200)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
