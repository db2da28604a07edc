"""Pytest fixtures for the fake LLM servers: ``pytest_plugins = ["tests.fakes.llm_fixtures"]``.

One server of each kind runs for the whole session; the function-scoped fixtures hand it out
reset (no recorded requests, no queued outcomes, no responder), so tests stay independent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.llm_servers import FakeAnthropicServer, FakeOpenAIServer


@pytest.fixture(scope="session")
def openai_server_session() -> Iterator[FakeOpenAIServer]:
    """The session's fake OpenAI server; prefer ``openai_server``, which resets it."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def anthropic_server_session() -> Iterator[FakeAnthropicServer]:
    """The session's fake Anthropic server; prefer ``anthropic_server``, which resets it."""
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
def openai_server(openai_server_session: FakeOpenAIServer) -> FakeOpenAIServer:
    """A fake OpenAI chat-completions server with a clean slate; ``base_url`` ends in ``/v1``."""
    openai_server_session.reset()
    return openai_server_session


@pytest.fixture
def anthropic_server(anthropic_server_session: FakeAnthropicServer) -> FakeAnthropicServer:
    """A fake Anthropic Messages server with a clean slate; ``base_url`` is its root."""
    anthropic_server_session.reset()
    return anthropic_server_session
