"""A process killed between acknowledging a webhook and replying: after the restart the reply
is sent once. Real processes, SIGKILL, a SQLite file shared across the two lives."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.bot.server_harness import SECRET
from tests.drills.servers import free_port
from tests.fakes.llm_servers import FakeOpenAIServer, Hang
from tests.fakes.telegram_server import TEST_TOKEN, FakeTelegramServer, text_update


def wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def serve_process(
    tmp_path: Path, telegram_server: FakeTelegramServer, openai_server: FakeOpenAIServer
) -> Iterator[object]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")} | {
        "DATABASE_URL": f"sqlite:///{tmp_path}/pb.db",
        "TELEGRAM_BOT_TOKEN": TEST_TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_API_BASE_URL": telegram_server.base_url,
        "OPENAI_API_KEY": "sk-crash-test",
        "OPENAI_BASE_URL": openai_server.base_url,
        "MODEL_CATALOG": '[{"provider": "openai", "model": "gpt-4o-mini", "tier": "cheap"}]',
        "LLM_TIMEOUT_S": "60",
        "LLM_MAX_RETRIES": "0",
        # The dead process's lease runs out after 2 s; the new one sweeps every 0.5 s.
        "INBOX_LEASE_S": "2",
        "INBOX_SWEEP_S": "0.5",
    }
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from bot.cli import main; main()", "serve", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(proc)

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return False

        wait_for(up)
        return proc

    start.port = port  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


def test_killed_mid_answer_the_reply_is_sent_once_after_restart(
    serve_process: object, telegram_server: FakeTelegramServer, openai_server: FakeOpenAIServer
) -> None:
    openai_server.script(Hang(60))  # the first life hangs inside the LLM call
    first = serve_process()  # type: ignore[operator]
    port = serve_process.port  # type: ignore[attr-defined]
    update = text_update(9001, 55, 55, "What is the capital of Italy?")
    r = httpx.post(f"http://127.0.0.1:{port}/webhook/telegram", json=update,
                   headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})  # fmt: skip
    assert r.status_code == 200  # acknowledged: stored in the inbox
    wait_for(lambda: len(openai_server.requests) == 1)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert telegram_server.sent_texts() == []

    serve_process()  # type: ignore[operator]
    wait_for(lambda: len(telegram_server.sent_texts()) == 1)
    time.sleep(0.5)
    assert telegram_server.sent_texts(55) == ["echo: What is the capital of Italy?"]
    # A redelivery by Telegram after the restart is dropped.
    httpx.post(f"http://127.0.0.1:{port}/webhook/telegram", json=update,
               headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})  # fmt: skip
    time.sleep(0.5)
    assert len(telegram_server.sent_texts()) == 1
    assert len(openai_server.requests) == 2
