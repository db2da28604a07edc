"""OpenAIProvider with the real openai SDK against a local fake chat-completions server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

import genai_prices
import pytest

from providers.base import (
    ChatMessage,
    CompletionRequest,
    CompletionResult,
    FailureKind,
    ProviderError,
    Usage,
)
from providers.openai_api import OpenAIProvider
from tests.fakes.llm_servers import (
    Drop,
    Fail,
    FakeOpenAIServer,
    Hang,
    Ok,
    Outcome,
    openai_usage,
    rate_limited,
)

# Until a conftest lists it, this module loads the fixtures itself.
pytest_plugins = ["tests.fakes.llm_fixtures"]

KEY = "sk-test-DO-NOT-LEAK-42"
# The SDK honours retry-after on any status: 1 ms keeps its back-off out of the test's time.
FAST_RETRY = {"retry-after-ms": "1"}


REQUEST = CompletionRequest(
    "gpt-4o-mini", [ChatMessage("system", "Be brief."), ChatMessage("user", "hi")], max_tokens=64
)


@pytest.fixture
async def provider(openai_server: FakeOpenAIServer) -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider(api_key=KEY, base_url=openai_server.base_url, timeout_s=0.5, max_retries=0)
    yield p
    await p.aclose()


async def failure(provider: OpenAIProvider, request: CompletionRequest | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request or REQUEST)
    return caught.value


async def test_answer_with_cached_and_reasoning_tokens(
    provider: OpenAIProvider,
    openai_server: FakeOpenAIServer,
) -> None:
    usage = openai_usage(1200, 350, cached_tokens=1024, reasoning_tokens=200)
    openai_server.script(Ok(text="Hello!", usage=usage))

    result = await provider.complete(REQUEST)

    assert result == CompletionResult(
        text="Hello!",
        usage=Usage(input_tokens=1200, output_tokens=350, cache_read_tokens=1024, reasoning_tokens=200),
        provider="openai",
        model="gpt-4o-mini",
    )


async def test_usage_agrees_with_genai_prices_extractor(
    provider: OpenAIProvider,
    openai_server: FakeOpenAIServer,
) -> None:
    wire = openai_usage(1200, 350, cached_tokens=1024, reasoning_tokens=200)
    openai_server.script(Ok(usage=wire))

    usage = (await provider.complete(REQUEST)).usage

    expected = genai_prices.extract_usage(
        {"model": "gpt-4o-mini", "usage": wire}, provider_id="openai", api_flavor="chat"
    ).usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (
        expected.input_tokens,
        expected.output_tokens,
        expected.cache_read_tokens,
    )
    assert usage.reasoning_tokens == expected.output_reasoning_tokens


async def test_missing_usage_details_count_as_zero(
    provider: OpenAIProvider,
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.script(Ok(usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}))

    assert (await provider.complete(REQUEST)).usage == Usage(input_tokens=12, output_tokens=3)


async def test_request_on_the_wire(
    provider: OpenAIProvider,
    openai_server: FakeOpenAIServer,
) -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "hi", name="ann"),
        ChatMessage("assistant", "hello"),
        ChatMessage("user", "bye"),
    ]
    await provider.complete(replace(REQUEST, messages=messages, temperature=0.2))
    await provider.complete(REQUEST)

    first, second = openai_server.requests
    assert first.path == "/v1/chat/completions"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi", "name": "ann"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
        ],
        "max_completion_tokens": 64,
        "temperature": 0.2,
    }
    assert "temperature" not in second.body
    assert "max_tokens" not in second.body


async def test_default_reply_echoes(provider: OpenAIProvider) -> None:
    result = await provider.complete(replace(REQUEST, messages=[ChatMessage("user", "what is two plus two")]))

    assert result.text == "echo: what is two plus two"
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("outcome", "retry_after"),
    [
        (rate_limited(7), 7.0),
        (rate_limited(retry_after_ms=1500), 1.5),
        (rate_limited(30, retry_after_ms=250), 0.25),  # ms wins, as in the SDK
        (rate_limited(), None),
    ],
)
async def test_rate_limited_carries_retry_after(
    provider: OpenAIProvider,
    openai_server: FakeOpenAIServer,
    outcome: Fail,
    retry_after: float | None,
) -> None:
    openai_server.script(outcome)

    error = await failure(provider)

    assert error.kind is FailureKind.RATE_LIMITED
    assert error.retry_after == retry_after
    assert (error.provider, error.model) == ("openai", "gpt-4o-mini")
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, FailureKind.BAD_REQUEST),
        (401, FailureKind.AUTH),
        (403, FailureKind.AUTH),
        (404, FailureKind.BAD_REQUEST),
        (408, FailureKind.TIMEOUT),
        (422, FailureKind.BAD_REQUEST),
        (500, FailureKind.SERVER),
        (503, FailureKind.SERVER),
    ],
)
async def test_status_maps_to_failure_kind(
    provider: OpenAIProvider,
    openai_server: FakeOpenAIServer,
    status: int,
    kind: FailureKind,
) -> None:
    openai_server.script(Fail(status))

    error = await failure(provider)

    assert error.kind is kind
    assert error.retry_after is None
    assert len(openai_server.requests) == 1


async def test_hang_times_out(provider: OpenAIProvider, openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Hang(10))
    started = time.monotonic()

    error = await failure(provider)

    assert error.kind is FailureKind.TIMEOUT
    assert 0.45 <= time.monotonic() - started < 2.0
    assert len(openai_server.requests) == 1


async def test_dropped_connection(provider: OpenAIProvider, openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Drop())

    error = await failure(provider)

    assert error.kind is FailureKind.CONNECTION
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("max_retries", [0, 1])
@pytest.mark.parametrize(
    ("outcome", "kind"),
    [(Fail(500, headers=FAST_RETRY), FailureKind.SERVER), (Drop(), FailureKind.CONNECTION)],
)
async def test_sdk_retries_exactly_max_retries_times(
    openai_server: FakeOpenAIServer,
    max_retries: int,
    outcome: Outcome,
    kind: FailureKind,
) -> None:
    openai_server.script(outcome, outcome, outcome)
    p = OpenAIProvider(api_key=KEY, base_url=openai_server.base_url, max_retries=max_retries)
    try:
        error = await failure(p)
    finally:
        await p.aclose()

    assert error.kind is kind
    assert len(openai_server.requests) == max_retries + 1
    retry_counts = [r.headers["x-stainless-retry-count"] for r in openai_server.requests]
    assert retry_counts == [str(n) for n in range(max_retries + 1)]


async def test_retry_after_a_500_then_answers(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Fail(500, headers=FAST_RETRY), Ok(text="second time"))
    p = OpenAIProvider(api_key=KEY, base_url=openai_server.base_url, max_retries=1)
    try:
        result = await p.complete(REQUEST)
    finally:
        await p.aclose()

    assert result.text == "second time"
    assert len(openai_server.requests) == 2


async def test_sdk_waits_out_retry_after_before_its_retry(openai_server: FakeOpenAIServer) -> None:
    # Worth knowing: with max_retries=1 a 429 costs the full retry-after (up to 120 s) inside
    # the SDK before the caller hears of it.
    openai_server.script(rate_limited(retry_after_ms=300), Ok(text="after the wait"))
    p = OpenAIProvider(api_key=KEY, base_url=openai_server.base_url, max_retries=1)
    started = time.monotonic()
    try:
        result = await p.complete(REQUEST)
    finally:
        await p.aclose()

    assert result.text == "after the wait"
    assert time.monotonic() - started >= 0.3
    assert len(openai_server.requests) == 2


async def test_api_key_never_in_error_text(
    provider: OpenAIProvider,
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.script(Fail(401, f"Incorrect API key provided: {KEY}."))

    error = await failure(provider)

    assert error.kind is FailureKind.AUTH
    assert KEY not in str(error)
    assert "[redacted]" in str(error)
    assert error.__cause__ is None and error.__suppress_context__


async def test_no_choices_is_a_server_failure_that_keeps_usage(
    provider: OpenAIProvider,
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.script(Ok(usage=openai_usage(10, 0), overrides={"choices": []}))

    error = await failure(provider)

    assert error.kind is FailureKind.SERVER
    assert error.usage == Usage(input_tokens=10)


async def test_unknown_role_fails_before_sending(
    provider: OpenAIProvider,
    openai_server: FakeOpenAIServer,
) -> None:
    error = await failure(provider, replace(REQUEST, messages=[ChatMessage("tool", "x")]))

    assert error.kind is FailureKind.BAD_REQUEST
    assert openai_server.requests == []
