"""What every benchmark shares: the machine it ran on, percentiles, CPU time, progress bars and
the JSON result files in ``benchmarks/results/``."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
PG_DSN = os.environ.get("PENNYBOT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PENNYBOT_BENCH_REDIS", "redis://127.0.0.1:6379/0")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

console = Console(stderr=True)
if not console.is_terminal:
    console = Console(stderr=True, width=200)  # a log file or pipe: wide tables rather than wrapped cells


def progress() -> Progress:
    """A rich progress display on stderr (it hides itself when stderr is not a terminal)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank on the sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p95/p99, mean, min and max of nanosecond samples, in milliseconds (3 decimals)."""
    ms = [s / 1e6 for s in samples_ns]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 3),
        "p95": round(percentile(ms, 95), 3),
        "p99": round(percentile(ms, 99), 3),
        "mean": round(sum(ms) / len(ms), 3) if ms else float("nan"),
        "min": round(min(ms), 3) if ms else float("nan"),
        "max": round(max(ms), 3) if ms else float("nan"),
    }


def cpu_seconds(pid: int | None = None) -> float:
    """User plus system CPU seconds a process has used (``/proc/<pid>/stat``); None: this process."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def _server_versions() -> tuple[str, str]:
    """Postgres and Redis versions, asked of the servers themselves."""
    pg = redis = "unreachable"
    try:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN, timeout=3)
        try:
            pg = str(await conn.fetchval("show server_version"))
        finally:
            await conn.close()
    except Exception as error:
        pg = f"unreachable ({type(error).__name__})"
    try:
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        try:
            redis = str((await client.info("server"))["redis_version"])
        finally:
            await client.aclose()
    except Exception as error:
        redis = f"unreachable ({type(error).__name__})"
    return pg, redis


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, Python, Postgres and Redis versions, and the load at the start."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mhz = re.search(r"^cpu MHz\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    pg, redis = asyncio.run(_server_versions())
    return {
        "cores": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor() or "unknown",
        "cpu_mhz": float(mhz.group(1)) if mhz else None,
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgres": pg,
        "redis": redis,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def code() -> dict[str, Any]:
    """Which code was measured: the git commit and how many files differed from it (a benchmark of a
    working tree mid-change says so). ``PENNYBOT_BENCH_COMMIT`` names it where there is no .git
    (a ``git archive`` snapshot)."""
    root = Path(__file__).resolve().parent.parent
    if os.environ.get("PENNYBOT_BENCH_COMMIT"):
        return {"commit": os.environ["PENNYBOT_BENCH_COMMIT"], "changed_files": 0, "tree": str(root)}
    try:
        git = ["git", "-C", str(root)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)  # noqa: S603
        status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, timeout=10, check=True)  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "tree": str(root)}
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return {"commit": head.stdout.strip(), "changed_files": len(changed), "tree": str(root)}


def started() -> dict[str, Any]:
    """The run's start: the time, the machine (with its load then) and the code measured."""
    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "code": code()}


def write(name: str, data: dict[str, Any], start: dict[str, Any], out: Path = RESULTS) -> Path:
    """Write ``<out>/<name>.json`` with the machine, the code and the time the run started."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    document = {"benchmark": name, **start, "finished": datetime.now(UTC).isoformat(timespec="seconds")}
    path.write_text(json.dumps(document | data, indent=2, default=str) + "\n")
    return path


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a rich table to the console."""
    t = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        t.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(str(cell) for cell in row))
    console.print(t)


def met(value: float, limit: float, *, at_most: bool = True) -> str:
    ok = value <= limit if at_most else value >= limit
    return "met" if ok else "NOT met"


def now_ns() -> int:
    return time.perf_counter_ns()
