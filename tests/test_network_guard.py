"""The guard: any connection outside 127.0.0.1 / ::1 fails the test that opens it."""

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_outbound_connection_is_refused() -> None:
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("93.184.215.14", 443), timeout=1)


def test_loopback_is_allowed() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname(), timeout=1)
    client.close()
    server.close()


async def test_sdk_calls_outside_are_refused() -> None:
    from openai import APIConnectionError, AsyncOpenAI

    client = AsyncOpenAI(api_key="sk-test", base_url="https://api.openai.com/v1", max_retries=0, timeout=2)
    with pytest.raises(APIConnectionError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
