"""The real app (bot.server.create_app) on uvicorn in a daemon thread with an event loop of its own,
for tests whose HTTP client blocks (schemathesis calls through ``requests``) or that share one server
across many tests. tests/bot/server_harness.py is the in-loop twin for async tests."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

import uvicorn

from bot.server import Runtime, create_app
from bot.settings import load_settings

T = TypeVar("T")


class AppInThread:
    """``with AppInThread(**settings) as app:`` serves at ``app.url`` until the block ends."""

    def __init__(self, **settings: Any) -> None:
        self.app = create_app(load_settings(None, **settings))
        self.runtime: Runtime = self.app.state.runtime
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", log_level="warning", lifespan="on", http="h11")
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, work: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run a coroutine on the server's loop (its stores and clients live there) and wait for it."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout_s)

    def __enter__(self) -> Self:
        # IPPROTO_TCP named, so asyncio sets TCP_NODELAY: without it every response waits 40 ms for an ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[sock])

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True, name=f"app-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.01)
        return self

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._server.should_exit

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


class Captured(logging.Handler):
    """Every log record of every thread, formatted as a handler would write it (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock_lines:
            self.records.append(record)
            self.lines.append(line)

    @property
    def text(self) -> str:
        with self._lock_lines:
            return "\n".join(self.lines)

    def __enter__(self) -> Self:
        root = logging.getLogger()
        self._level = root.level
        root.addHandler(self)
        root.setLevel(logging.DEBUG)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)
