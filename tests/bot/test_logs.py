"""Structured logs: one JSON line per message handled, no secrets, text only when configured."""

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bot.logs import JsonLines, protect
from tests.conftest import Bot


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger("pennybot")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield buffer
    logger.removeHandler(handler)
    logger.setLevel(old)


def handled(buffer: io.StringIO) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [p for p in parsed if p["msg"] == "message handled"]


async def test_one_json_line_per_message_with_its_figures(make_bot: Any, lines: io.StringIO) -> None:
    bot: Bot = await make_bot(model_catalog=[{"provider": "simulated", "model": "gpt-4o-mini", "tier": "cheap"}])
    turn = await bot.send("What is the capital of France?")
    [line] = handled(lines)
    assert line["request_id"] == turn.request_id and line["user"] == "console:alice" and line["channel"] == "console"
    assert line["model"] == "simulated/gpt-4o-mini"
    assert line["outcomes"]["cache"] == "miss" and line["outcomes"]["budget"] == "ok"
    assert turn.usage is not None
    assert (line["tokens_in"], line["tokens_out"]) == (turn.usage.input_tokens, turn.usage.output_tokens)
    assert line["cost"] == str(turn.cost) and line["latency_ms"] >= 0
    assert line["level"] == "info" and line["ts"].endswith("Z")
    assert "text" not in line and "capital" not in lines.getvalue()  # user text only when configured


async def test_message_text_only_when_configured_and_secrets_never(make_bot: Any, lines: io.StringIO) -> None:
    protect(["sk-very-secret-key-123"])
    bot: Bot = await make_bot(log_message_text=True)
    await bot.send("my key is sk-very-secret-key-123, what is 2+2?")
    [line] = handled(lines)
    assert line["text"] == "my key is [redacted], what is 2+2?"
    assert "sk-very-secret-key-123" not in lines.getvalue()
