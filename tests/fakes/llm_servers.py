"""Real local HTTP servers speaking OpenAI's and Anthropic's wire formats, scripted per request.

Each server is uvicorn running a starlette app on 127.0.0.1 (a free port) in its own thread, so it
serves async tests and plain scripts alike:

    with FakeOpenAIServer() as server:
        server.script(Fail(500), Ok(text="hi", usage=openai_usage(10, 2, cached_tokens=4)))
        client = AsyncOpenAI(api_key="k", base_url=server.base_url)
        ...
        assert len(server.requests) == 2

``respond_with(lambda request: ...)`` decides the outcome of every request the script does not.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


@dataclass(frozen=True, slots=True)
class Ok:
    """Answer 200 with ``text`` (default: an echo) and wire-format ``usage`` (default: a guess)."""

    text: str | None = None
    usage: Mapping[str, Any] | None = None
    delay_s: float = 0.0
    # Top-level fields set over the generated body, e.g. ``content`` blocks or empty ``choices``.
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fail:
    """Answer HTTP ``status`` with the provider's error body and extra ``headers``."""

    status: int
    message: str = "scripted failure"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hang:
    """Send nothing until the client goes away, or drop the connection after ``seconds``."""

    seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without sending a single byte of response."""


Outcome = Ok | Fail | Hang | Drop


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server saw it; header names are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    received_at: float


Responder = Callable[[RecordedRequest], Outcome]


def rate_limited(retry_after_s: float | None = None, *, retry_after_ms: int | None = None) -> Fail:
    """A 429 with ``retry-after`` (seconds) and/or ``retry-after-ms`` headers."""
    headers = {}
    if retry_after_s is not None:
        headers["retry-after"] = f"{retry_after_s:g}"
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return Fail(429, "rate limited", headers)


def openai_usage(
    prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> dict[str, Any]:
    """OpenAI's ``usage`` object; ``prompt_tokens`` includes the cached ones, as the API's does."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0},
    }


def anthropic_usage(
    input_tokens: int,
    output_tokens: int,
    *,
    cache_creation_input_tokens: int | None = None,
    cache_read_input_tokens: int | None = None,
    ephemeral_1h_input_tokens: int | None = None,
) -> dict[str, Any]:
    """Anthropic's ``usage`` object; ``input_tokens`` excludes cache tokens, as the API's does.

    With ``ephemeral_1h_input_tokens`` the ``cache_creation`` breakdown is included too.
    """
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_read_input_tokens": cache_read_input_tokens,
    }
    if ephemeral_1h_input_tokens is not None:
        created = cache_creation_input_tokens or 0
        usage["cache_creation"] = {
            "ephemeral_1h_input_tokens": ephemeral_1h_input_tokens,
            "ephemeral_5m_input_tokens": created - ephemeral_1h_input_tokens,
        }
    return usage


def _message_text(message: Any) -> str:
    content = message.get("content", "") if isinstance(message, dict) else ""
    if isinstance(content, list):  # content blocks
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return str(content)


