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


def test_a_bad_format_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", "report", "--format", "xml"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "table, json or csv" in done.stderr
