"""``python -m benchmarks [overhead|e2e|ledger|all] [--quick] [--profile]``: run, print tables,
write ``benchmarks/results/<name>.json`` (or ``--out DIR``). See BENCHMARKS.md."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from benchmarks import e2e, ledger, overhead
from benchmarks.results import RESULTS, console, met, started, table, write
from benchmarks.stores import KINDS

TARGETS = {
    "overhead_p50_ms": 0.5,
    "overhead_p99_ms": 2.0,
    "redis_round_trips": 2,
    "postgres_sync_round_trips": 0,
    "msg_per_core_s": 150,
    "ledger_ratio": 1.2,
}


def overhead_report(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows, stages, verdicts = [], [], []
    for kind, c in data["configs"].items():
        if "skipped" in c:
            rows.append([kind, f"skipped: {c['skipped']}", "", "", "", "", "", "", ""])
            continue
        t, n = c["timed"], c["counted"]
        m, h = t["message_ms"], t["pipeline_handle_ms"]
        rows.append([
            kind, _three(m), _three(h),
            f"{n['redis']['mean']} (max {n['redis']['max']})", f"{n['postgres']['mean']} (max {n['postgres']['max']})",
            n["background_per_message"]["postgres"], f"{n['sqlite']['mean']}", m["n"], _mix(t["outcomes"]),
        ])  # fmt: skip
        for stage, s in n["stage_own_us"].items():
            trips = n["by_stage"].get(stage, {})
            stages.append([kind, stage, s["mean"], s["p50"], s["p99"], trips.get("redis", 0), trips.get("postgres", 0),
                           trips.get("sqlite", 0)])  # fmt: skip
        for stage in ("dispatch (inbox, replies)", "pipeline (turn, log line)"):
            trips = n["by_stage"].get(stage, {})
            if trips:
                stages.append([kind, stage, "", "", "", trips.get("redis", 0), trips.get("postgres", 0),
                               trips.get("sqlite", 0)])  # fmt: skip
        if kind == "pg_redis":
            verdicts += [
                {"target": "overhead p50 <= 0.5 ms (Postgres + Redis)", "value": m["p50"],
                 "verdict": met(m["p50"], TARGETS["overhead_p50_ms"])},
                {"target": "overhead p99 <= 2 ms (Postgres + Redis)", "value": m["p99"],
                 "verdict": met(m["p99"], TARGETS["overhead_p99_ms"])},
                {"target": "<= 2 Redis round trips per message", "value": n["redis"]["max"],
                 "verdict": met(n["redis"]["max"], TARGETS["redis_round_trips"])},
                {"target": "no synchronous Postgres round trip per message", "value": n["postgres"]["max"],
                 "verdict": met(n["postgres"]["max"], TARGETS["postgres_sync_round_trips"])},
            ]  # fmt: skip
    table(
        "Pipeline overhead per message (ms: p50 / p95 / p99; round trips: synchronous, per message)",
        ["stores", "message (claim..done)", "Pipeline.handle", "Redis RT", "Postgres RT", "PG background",
         "SQLite stmts", "n", "outcomes"],
        rows,
    )  # fmt: skip
    table(
        "Per stage: own time (us: mean, p50, p99; counters on) and synchronous round trips per message",
        ["stores", "stage", "mean", "p50", "p99", "Redis", "Postgres", "SQLite"],
        stages,
    )
    for kind, c in data["configs"].items():
        for store in ("redis", "postgres"):
            labels = c.get("counted", {}).get("by_label", {}).get(store)
            if labels:
                console.print(f"{kind} {store} per message: " + ", ".join(f"{k} {v}" for k, v in labels.items()))
        if c.get("profile"):
            profile_report(f"{kind}: where the CPU time of a message goes", c["profile"])
    return verdicts


def profile_report(title: str, prof: dict[str, Any]) -> None:
    packages = prof["by_package"][:15]
    functions = prof["top_functions_own_time"][:15]
    rows = [
        [p["package"], p["share_pct"], p["est_us"], f["function"][-70:], f["share_pct"], f["est_us"]]
        for p, f in zip(packages, functions, strict=False)
    ]
    table(title + " (share %, estimated us)", ["package", "%", "us", "function (own time)", "%", "us"], rows)


def _three(s: dict[str, Any]) -> str:
    return f"{s['p50']:.3f} / {s['p95']:.3f} / {s['p99']:.3f}"


def _mix(outcomes: dict[str, int]) -> str:
    total = sum(outcomes.values()) or 1
    return ", ".join(f"{k} {100 * v // total}%" for k, v in outcomes.items())


def e2e_report(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows, verdicts = [], []
    for config, c in data["configs"].items():
        if "levels" not in c:
            rows.append([config, "-", c.get("skipped") or c.get("error")] + [""] * 7)
            continue
        worst = None
        for level, f in c["levels"].items():
            lat = f["latency_ms"]
            rows.append([
                config, level, f["msg_per_s"], f["bot_cpu_ms_per_msg"], f["msg_per_bot_cpu_s"],
                f.get("cpu_vs_floor", "-"), f"{lat['p50']:.1f} / {lat['p99']:.1f}", f["machine_cpu_s"],
                f["replies_missing"], "yes" if f["rows_committed_ok"] else "NO",
            ])  # fmt: skip
            if f["msg_per_bot_cpu_s"] is not None:
                worst = f["msg_per_bot_cpu_s"] if worst is None else min(worst, f["msg_per_bot_cpu_s"])
        if config != "floor" and worst is not None:
            verdicts.append({
                "target": f">= 150 messages/s per core end to end ({config}, lowest level)", "value": worst,
                "verdict": met(worst, TARGETS["msg_per_core_s"], at_most=False),
            })  # fmt: skip
    for config, c in data["configs"].items():
        if c.get("profile"):
            profile_report(f"{config}: where a bot process's CPU time per message goes (c=16)", c["profile"])
    table(
        "End to end: webhook -> reply at the Bot API, every ai_request committed",
        ["config", "concurrency", "msg/s", "bot CPU ms/msg", "msg per bot CPU-s", "CPU vs floor",
         "latency ms p50 / p99", "machine CPU s", "no reply", "rows committed"],
        rows,
    )  # fmt: skip
    return verdicts


def ledger_report(data: dict[str, Any]) -> list[dict[str, Any]]:
    if "skipped" in data:
        console.print(f"ledger: skipped, {data['skipped']}")
        return []
    rows = []
    for r in data["by_rows"]:
        rows.append([
            f"{r['rows']:,}", f"{r['pennybot_warm_ms']['p50']:.3f} / {r['pennybot_warm_ms']['p99']:.3f}",
            f"{r['pennybot_cold_per_user_ms']['p50']:.3f}", f"{r['pennybot_cold_first_ms']['p50']:.3f}",
            f"{r['naive_user_sum_ms']['p50']:.3f} / {r['naive_user_sum_ms']['p99']:.3f}",
            f"{r['naive_global_sum_ms']['p50']:.3f}",
        ])  # fmt: skip
    ratio = data["ratio_largest_to_smallest"]
    keys = ("pennybot_warm_ms", "pennybot_cold_per_user_ms", "pennybot_cold_first_ms", "naive_user_sum_ms",
            "naive_global_sum_ms")  # fmt: skip
    rows.append(["ratio largest/smallest (p50)", *(ratio[k] for k in keys)])
    table(
        "Budget check against ledger size (ms)",
        ["ai_request rows", "pennybot warm p50 / p99", "cold, per user p50", "cold, first p50",
         "naive user sum p50 / p99", "naive global sum p50"],
        rows,
    )  # fmt: skip
    largest = data["by_rows"][-1]["rows"]
    return [{
        "target": f"budget check at {largest:,} rows <= 1.2 x at {data['by_rows'][0]['rows']:,} (warm, p50)",
        "value": ratio["pennybot_warm_ms"], "verdict": met(ratio["pennybot_warm_ms"], TARGETS["ledger_ratio"]),
    }]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("which", nargs="?", default="all", choices=["overhead", "e2e", "ledger", "all"])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, a few seconds each")
    parser.add_argument("--profile", action="store_true", help="also profile (cProfile, CPU time) the pipeline / bot")
    parser.add_argument("--stores", default=",".join(KINDS), help="overhead: embedded,pg_redis")
    parser.add_argument("--configs", default=",".join(e2e.CONFIGS), help="e2e: " + ",".join(e2e.CONFIGS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON results go")
    args = parser.parse_args(argv)
    verdicts: list[dict[str, Any]] = []
    suffix = "-quick" if args.quick else ""
    if args.which in ("overhead", "all"):
        start = started()
        sizes = overhead.Sizes.quick() if args.quick else overhead.Sizes()
        kinds = [k for k in args.stores.split(",") if k]
        data = asyncio.run(overhead.run(kinds, sizes, args.profile, args.out))
        found = overhead_report(data)
        verdicts += found
        console.print(f"written {write('overhead' + suffix, data | {'targets': found}, start, args.out)}")
    if args.which in ("e2e", "all"):
        start = started()
        e_sizes = e2e.Sizes.quick() if args.quick else e2e.Sizes()
        configs = [c for c in args.configs.split(",") if c]
        data = asyncio.run(e2e.run(configs, e_sizes, args.out, args.profile))
        found = e2e_report(data)
        verdicts += found
        console.print(f"written {write('e2e' + suffix, data | {'targets': found}, start, args.out)}")
    if args.which in ("ledger", "all"):
        start = started()
        l_sizes = ledger.Sizes.quick() if args.quick else ledger.Sizes()
        data = asyncio.run(ledger.run(l_sizes))
        found = ledger_report(data)
        verdicts += found
        console.print(f"written {write('ledger' + suffix, data | {'targets': found}, start, args.out)}")
    if verdicts:
        table("Targets", ["target", "measured", "verdict"], [[v["target"], v["value"], v["verdict"]] for v in verdicts])
    return 0


if __name__ == "__main__":
    sys.exit(main())
