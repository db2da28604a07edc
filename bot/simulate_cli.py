"""The ``pennybot simulate`` and ``pennybot workload generate`` commands (registered in bot.cli)."""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from bot.settings import Settings, describe_errors, load_settings

workload_app = typer.Typer(help="Make workloads for `pennybot simulate`.", no_args_is_help=True)


def _load(config: Path) -> Settings:
    try:
        return load_settings(config if config.exists() else None)
    except ValidationError as error:
        typer.echo(f"pennybot: bad setting: {describe_errors(error)}", err=True)
        raise typer.Exit(2) from None


def simulate_command(
    workload: Annotated[Path, typer.Option("--workload", help="JSONL, Telegram result.json, WhatsApp .txt; or .gz.")],
    config: Annotated[Path, typer.Option("--config", "--env-file", help="Settings file (budgets, catalog...).")] = Path(
        ".env"
    ),
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    input_format: Annotated[str, typer.Option(help="auto (by the file name), jsonl, telegram or whatsapp.")] = "auto",
    bot_name: Annotated[str | None, typer.Option(help="In an export: the bot's own name or id (skipped).")] = None,
    tz: Annotated[str, typer.Option(help="Time zone of timestamps that carry none (WhatsApp exports).")] = "UTC",
    date_order: Annotated[str, typer.Option(help="WhatsApp dates: auto, dmy or mdy.")] = "auto",
    stores: Annotated[str, typer.Option(help="memory, or config: replay into the configured stores.")] = "memory",
    progress: Annotated[bool, typer.Option(help="A progress bar on stderr.")] = True,
) -> None:
    """Replay a workload through the pipeline (simulated provider, accelerated clock) and price it
    against a naive and a plain budget bot."""
    from rich.console import Console

    from bot.simulate import report
    from bot.workloads import Workload, WorkloadError
    from budget.pricing import UnknownModelPrice

    if fmt not in ("table", "json") or stores not in ("memory", "config") or date_order not in ("auto", "dmy", "mdy"):
        typer.echo("pennybot: --format is table or json, --stores memory or config, --date-order auto, dmy or mdy",
                   err=True)  # fmt: skip
        raise typer.Exit(2)
    settings = _load(config)
    logging.getLogger("pennybot").setLevel(logging.WARNING)
    err = Console(stderr=True)
    try:
        source = Workload(workload, fmt=input_format, bot_name=bot_name, tz=tz, date_order=date_order)
        total = source.count()
        if bot_name and source.fmt != "jsonl" and source.skipped_bot == 0:
            err.print(f"pennybot: no message from --bot-name {bot_name!r} in {workload}: every sender is a user")
        result = asyncio.run(_run(settings, source, total, err, progress, stores == "config"))
    except (WorkloadError, UnknownModelPrice, ValueError) as error:
        typer.echo(f"pennybot: {error}", err=True)
        raise typer.Exit(2) from None
    data = report(result, str(workload))
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2))
    else:
        Console().print(*_table(data, stores), sep="\n")


async def _run(settings: Settings, source: Any, total: int, err: Any, show: bool, keep_stores: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bot.simulate import simulate

    bar = Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err, disable=not show or not err.is_terminal, transient=True)  # fmt: skip
    with bar:
        task = bar.add_task("replay", total=total)

        def advance(n: int) -> None:
            if n % 200 == 0 or n == total:
                bar.update(task, completed=n)

        return await simulate(settings, source, progress=advance, keep_stores=keep_stores)


def _table(data: dict[str, Any], stores: str) -> list[Any]:
    from rich.table import Table

    from budget.money import fmt_usd

    naive, plain = data["baselines"]["naive"], data["baselines"]["plain"]
    table = Table(title=f"pennybot simulate: {data['workload']} ({data['messages']:,} messages)")
    for column in ("", "pennybot", "naive", "plain"):
        table.add_column(column, justify="left" if not column else "right")

    def usd(v: str, places: int = 4) -> str:
        return fmt_usd(Decimal(v), places)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    rows: list[tuple[str, Any]] = [
        ("AI calls", lambda f: f"{f['ai_calls']:,}"),
        ("cost", lambda f: usd(f["cost_usd"])),
        ("cost per message", lambda f: usd(f["cost_per_message_usd"], 6)),
        ("cache hit rate", lambda f: pct(f["cache_hit_rate"])),
        ("  hits on follow-ups (out of context)", lambda f: f"{f['cache_hits_on_follow_ups']:,}"),
        ("input tokens", lambda f: f"{f['input_tokens']:,}"),
        ("  of them prefix-cached", lambda f: f"{f['cached_input_tokens']:,}"),
        ("output tokens", lambda f: f"{f['output_tokens']:,}"),
        ("users warned", lambda f: f"{f['users_warned']:,}"),
        ("users blocked", lambda f: f"{f['users_blocked']:,}"),
        ("messages refused (budget)", lambda f: f"{f['messages_refused']:,}"),
        ("global budget peak", lambda f: pct(f["global_budget_peak"])),
    ]
    for label, get in rows:
        table.add_row(label, get(data), get(naive), get(plain))
    models = Table(title="AI calls by model (tokens: input, of them prefix-cached, output)")
    for column in ("bot", "model", "calls", "input", "cached", "output", "cost"):
        models.add_column(column, justify="left" if column in ("bot", "model") else "right")
    for bot, figures in (("pennybot", data), ("naive", naive), ("plain", plain)):
        for model, m in figures["by_model"].items():
            models.add_row(bot, model, f"{m['calls']:,}", f"{m['input_tokens']:,}", f"{m['cached_input_tokens']:,}",
                           f"{m['output_tokens']:,}", usd(m["cost_usd"]))  # fmt: skip
    notes = [
        f"provider: {data['provider']}",
        "models: " + "; ".join(data["models"]),
        f"stores: {'in memory' if stores == 'memory' else 'the configured ones'}",
        f"pennybot: {pct(data['vs_naive'])} of naive, {pct(data['vs_plain'])} of plain; "
        f"{data['summary_calls']:,} summary calls ({usd(data['summary_cost_usd'])}); "
        f"{data['tokens_saved_by_context']:,} prompt tokens kept out "
        f"by folding and trimming; {data['rate_limited']:,} messages rate-limited",
        "limits passed: " + ("none" if not data["limits_passed"] else "; ".join(data["limits_passed"][:5])),
        f"replayed in {data['run_seconds']} s",
    ]
    return [table, models, *notes]


@workload_app.command("generate")
def generate_command(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSONL (.gz compresses).")],
    users: Annotated[int, typer.Option(min=1, help="How many users.")] = 1000,
    messages: Annotated[int, typer.Option(min=1, help="How many messages in all.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Same seed, same workload.")] = 1,
    month: Annotated[str, typer.Option(help="The calendar month, YYYY-MM.")] = "2026-11",
) -> None:
    """Generate a month of chat traffic shaped by published usage figures (workloads/README.md)."""
    from bot.workload_gen import Shape, generate
    from bot.workloads import write_jsonl

    if messages < users:
        typer.echo("pennybot: --messages must be at least --users (each user sends one or more)", err=True)
        raise typer.Exit(2)
    try:
        shape = Shape(users=users, messages=messages, month=month)
        n = write_jsonl(generate(shape, seed), out)
    except ValueError as error:
        typer.echo(f"pennybot: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{n:,} messages from {users:,} users over {month} written to {out}")
