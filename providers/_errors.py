"""SDK errors to ProviderError, the same way for the OpenAI and Anthropic SDKs (whose exception
classes share their names)."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from providers.base import FailureKind, ProviderError


def provider_error(sdk: ModuleType, exc: Any, *, api_key: str, provider: str, model: str) -> ProviderError:
    """The ProviderError for an SDK's APIError, with the key never in its text."""
    kind, retry_after = FailureKind.SERVER, None
    if isinstance(exc, sdk.APITimeoutError):  # a subclass of APIConnectionError: test it first
        kind = FailureKind.TIMEOUT
    elif isinstance(exc, sdk.APIConnectionError):
        kind = FailureKind.CONNECTION
    elif isinstance(exc, sdk.APIStatusError):
        kind = failure_kind(exc.status_code)
        retry_after = retry_after_s(exc.response.headers)
    # A server or proxy may echo the key in its error text; never pass it on.
    message = str(exc.message)
    if api_key:
        message = message.replace(api_key, "[redacted]")
    return ProviderError(kind, message[:500], provider=provider, model=model, retry_after=retry_after)


def failure_kind(status: int) -> FailureKind:
    if status == 429:  # Anthropic's spend-limit errors too, which subclass RateLimitError
        return FailureKind.RATE_LIMITED
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 408:
        return FailureKind.TIMEOUT
    if status >= 500:  # includes Anthropic's 529, overloaded
        return FailureKind.SERVER
    return FailureKind.BAD_REQUEST


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Numeric forms only, milliseconds first, as the SDKs read them; an HTTP date gives None."""
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[header]) * scale)
        except (KeyError, ValueError):
            continue
    return None
