"""The messages the benchmarks send, and an LLM provider that answers at once.

The mix: 8 in 10 are new questions (short, medium and long, so every complexity tier is used;
each unique, so they miss the answer cache and reach the LLM), 1 in 10 a follow-up that is not
self-contained (no cache lookup), 1 in 10 one of a few common questions (cache hits once answered).
"""

from __future__ import annotations

from providers.base import CompletionRequest, CompletionResult, Usage

TOPICS = (
    "tides", "compound interest", "photosynthesis", "the French revolution", "sourdough bread", "black holes",
    "vaccines", "inflation", "the Roman empire", "neural networks", "climate change", "jazz harmony",
    "plate tectonics", "the stock market", "sleep cycles", "electric cars",
)  # fmt: skip
COMMON = (
    "What is the capital of France?",
    "How many days are in a leap year?",
    "What does HTTP stand for?",
    "Who wrote Hamlet?",
)
FOLLOW_UPS = ("And what about the second one?", "Can you say more about that?", "Why is that so?")


def question(i: int) -> str:
    """The i-th message of the benchmark workload (deterministic)."""
    topic = TOPICS[i % len(TOPICS)]
    kind = i % 10
    if kind == 3:
        return FOLLOW_UPS[i % len(FOLLOW_UPS)]
    if kind == 7:
        return COMMON[(i // 10) % len(COMMON)]
    if kind in (0, 4, 8):
        return f"What is {topic}? (question {i})"
    if kind in (1, 5, 9):
        return f"How does {topic} work, and why does it matter for everyday life? I am asking as question number {i}."
    return (
        f"Compare {topic} with {TOPICS[(i + 5) % len(TOPICS)]} step by step: analyze the trade-offs, explain the "
        f"history, evaluate three arguments for and against, and design a short plan to learn both (case {i})."
    )


class InstantProvider:
    """A Provider that answers at once with a short fixed reply and a plausible usage: the LLM SDK's
    work is left out, so what is measured is pennybot's own."""

    def __init__(self, name: str = "instant") -> None:
        self.name = name
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        self.calls += 1
        prompt = sum(len(m.content) for m in request.messages) // 4 + 4 * len(request.messages)
        text = "Here is a short answer from the instant provider: it is fine."
        return CompletionResult(text, Usage(input_tokens=prompt, output_tokens=14), self.name, request.model)

    async def aclose(self) -> None:
        return None
