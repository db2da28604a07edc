"""The drills' own servers: their ports never collide across test processes."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAKE = "from tests.drills.servers import free_port; print(*[free_port() for _ in range(300)], flush=True); input()"


def test_two_test_processes_never_get_the_same_port() -> None:
    # Without the lock files, two processes drawing 300 of the 12,000 ports each would share about
    # 7.5 of them (no shared one once in 2,000 runs).
    children = [
        subprocess.Popen(
            [sys.executable, "-c", TAKE],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        first, second = (set(map(int, c.stdout.readline().split())) for c in children)  # type: ignore[union-attr]
        assert len(first) == len(second) == 300
        assert not first & second
    finally:
        for c in children:
            c.communicate("\n", timeout=10)
