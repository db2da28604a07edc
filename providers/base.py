"""The one protocol every LLM provider speaks, and the values that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call, in genai-prices' convention.

    ``input_tokens`` is all input, cache reads and writes included (OpenAI's ``prompt_tokens``;
    Anthropic's ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``).
    ``output_tokens`` is all output, reasoning included. ``cache_write_tokens`` is all cache
    writes; ``cache_write_1h_tokens`` is the part of them written for one hour (billed higher).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a prompt: ``system``, ``user`` or ``assistant``."""

    role: str
    content: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What to ask: the model, the prompt (system message first) and the output cap.
    ``cache_prompt``: the prompt comes back, grown, in the conversation's next call, so a provider
    that caches only on request (Anthropic) should cache it; False for a one-off (a summary)."""

    model: str
    messages: Sequence[ChatMessage]
    max_tokens: int
    temperature: float | None = None
    cache_prompt: bool = True


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """The answer, the usage the provider billed, and who answered."""

    text: str
    usage: Usage
    provider: str
    model: str
    simulated: bool = False


class FailureKind(StrEnum):
    """Why a call failed; the router decides from it whether to try the next provider."""

    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    SERVER = "server"
    CONNECTION = "connection"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"


class ProviderError(Exception):
    """A call that produced no answer. ``usage`` is whatever the provider billed (usually none)."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        provider: str,
        model: str,
        retry_after: float | None = None,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(f"{provider}/{model}: {kind.value}: {message}")
        self.kind = kind
        self.provider = provider
        self.model = model
        self.retry_after = retry_after
        self.usage = usage or Usage()


class Provider(Protocol):
    """Talks to one LLM API. Knows nothing of budgets or chats."""

    name: str

    async def complete(self, request: CompletionRequest) -> CompletionResult: ...

    async def aclose(self) -> None: ...
