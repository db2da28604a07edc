"""Anthropic's Messages API through the official async SDK."""

from __future__ import annotations

from typing import Literal

import anthropic
from anthropic import Omit
from anthropic.types import CacheControlEphemeralParam, MessageParam, TextBlock
from anthropic.types import Usage as AnthropicUsage

from providers._errors import provider_error
from providers.base import (
    CompletionRequest,
    CompletionResult,
    FailureKind,
    ProviderError,
    Usage,
)


class AnthropicProvider:
    """Calls ``messages.create``; the SDK retries ``max_retries`` times on its own.

    ``timeout_s`` bounds each attempt, not the call (see OpenAIProvider).
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 1,
        name: str = "anthropic",
        prompt_cache: Literal["off", "5m", "1h"] = "5m",
    ) -> None:
        self.name = name
        self._api_key = api_key
        # The top-level breakpoint marks the prompt's last block: the whole prompt is written to
        # the cache, and the next prompt of the conversation (this one, the reply and a new
        # question) reads it back. pennybot's prompts only grow between folds, so they repeat.
        self._cache: CacheControlEphemeralParam | Omit = (
            anthropic.omit if prompt_cache == "off" else {"type": "ephemeral", "ttl": prompt_cache}
        )
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        """Ask once (plus the SDK's retries); raise ProviderError if no answer came."""
        # System text goes in the top-level field, joined in order (the API's documented way).
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        messages: list[MessageParam] = []
        for m in request.messages:
            if m.role == "user":
                messages.append({"role": "user", "content": m.content})
            elif m.role == "assistant":
                messages.append({"role": "assistant", "content": m.content})
            elif m.role != "system":
                raise ProviderError(
                    FailureKind.BAD_REQUEST,
                    f"unknown role {m.role!r}",
                    provider=self.name,
                    model=request.model,
                )
        # anthropic 2.x has no `temperature` parameter any more, so request.temperature is unused.
        try:
            response = await self._client.messages.create(
                model=request.model,
                messages=messages,
                system=system or anthropic.omit,
                max_tokens=request.max_tokens,
                cache_control=self._cache if request.cache_prompt else anthropic.omit,
            )
        except anthropic.APIError as exc:
            # `from None`: the SDK's error, whose text may hold the key, stays out of tracebacks.
            raise self._error(exc, request.model) from None
        return CompletionResult(
            text="".join(b.text for b in response.content if isinstance(b, TextBlock)),
            usage=_usage(response.usage),
            provider=self.name,
            model=response.model or request.model,
        )

    async def aclose(self) -> None:
        """Close the SDK's HTTP connection pool."""
        await self._client.close()

    def _error(self, exc: anthropic.APIError, model: str) -> ProviderError:
        return provider_error(anthropic, exc, api_key=self._api_key, provider=self.name, model=model)


def _usage(usage: AnthropicUsage) -> Usage:
    # Anthropic's input_tokens excludes cache reads and writes; Usage counts all input.
    reads = usage.cache_read_input_tokens or 0
    breakdown = usage.cache_creation
    writes = usage.cache_creation_input_tokens
    if writes is None:
        writes = breakdown.ephemeral_5m_input_tokens + breakdown.ephemeral_1h_input_tokens if breakdown else 0
    thinking = usage.output_tokens_details
    return Usage(
        input_tokens=usage.input_tokens + writes + reads,
        output_tokens=usage.output_tokens,  # includes thinking tokens
        cache_read_tokens=reads,
        # genai-prices' convention: cache_write_tokens is all writes, the 1-hour ones a part of it.
        cache_write_tokens=writes,
        cache_write_1h_tokens=breakdown.ephemeral_1h_input_tokens if breakdown else 0,
        reasoning_tokens=thinking.thinking_tokens if thinking else 0,
    )
