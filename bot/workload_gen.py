"""The workload generator: users, conversations and messages over one calendar month, shaped by
published usage figures where there are any (workloads/README.md says which, and what is assumed).

Deterministic per seed: the same shape and seed give the same messages, byte for byte.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.workload_text import (
    CODE_ASKS,
    CODE_LINES,
    COMMON,
    COMPLEX,
    DETAILS,
    FACTS,
    FOLLOW_UPS,
    LONG_FOLLOW_UPS,
    MEDIUM,
    PASTE_ASKS,
    PROSE,
    SHARED,
    SHORT,
    TOPICS,
    Topic,
)
from bot.workloads import WorkloadMessage, month_bounds


@dataclass(frozen=True, slots=True)
class Shape:
    """What a generated month looks like. Sources and assumptions: workloads/README.md."""

    users: int = 1000
    messages: int = 50_000
    month: str = "2026-11"
    heavy_users: float = 0.01  # share of users who are heavy
    heavy_messages: float = 0.15  # share of all messages the heavy users send
    user_sigma: float = 1.0  # log-normal spread of the other users' activity
    session_mean: float = 2.5  # user messages per conversation (WildChat 2.52, LMSYS-Chat-1M 2.0)
    heavy_session_mean: float = 6.0
    tokens_median: float = 22.0  # user message length, log-normal: median ...
    tokens_mean: float = 69.5  # ... and mean (LMSYS-Chat-1M's mean prompt, 69.5 tokens)
    heavy_tokens_median: float = 60.0
    tokens_cap: int = 3000
    common_share: float = 0.12  # conversation openers taken from the common questions
    follow_up_share: float = 0.6  # later messages of a conversation that follow up on it
    media_share: float = 0.02  # photos, voice notes, stickers
    think_median_s: float = 40.0  # between messages of one conversation
    telegram_share: float = 0.7  # the rest are on WhatsApp

    @property
    def tokens_sigma(self) -> float:
        # A log-normal's mean is its median times exp(sigma^2 / 2).
        return math.sqrt(2 * math.log(self.tokens_mean / self.tokens_median))


def generate(shape: Shape, seed: int) -> list[WorkloadMessage]:
    """The month's messages in time order."""
    rnd = random.Random(seed)
    start, end = month_bounds(shape.month)
    counts = _message_counts(shape, rnd)
    heavy = set(range(len(counts) - round(shape.users * shape.heavy_users), len(counts)))
    messages: list[WorkloadMessage] = []
    for u, count in enumerate(counts):
        channel = "telegram" if rnd.random() < shape.telegram_share else "whatsapp"
        user = f"{u + 1:07d}" if channel == "telegram" else f"+1555{u + 1:07d}"
        writer = _Writer(rnd, shape, heavy=u in heavy)
        messages += _user_month(rnd, shape, writer, user, channel, count, start, end)
    messages.sort(key=lambda m: (m.ts, m.user))
    return messages


