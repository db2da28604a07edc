"""Stores chosen by URL, through two plain registries of URL schemes.

A backend imports its driver only when it is built, so the embedded default needs nothing extra.
"""

from __future__ import annotations

from collections.abc import Callable

from budget.stores.base import Admit, HitRead, Hold, HotStore
from budget.stores.database import Database

__all__ = ["Admit", "Database", "HitRead", "Hold", "HotStore", "open_database", "open_hot_store"]


def _sqlite(url: str) -> Database:
    from budget.stores.sqlite import SQLiteDatabase

    return SQLiteDatabase(url)


def _postgres(url: str) -> Database:
    from budget.stores.postgres import PostgresDatabase

    return PostgresDatabase(url)


def _memory_hot(url: str) -> HotStore:
    from budget.stores.memory import MemoryHotStore

    return MemoryHotStore(url)


def _postgres_hot(url: str) -> HotStore:
    from budget.stores.pg_hot import PostgresHotStore

    return PostgresHotStore(url)


def _redis_hot(url: str) -> HotStore:
    from budget.stores.redis import RedisHotStore

    return RedisHotStore(url)


DATABASES: dict[str, Callable[[str], Database]] = {
    "sqlite": _sqlite,
    "memory": _sqlite,  # an in-memory SQLite database: the same SQL, nothing on disk
    "postgresql": _postgres,
    "postgres": _postgres,
}

HOT_STORES: dict[str, Callable[[str], HotStore]] = {
    "memory": _memory_hot,
    "redis": _redis_hot,
    "rediss": _redis_hot,  # TLS
    "postgresql": _postgres_hot,  # the Redis failover's stand-in, or Redis-less deployments
    "postgres": _postgres_hot,
}


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""


def open_database(url: str) -> Database:
    """The Database for a URL: ``sqlite:///file.db``, ``memory://``, ``postgresql://...``."""
    try:
        return DATABASES[_scheme(url)](url)
    except KeyError:
        raise ValueError(f"unsupported DATABASE_URL scheme {_scheme(url)!r}; use one of {sorted(DATABASES)}") from None


def open_hot_store(url: str) -> HotStore:
    """The HotStore for a URL: ``memory://``, ``redis://host:port/db?prefix=...``."""
    try:
        return HOT_STORES[_scheme(url)](url)
    except KeyError:
        raise ValueError(f"unsupported REDIS_URL scheme {_scheme(url)!r}; use one of {sorted(HOT_STORES)}") from None


def open_supabase(url: str, key: str) -> Database:
    """The Database on a Supabase project's REST API (``SUPABASE_URL``, ``SUPABASE_SERVICE_ROLE_KEY``),
    for hosts that cannot reach its Postgres; the key stays out of the URL."""
    from budget.stores.supabase_rest import SupabaseDatabase

    return SupabaseDatabase(url, key)
