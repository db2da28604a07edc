"""Settings, read once at start-up from the environment and ``.env`` and passed in.

A bad value stops the bot with one line per problem naming the variable (``describe_errors``).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Money = Annotated[Decimal, Field(ge=0, decimal_places=9)]


class Settings(BaseSettings):
    """Every setting pennybot reads; ``.env.example`` documents each one."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    # Budgets
    user_monthly_limit: Money | None = Decimal(10)
    cost_daily_limit: Money | None = None
    token_daily_limit: Annotated[int, Field(gt=0)] | None = None
    token_monthly_limit: Annotated[int, Field(gt=0)] | None = None
    global_monthly_limit: Money | None = Decimal(100)
    global_daily_limit: Money | None = None
    warning_threshold: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.8")
    critical_threshold: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.95")
    degrade_cheaper_at: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.8")
    degrade_shorter_at: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.9")
    degrade_cache_only_at: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.95")
    budget_timezone: str = "UTC"
    admin_user_ids: Annotated[frozenset[str], NoDecode] = frozenset()
    admins_exempt: bool = False
    admin_api_token: SecretStr | None = None

    # Cache and rate limit
    cache_ttl: Annotated[int, Field(gt=0)] = 3600
    max_cache_size: Annotated[int, Field(gt=0)] = 1000
    rate_limit_per_minute: Annotated[int, Field(gt=0)] = 50

    # Stores
    database_url: str = "sqlite:///pennybot.db"
    redis_url: str = "memory://"
    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = None
    outbox_path: Path = Path("pennybot-outbox.db")

    # Providers
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    # Anthropic caches a prompt's prefix only where a request asks: "5m" or "1h" marks every prompt
    # (reads of a repeated prefix bill at a tenth of the input price, writes at 1.25 or 2 times it),
    # "off" never.
    anthropic_prompt_cache: Literal["off", "5m", "1h"] = "5m"
    llm_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    llm_max_retries: Annotated[int, Field(ge=0, le=10)] = 1
    model_catalog: list[dict[str, Any]] | None = None
    simulated_latency_ms: Annotated[int, Field(ge=0)] = 0

    # Replies and context
    system_prompt: str = "You are pennybot, a helpful assistant. Answer clearly and briefly."
    min_reply_tokens: Annotated[int, Field(gt=0)] = 64
    max_reply_tokens: Annotated[int, Field(gt=0)] = 1024
    context_token_cap: Annotated[int, Field(ge=1000)] = 8000
    texts_file: Path | None = None

    # Alerts, daily report, retention (bot/jobs.py)
    alert_daily_cost_threshold: Money = Decimal(5)
    alert_monthly_cost_threshold: Money = Decimal(100)
    retention_days: Annotated[int, Field(ge=38)] = 90
    alert_every_minutes: Annotated[float, Field(gt=0)] = 5
    daily_report_hour: Annotated[int, Field(ge=0, le=23)] = 8
    alert_webhook_url: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: Annotated[int, Field(gt=0, lt=65536)] = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_starttls: bool | None = None
    alert_email_to: Annotated[tuple[str, ...], NoDecode] = ()

    # The whole bill and logs
    infra_monthly_cost: Money = Decimal(0)
    cpu_core_hour_price: Money = Decimal(0)
    memory_gb_hour_price: Money = Decimal(0)
    log_format: Literal["auto", "json", "text"] = "auto"
    log_message_text: bool = False

    # Server and channels
    public_base_url: str | None = None
    max_body_bytes: Annotated[int, Field(gt=0)] = 1_000_000
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 20.0
    inbox_lease_s: Annotated[float, Field(gt=0)] = 60.0
    inbox_sweep_s: Annotated[float, Field(gt=0)] = 15.0
    inbox_local_claims: bool = True
    telegram_bot_token: SecretStr | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_api_base_url: str = "https://api.telegram.org/bot"
    telegram_group_mode: Literal["mention", "all"] = "mention"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_whatsapp_from: str | None = None
    twilio_api_base_url: str | None = None
    twilio_price_per_message: Money = Decimal("0.005")

    @field_validator("admin_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("alert_email_to", mode="before")
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("budget_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _order(self) -> Settings:
        if self.warning_threshold >= self.critical_threshold:
            raise ValueError("WARNING_THRESHOLD must be below CRITICAL_THRESHOLD")
        if not self.degrade_cheaper_at <= self.degrade_shorter_at <= self.degrade_cache_only_at:
            raise ValueError("DEGRADE_CHEAPER_AT <= DEGRADE_SHORTER_AT <= DEGRADE_CACHE_ONLY_AT must hold")
        if self.min_reply_tokens > self.max_reply_tokens:
            raise ValueError("MIN_REPLY_TOKENS must not exceed MAX_REPLY_TOKENS")
        if self.telegram_bot_token and not self.telegram_webhook_secret:
            raise ValueError(
                "TELEGRAM_WEBHOOK_SECRET must be set with TELEGRAM_BOT_TOKEN (webhooks are refused without it)"
            )
        if self.smtp_host and self.alert_email_to and not self.smtp_from:
            raise ValueError("SMTP_FROM must be set to send alerts by email")
        if bool(self.smtp_username) != bool(self.smtp_password):
            raise ValueError("SMTP_USERNAME and SMTP_PASSWORD go together")
        if bool(self.supabase_url) != bool(self.supabase_service_role_key):
            raise ValueError("SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY go together")
        if self.whatsapp_on and not self.public_base_url:
            raise ValueError("PUBLIC_BASE_URL must be set for WhatsApp: Twilio signs the public URL of the webhook")
        return self

    @property
    def uses_supabase_rest(self) -> bool:
        """Supabase over HTTPS, for hosts that cannot open a Postgres connection: only when no
        DATABASE_URL was given."""
        configured = bool(self.supabase_url and self.supabase_service_role_key)
        return configured and "database_url" not in self.model_fields_set

    @property
    def telegram_on(self) -> bool:
        return self.telegram_bot_token is not None

    @property
    def whatsapp_on(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_whatsapp_from)

    @property
    def providers_on(self) -> list[str]:
        """The real providers with a key; none means the simulated one answers."""
        return [n for n, k in (("openai", self.openai_api_key), ("anthropic", self.anthropic_api_key)) if k]


def describe_errors(error: ValidationError) -> str:
    """One line per bad setting: the variable's name and what is wrong, never its value when
    the value may be a secret."""
    lines = []
    for e in error.errors():
        name = "_".join(str(p) for p in e["loc"]).upper() or "SETTINGS"
        msg = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}: {msg}" if name != "SETTINGS" else msg)
    return "; ".join(lines)


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read the settings once. ``overrides`` win over the environment (tests, CLI flags)."""
    return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
