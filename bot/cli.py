"""The ``pennybot`` command."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from bot.settings import Settings, describe_errors, load_settings
from budget.money import fmt_usd
from budget.pricing import UnknownModelPrice

app = typer.Typer(help="A chat bot that answers with LLMs and never spends more than it may.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """pennybot: budgeted LLM answers on Telegram, WhatsApp and the console."""


EnvFile = Annotated[Path, typer.Option("--env-file", help="Settings file read after the environment.")]


def _settings(env_file: Path) -> Settings:
    try:
        return load_settings(env_file if env_file.exists() else None)
    except ValidationError as error:
        typer.echo(f"pennybot: bad setting: {describe_errors(error)}", err=True)
        raise typer.Exit(2) from None


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs request URLs at INFO, and Telegram's carry the bot token (FACTS.md).
    for name in ("httpx", "httpx2", "httpcore", "openai", "anthropic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _banner(settings: Settings, simulated: bool, user: str) -> str:
    def limit(v: object) -> str:
        return "no limit" if v is None else fmt_usd(v, 2)  # type: ignore[arg-type]

    provider = (
        "simulated (no OPENAI_API_KEY or ANTHROPIC_API_KEY set: replies are offline and marked [simulated])"
        if simulated
        else ", ".join(settings.providers_on)
    )
    return (
        f"pennybot console chat as console:{user}\n"
        f"  provider: {provider}\n"
        f"  budget:   {limit(settings.user_monthly_limit)} a month per user, "
        f"{limit(settings.global_monthly_limit)} a month for the bot\n"
        f"  database: {settings.database_url}\n"
        "  /help lists commands; Ctrl-D quits."
    )


@app.command()
def chat(
    user: Annotated[str, typer.Option(help="Who you are in this chat (budgets are per user).")] = "you",
    env_file: EnvFile = Path(".env"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each message's stages.")] = False,
) -> None:
    """Chat with the bot in the terminal through the full pipeline."""
    _logging(verbose)
    settings = _settings(env_file)
    asyncio.run(_chat(settings, user))


async def _chat(settings: Settings, user: str) -> None:
    from bot.channels.console import chat as console_chat
    from bot.factory import build, close
    from bot.pipeline import Pipeline

    try:
        built = build(settings)
    except (UnknownModelPrice, ValueError) as error:
        typer.echo(f"pennybot: {error}", err=True)
        raise typer.Exit(2) from None
    await built.deps.db.migrate()
    if sys.stdin.isatty():
        typer.echo(_banner(settings, built.simulated, user))
    else:
        typer.echo(_banner(settings, built.simulated, user), err=True)
    try:
        await console_chat(Pipeline(built.deps), user)
    finally:
        await close(built.deps)


def main() -> None:
    app()
