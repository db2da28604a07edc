"""The ``pennybot`` command."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from bot.logs import configure, protect, secrets_of
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
        settings = load_settings(env_file if env_file.exists() else None)
    except ValidationError as error:
        typer.echo(f"pennybot: bad setting: {describe_errors(error)}", err=True)
        raise typer.Exit(2) from None
    protect(secrets_of(settings))  # before anything can log
    return settings


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
        f"  database: {_redact(settings.database_url)}\n"
        "  /help lists commands; Ctrl-D quits."
    )


@app.command()
def chat(
    user: Annotated[str, typer.Option(help="Who you are in this chat (budgets are per user).")] = "you",
    env_file: EnvFile = Path(".env"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each message's stages.")] = False,
) -> None:
    """Chat with the bot in the terminal through the full pipeline."""
    settings = _settings(env_file)
    configure(settings, logging.INFO if verbose else logging.WARNING)
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


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Serve the webhooks, /healthz and /readyz."""
    import uvicorn

    from bot.server import create_app

    settings = _settings(env_file)
    configure(settings, logging.INFO)
    try:
        application = create_app(settings)
    except (UnknownModelPrice, ValueError) as error:
        typer.echo(f"pennybot: {error}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )


@app.command()
def migrate(env_file: EnvFile = Path(".env")) -> None:
    """Apply the schema to DATABASE_URL (idempotent; records what it applied)."""
    from budget.stores import open_database

    settings = _settings(env_file)
    configure(settings, logging.INFO)

    async def go() -> None:
        db = open_database(settings.database_url)
        try:
            await db.migrate()
        finally:
            await db.aclose()

    asyncio.run(go())
    typer.echo(f"schema up to date on {_redact(settings.database_url)}")


def _redact(url: str) -> str:
    """A URL without its password, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _telegram_bot(env_file: Path) -> Any:
    from telegram import Bot

    settings = _settings(env_file)
    if settings.telegram_bot_token is None:
        typer.echo("pennybot: TELEGRAM_BOT_TOKEN is not set", err=True)
        raise typer.Exit(2)
    return settings, Bot(settings.telegram_bot_token.get_secret_value(), base_url=settings.telegram_api_base_url)


@app.command("set-webhook")
def set_webhook(
    url: Annotated[str, typer.Argument(help="The public https URL of /webhook/telegram.")],
    env_file: EnvFile = Path(".env"),
) -> None:
    """Register the Telegram webhook with the secret token and the updates the bot handles."""
    settings, bot = _telegram_bot(env_file)
    secret = settings.telegram_webhook_secret.get_secret_value() if settings.telegram_webhook_secret else None

    async def go() -> bool:
        async with bot:
            return bool(await bot.set_webhook(url, secret_token=secret, allowed_updates=["message"]))

    typer.echo("webhook set" if asyncio.run(go()) else "Telegram refused the webhook")


@app.command("delete-webhook")
def delete_webhook(env_file: EnvFile = Path(".env")) -> None:
    """Remove the Telegram webhook."""
    _, bot = _telegram_bot(env_file)

    async def go() -> bool:
        async with bot:
            return bool(await bot.delete_webhook())

    typer.echo("webhook deleted" if asyncio.run(go()) else "Telegram refused")


@app.command("webhook-info")
def webhook_info(env_file: EnvFile = Path(".env")) -> None:
    """Show what Telegram knows of the webhook."""
    _, bot = _telegram_bot(env_file)

    async def go() -> Any:
        async with bot:
            return await bot.get_webhook_info()

    info = asyncio.run(go())
    typer.echo(f"url: {info.url or '(none)'}\npending updates: {info.pending_update_count}")
    if info.last_error_message:
        typer.echo(f"last error: {info.last_error_message}")


@app.command()
def report(
    days: Annotated[int, typer.Option(min=1, max=366, help="How many days back.")] = 30,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    env_file: EnvFile = Path(".env"),
) -> None:
    """The bot's figures in the terminal: the bill, activity, tokens, cache, breakdowns."""
    if fmt not in ("table", "json", "csv"):
        typer.echo("pennybot: --format is table, json or csv", err=True)
        raise typer.Exit(2)
    settings = _settings(env_file)
    configure(settings, logging.WARNING)

    async def go() -> str:
        from bot.factory import build, close
        from bot.report import build_report, render

        built = build(settings)
        try:
            await built.deps.db.migrate()
            return render(await build_report(built.deps, days, built.deps.clock()), fmt)
        finally:
            await close(built.deps)

    typer.echo(asyncio.run(go()), nl=False)


# The policy simulator and its workloads (bot/simulate_cli.py).
from bot.simulate_cli import simulate_command, workload_app  # noqa: E402

app.command("simulate")(simulate_command)
app.add_typer(workload_app, name="workload")


def main() -> None:
    app()
