"""Workloads for ``pennybot simulate``: pennybot's own JSONL, a Telegram Desktop export, a WhatsApp
chat export. Each is read into one stream of ``WorkloadMessage`` (files may be gzipped).

In an export, the bot's own messages (``bot_name``: its display name or id) are skipped and every
other sender is a user. Media messages keep their kind, so the replay answers them as the bot would.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

FORMATS = ("jsonl", "telegram", "whatsapp")


@dataclass(frozen=True, slots=True)
class WorkloadMessage:
    """One message to replay: when (aware), who, on which channel, what."""

    ts: datetime
    user: str
    channel: str
    text: str
    kind: str = "text"

    def to_json(self) -> str:
        data: dict[str, str] = {"ts": self.ts.isoformat().replace("+00:00", "Z"), "user": self.user,
                                "channel": self.channel, "text": self.text}  # fmt: skip
        if self.kind != "text":
            data["kind"] = self.kind
        return json.dumps(data, ensure_ascii=False)


class WorkloadError(ValueError):
    """A workload file that cannot be read; the message names the file and the line."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")


def open_text(path: Path) -> TextIO:
    """A text file, gunzipped on the fly when its name ends in .gz."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def detect_format(path: Path) -> str:
    """By the name: .jsonl is pennybot's, .json a Telegram export, .txt a WhatsApp export."""
    name = path.name.removesuffix(".gz")
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "telegram"), (".txt", "whatsapp")):
        if name.endswith(suffix):
            return fmt
    raise WorkloadError(path, None, "unknown workload format: name it .jsonl, .json (Telegram) or .txt (WhatsApp)")


