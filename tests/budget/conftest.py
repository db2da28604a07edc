"""Fixtures shared by the budget tests."""

from collections.abc import AsyncIterator

import pytest

from budget.stores.redis import RedisHotStore
from tests.budget.test_redis_store import redis_namespace


@pytest.fixture
async def store() -> AsyncIterator[RedisHotStore]:
    """A Redis store on the shared server, in a key prefix of its own (its keys go afterwards)."""
    async with redis_namespace() as url:
        made = RedisHotStore(url)
        yield made
        await made.aclose()
