"""The admin (cost) API fuzzed from its own OpenAPI schema with schemathesis, against the real app on
uvicorn with Postgres and Redis behind it, with and without the bearer token: never a 5xx, every
response as the schema says (status, content type, body), the token always enforced, no secret in
any response or log line. Hypothesis runs derandomized with a bounded number of examples, so CI
sees the same cases every run."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from bot.turn import Inbound
from tests.bot.server_harness import channel_settings
from tests.drills.app_thread import AppInThread, Captured
from tests.drills.conftest import fresh_shared_stores
from tests.fakes.telegram_server import TEST_TOKEN, FakeTelegramServer
from tests.fakes.twilio_server import TEST_AUTH_TOKEN, FakeTwilioServer

ADMIN = "adm-fuzz-0123456789abcdef"
DB_PASSWORD = "pg-fuzz-pass-13579"
SECRETS = (ADMIN, DB_PASSWORD, TEST_TOKEN, TEST_TOKEN.split(":")[1], TEST_AUTH_TOKEN)
FUZZ = settings(
    max_examples=100,  # per operation and phase
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Fuzzed:
    app: AppInThread
    logs: Captured


@pytest.fixture(scope="module")
def served(telegram_server_session: FakeTelegramServer, twilio_server_session: FakeTwilioServer) -> Iterator[Fuzzed]:
    with fresh_shared_stores() as stores, Captured() as logs:
        db_url = stores.database_url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
        assert DB_PASSWORD in db_url
        app_settings = channel_settings(
            telegram_server_session, twilio_server_session, database_url=db_url, redis_url=stores.redis_url,
            admin_api_token=ADMIN, rate_limit_per_minute=10_000,
        )  # fmt: skip
        with AppInThread(**app_settings) as app:
            # The schema's example user exists and has spent, so its operations answer 200, not only 404.
            for n, text in enumerate(("What is the capital of France?", "And of Spain? Explain briefly.")):
                app.run(app.runtime.dispatcher.pipeline.handle(Inbound("telegram", "123", "123", f"f{n}", text)))
            app.run(app.runtime.built.deps.recorder.flush())
            yield Fuzzed(app, logs)
        text = logs.text
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked into the logs: {secret[:4]}…"
        errors = [r.getMessage()[:300] for r in logs.records if r.levelno >= logging.ERROR]
        assert not errors, errors


@pytest.fixture(scope="module")
def cost_api(served: Fuzzed) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{served.app.url}/openapi.json")
    return schema


api = schemathesis.pytest.from_fixture("cost_api").include(path_regex="^/api/cost/")


@api.parametrize()
@FUZZ
def test_cost_api_with_the_token(case: Any, served: Fuzzed) -> None:
    response = case.call(headers={"Authorization": f"Bearer {ADMIN}"})
    _no_secret(response)
    # The default checks: no 5xx, status, content type, headers and body as documented, valid data
    # accepted and invalid data refused, and the token enforced (sent again without it: a 401).
    case.validate_response(response, headers={"Authorization": f"Bearer {ADMIN}"}, excluded_checks=_excluded(case))


@api.parametrize()
@FUZZ
def test_cost_api_without_the_token(case: Any, served: Fuzzed) -> None:
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    response = case.call()
    _no_secret(response)
    if case.method.upper() != case.operation.method.upper():  # a method the route has not: refused first
        assert response.status_code == 405, (response.status_code, response.text[:300])
        return
    assert response.status_code == 401, (case.method, case.path, response.status_code, response.text[:300])
    assert response.headers.get("www-authenticate") == ["Bearer"]
    case.validate_response(response, excluded_checks=_excluded(case))


def _excluded(case: Any) -> list[Any]:
    """Checks that do not apply: "invalid data accepted" for a query parameter the operation does
    not declare (schemathesis counts ``?=false`` as invalid): HTTP APIs ignore unknown query
    parameters."""
    excluded: list[Any] = []
    if set(case.query or {}) - {p.name for p in case.operation.query}:
        excluded.append(schemathesis.checks.negative_data_rejection)
    # Amounts have at most 9 decimal places (nano-dollars), which JSON Schema cannot say of a number
    # (multipleOf 1e-9 fails in binary floating point): such a number is refused, rightly.
    if isinstance(case.body, dict) and any(_sub_nano(v) for v in case.body.values()):
        excluded.append(schemathesis.checks.positive_data_acceptance)
    return excluded


def _sub_nano(value: object) -> bool:
    if not isinstance(value, float) or not math.isfinite(value):
        return False
    exponent = Decimal(repr(value)).as_tuple().exponent
    return isinstance(exponent, int) and exponent < -9


def _no_secret(response: Any) -> None:
    blob = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    assert not any(s in blob for s in SECRETS), "a secret in a response"
