"""The Telegram Bot API and an OpenAI-compatible chat-completions API, answering at once, on one
local port, for the end-to-end benchmark.

Deliberately minimal (a bare asyncio HTTP/1.1 server, keep-alive, Content-Length bodies): on a
2-core machine every CPU cycle the fakes spend is one the bot under test does not get. It speaks
just what the benchmark needs: ``getMe``, ``sendMessage`` (the answer, reported to ``on_message``),
``sendChatAction`` and any other Bot API method (``true``) under ``/bot<TOKEN>/``, and
``POST /v1/chat/completions``. The full, scriptable fakes for tests are in tests/fakes/.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

TOKEN = "123456789:AAHpennybot-bench-token_0123456789ab"  # noqa: S105 - a fake token for local fakes
BOT_ID = 123456789
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "PennyBot", "username": "pennybot_bench_bot"}
ANSWER = "Here is a short answer from the instant server: it is fine."


def _response(status: int, body: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Error"
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (
        status,
        reason,
        len(body),
    )
    return head + body


class _Connection(asyncio.Protocol):
    def __init__(self, apis: FakeAPIs) -> None:
        self.apis = apis
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method_path = head[0].split(" ")
            reply = self.apis.handle(method_path[1] if len(method_path) > 1 else "/", headers, body)
            assert self.transport is not None
            self.transport.write(reply)


class FakeAPIs:
    """Both APIs on 127.0.0.1:``port``; ``on_message(chat_id, text)`` runs for each sendMessage."""

    def __init__(self, on_message: Callable[[str, str], None] | None = None, token: str = TOKEN) -> None:
        self.on_message = on_message
        self.prefix = f"/bot{token}/"
        self.port = 0
        self.calls: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None

    @property
    def bot_api_url(self) -> str:
        """For ``TELEGRAM_API_BASE_URL`` / ``Bot(base_url=...)``: the token is appended by the client."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeAPIs:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if path.startswith(self.prefix):
            return self._bot_api(path[len(self.prefix) :].split("?")[0], headers, body)
        if path == "/v1/chat/completions":
            self.calls["chat.completions"] += 1
            return _response(200, self._completion(body))
        self.calls["unknown"] += 1
        return _response(404, b'{"error": "not found"}')

    def _bot_api(self, method: str, headers: dict[str, str], body: bytes) -> bytes:
        self.calls[method] += 1
        params = _params(headers.get("content-type", ""), body)
        result: Any = True
        if method == "getMe":
            result = BOT_USER | {"can_join_groups": True, "can_read_all_group_messages": False}
        elif method == "sendMessage":
            chat_id, text = str(params.get("chat_id", "")), str(params.get("text", ""))
            result = {
                "message_id": next(self._ids),
                "date": int(time.time()),
                "chat": {"id": int(chat_id), "type": "private", "first_name": "User"},
                "from": BOT_USER,
                "text": text,
            }
            if self.on_message is not None:
                self.on_message(chat_id, text)
        return _response(200, json.dumps({"ok": True, "result": result}).encode())

    def _completion(self, body: bytes) -> bytes:
        request = json.loads(body or b"{}")
        prompt = len(body) // 16 + 10
        return json.dumps(
            {
                "id": f"chatcmpl-bench-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model", "gpt-4o-mini"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 14, "total_tokens": prompt + 14},
            }
        ).encode()


def _params(content_type: str, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    if content_type.startswith("application/json"):
        data = json.loads(body)
        return data if isinstance(data, dict) else {}
    return dict(parse_qsl(body.decode(), keep_blank_values=True))
