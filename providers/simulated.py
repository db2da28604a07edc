"""An offline provider: deterministic replies, usage counted from the real prompt and reply.

It is the default only while no API key is set; every reply it produces is marked simulated.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Sequence

from providers.base import ChatMessage, CompletionRequest, CompletionResult, Usage

SUMMARY_MARKER = "Summarize the conversation"
MARK = "[simulated] "

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


class SimulatedProvider:
    """Answers instantly (after ``latency_s``) with a reply whose length follows the question."""

    def __init__(
        self,
        *,
        count_prompt: Callable[[Sequence[ChatMessage], str], int],
        count_text: Callable[[str], int],
        latency_s: float = 0.0,
        name: str = "simulated",
    ) -> None:
        self.name = name
        self._count_prompt = count_prompt
        self._count_text = count_text
        self.latency_s = latency_s

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        system = request.messages[0].content if request.messages and request.messages[0].role == "system" else ""
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        text = _summary(question) if system.startswith(SUMMARY_MARKER) else MARK + _reply(question)
        text = self._fit(text, request.max_tokens)
        usage = Usage(
            input_tokens=self._count_prompt(request.messages, request.model),
            output_tokens=self._count_text(text),
        )
        return CompletionResult(text, usage, self.name, request.model, simulated=True)

    def _fit(self, text: str, max_tokens: int) -> str:
        # A real model stops at max_tokens; so does this one, by whole words.
        words = text.split(" ")
        while len(words) > 1 and self._count_text(" ".join(words)) > max_tokens:
            words = words[: max(1, min(len(words) - 1, max_tokens))]
        return " ".join(words)

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
