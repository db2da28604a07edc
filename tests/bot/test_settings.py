import re
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.factory import build
from bot.settings import Settings, describe_errors, load_settings
from budget.pricing import UnknownModelPrice

ROOT = Path(__file__).parents[2]


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    s = load_settings(None)
    assert (s.user_monthly_limit, s.cost_daily_limit, s.global_monthly_limit, s.global_daily_limit) == (
        Decimal(10),
        None,
        Decimal(100),
        None,
    )
    assert (s.warning_threshold, s.critical_threshold) == (Decimal("0.8"), Decimal("0.95"))
    assert (s.cache_ttl, s.max_cache_size, s.rate_limit_per_minute) == (3600, 1000, 50)
    assert (s.budget_timezone, s.redis_url, s.llm_timeout_s, s.llm_max_retries) == ("UTC", "memory://", 30.0, 1)
    assert (s.min_reply_tokens, s.admins_exempt, s.providers_on) == (64, False, [])
    assert s.database_url.startswith("sqlite:///")


def test_money_settings_are_exact_decimals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_MONTHLY_LIMIT", "0.1")
    assert load_settings(None).user_monthly_limit == Decimal("0.1")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"USER_MONTHLY_LIMIT": "ten"}, "USER_MONTHLY_LIMIT: Input should be a valid decimal"),
        ({"USER_MONTHLY_LIMIT": "-1"}, "USER_MONTHLY_LIMIT: Input should be greater than or equal to 0"),
        ({"RATE_LIMIT_PER_MINUTE": "0"}, "RATE_LIMIT_PER_MINUTE: Input should be greater than 0"),
        ({"BUDGET_TIMEZONE": "Mars/Olympus"}, "BUDGET_TIMEZONE: unknown time zone 'Mars/Olympus'"),
        ({"WARNING_THRESHOLD": "0.96"}, "WARNING_THRESHOLD must be below CRITICAL_THRESHOLD"),
        ({"LLM_TIMEOUT_S": "soon"}, "LLM_TIMEOUT_S: Input should be a valid number"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError) as error:
        load_settings(None)
    assert describe_errors(error.value).startswith(message)


def test_admin_ids_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_USER_IDS", "telegram:1, whatsapp:+15551234567,,")
    assert load_settings(None).admin_user_ids == {"telegram:1", "whatsapp:+15551234567"}


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"
    env.write_text("USER_MONTHLY_LIMIT=3\nCACHE_TTL=60\n")
    monkeypatch.setenv("CACHE_TTL", "90")
    s = load_settings(env)
    assert (s.user_monthly_limit, s.cache_ttl) == (Decimal(3), 90)


def test_an_unknown_model_is_refused_at_start_unless_priced(counter: object) -> None:
    unknown = [{"provider": "simulated", "model": "my-local-llama", "tier": "cheap"}]
    with pytest.raises(UnknownModelPrice, match="my-local-llama"):
        build(load_settings(None, database_url="memory://", model_catalog=unknown), counter=counter)  # type: ignore[arg-type]
    priced = [unknown[0] | {"price": {"input": "0.05", "output": "0.10"}}]
    built = build(load_settings(None, database_url="memory://", model_catalog=priced), counter=counter)  # type: ignore[arg-type]
    assert built.deps.prices.price("my-local-llama").output_mtok == Decimal("0.10")


def test_env_example_lists_every_setting() -> None:
    listed = set(re.findall(r"^#? ?([A-Z_0-9]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert listed == {name.upper() for name in Settings.model_fields}


def test_texts_file_replaces_texts_and_refuses_unknown_names(tmp_path: Path) -> None:
    import json

    from bot.texts import Texts, load_texts

    path = tmp_path / "texts.json"
    path.write_text(json.dumps({"rate_limited": "Langsam! Noch {seconds} s."}), encoding="utf-8")
    texts = load_texts(path)
    assert texts.rate_limited.format(seconds=3) == "Langsam! Noch 3 s."
    assert texts.help == Texts().help
    path.write_text(json.dumps({"no_such_text": "x"}))
    with pytest.raises(ValueError, match="no_such_text"):
        load_texts(path)


def test_supabase_rest_is_chosen_only_without_a_database_url(
    counter: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from budget.outbox import OutboxRecorder
    from budget.stores.supabase_rest import SupabaseDatabase

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    rest = {"supabase_url": "http://127.0.0.1:9/", "supabase_service_role_key": "service-role-key-123"}
    built = build(load_settings(None, **rest), counter=counter)  # type: ignore[arg-type]
    assert isinstance(built.deps.db, SupabaseDatabase) and isinstance(built.deps.recorder, OutboxRecorder)
    direct = build(load_settings(None, database_url="memory://", **rest), counter=counter)  # type: ignore[arg-type]
    assert not isinstance(direct.deps.db, SupabaseDatabase)
    with pytest.raises(ValidationError, match="go together"):
        load_settings(None, supabase_url="http://127.0.0.1:9/")
