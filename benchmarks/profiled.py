"""Run a server command (``pennybot serve``'s or the floor's) with cProfile ready: SIGUSR1 starts
profiling, SIGUSR2 stops it and writes the stats to PATH. Used by ``benchmarks e2e
--profile`` to profile a bot process over a window of messages, start-up and warm-up left out.

    python -m benchmarks.profiled PATH pennybot serve --port 8080
    python -m benchmarks.profiled PATH floor --port 8080
"""

from __future__ import annotations

import cProfile
import signal
import sys
from typing import Any


def main() -> None:
    path, which, *args = sys.argv[1:]
    profiler = cProfile.Profile()  # wall clock; benchmarks.profiles takes the epoll waits out

    def start(*_: Any) -> None:
        profiler.enable()

    def stop(*_: Any) -> None:
        profiler.disable()
        profiler.dump_stats(path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    if which == "floor":
        from benchmarks import floor

        sys.argv = ["floor", *args]
        floor.main()
    else:
        from bot.cli import main as pennybot

        sys.argv = ["pennybot", *args]
        pennybot()


if __name__ == "__main__":
    main()
