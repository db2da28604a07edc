"""Writes that wait a moment so that many share one round trip, off the messages' path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


class WriteLater:
    """Calls ``write`` ``delay_s`` after the first ``soon()`` since the last call, and again at
    once if more came while it wrote. ``write`` takes everything that waits and keeps what it
    could not write; a failed write is logged and waits for the next ``soon()``. ``aclose`` waits
    for a write under way (a statement cut mid-flight could leave its connection, and the rows it
    locked, held), cancels a pause, and writes what waits one last time."""

    def __init__(
        self,
        write: Callable[[], Awaitable[None]],
        waiting: Callable[[], bool],
        delay_s: float,
        what: str,
        log: logging.Logger,
    ) -> None:
        self.write = write
        self.waiting = waiting  # whether anything waits to be written
        self.delay_s = delay_s
        self.what = what
        self.log = log
        self._task: asyncio.Task[None] | None = None
        self._pausing = False  # the task is in its pause, not writing
        self._closed = False

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The pause and write to come, if any."""
        return self._task

    def soon(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        self._pausing = True
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self._pausing = False
        try:
            await self.write()
        except Exception as error:
            self.log.warning("%s not written (%s); it waits for the next one", self.what, type(error).__name__)
            return
        finally:
            self._task = None
        if self.waiting():  # more came while it wrote
            self.soon()

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            if self._pausing:
                task.cancel()
            await asyncio.wait([task])
        try:
            await self.write()
        except Exception as error:
            self.log.warning("%s lost at shutdown (%s)", self.what, type(error).__name__)


class WritesLater:
    """A class that writes with a ``WriteLater`` (``self._later``): its pause as ``flush_s``, and
    ``aclose``, which writes what waits (before the store closes)."""

    _later: WriteLater

    @property
    def flush_s(self) -> float:
        return self._later.delay_s

    @flush_s.setter
    def flush_s(self, seconds: float) -> None:
        self._later.delay_s = seconds

    async def aclose(self) -> None:
        await self._later.aclose()
