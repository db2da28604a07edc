"""Logging that cannot leak a secret (DESIGN invariant 8).

Every log record, from any library, passes through a record factory that replaces each configured
secret with ``[redacted]`` before a handler sees it: the Telegram token sits inside every Bot API
URL, and HTTP clients log URLs. The HTTP clients' request logs are also kept at WARNING.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from bot.settings import Settings

QUIET = ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "anthropic", "telegram.ext.ExtBot", "twilio.http_client")
_secrets: set[str] = set()
_base_factory = logging.getLogRecordFactory()


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold, and the parts a log line could show on their own."""
    found: list[str] = []
    for value in (
        settings.telegram_bot_token, settings.telegram_webhook_secret, settings.twilio_auth_token,
        settings.openai_api_key, settings.anthropic_api_key, settings.supabase_service_role_key,
        settings.admin_api_token,
        settings.smtp_password,
        settings.alert_webhook_url,
    ):  # fmt: skip
        if value is not None and value.get_secret_value():
            secret = value.get_secret_value()
            found.append(secret)
            if ":" in secret:  # a Telegram token: the part after the bot id is the secret
                found.append(secret.split(":", 1)[1])
    for url in (settings.database_url, settings.redis_url):
        password = urlsplit(url).password
        if password:
            found.append(password)
    return [s for s in found if len(s) >= 6]  # too short to redact safely: it would mangle logs


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if _secrets:
        message = record.getMessage()
        if any(s in message for s in _secrets):
            for secret in sorted(_secrets, key=len, reverse=True):
                message = message.replace(secret, "[redacted]")
            record.msg, record.args = message, None
    return record


def protect(secrets: Iterable[str]) -> None:
    """Redact these secrets from every log record from now on; quiet the HTTP request logs."""
    _secrets.update(secrets)
    if logging.getLogRecordFactory() is not _redacting_factory:
        logging.setLogRecordFactory(_redacting_factory)
    for name in QUIET:
        if logging.getLogger(name).level < logging.WARNING:
            logging.getLogger(name).setLevel(logging.WARNING)


# Fields a log record may carry (through ``extra``) that the JSON lines keep.
FIELDS = ("request_id", "user", "channel", "outcomes", "model", "tokens_in", "tokens_out", "cost", "latency_ms", "text")


class JsonLines(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the known extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: getattr(record, k) for k in FIELDS if hasattr(record, k)})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        text = json.dumps(line, default=str, ensure_ascii=False)
        for secret in _secrets:  # extra fields never went through the record factory's message
            text = text.replace(secret, "[redacted]")
        return text


JsonLines.converter = time.gmtime


def configure(settings: Settings, level: int) -> None:
    """Logging for a pennybot process: JSON lines when stderr is not a terminal (or LOG_FORMAT=json),
    plain text on a terminal; secrets redacted either way."""
    protect(secrets_of(settings))
    handler = logging.StreamHandler(sys.stderr)
    as_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonLines() if as_json else text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pennybot").setLevel(level)
