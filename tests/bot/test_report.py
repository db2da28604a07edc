"""`pennybot report` as an operator runs it, on a ledger a chat session filled."""

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

from tests.bot.test_cli import run_chat


def report(tmp_path: Path, *args: str, **env: str) -> str:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", "report", *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=clean | {"DATABASE_URL": f"sqlite:///{tmp_path}/pb.db"} | env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_json_csv_and_table_agree_on_the_bill(tmp_path: Path) -> None:
    run_chat(tmp_path, "What is the capital of France?\nAnd of Spain, please?\n", "--user", "ann")
    # the cache is in the process (REDIS_URL=memory://): Bob's repeat in his own session is the hit
    run_chat(tmp_path, "What is the capital of Italy?\nwhat is the capital of italy\n", "--user", "bob")
    data = json.loads(report(tmp_path, "--format", "json", "--days", "30", INFRA_MONTHLY_COST="5"))
    bill = data["bill"]
    # $5 a month over 30 of the year's 365.25 / 12 days a month, rounded up to the nano-dollar
    assert Decimal(bill["infra"]) == Decimal("4.928131417")
    assert Decimal(bill["total"]) == Decimal(bill["llm"]) + Decimal(bill["channel_fees"]) + Decimal(bill["infra"])
    assert (data["answers"], data["active_users"], data["cache"]["hits"]) == (4, 2, 1)
    assert Decimal(bill["per_message"]) == (Decimal(bill["total"]) / 4).quantize(
        Decimal("1e-9"), rounding="ROUND_CEILING"
    )
    rows = list(csv.reader(io.StringIO(report(tmp_path, "--format", "csv", INFRA_MONTHLY_COST="5"))))
    assert rows[0] == ["section", "name", "value"]
    assert ["bill", "total", bill["total"]] in rows
    table = report(tmp_path)
    assert "pennybot: the last 30 days" in table and "LLM cost by provider and model" in table
    assert "simulated" in table and "cache hit rate 25.0%" in table


def test_the_bill_prices_the_cpu_and_memory_the_processes_used(tmp_path: Path) -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    from budget.stores import open_database

    run_chat(tmp_path, "What is the capital of France?\n", "--user", "ann")

    async def used() -> None:
        db = open_database(f"sqlite:///{tmp_path}/pb.db")
        await db.migrate()
        now = datetime.now(UTC)
        # two processes: 1.5 core-hours and 2 GiB-hours in all; a retried window is stored once
        for process, cpu_us, byte_s in (("a:1", 3_600_000_000, 2**30 * 3600), ("b:2", 1_800_000_000, 2**30 * 3600)):
            for _ in range(2):
                await db.record_resources(process, now - timedelta(hours=2), now - timedelta(hours=1), cpu_us, byte_s)
        await db.record_resources("a:1", now - timedelta(days=40), now - timedelta(days=39), 10**12, 10**15)  # too old
        await db.aclose()

    asyncio.run(used())
    prices = {"CPU_CORE_HOUR_PRICE": "0.0336", "MEMORY_GB_HOUR_PRICE": "0.00475", "INFRA_MONTHLY_COST": "0"}
    data = json.loads(report(tmp_path, "--format", "json", **prices))
    bill = data["bill"]
    assert data["resources"] == {"cpu_core_hours": "1.500000", "memory_gb_hours": "2.000000"}
    assert (Decimal(bill["cpu"]), Decimal(bill["memory"])) == (Decimal("0.0504"), Decimal("0.0095"))
    assert Decimal(bill["total"]) == Decimal(bill["llm"]) + Decimal("0.0599")
    assert Decimal(bill["per_message"]) == Decimal(bill["total"])  # one answer
    table = report(tmp_path, **prices)
    assert "1.5000 CPU core-hours, 2.0000 GB-hours of memory" in table


def test_a_bad_format_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", "report", "--format", "xml"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "table, json or csv" in done.stderr
