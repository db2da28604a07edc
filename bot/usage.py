"""The whole bill's CPU and memory: each serving process writes what it used to the ledger.

Every ``sample_s`` the process adds its resident memory times the seconds since the last sample
(byte-seconds); every ``record_s`` it closes a window with the CPU time used in it and stores the
window (``resource_usage``). A window that cannot be stored is kept, unchanged, and tried again
at the next record: retried as it was, it is stored once (the table is unique on process and
start), so the bill neither loses nor doubles a window while the database is away. The report
prices the stored usage with CPU_CORE_HOUR_PRICE and MEMORY_GB_HOUR_PRICE.

The gauges of /metrics (``cost_cpu_usage_cores``, ``cost_memory_usage_bytes``) show the same
process figures live; this is their history, which Prometheus may not keep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot.metrics import rss_bytes
from budget.stores import Database

log = logging.getLogger("pennybot.usage")

SAMPLE_S = 5.0
RECORD_S = 60.0
MAX_PENDING = 10_080  # a week of minutes while the database is away; the oldest go first


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    cpu_us: int
    memory_byte_seconds: int


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class UsageRecorder:
    """Measures this process and writes its windows; ``run`` is the loop the server starts."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        *,
        process: str | None = None,
        cpu_time: Callable[[], float] = time.process_time,
        monotonic: Callable[[], float] = time.monotonic,
        rss: Callable[[], int] = rss_bytes,
    ) -> None:
        self._db, self._clock, self.process = db, clock, process or process_name()
        self._cpu_time, self._monotonic, self._rss = cpu_time, monotonic, rss
        self._start, self._cpu0, self._last = clock(), cpu_time(), monotonic()
        self._byte_seconds = 0.0
        self.pending: list[Window] = []

    def sample(self) -> None:
        """Add the memory held since the last sample (at its current size) to the window."""
        now = self._monotonic()
        self._byte_seconds += self._rss() * max(now - self._last, 0.0)
        self._last = now

    def close_window(self) -> Window:
        self.sample()
        end, cpu = self._clock(), self._cpu_time()
        window = Window(self._start, end, max(round((cpu - self._cpu0) * 1_000_000), 0), round(self._byte_seconds))
        self._start, self._cpu0, self._byte_seconds = end, cpu, 0.0
        self.pending.append(window)
        if len(self.pending) > MAX_PENDING:
            lost = self.pending.pop(0)
            log.error("resource usage from %s to %s dropped: the database was away too long", lost.start, lost.end)
        return window

    async def record(self) -> int:
        """Close the window and store every pending one, oldest first; returns how many were stored.
        The first failure stops the round and keeps the rest for the next one."""
        self.close_window()
        stored = 0
        while self.pending:
            w = self.pending[0]
            try:
                await self._db.record_resources(self.process, w.start, w.end, w.cpu_us, w.memory_byte_seconds)
            except Exception as error:  # the database is away: keep the windows, try at the next round
                kept, why = len(self.pending), type(error).__name__
                log.warning("resource usage not stored yet (%d windows kept): %s", kept, why)
                break
            self.pending.pop(0)
            stored += 1
        return stored

    async def run(self, sample_s: float = SAMPLE_S, record_s: float = RECORD_S) -> None:
        """Sample and record until cancelled; the caller records once more at shutdown."""
        next_record = self._monotonic() + record_s
        while True:
            await asyncio.sleep(sample_s)
            if self._monotonic() >= next_record:
                await self.record()
                next_record = self._monotonic() + record_s
            else:
                self.sample()
