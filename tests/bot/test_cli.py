"""``pennybot chat`` as a user runs it: a real process, piped input, no keys, no servers."""

import os
import subprocess
import sys
from pathlib import Path


def run_chat(tmp_path: Path, text: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", "chat", *args],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=clean | {"DATABASE_URL": f"sqlite:///{tmp_path}/pb.db"} | env,
    )


def test_console_chat_answers_piped_lines_offline(tmp_path: Path) -> None:
    done = run_chat(tmp_path, "What is the capital of France?\n/usage\n", "--user", "alice")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith('bot> [simulated] You asked: "What is the capital of France?"')
    assert lines[1].startswith("bot> Today: $0.")
    assert "This month:" in done.stdout and "of $10.00" in done.stdout
    assert "provider: simulated" in done.stderr  # the banner goes to stderr when piped


def test_spend_survives_a_restart(tmp_path: Path) -> None:
    run_chat(tmp_path, "Hello!\n", "--user", "bob")
    again = run_chat(tmp_path, "/usage\n", "--user", "bob")
    assert "Today: $0.0000 spent" not in again.stdout
    assert again.stdout.startswith("bot> Today: $0.")


def test_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    done = run_chat(tmp_path, "hi\n", USER_MONTHLY_LIMIT="lots")
    assert done.returncode == 2
    assert done.stderr.strip() == "pennybot: bad setting: USER_MONTHLY_LIMIT: Input should be a valid decimal"
    assert done.stdout == ""


def test_webhook_commands_against_a_local_bot_api(tmp_path: Path, telegram_server: object) -> None:
    from tests.fakes.telegram_server import TEST_TOKEN, FakeTelegramServer

    assert isinstance(telegram_server, FakeTelegramServer)
    env = {"TELEGRAM_BOT_TOKEN": TEST_TOKEN, "TELEGRAM_WEBHOOK_SECRET": "hook-secret-1",
           "TELEGRAM_API_BASE_URL": telegram_server.base_url}  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        return subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean | env)  # fmt: skip

    done = cli("set-webhook", "https://bot.example.com/webhook/telegram")
    assert done.stdout.strip() == "webhook set", done.stderr
    [call] = telegram_server.calls_to("setWebhook")
    assert call.params["url"] == "https://bot.example.com/webhook/telegram"
    assert call.params["secret_token"] == "hook-secret-1"
    assert call.arg("allowed_updates") == ["message"]
    info = cli("webhook-info")
    assert info.stdout.startswith("url: https://bot.example.com/webhook/telegram\npending updates: 0")
    assert cli("delete-webhook").stdout.strip() == "webhook deleted"
    assert TEST_TOKEN not in info.stdout + info.stderr
