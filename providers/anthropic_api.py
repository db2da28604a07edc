"""Anthropic's Messages API through the official async SDK."""

from __future__ import annotations

from collections.abc import Mapping

import anthropic
from anthropic.types import MessageParam, TextBlock
from anthropic.types import Usage as AnthropicUsage

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
    ) -> None:
        self.name = name
        self._api_key = api_key
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
        kind, retry_after = FailureKind.SERVER, None
        if isinstance(exc, anthropic.APITimeoutError):
            kind = FailureKind.TIMEOUT
        elif isinstance(exc, anthropic.APIConnectionError):
            kind = FailureKind.CONNECTION
        elif isinstance(exc, anthropic.APIStatusError):
            kind = _failure_kind(exc.status_code)
            retry_after = _retry_after_s(exc.response.headers)
        # A server or proxy may echo the key in its error text; never pass it on.
        message = exc.message
        if self._api_key:
            message = message.replace(self._api_key, "[redacted]")
        message = message[:500]
        return ProviderError(kind, message, provider=self.name, model=model, retry_after=retry_after)


def _failure_kind(status: int) -> FailureKind:
    if status == 429:  # also the spend-limit errors, which subclass RateLimitError
        return FailureKind.RATE_LIMITED
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 408:
        return FailureKind.TIMEOUT
    if status >= 500:  # includes 529, overloaded
        return FailureKind.SERVER
    return FailureKind.BAD_REQUEST


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[header]) * scale)
        except (KeyError, ValueError):
            continue
    return None


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