def _message_counts(shape: Shape, rnd: random.Random) -> list[int]:
    """Messages per user, summing exactly to ``shape.messages``; heavy users last."""
    n_heavy = round(shape.users * shape.heavy_users)
    n_light = shape.users - n_heavy
    heavy_total = round(shape.messages * shape.heavy_messages) if n_heavy else 0
    weights = [rnd.lognormvariate(0, shape.user_sigma) for _ in range(n_light)]
    light = _split(shape.messages - heavy_total - n_light, weights)
    heavy = _split(heavy_total - n_heavy, [rnd.lognormvariate(0, 0.3) for _ in range(n_heavy)])
    return [1 + c for c in light] + [1 + c for c in heavy]


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` shared out in proportion to ``weights`` (largest remainders), exactly."""
    if not weights:
        return []
    s = sum(weights)
    shares = [total * w / s for w in weights]
    counts = [math.floor(x) for x in shares]
    by_remainder = sorted(range(len(weights)), key=lambda i: shares[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _diurnal_time(rnd: random.Random, start: datetime, end: datetime) -> datetime:
    """A moment of the month, busier in the afternoon and evening (UTC) than at night."""
    span = (end - start).total_seconds()
    while True:
        t = start + timedelta(seconds=rnd.random() * span)
        hour = t.hour + t.minute / 60
        if rnd.random() * 1.6 < 1 + 0.6 * math.cos(2 * math.pi * (hour - 15) / 24):
            return t


def _user_month(
    rnd: random.Random,
    shape: Shape,
    writer: _Writer,
    user: str,
    channel: str,
    count: int,
    start: datetime,
    end: datetime,
) -> list[WorkloadMessage]:
    mean = shape.heavy_session_mean if writer.heavy else shape.session_mean
    q = (mean - 1) / mean  # 1 + geometric: P(one more message) = q
    sessions: list[int] = []
    left = count
    while left:
        n = 1
        while n < left and rnd.random() < q:
            n += 1
        sessions.append(n)
        left -= n
    starts = sorted(_diurnal_time(rnd, start, end) for _ in sessions)
    out: list[WorkloadMessage] = []
    last = end - timedelta(seconds=1)
    t = start
    for i, (n, begin) in enumerate(zip(sessions, starts, strict=True)):
        t = max(begin, t + timedelta(seconds=60))  # conversations of one user never overlap
        for k in range(n):
            if k:
                t += timedelta(seconds=max(2.0, rnd.lognormvariate(math.log(shape.think_median_s), 0.8)))
            start_cmd = channel == "telegram" and i == 0  # the first conversation opens with /start
            text, kind = writer.message(opening=k == int(start_cmd), first_ever=start_cmd and k == 0)
            out.append(WorkloadMessage(min(t, last).replace(microsecond=0), user, channel, text, kind))
    return out


class _Writer:
    """Writes one user's messages: openers, follow-ups, common questions, pasted text."""

    def __init__(self, rnd: random.Random, shape: Shape, *, heavy: bool) -> None:
        self.rnd = rnd
        self.shape = shape
        self.heavy = heavy
        self.topic = rnd.choice(TOPICS)

    def message(self, *, opening: bool, first_ever: bool) -> tuple[str, str]:
        r = self.rnd
        if first_ever:
            return "/start", "text"  # a Telegram client sends it when a user first opens a bot
        if r.random() < self.shape.media_share:
            return "", r.choice(("photo", "voice", "sticker"))
        if not opening and r.random() < self.shape.follow_up_share:
            return self._follow_up(), "text"
        if r.random() < self.shape.common_share:
            return _variant(r, COMMON[_zipf(r, len(COMMON))]), "text"
        if r.random() < 0.3:
            self.topic = r.choice(TOPICS)  # a new subject
        median = self.shape.heavy_tokens_median if self.heavy else self.shape.tokens_median
        target = min(self.shape.tokens_cap, round(r.lognormvariate(math.log(median), self.shape.tokens_sigma)))
        return self._question(max(1, target)), "text"

    def _question(self, target: int) -> str:
        r, t = self.rnd, self.topic
        if target <= 6:
            return r.choice(SHORT) if r.random() < 0.5 else _fill(r, r.choice(FACTS), t)
        if target > 250:
            return self._paste(target)
        pool = FACTS if target < 12 else (MEDIUM if target < 40 or r.random() < 0.6 else COMPLEX)
        if self.heavy and r.random() < 0.35:
            pool = COMPLEX
        text = _fill(r, r.choice(pool), t)
        return self._pad(text, target)

    def _pad(self, text: str, target: int) -> str:
        """Context a user adds around the question, until the message is about ``target`` tokens."""
        r, t = self.rnd, self.topic
        details: list[str] = []
        tokens = _tokens(text)
        while tokens < target - 4:
            sentence = _fill(r, r.choice(DETAILS), t)
            details.append(sentence)
            tokens += _tokens(sentence)
        return " ".join([*details, text]) if details and r.random() < 0.7 else " ".join([text, *details])

    def _paste(self, target: int) -> str:
        r, t = self.rnd, self.topic
        if t.name == "programming" or (self.heavy and r.random() < 0.5):
            ask = r.choice(CODE_ASKS)
            lines: list[str] = []
            tokens = _tokens(ask) + 4
            while tokens < target:
                line = _fill(r, r.choice(CODE_LINES), t)
                lines.append(("    " if lines and r.random() < 0.6 else "") + line)
                tokens += _tokens(line) + 1
            return f"{ask}\n```python\n" + "\n".join(lines) + "\n```"
        ask = r.choice(PASTE_ASKS)
        body: list[str] = []
        tokens = _tokens(ask)
        while tokens < target:
            sentence = _fill(r, r.choice(PROSE), t)
            body.append(sentence)
            tokens += _tokens(sentence)
        return ask + "\n\n" + " ".join(body)

    def _follow_up(self) -> str:
        r = self.rnd
        if r.random() < 0.75:
            return _fill(r, r.choice(FOLLOW_UPS), self.topic)
        text = _fill(r, r.choice(LONG_FOLLOW_UPS), self.topic)
        return self._pad(text, round(r.lognormvariate(math.log(30), 0.6)))


def _tokens(text: str) -> int:
    """About how many tokens: English runs near 1.3 tokens a word (the replay counts exactly)."""
    return max(1, round(len(text.split()) * 1.3))


def _zipf(rnd: random.Random, n: int, s: float = 1.0) -> int:
    """An index in [0, n) with probability proportional to 1 / (rank ** s)."""
    weights = _ZIPF.get((n, s))
    if weights is None:
        weights = _ZIPF[(n, s)] = _cumulative([1 / (k**s) for k in range(1, n + 1)])
    x = rnd.random() * weights[-1]
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if weights[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


_ZIPF: dict[tuple[int, float], list[float]] = {}


def _cumulative(values: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def _variant(rnd: random.Random, question: str) -> str:
    """How people type the same question: case, end punctuation, stray spaces."""
    x = rnd.random()
    bare = question.rstrip("?.!")
    if x < 0.45:
        return question
    if x < 0.65:
        return question.lower()
    if x < 0.80:
        return bare.lower()
    if x < 0.88:
        return bare
    if x < 0.95:
        return question + " "
    return bare + "??"


def _fill(rnd: random.Random, template: str, topic: Topic) -> str:
    """Fill ``{slot}`` from the topic's words, else the shared ones."""
    out, i = [], 0
    while (j := template.find("{", i)) >= 0:
        k = template.index("}", j)
        slot = template[j + 1 : k]
        words = topic.words.get(slot) or SHARED[slot]
        out += [template[i:j], rnd.choice(words)]
        i = k + 1
    out.append(template[i:])
    text = "".join(out)
    return text[:1].upper() + text[1:] if template.startswith("{") else text
