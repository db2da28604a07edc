"""OpenAI's chat-completions API (or any server that speaks it) through the official async SDK."""

from __future__ import annotations

from typing import cast

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.completion_usage import CompletionUsage

from providers._errors import provider_error
from providers.base import (
    ChatMessage,
    CompletionRequest,
    CompletionResult,
    FailureKind,
    ProviderError,
    Usage,
)

_ROLES = frozenset({"system", "developer", "user", "assistant"})


class OpenAIProvider:
    """Calls ``chat.completions.create``; the SDK retries ``max_retries`` times on its own.

    ``timeout_s`` bounds each attempt, not the call: the worst case is about
    ``(max_retries + 1) * timeout_s`` plus the SDK's back-off (which honours ``retry-after``).
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 1,
        name: str = "openai",
    ) -> None:
        self.name = name
        self._api_key = api_key
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        """Ask once (plus the SDK's retries); raise ProviderError if no answer came."""
        messages = [self._message(m, request.model) for m in request.messages]
        body: dict[str, object] = {
            "model": request.model,
            "messages": messages,
            # `max_tokens` is deprecated and refused by reasoning models (o-series, gpt-5);
            # `max_completion_tokens` caps visible and reasoning tokens together.
            "max_completion_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        try:
            # The SDK's public `post`, not `chat.completions.create`: `create` runs its TypedDict
            # transform over every message of the prompt (here 9.4 ms of CPU a call for a
            # 22-message prompt, against 2.8 ms posted as is, server included). The body is already
            # the documented JSON; `post` keeps the client's auth, retries, timeout, errors and the
            # typed response.
            response = await self._client.post("/chat/completions", cast_to=ChatCompletion, body=body)
        except openai.APIError as exc:
            # `from None`: the SDK's error, whose text may hold the key, stays out of tracebacks.
            raise self._error(exc, request.model) from None
        usage = _usage(response.usage)
        if not response.choices:
            raise ProviderError(
                FailureKind.SERVER,
                "response had no choices",
                provider=self.name,
                model=request.model,
                usage=usage,
            )
        return CompletionResult(
            text=response.choices[0].message.content or "",
            usage=usage,
            provider=self.name,
            model=response.model or request.model,
        )

    async def aclose(self) -> None:
        """Close the SDK's HTTP connection pool."""
        await self._client.close()

    def _message(self, message: ChatMessage, model: str) -> ChatCompletionMessageParam:
        if message.role not in _ROLES:
            raise ProviderError(
                FailureKind.BAD_REQUEST,
                f"unknown role {message.role!r}",
                provider=self.name,
                model=model,
            )
        param = {"role": message.role, "content": message.content}
        if message.name:
            param["name"] = message.name
        return cast(ChatCompletionMessageParam, param)

    def _error(self, exc: openai.APIError, model: str) -> ProviderError:
        return provider_error(openai, exc, api_key=self._api_key, provider=self.name, model=model)


def _usage(usage: CompletionUsage | None) -> Usage:
    # Only a compatible server omits usage: zeros mean "not reported", not "free".
    if usage is None:
        return Usage()
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens,  # already includes the cached tokens
        output_tokens=usage.completion_tokens,  # already includes the reasoning tokens
        cache_read_tokens=(prompt.cached_tokens or 0) if prompt else 0,
        cache_write_tokens=(prompt.cache_write_tokens or 0) if prompt else 0,
        reasoning_tokens=(completion.reasoning_tokens or 0) if completion else 0,
    )
