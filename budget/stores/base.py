"""The small protocols storage sits behind. A backend is chosen by URL in ``budget.stores``."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class Hold:
    """Part of a reservation: add ``amount`` to counter ``key`` if it stays within ``limit``
    (None: no limit, the counter only keeps count)."""

    key: str
    amount: int
    limit: int | None


@dataclass(frozen=True, slots=True)
class Admit:
    """A reservation that ``HotStore.hit_and_get`` makes in its own round trip, on conditions
    under which the caller's plan for it stands: the event is allowed; ``unless`` (one of the
    peeks) is no live cache entry; each ``expect`` key (one of the keys read) holds that value;
    and each hold's counter (one of the keys read) exists, is at most its ``ceiling`` (None: no
    bound) as read, and takes the hold within its limit, as ``reserve`` with ``seeded_only``
    does. Anything else: nothing is held, and the caller reserves as usual."""

    reservation_id: str
    holds: Sequence[Hold]
    ceilings: Sequence[int | None]
    ttl_s: int
    expect: Mapping[str, int] = field(default_factory=dict)
    unless: str | None = None


class HitRead(NamedTuple):
    """What ``hit_and_get`` answers: the wait (0.0: allowed), the counters read, the cache entries
    peeked at, whether the ``Admit`` reservation was made, whether the ``once`` key was there
    already (a repeat: nothing else was done), and whether ``once`` went unchecked (the store in use
    cannot tell every process's: ``HotStore.once``)."""

    wait: float
    values: list[int | None]
    peeked: list[str | None]
    reserved: bool = False
    repeated: bool = False
    unchecked: bool = False


# How long a counter's log of left-out amounts (``HotStore.left_out``) is kept without a seed: its
# rows are in the ledger long before, and a seed then finds them there.
LEFT_OUT_TTL_S = 2 * 86_400


class HotStore(Protocol):
    """Hot counters, the rate limiter and the answer cache: in process (``memory://``) or Redis.

    ``now`` is epoch seconds, passed in so tests drive the clock.
    """

    # Whether ``hit_and_get``'s ``once`` costs no round trip of its own and is shared by every
    # process using the store: True for Redis and the failover store (Redis first); False for the
    # Postgres hot store (a statement of its own) and the in-process one (one process's).
    dedupes: bool

    async def get_counters(self, keys: Sequence[str]) -> list[int | None]:
        """Current values; None for a counter that does not exist yet (to be seeded)."""
        ...

    async def seed_counter(self, key: str, value: int, ttl_s: int, *, seen: Collection[str] | None = None) -> bool:
        """Set a counter from the ledger unless it already exists; True if it did. With ``seen``,
        ``value`` counts the rows of ``left_out`` named there, and the store adds in the same step
        the amounts of any other row left out of the counter since (the ledger sum may lack it: a
        budget reached a little early at worst, never passed); the counter's log is then cleared."""
        ...

    async def left_out(self, keys: Sequence[str]) -> list[dict[str, int]]:
        """For each counter, the amounts a ``settle`` with a ``row`` left out of it while it did not
        exist, by row id ({} if none): the ledger row of such a call may not be in a seed's sum yet
        (it waits in its process's outbox), so the seed asks the ledger and adds what it lacks."""
        ...

    async def set_counters(self, values: Mapping[str, int], ttl_s: int) -> None:
        """Overwrite counters (settings kept beside the counters, such as a user's quota)."""
        ...

    async def swap_counters(self, values: Mapping[str, int], ttl_s: int) -> list[int | None]:
        """Set each key to its value (living ``ttl_s``), in one step, and return what each held just
        before (None: missing), in the order given: a compare-and-set for the caller that knows what it
        expects there (a per-user version, set on every change by whichever process made it)."""
        ...

    async def reserve(
        self, reservation_id: str, holds: Sequence[Hold], ttl_s: int, now: float, *, seeded_only: bool = False
    ) -> str | None:
        """Apply every hold or none, in one atomic step. None on success, else the refusing key: one
        the hold would take past its limit or, with ``seeded_only``, one that does not exist (it is
        never created from 0, which would read as seeded and forget the period's spend)."""
        ...

    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], *, seeded_only: bool = False, row: str | None = None
    ) -> list[str]:
        """Replace a reservation's held amounts by what was really spent (0 for a release), in one
        atomic step. With ``seeded_only``, a counter that does not exist is neither created nor
        changed (a hold on it went with it); returns those keys, left out. Else returns []. With a
        ``row`` (the call's ai_request id), an amount left out is logged for the counter's next
        seed (``left_out``), in the same step."""
        ...

    async def hit(self, key: str, limit: int, window_s: float, now: float) -> float:
        """Count one event in a sliding window: 0.0 if allowed, else the seconds to wait."""
        ...

    async def hit_and_get(
        self,
        key: str,
        limit: int,
        window_s: float,
        now: float,
        keys: Sequence[str],
        peeks: Sequence[str] = (),
        admit: Admit | None = None,
        *,
        once: tuple[str, int] | None = None,
    ) -> HitRead:
        """``hit`` and ``get_counters`` in one round trip: a message's rate-limit event and its
        budget counters, read whether or not the event is allowed. ``peeks``: cache entries read in
        the same round trip, live values or None, with no bookkeeping (``cache_used`` does that).
        ``admit``: a reservation made in the same step on its conditions; a store that cannot do
        it in the same round trip declines (``reserved`` False).

        ``once``: a key and its ttl in whole seconds, to drop a message seen before (a platform's
        redelivery), in the same step (``dedupes``: at no round trip of its own). First, the key
        is set with that ttl unless it exists, atomically (``set_once``). If another call set it,
        the call is a repeat and nothing else happens: no rate-limit event is counted, no counter
        read, no entry peeked at, nothing reserved; the answer is ``HitRead(0.0, [], [], False,
        True)``. Else (set now, or by this very call's first try, which the client retried after
        a lost reply) everything goes on as without it (``repeated`` False). A store that answers
        ``once`` with None leaves it out here too (``unchecked`` True)."""
        ...

    async def cache_get(self, key: str, now: float, counts: tuple[str, str] | None = None) -> str | None:
        """A live entry (most recently used from now on), or None. ``counts``: the hit and miss
        counters, one of which is incremented in the same round trip."""
        ...

    async def cache_used(
        self, keys: Sequence[str], now: float, counts: tuple[str, str], hits: int, misses: int
    ) -> None:
        """What ``cache_get`` does besides reading, for entries read earlier by ``hit_and_get``'s
        peeks, in one step for many: each live one of ``keys`` becomes the most recently used (in
        that order), an expired one is deleted, and the hit and miss counters grow by ``hits`` and
        ``misses``."""
        ...

    async def cache_put(self, key: str, value: str, ttl_s: float, max_size: int, now: float) -> None: ...

    async def cache_clear(self) -> int: ...

    async def cache_size(self, now: float) -> int: ...

    async def incr(self, key: str, by: int = 1) -> int:
        """A plain counter (cache hits and misses)."""
        ...

    async def set_once(self, key: str, ttl_s: int) -> bool:
        """True the first time a key is set within its lifetime (warn once per period), and for that
        call's own retry by the client after a lost reply (Redis tells it by a token per call)."""
        ...

    async def once(self, key: str, ttl_s: int) -> bool | None:
        """``set_once`` for a message's once-key (``hit_and_get``'s ``once``, on its own), or None
        where the store in use cannot tell every process's: the failover store on its fallback,
        which processes that still reach Redis do not use. The caller then asks the database."""
        ...

    async def aclose(self) -> None: ...
