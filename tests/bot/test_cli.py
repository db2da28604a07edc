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