class Workload:
    """A workload file, read lazily; ``skipped_bot`` counts the bot's own messages left out."""

    def __init__(
        self,
        path: Path,
        *,
        fmt: str = "auto",
        bot_name: str | None = None,
        tz: str = "UTC",
        date_order: str = "auto",
    ) -> None:
        if not path.is_file():
            raise WorkloadError(path, None, "no such file")
        self.path = path
        self.fmt = detect_format(path) if fmt == "auto" else fmt
        if self.fmt not in FORMATS:
            raise WorkloadError(path, None, f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
        self.bot_name = bot_name
        self.tz = ZoneInfo(tz)
        self.date_order = date_order
        self.skipped_bot = 0

    def __iter__(self) -> Iterator[WorkloadMessage]:
        self.skipped_bot = 0
        if self.fmt == "jsonl":
            return self._jsonl()
        if self.fmt == "telegram":
            return self._telegram()
        return self._whatsapp()

    def count(self) -> int:
        """How many messages (for a progress bar); a quick pass for JSONL."""
        if self.fmt == "jsonl":
            with open_text(self.path) as f:
                return sum(1 for line in f if line.strip())
        return sum(1 for _ in self)

    def _is_bot(self, *names: object) -> bool:
        return self.bot_name is not None and any(n == self.bot_name for n in names if n is not None)

    def _aware(self, ts: datetime) -> datetime:
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=self.tz)

    # -- pennybot's JSONL ---------------------------------------------------------------------

    def _jsonl(self) -> Iterator[WorkloadMessage]:
        with open_text(self.path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as error:
                    raise WorkloadError(self.path, n, f"not valid JSON ({error.msg})") from None
                if not isinstance(data, dict):
                    raise WorkloadError(self.path, n, "expected an object with ts, user, channel, text")
                yield self._jsonl_message(data, n)

    def _jsonl_message(self, data: dict[str, Any], n: int) -> WorkloadMessage:
        for key in ("ts", "user", "channel", "text"):
            if not isinstance(data.get(key), str):
                raise WorkloadError(self.path, n, f"{key!r} is missing or not a string")
        if not data["user"] or not data["channel"]:
            raise WorkloadError(self.path, n, "'user' and 'channel' must not be empty")
        try:
            ts = datetime.fromisoformat(data["ts"])
        except ValueError:
            raise WorkloadError(self.path, n, f"'ts' is not an ISO 8601 time: {data['ts']!r}") from None
        kind = data.get("kind", "text")
        if not isinstance(kind, str) or not kind:
            raise WorkloadError(self.path, n, "'kind' must be a non-empty string")
        return WorkloadMessage(self._aware(ts), data["user"], data["channel"], data["text"], kind)

    # -- Telegram Desktop export (result.json) ------------------------------------------------

    def _telegram(self) -> Iterator[WorkloadMessage]:
        with open_text(self.path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as error:
                raise WorkloadError(self.path, error.lineno, f"not valid JSON ({error.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("messages"), list):
            chats = [data]  # one chat exported
        elif isinstance(data, dict) and isinstance(data.get("chats"), dict):
            # "Export Telegram data": every chat (and the chats left), each with its messages.
            chats = [c for group in ("chats", "left_chats") for c in (data.get(group) or {}).get("list", [])]
        else:
            raise WorkloadError(self.path, None, 'not a Telegram Desktop export: no "messages" or "chats" list')
        found = []
        for chat in chats:
            where = f"chat {chat.get('name') or chat.get('id')!r}"
            for msg in chat.get("messages") or []:
                if not isinstance(msg, dict):
                    raise WorkloadError(self.path, None, f"{where}: a message is not an object")
                if msg.get("type") != "message":
                    continue  # service messages: joins, pins, calls
                if self._is_bot(msg.get("from"), msg.get("from_id")):
                    self.skipped_bot += 1
                    continue
                found.append(self._telegram_message(msg, where))
        # One chat is in order already; several are merged by time (a stable sort keeps ties).
        found.sort(key=lambda m: m.ts)
        return iter(found)

    def _telegram_message(self, msg: dict[str, Any], where: str) -> WorkloadMessage:
        label = f"{where}, message {msg.get('id')}"
        if "date_unixtime" in msg:
            try:
                ts = datetime.fromtimestamp(int(msg["date_unixtime"]), UTC)
            except (TypeError, ValueError):
                raise WorkloadError(self.path, None, f"{label}: bad date_unixtime {msg['date_unixtime']!r}") from None
        else:
            try:
                ts = self._aware(datetime.fromisoformat(str(msg["date"])))
            except (KeyError, ValueError):
                raise WorkloadError(self.path, None, f"{label}: no readable date") from None
        sender = msg.get("from_id") or msg.get("from")
        if not sender:
            raise WorkloadError(self.path, None, f"{label}: no sender (from_id or from)")
        user = str(sender).removeprefix("user")
        return WorkloadMessage(ts, user, "telegram", _telegram_text(msg.get("text", "")), _telegram_kind(msg))

    # -- WhatsApp "export chat" ---------------------------------------------------------------

    def _whatsapp(self) -> Iterator[WorkloadMessage]:
        order = self.date_order if self.date_order != "auto" else self._whatsapp_order()
        current: list[Any] | None = None  # [ts, sender, lines, line number]
        with open_text(self.path) as f:
            for n, raw in enumerate(f, 1):
                line = _clean(raw)
                head = _WA_LINE.match(line)
                if head is None:
                    if current is None:
                        if not line.strip():
                            continue
                        raise WorkloadError(self.path, n, f"not a WhatsApp export line: {line[:60]!r}")
                    current[2].append(line)  # a message that goes on over several lines
                    continue
                if current is not None and (message := self._whatsapp_message(*current)) is not None:
                    yield message
                current = None
                ts = self._whatsapp_time(head, order, n)
                sender, sep, text = head["rest"].partition(": ")
                if sep:  # without "Name: " it is a system line (encryption notice, joins)
                    current = [ts, sender, [text], n]
        if current is not None and (message := self._whatsapp_message(*current)) is not None:
            yield message

    def _whatsapp_order(self) -> str:
        """Day or month first: a first number above 12 is a day, a second one a day too."""
        with open_text(self.path) as f:
            for raw in f:
                head = _WA_LINE.match(_clean(raw))
                if head is None:
                    continue
                if int(head["a"]) > 12:
                    return "dmy"
                if int(head["b"]) > 12:
                    return "mdy"
        return "dmy"

    def _whatsapp_time(self, head: re.Match[str], order: str, n: int) -> datetime:
        a, b, year = int(head["a"]), int(head["b"]), int(head["y"])
        day, month = (a, b) if order == "dmy" else (b, a)
        hour, minute, second = int(head["h"]), int(head["m"]), int(head["s"] or 0)
        ampm = (head["ampm"] or "").replace(".", "").lower()
        if ampm:
            hour = hour % 12 + (12 if ampm == "pm" else 0)
        try:
            return datetime(year + 2000 if year < 100 else year, month, day, hour, minute, second, tzinfo=self.tz)
        except ValueError as error:
            raise WorkloadError(self.path, n, f"bad date or time ({error}); try --date-order") from None

    def _whatsapp_message(self, ts: datetime, sender: str, lines: list[str], n: int) -> WorkloadMessage | None:
        if self._is_bot(sender):
            self.skipped_bot += 1
            return None
        text = "\n".join(lines).strip()
        text = text.removesuffix("<This message was edited>").strip()
        if text in _WA_DELETED:
            return None
        kind = _WA_MEDIA.get(text, "media" if text.startswith("<attached:") else "text")
        return WorkloadMessage(ts, sender.strip(), "whatsapp", "" if kind != "text" else text, kind)


# Android: "15/01/2024, 10:30 - Name: text"; iOS: "[15/01/2024, 10:30:45] Name: text"; either with
# day or month first, 24-hour or AM/PM times.
_WA_LINE = re.compile(
    r"^\[?(?P<a>\d{1,2})[/.\-](?P<b>\d{1,2})[/.\-](?P<y>\d{2,4}),? (?P<h>\d{1,2})[:.](?P<m>\d{2})(?:[:.](?P<s>\d{2}))?"
    r"(?: ?(?P<ampm>[AaPp]\.? ?[Mm]\.?))?(?:\] | - )(?P<rest>.*)$"
)
_WA_MEDIA = {
    "<Media omitted>": "media",
    "image omitted": "photo",
    "video omitted": "video",
    "audio omitted": "voice",
    "sticker omitted": "sticker",
    "GIF omitted": "animation",
    "document omitted": "document",
}
_WA_DELETED = {"This message was deleted", "You deleted this message", "null"}


def _clean(raw: str) -> str:
    # Exports mark direction with U+200E/U+200F and put U+202F (narrow no-break space) before AM/PM.
    return raw.rstrip("\r\n").replace("\u202f", " ").replace("\u00a0", " ").replace("\u200e", "").replace("\u200f", "")


def _telegram_text(text: Any) -> str:
    """Telegram keeps formatted text as a list of plain strings and entity objects."""
    if isinstance(text, str):
        return text
    if isinstance(text, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in text if isinstance(p, str | dict))
    return ""


def _telegram_kind(msg: dict[str, Any]) -> str:
    if "media_type" in msg:
        return str(msg["media_type"])
    for key, kind in (("photo", "photo"), ("file", "document"), ("location_information", "location"),
                      ("poll", "poll"), ("contact_information", "contact")):  # fmt: skip
        if key in msg:
            return kind
    return "text"


def write_jsonl(messages: Iterable[WorkloadMessage], path: Path) -> int:
    """Write messages as pennybot's JSONL (gzipped when the name ends in .gz); returns the count."""
    n = 0
    with path.open("wb") as raw:
        # No name and no time in the gzip header: the same messages give the same bytes.
        packed = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) if path.name.endswith(".gz") else None
        with io.TextIOWrapper(packed or raw, encoding="utf-8", newline="\n") as out:
            for message in messages:
                out.write(message.to_json() + "\n")
                n += 1
    return n


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``2026-11`` -> its first instant and the next month's, in UTC."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end
