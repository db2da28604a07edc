"""cProfile results, summarised per message: busy time by package (a pennybot module, a library,
the stdlib, C code by type) and the functions that cost the most, own and cumulative.

Profiles use cProfile's default wall-clock timer (a CPU-time timer costs a system call per event
and distorts far more); time spent waiting in the event loop's ``epoll`` is taken out, so what is
left is the process being busy. A profiler slows call-heavy code more than the rest: read the
shares, and ``est_us`` (each share of the CPU time measured without a profiler), not the raw totals.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import re
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_C_TYPE = re.compile(r"of '([\w.]+)' objects")
_C_MODULE = re.compile(r"<built-in method ([\w.]+)\.")


def package(filename: str, name: str) -> str:
    """Which package a profiled function belongs to: a pennybot module, a library, or the stdlib."""
    if filename == "~" or filename.startswith("<"):
        if "CoreBPE" in name:
            return "tiktoken (C)"
        found = _C_TYPE.search(name) or _C_MODULE.search(name)
        owner = found.group(1).split(".")[0] if found else "builtins"
        return f"{owner} (C)"
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    root = str(ROOT).split("/")
    if parts[: len(root)] == root:
        return "pennybot " + "/".join(parts[len(root) :])
    lib = [p for p in parts if p.startswith("python3")]
    if lib:
        rest = parts[parts.index(lib[-1]) + 1 :]
        return "stdlib " + (rest[0].removesuffix(".py") if rest else "?")
    return parts[-1]


def _waiting(filename: str, name: str) -> bool:
    return filename == "~" and ("select.epoll" in name or "select.select" in name or "select.poll" in name)


def summarize(
    source: cProfile.Profile | Path, messages: int, path: Path, measured_us: float | None = None
) -> dict[str, Any]:
    """Per-message figures from a profile (or a stats file); the full listing goes to ``path``.
    ``measured_us``: the CPU time per message measured without a profiler, to scale shares by."""
    stats = pstats.Stats(str(source)) if isinstance(source, Path) else pstats.Stats(source)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_package: Counter[str] = Counter()
    functions: list[tuple[float, float, int, str]] = []
    total = waiting = 0.0
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in raw.items():
        if _waiting(filename, name):
            waiting += tottime
            continue
        by_package[package(filename, name)] += tottime
        total += tottime
        short = "/".join(filename.split("/")[-2:])
        functions.append((tottime, cumtime, calls, f"{short}:{line}({name})"))
    n = max(1, messages)
    total = total or 1.0
    scale = measured_us if measured_us else None
    text = io.StringIO()
    stats.stream = text  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.getvalue())

    def share(t: float) -> float:
        return round(100 * t / total, 1)

    def est(t: float) -> float | None:
        return None if scale is None else round(scale * t / total, 1)

    return {
        "messages": messages,
        "busy_us_per_message_profiled": round(total / n * 1e6, 1),
        "waiting_us_per_message": round(waiting / n * 1e6, 1),
        "measured_cpu_us_per_message": measured_us,
        "by_package": [{"package": k, "share_pct": share(v), "est_us": est(v)} for k, v in by_package.most_common(30)],
        "top_functions_own_time": [
            {"function": f, "share_pct": share(t), "est_us": est(t), "calls_per_message": round(c / n, 2)}
            for t, _cum, c, f in sorted(functions, reverse=True)[:30]
        ],
        "top_functions_cumulative": [
            {"function": f, "share_pct": share(cum), "est_us": est(cum), "calls_per_message": round(c / n, 2)}
            for _t, cum, c, f in sorted(functions, key=lambda x: x[1], reverse=True)[:40]
        ],
        "full_profile": path.name,  # beside the JSON results
    }
