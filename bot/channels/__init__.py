"""The channels: each turns a platform's message into an ``Inbound`` and sends the replies back."""

from __future__ import annotations

import re

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` as every store can hold it: NUL dropped (Postgres refuses it in text and jsonb) and
    each lone surrogate (JSON can escape one; UTF-8 cannot encode it) replaced by U+FFFD. Without
    this, such a message fails the inbox with a 503 on every redelivery, and is never answered."""
    return _LONE_SURROGATE.sub("\ufffd", text.replace("\x00", ""))