def _estimate_tokens(text: str) -> int:
    # About four characters a token, like the real tokenizers on English text.
    return max(1, len(text) // 4)


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Delayed(Response):
    """Sends ``then`` after ``seconds``, unless the client goes away first."""

    def __init__(self, seconds: float, then: Response) -> None:
        self._seconds = seconds
        self._then = then

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._seconds > 0:
            try:
                await asyncio.wait_for(_client_gone(receive), self._seconds)
                return
            except TimeoutError:
                pass
        await self._then(scope, receive, send)


class _Abort(Response):
    """Closes the connection without sending a byte."""

    def __init__(self, server: uvicorn.Server) -> None:
        self._server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI has no way to close a connection unanswered, so find uvicorn's transport for it.
        client = tuple(scope["client"]) if scope.get("client") else None
        for connection in list(self._server.server_state.connections):
            if getattr(connection, "client", None) == client:
                connection.transport.abort()
        await _client_gone(receive)  # uvicorn then sees a lost client and sends no 500 of its own


class FakeLLMServer:
    """A scripted LLM API on 127.0.0.1; subclasses give the route and the wire format.

    Outcomes queued with ``script`` are used one per request, then ``responder``, then ``Ok()``.
    """

    path: ClassVar[str]
    api_prefix: ClassVar[str] = ""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._script: deque[Outcome] = deque()
        self._requests: list[RecordedRequest] = []
        self._responder: Responder | None = None
        self._ids = itertools.count(1)
        app = Starlette(routes=[Route(self.path, self._handle, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", http="h11")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``, what the Anthropic SDK takes."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The URL to hand to the SDK's ``base_url``."""
        return self.root_url + self.api_prefix

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def script(self, *outcomes: Outcome) -> None:
        """Queue outcomes for the next requests, one each."""
        with self._lock:
            self._script.extend(outcomes)

    def respond_with(self, responder: Responder | None) -> None:
        """Decide unscripted requests with ``responder`` (None: default Ok); runs in the server thread."""
        self._responder = responder

    def reset(self) -> None:
        """Forget recorded requests, queued outcomes and the responder."""
        with self._lock:
            self._script.clear()
            self._requests.clear()
        self._responder = None

    def start(self) -> Self:
        """Bind a free port and serve from a daemon thread; returns once accepting."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(sock),), daemon=True, name=f"fake-llm-{self.port}"
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake LLM server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop at once; requests still hanging or delayed see their connection dropped."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            # Abort first, so pending handlers end quietly instead of being cancelled into 500s.
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        recorded = RecordedRequest(request.method, request.url.path, dict(request.headers), body, time.monotonic())
        with self._lock:
            self._requests.append(recorded)
            outcome = self._script.popleft() if self._script else None
        if outcome is None:
            outcome = self._responder(recorded) if self._responder else Ok()
        match outcome:
            case Ok(delay_s=delay_s, overrides=overrides):
                ok = self.ok_body(body if isinstance(body, dict) else {}, outcome)
                return _Delayed(delay_s, JSONResponse(ok | dict(overrides)))
            case Fail(status=status, message=message, headers=headers):
                return JSONResponse(self.error_body(status, message), status, dict(headers))
            case Hang(seconds=seconds):
                return _Delayed(seconds, _Abort(self._server))
            case Drop():
                return _Abort(self._server)
        raise TypeError(f"not an outcome: {outcome!r}")

    def _next_id(self) -> int:
        return next(self._ids)

    def ok_body(self, request_body: dict[str, Any], outcome: Ok) -> dict[str, Any]:
        """The 200 body for ``outcome``, in this server's wire format."""
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The error body for ``status``, in this server's wire format."""
        raise NotImplementedError


def _echo(request_body: dict[str, Any]) -> str:
    messages = request_body.get("messages") or [{}]
    return "echo: " + _message_text(messages[-1])


def _prompt_tokens(request_body: dict[str, Any]) -> int:
    texts = [_message_text(m) for m in request_body.get("messages", [])]
    system = request_body.get("system")
    if system:
        texts.append(system if isinstance(system, str) else _message_text({"content": system}))
    # Per-message framing tokens, as chat formats add.
    return sum(_estimate_tokens(t) + 4 for t in texts) + 3


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class FakeOpenAIServer(FakeLLMServer):
    """``POST /v1/chat/completions``; ``base_url`` ends in ``/v1`` as the OpenAI SDK wants."""

    path = "/v1/chat/completions"
    api_prefix = "/v1"

    def ok_body(self, request_body: dict[str, Any], outcome: Ok) -> dict[str, Any]:
        text = outcome.text if outcome.text is not None else _echo(request_body)
        usage = outcome.usage or openai_usage(_prompt_tokens(request_body), _estimate_tokens(text))
        return {
            "id": f"chatcmpl-fake-{self._next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request_body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": dict(usage),
        }

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class FakeAnthropicServer(FakeLLMServer):
    """``POST /v1/messages``; ``base_url`` is the root, as the Anthropic SDK wants."""

    path = "/v1/messages"

    def ok_body(self, request_body: dict[str, Any], outcome: Ok) -> dict[str, Any]:
        text = outcome.text if outcome.text is not None else _echo(request_body)
        usage = outcome.usage or anthropic_usage(_prompt_tokens(request_body), _estimate_tokens(text))
        return {
            "id": f"msg_fake_{self._next_id()}",
            "type": "message",
            "role": "assistant",
            "model": request_body.get("model", "fake-model"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": dict(usage),
        }

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
