"""AnthropicProvider with the real anthropic SDK against a local fake Messages server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.anthropic_api import AnthropicProvider
from providers.base import (
    ChatMessage,
    CompletionRequest,
    CompletionResult,
    FailureKind,
    ProviderError,
    Usage,
)
from tests.fakes.llm_servers import (
    Drop,
    Fail,
    FakeAnthropicServer,
    Hang,
    Ok,
    Outcome,
    anthropic_usage,
    rate_limited,
)

# Until a conftest lists it, this module loads the fixtures itself.
pytest_plugins = ["tests.fakes.llm_fixtures"]

KEY = "sk-ant-test-DO-NOT-LEAK-42"
# The SDK honours retry-after on any status: 1 ms keeps its back-off out of the test's time.
FAST_RETRY = {"retry-after-ms": "1"}
REQUEST = CompletionRequest(
    "claude-haiku-4-5",
    [ChatMessage("system", "Be brief."), ChatMessage("user", "hi")],
    max_tokens=64,
)


@pytest.fixture
async def provider(anthropic_server: FakeAnthropicServer) -> AsyncIterator[AnthropicProvider]:
    p = AnthropicProvider(api_key=KEY, base_url=anthropic_server.base_url, timeout_s=0.5, max_retries=0)
    yield p
    await p.aclose()


async def failure(provider: AnthropicProvider, request: CompletionRequest = REQUEST) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request)
    return caught.value


async def test_answer_with_cache_creation_and_read(
    provider: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    usage = anthropic_usage(100, 40, cache_creation_input_tokens=20, cache_read_input_tokens=30)
    anthropic_server.script(Ok(text="Hello!", usage=usage))

    result = await provider.complete(REQUEST)

    assert result == CompletionResult(
        text="Hello!",
        usage=Usage(input_tokens=150, output_tokens=40, cache_read_tokens=30, cache_write_tokens=20),
        provider="anthropic",
        model="claude-haiku-4-5",
    )


async def test_absent_cache_fields_are_none_on_the_wire_and_zero_in_usage(
    provider: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    anthropic_server.script(Ok(usage={"input_tokens": 12, "output_tokens": 3}))

    assert (await provider.complete(REQUEST)).usage == Usage(input_tokens=12, output_tokens=3)


async def test_one_hour_writes_are_part_of_all_writes(
    provider: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    usage = anthropic_usage(100, 40, cache_creation_input_tokens=20, ephemeral_1h_input_tokens=15)
    anthropic_server.script(Ok(usage=usage))

    result = await provider.complete(REQUEST)

    # genai-prices' convention: cache_write_tokens counts every write, 5-minute and 1-hour.
    assert result.usage == Usage(input_tokens=120, output_tokens=40, cache_write_tokens=20, cache_write_1h_tokens=15)


async def test_thinking_tokens_are_reasoning_tokens(
    provider: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    usage = anthropic_usage(10, 90) | {"output_tokens_details": {"thinking_tokens": 70}}
    anthropic_server.script(Ok(usage=usage))

    assert (await provider.complete(REQUEST)).usage == Usage(input_tokens=10, output_tokens=90, reasoning_tokens=70)


@settings(max_examples=30, deadline=None)
@given(
    plain=st.integers(0, 200_000),
    output=st.integers(0, 8_000),
    read=st.none() | st.integers(0, 200_000),
    writes=st.none() | st.tuples(st.integers(0, 100_000), st.none() | st.integers(0, 100_000)),
)
async def test_usage_agrees_with_genai_prices_extractor(
    anthropic_server_session: FakeAnthropicServer,
    plain: int,
    output: int,
    read: int | None,
    writes: tuple[int, int | None] | None,
) -> None:
    five_min, one_hour = writes or (None, None)
    created = None if five_min is None else five_min + (one_hour or 0)
    wire = anthropic_usage(
        plain,
        output,
        cache_creation_input_tokens=created,
        cache_read_input_tokens=read,
        ephemeral_1h_input_tokens=one_hour,
    )
    anthropic_server_session.script(Ok(usage=wire))
    p = AnthropicProvider(api_key=KEY, base_url=anthropic_server_session.base_url)
    try:
        usage = (await p.complete(REQUEST)).usage
    finally:
        await p.aclose()

    expected = genai_prices.extract_usage({"model": "claude-haiku-4-5", "usage": wire}, provider_id="anthropic").usage
    fields = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    assert {f: getattr(usage, f) for f in fields} == {f: getattr(expected, f) or 0 for f in fields}
    assert usage.cache_write_1h_tokens == (expected.cache_write_1h_tokens or 0)
    assert usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens == plain


async def test_text_is_the_text_blocks_joined(
    provider: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    content: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Hello, "},
        {"type": "text", "text": "world."},
    ]
    anthropic_server.script(Ok(overrides={"content": content}))

    assert (await provider.complete(REQUEST)).text == "Hello, world."


async def test_request_on_the_wire(provider: AnthropicProvider, anthropic_server: FakeAnthropicServer) -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "hello"),
        ChatMessage("system", "No jokes."),
        ChatMessage("user", "bye"),
    ]
    await provider.complete(replace(REQUEST, messages=messages))
    await provider.complete(replace(REQUEST, messages=[ChatMessage("user", "hi")]))

    first, second = anthropic_server.requests
    assert first.path == "/v1/messages"
    # anthropic 2.x sends the API key as a bearer token, not as x-api-key.
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in first.headers
    assert "anthropic-version" in first.headers
    assert first.body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "system": "Be brief.\n\nNo jokes.",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
        ],
        # The top-level breakpoint: the prompt is cached for the conversation's next call.
        "cache_control": {"type": "ephemeral", "ttl": "5m"},
    }
    assert "system" not in second.body


@pytest.mark.parametrize(
    ("setting", "cache_prompt", "sent"),
    [
        ("1h", True, {"type": "ephemeral", "ttl": "1h"}),
        ("5m", False, None),  # a summary's prompt is asked once: writing it would cost 25 % more
        ("off", True, None),
    ],
)
async def test_the_prompt_cache_breakpoint_follows_the_setting_and_the_request(
    anthropic_server: FakeAnthropicServer, setting: Any, cache_prompt: bool, sent: dict[str, str] | None
) -> None:
    p = AnthropicProvider(api_key=KEY, base_url=anthropic_server.base_url, timeout_s=0.5, prompt_cache=setting)
    await p.complete(replace(REQUEST, cache_prompt=cache_prompt))
    await p.aclose()
    [request] = anthropic_server.requests
    assert request.body.get("cache_control") == sent


@pytest.mark.parametrize(
    ("outcome", "retry_after"),
    [
        (rate_limited(7), 7.0),
        (rate_limited(retry_after_ms=1500), 1.5),
        (rate_limited(), None),
    ],
)
async def test_rate_limited_carries_retry_after(
    provider: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
    outcome: Fail,
    retry_after: float | None,
) -> None:
    anthropic_server.script(outcome)

    error = await failure(provider)

    assert error.kind is FailureKind.RATE_LIMITED
    assert error.retry_after == retry_after
    assert (error.provider, error.model) == ("anthropic", "claude-haiku-4-5")
    assert len(anthropic_server.requests) == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, FailureKind.BAD_REQUEST),
        (401, FailureKind.AUTH),
        (403, FailureKind.AUTH),
        (404, FailureKind.BAD_REQUEST),
        (413, FailureKind.BAD_REQUEST),
        (500, FailureKind.SERVER),
        (529, FailureKind.SERVER),
    ],
)
async def test_status_maps_to_failure_kind(
    provider: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
    status: int,
    kind: FailureKind,
) -> None:
    anthropic_server.script(Fail(status))

    error = await failure(provider)

    assert error.kind is kind
    assert len(anthropic_server.requests) == 1


async def test_hang_times_out(provider: AnthropicProvider, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Hang(10))
    started = time.monotonic()

    error = await failure(provider)

    assert error.kind is FailureKind.TIMEOUT
    assert 0.45 <= time.monotonic() - started < 2.0
    assert len(anthropic_server.requests) == 1


async def test_dropped_connection(provider: AnthropicProvider, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Drop())

    error = await failure(provider)

    assert error.kind is FailureKind.CONNECTION
    assert len(anthropic_server.requests) == 1


@pytest.mark.parametrize("max_retries", [0, 1])
@pytest.mark.parametrize(
    ("outcome", "kind"),
    [
        (Fail(500, headers=FAST_RETRY), FailureKind.SERVER),
        (Fail(529, headers=FAST_RETRY), FailureKind.SERVER),
        (Drop(), FailureKind.CONNECTION),
    ],
)
async def test_sdk_retries_exactly_max_retries_times(
    anthropic_server: FakeAnthropicServer, max_retries: int, outcome: Outcome, kind: FailureKind
) -> None:
    anthropic_server.script(outcome, outcome, outcome)
    p = AnthropicProvider(api_key=KEY, base_url=anthropic_server.base_url, max_retries=max_retries)
    try:
        error = await failure(p)
    finally:
        await p.aclose()

    assert error.kind is kind
    assert len(anthropic_server.requests) == max_retries + 1


async def test_sdk_waits_out_retry_after_before_its_retry(anthropic_server: FakeAnthropicServer) -> None:
    # Worth knowing: with max_retries=1 a 429 costs the full retry-after (up to 120 s) inside
    # the SDK before the caller hears of it.
    anthropic_server.script(rate_limited(retry_after_ms=300), Ok(text="after the wait"))
    p = AnthropicProvider(api_key=KEY, base_url=anthropic_server.base_url, max_retries=1)
    started = time.monotonic()
    try:
        result = await p.complete(REQUEST)
    finally:
        await p.aclose()

    assert result.text == "after the wait"
    assert time.monotonic() - started >= 0.3
    assert len(anthropic_server.requests) == 2


async def test_api_key_never_in_error_text(provider: AnthropicProvider, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Fail(401, f"invalid x-api-key {KEY}"))

    error = await failure(provider)

    assert error.kind is FailureKind.AUTH
    assert KEY not in str(error)
    assert "[redacted]" in str(error)
    assert error.__cause__ is None and error.__suppress_context__


async def test_unknown_role_fails_before_sending(
    provider: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    error = await failure(provider, replace(REQUEST, messages=[ChatMessage("tool", "x")]))

    assert error.kind is FailureKind.BAD_REQUEST
    assert anthropic_server.requests == []
