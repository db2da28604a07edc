"""An offline provider: deterministic replies, usage counted from the real prompt and reply.

It is the default only while no API key is set; every reply it produces is marked simulated.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Literal

from providers.base import ChatMessage, CompletionRequest, CompletionResult, Usage

SUMMARY_MARKER = "Summarize the conversation"
MARK = "[simulated] "

# OpenAI caches a prompt's prefix by itself once it is 1,024 tokens or more, in steps of 128, and
# bills the cached tokens at the model's cached-input price. A cached prefix stays "for 5 to 10
# minutes of inactivity": the short end is used, so the discount is never overstated.
PREFIX_MIN_TOKENS = 1024
PREFIX_STEP_TOKENS = 128
PREFIX_TTL_S = 300.0

# Anthropic caches only where a request sets a breakpoint (pennybot sets the top-level one, on the
# prompt's last block, unless ANTHROPIC_PROMPT_CACHE=off). A prompt shorter than the model's
# minimum is not cached; the breakpoint looks back up to 20 blocks for the longest prefix written
# before. Minimums from Anthropic's prompt-caching guide (1,024 tokens unless listed).
ANTHROPIC_MIN_TOKENS = (
    ("claude-opus-4-5", 4096), ("claude-opus-4-6", 4096), ("claude-haiku-4-5", 4096),
    ("claude-sonnet-4-6", 2048), ("claude-3-5-haiku", 2048), ("claude-3-haiku", 2048),
)  # fmt: skip
ANTHROPIC_LOOKBACK_BLOCKS = 20
ANTHROPIC_TTL_S = {"5m": 300.0, "1h": 3600.0}

_WORDS = (
    "budget",
    "token",
    "model",
    "answer",
    "question",
    "cache",
    "context",
    "reply",
    "cost",
    "limit",
    "provider",
    "summary",
    "user",
    "message",
    "price",
    "window",
    "tier",
    "simple",
    "clear",
    "short",
    "exact",
    "careful",
    "steady",
    "plan",
    "example",
    "detail",
    "idea",
    "note",
    "point",
    "result",
    "reason",
    "step",
    "choice",
    "value",
    "fact",
    "way",
    "part",
    "time",
    "day",
    "month",
    "hour",
    "week",
)


class _Expiring:
    """Prompt prefixes by model, with when each expires; the expired are dropped every 4,096
    stores, so memory stays bounded."""

    def __init__(self) -> None:
        self._live: dict[str, dict[int, float]] = {}  # model -> prefix key -> expiry
        self._stores = 0

    def _stored(self, n: int, now: float) -> None:
        self._stores += n
        if self._stores >= 4096:
            self._stores = 0
            for table in self._live.values():
                for stale in [k for k, exp in table.items() if exp <= now]:
                    del table[stale]


class PrefixCache(_Expiring):
    """OpenAI's automatic prompt caching, as it is billed: a prompt whose first messages match,
    exactly, a prefix this model saw within ``ttl_s`` gets that prefix's tokens (from 1,024, in
    steps of 128) billed as cached input. Matching is by whole messages, so a prefix that ends
    inside a message counts only up to that message: the discount is never overstated."""

    def __init__(
        self, *, min_tokens: int = PREFIX_MIN_TOKENS, step: int = PREFIX_STEP_TOKENS, ttl_s: float = PREFIX_TTL_S
    ) -> None:
        super().__init__()
        self.min_tokens = min_tokens
        self.step = step
        self.ttl_s = ttl_s

    def use(self, model: str, prefixes: Sequence[tuple[int, int]], now: float) -> int:
        """The cached tokens of a prompt whose message-boundary prefixes are ``prefixes``
        ((key, tokens so far), shortest first); then remember them, refreshing their expiry."""
        live = self._live.setdefault(model, {})
        cached = 0
        for key, tokens in reversed(prefixes):
            if tokens < self.min_tokens:
                break
            if live.get(key, 0.0) > now:
                cached = tokens // self.step * self.step
                break
        stored = 0
        for key, tokens in prefixes:
            if tokens >= self.min_tokens:
                live[key] = now + self.ttl_s
                stored += 1
        self._stored(stored, now)
        return cached


class BreakpointCache(_Expiring):
    """Anthropic's prompt caching with the top-level breakpoint, as it is billed: the prompt up to
    its last block is written (``cache_write_tokens``, at 1.25 or 2 times the input price) unless
    it is shorter than the model's minimum; the longest prefix written within the TTL, at one of
    the last 20 block boundaries, is read back (``cache_read_tokens``, a tenth of the price) and
    only the rest is written. Each use of an entry starts its TTL again."""

    def __init__(self, ttl: str) -> None:
        super().__init__()
        self.ttl_s = ANTHROPIC_TTL_S[ttl]

    @staticmethod
    def min_tokens(model: str) -> int:
        return next((n for name, n in ANTHROPIC_MIN_TOKENS if model.startswith(name)), 1024)

    def use(self, model: str, prefixes: Sequence[tuple[int, int]], now: float) -> tuple[int, int]:
        """(read, written) tokens of a prompt whose message-boundary prefixes are ``prefixes``
        ((key, tokens so far), shortest first; the first one's count includes the system)."""
        if not prefixes or prefixes[-1][1] < self.min_tokens(model):
            return 0, 0
        live = self._live.setdefault(model, {})
        read = 0
        for key, tokens in reversed(prefixes[-ANTHROPIC_LOOKBACK_BLOCKS:]):
            if live.get(key, 0.0) > now:
                read = tokens
                live[key] = now + self.ttl_s
                break
        last, total = prefixes[-1]
        live[last] = now + self.ttl_s
        self._stored(1, now)
        return read, total - read


def prefix_key(before: int, message: ChatMessage) -> int:
    """The key of a prompt prefix: the prefix before ``message`` (0: none) and ``message``."""
    return hash((before, message.role, message.name, message.content))


def prefix_keys(messages: Sequence[ChatMessage], sizes: Sequence[int]) -> list[tuple[int, int]]:
    """(key, tokens so far) after each message: the key names the exact messages up to there."""
    out = []
    key, total = 0, 0
    for message, size in zip(messages, sizes, strict=True):
        key = prefix_key(key, message)
        total += size
        out.append((key, total))
    return out


class SimulatedProvider:
    """Answers instantly (after ``latency_s``) with a reply whose length follows the question,
    billed as its provider bills: usage counted from the real prompt and reply, and a repeated
    prompt prefix as cached input, by itself for OpenAI's models (``PrefixCache``), and for Claude
    models where the request sets a breakpoint, as pennybot's Anthropic provider does unless
    ``anthropic_cache`` is "off" (``BreakpointCache``). ``clock`` gives epoch seconds (the
    pipeline's clock)."""

    def __init__(
        self,
        *,
        count_prompt: Callable[[Sequence[ChatMessage], str], int],
        count_text: Callable[[str], int],
        latency_s: float = 0.0,
        name: str = "simulated",
        clock: Callable[[], float] | None = None,
        prefix_cache: PrefixCache | None = None,
        anthropic_cache: Literal["off", "5m", "1h"] = "5m",
    ) -> None:
        self.name = name
        self._count_prompt = count_prompt
        self._count_text = count_text
        self.latency_s = latency_s
        self._clock = clock or time.time
        self.prefix_cache = PrefixCache() if prefix_cache is None else prefix_cache
        self.breakpoints = None if anthropic_cache == "off" else BreakpointCache(anthropic_cache)
        self._one_hour = anthropic_cache == "1h"
        self._sizes: dict[tuple[str, str, str | None, str], int] = {}

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        system = request.messages[0].content if request.messages and request.messages[0].role == "system" else ""
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if system.startswith(SUMMARY_MARKER):
            text = self._fit(_summary(question), request.max_tokens)
        else:
            text = self.reply(question, request.max_tokens)
        # Counted message by message (prompt counts add up), so the cached prefix is known too.
        base = self._count_prompt([], request.model)
        sizes = [self._size(m, request.model, base) for m in request.messages]
        cached = written = 0
        if not request.model.startswith("claude"):
            cached = self.prefix_cache.use(request.model, prefix_keys(request.messages, sizes), self._clock())
        elif self.breakpoints is not None and request.cache_prompt:
            prefixes = [(key, base + tokens) for key, tokens in prefix_keys(request.messages, sizes)]
            cached, written = self.breakpoints.use(request.model, prefixes, self._clock())
        usage = Usage(
            input_tokens=base + sum(sizes),
            output_tokens=self._count_text(text),
            cache_read_tokens=cached,
            cache_write_tokens=written,
            cache_write_1h_tokens=written if self._one_hour else 0,
        )
        return CompletionResult(text, usage, self.name, request.model, simulated=True)

    def _size(self, message: ChatMessage, model: str, base: int) -> int:
        # A conversation's messages come back in every prompt: count each once (a memo bounded to
        # 4,096 messages of at most 2,000 characters, about 8 MB).
        if len(message.content) > 2000:
            return self._count_prompt([message], model) - base
        key = (model, message.role, message.name, message.content)
        size = self._sizes.get(key)
        if size is None:
            size = self._count_prompt([message], model) - base
            if len(self._sizes) >= 4096:
                self._sizes.clear()
            self._sizes[key] = size
        return size

    def reply(self, question: str, max_tokens: int) -> str:
        """The answer this provider gives to ``question`` (whatever the history), cut at max_tokens."""
        return self._fit(MARK + _reply(question), max_tokens)

    def _fit(self, text: str, max_tokens: int) -> str:
        # A real model stops at max_tokens; so does this one, by whole words: the most words (at
        # least one) that fit, found by halving rather than one word at a time.
        if self._count_text(text) <= max_tokens:
            return text
        words = text.split(" ")
        lo, hi = 1, min(len(words) - 1, max_tokens)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._count_text(" ".join(words[:mid])) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        return " ".join(words[:lo])

    async def aclose(self) -> None:
        return None


def _reply(question: str) -> str:
    digest = hashlib.sha256(question.encode()).digest()
    topic = " ".join(question.split()[:12])
    n = 20 + digest[0] % 40 + min(len(question.split()) * 2, 120)
    body = " ".join(_WORDS[b % len(_WORDS)] for b in (digest * (n // len(digest) + 1))[:n])
    return f'You asked: "{topic}". Here is a deterministic answer: {body}.'


_FIRST = re.compile(r"^(.*?[.!?])(\s|$)")


def _summary(transcript: str) -> str:
    lines = []
    for line in transcript.splitlines():
        line = line.strip()
        if line:
            match = _FIRST.match(line)
            lines.append(match.group(1) if match else line)
    return "\n".join(lines)
