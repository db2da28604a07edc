"""The cost API under ``/api/cost``: analytics, quotas, advice, the cache and alerts, for operators.

Every call needs ``Authorization: Bearer <ADMIN_API_TOKEN>``, compared in constant time, and is
refused with 401 while ADMIN_API_TOKEN is unset (DESIGN invariant 7). The check runs in the route
class, before the body is read, so an unauthenticated caller learns nothing, not even that its
JSON is malformed. Every quota change and cache clear is audited.
"""

from __future__ import annotations

import hmac
import json
from collections import defaultdict
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from bot import api_models as m
from bot.settings import Settings
from bot.stages import TIER_FOR
from bot.turn import Deps
from budget import advice
from budget.analytics import summarize
from budget.complexity import classify
from budget.ledger import BudgetUnavailable
from budget.money import from_nano
from budget.periods import Period
from budget.queries import is_self_contained, normalize_query
from budget.records import Kind, Quota, Status
from budget.rules import Scope, Unit
from budget.tokens import Counted
from providers.base import ChatMessage
from providers.catalog import ModelSpec

if TYPE_CHECKING:
    from bot.server import Runtime

OFF = "admin API is off: set ADMIN_API_TOKEN"
HISTORY_DAYS = 30  # the answers whose lengths predict an answer's length
RECOMMENDATION_MONTHS = 12
UserPath = Annotated[str, Path(pattern=m.USER_KEY, max_length=200, examples=["telegram:123"])]
UserQuery = Annotated[str | None, Query(pattern=m.USER_KEY, max_length=200, examples=["telegram:123"])]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def admin_token(settings: Settings) -> str:
    """ADMIN_API_TOKEN, or "" while it is unset (the admin API and the dashboard are off)."""
    configured = settings.admin_api_token
    return configured.get_secret_value() if configured is not None else ""


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an Authorization header is ``Bearer <token>``, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def check_token(request: Request) -> None:
    """Raise 401 unless the request carries the admin token; the secret never enters a reply."""
    token = admin_token(request.app.state.runtime.settings)
    if not token:
        raise _unauthorized(OFF)
    if not bearer_matches(request.headers.get("authorization", ""), token):
        raise _unauthorized("missing or wrong bearer token")


class ExactJSONRequest(Request):
    """A request whose JSON numbers are read from their text as Decimal: 0.1 stays exactly 0.1."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body, parse_float=Decimal, parse_constant=_not_json)
            except json.JSONDecodeError:
                raise
            except (ValueError, RecursionError) as error:
                # Not UTF-8, nested too deep, an integer of thousands of digits: not JSON this API
                # reads either. As a JSONDecodeError, FastAPI answers the documented 422 (else a 400).
                raise json.JSONDecodeError(f"unreadable JSON ({type(error).__name__})", "", 0) from None
        return self._json


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON has not; FastAPI makes this a 422.
    raise json.JSONDecodeError(f"{constant} is not a JSON value", constant, 0)


class AdminRoute(APIRoute):
    """Checks the token first, then reads JSON bodies exactly."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            check_token(request)
            return await handler(ExactJSONRequest(request.scope, request.receive))

        return guarded


def cost_router(runtime: Runtime) -> APIRouter:
    """The routes, bound to the runtime's services."""
    deps: Deps = runtime.built.deps
    # Declares the bearer scheme in OpenAPI; AdminRoute does the check itself.
    bearer = Security(HTTPBearer(auto_error=False, description="ADMIN_API_TOKEN"))
    api = APIRouter(prefix="/api/cost", tags=["cost"], route_class=AdminRoute, dependencies=[bearer])
    unauthorized: dict[int | str, dict[str, Any]] = {401: {"description": "missing or wrong token, or API off"}}
    unknown = unauthorized | {404: {"description": "unknown user"}}

    async def known(user: str | None) -> None:
        if user is not None and not await deps.db.known_user(user):
            raise HTTPException(404, f"unknown user {user}")

    @api.get("/analytics", responses=unknown)
    async def analytics(user_id: UserQuery = None, days: Annotated[int, Query(ge=1, le=366)] = 30) -> m.Analytics:
        """Spend of the last ``days`` days (of one user, or of the bot with channel fees)."""
        await known(user_id)
        end = deps.clock()
        start = end - timedelta(days=days)
        rows = await deps.db.requests(start, end, user_id)
        s = summarize(rows, await deps.db.fees(start, end) if user_id is None else Decimal(0))
        tokens = m.TokenTotals(**{f: getattr(s.tokens, f) for f in m.TokenTotals.model_fields})
        return m.Analytics(
            start=start, end=end, user_id=user_id, llm_cost=s.llm_cost, fees=s.fees, total_cost=s.total_cost,
            requests=s.requests, answers=s.answers, errors=s.errors, tokens=tokens,
            cache=m.CacheEfficiency(hits=s.cache_hits, answers=s.answers, hit_rate=s.cache_hit_rate, saved=s.saved),
            by_model=s.by_model, by_provider=s.by_provider, by_channel=s.by_channel, by_user=s.by_user,
            active_users=s.active_users, cost_per_active_user=s.cost_per_active_user,
            cost_per_answer=s.cost_per_answer, top_users=[m.UserCost(user_id=u, cost=c) for u, c in s.top_users],
            premium_share=s.premium_share,
        )  # fmt: skip

    async def quota_view(user: str) -> m.QuotaView:
        now = deps.clock()
        exempt = deps.settings.admins_exempt and user in deps.settings.admin_user_ids
        try:
            meters = await deps.budget.meters(user, now, exempt=exempt)
        except BudgetUnavailable as error:
            raise HTTPException(503, "budget stores unreachable") from error
        mine = {(x.period, x.unit): x for x in meters if x.scope is Scope.USER}
        day, month = mine[Period.DAY, Unit.USD], mine[Period.MONTH, Unit.USD]
        day_t, month_t = mine[Period.DAY, Unit.TOKENS], mine[Period.MONTH, Unit.TOKENS]
        lim, q = deps.budget.limits, await deps.db.get_quota(user) or Quota(user)
        return m.QuotaView(
            user_id=user,
            exempt=exempt,
            defaults=m.Limits(
                daily_usd=lim.user_daily_usd, monthly_usd=lim.user_monthly_usd,
                daily_tokens=lim.user_daily_tokens, monthly_tokens=lim.user_monthly_tokens,
            ),
            overrides=m.Limits(
                daily_usd=q.daily_usd, monthly_usd=q.monthly_usd,
                daily_tokens=q.daily_tokens, monthly_tokens=q.monthly_tokens,
            ),
            effective=m.Limits(
                daily_usd=None if day.limit is None else from_nano(day.limit),
                monthly_usd=None if month.limit is None else from_nano(month.limit),
                daily_tokens=day_t.limit, monthly_tokens=month_t.limit,
            ),
            used=m.Used(
                daily_usd=from_nano(day.used), monthly_usd=from_nano(month.used),
                daily_tokens=day_t.used, monthly_tokens=month_t.used,
                day_resets_at=day.window.end, month_resets_at=month.window.end,
            ),
        )  # fmt: skip

    @api.get("/quota/{user_id}", responses=unknown)
    async def get_quota(user_id: UserPath) -> m.QuotaView:
        """A user's limits (configured, own, enforced) and what is used of them."""
        await known(user_id)
        return await quota_view(user_id)

    @api.put("/quota/{user_id}", responses=unknown)
    async def put_quota(user_id: UserPath, change: m.QuotaUpdate) -> m.QuotaView:
        """Change a user's own limits; audited, and enforced from the next message on."""
        await known(user_id)
        old = await deps.db.get_quota(user_id) or Quota(user_id)
        fields = {f: getattr(old, f) for f in m.QuotaUpdate.model_fields} | change.model_dump(exclude_unset=True)
        quota = Quota(user_id, **fields)
        await deps.db.set_quota(quota, actor="api", now=deps.clock())
        await deps.budget.apply_quota(quota)
        return await quota_view(user_id)

    @api.post("/optimize", responses=unknown)
    async def optimize(body: m.OptimizeRequest) -> m.Optimization:
        """What a question would cost now, on which model and why, and how to pay less."""
        await known(body.user_id)
        now = deps.clock()
        tier = TIER_FOR[classify(body.question)]
        chosen = deps.router.chain(tier, now.timestamp())[0]
        normalized = normalize_query(body.question)
        history: list[Counted] = []
        asked = 1
        if body.user_id is not None:
            conv = await deps.db.conversation(body.user_id)
            turns = ([conv.summary] if conv.summary else []) + conv.turns
            history = [
                Counted(ChatMessage("system" if t.role == "summary" else t.role, t.content), t.tokens, t.size)
                for t in turns
            ]
            asked += sum(1 for t in conv.turns if t.role == "user" and normalize_query(t.content) == normalized)
        message = deps.counter.count(ChatMessage("user", body.question))
        prompt_tokens = deps.counter.prompt_tokens([deps.system, *history, message], chosen.model)
        servable = not history or is_self_contained(body.question)  # as the cache stage judges
        key = deps.cache.key(normalized, deps.persona, tier.value)
        # The raw store, not AnswerCache.get: asking must not count as a cache hit or miss.
        cached = servable and await deps.hot.cache_get(key, now.timestamp()) is not None
        rows = await deps.db.requests(now - timedelta(days=HISTORY_DAYS), now, body.user_id)
        outputs: dict[str, list[int]] = defaultdict(list)
        for r in rows:
            if r.kind is Kind.ANSWER and r.status is Status.OK and r.complexity:
                outputs[r.complexity].append(r.usage.output_tokens)
        o = advice.optimize(
            body.question, prompt_tokens=prompt_tokens, history_output_tokens=outputs,
            catalog=deps.router.catalog, prices=deps.prices, chosen=chosen, cache_hit=cached, repeated_count=asked,
        )  # fmt: skip
        return m.Optimization(
            complexity=o.complexity.value, tier=tier.value, chosen=_cost(chosen, o.chosen_cost), why=o.why,
            prompt_tokens=prompt_tokens, expected_output_tokens=o.expected_output_tokens,
            output_samples=o.output_samples, estimates=[_cost(e.spec, e.cost) for e in o.estimates],
            cache_hit=o.cache_hit, self_contained=o.self_contained, repeated=asked,
            suggestions=[m.Advice(rule=s.rule, message=s.message, figures=s.figures) for s in o.suggestions],
        )  # fmt: skip

    @api.get("/cache/stats", responses=unauthorized)
    async def cache_stats() -> m.CacheStats:
        """Answer cache lookups since the counters started, and entries held now."""
        s = await deps.cache.stats(deps.clock().timestamp())
        lookups = s.hits + s.misses
        rate = Decimal(s.hits) / lookups if lookups else None
        return m.CacheStats(hits=s.hits, misses=s.misses, size=s.size, hit_rate=rate)

    @api.post("/cache/clear", responses=unauthorized)
    async def cache_clear() -> m.CacheCleared:
        """Drop every cached answer; audited."""
        removed = await deps.cache.clear()
        await deps.db.audit("api", "cache.clear", None, {"removed": removed}, deps.clock())
        return m.CacheCleared(removed=removed)

    @api.get("/alerts", responses=unauthorized)
    async def alerts(days: Annotated[int, Query(ge=1, le=366)] = 7) -> m.Alerts:
        """Budget alerts fired in the last ``days`` days, newest first."""
        since = deps.clock() - timedelta(days=days)
        found = await deps.db.alerts(since)
        return m.Alerts(
            since=since,
            alerts=[
                m.Alert(rule=a.rule, subject=a.subject, period_key=a.period_key, level=a.level,
                        message=a.message, created_at=a.created_at)
                for a in found
            ],
        )  # fmt: skip

    @api.get("/budget/recommendations", responses=unknown)
    async def recommendations(user_id: UserQuery = None) -> m.Recommendations:
        """Limits and savings drawn from the last 12 complete months and this one."""
        await known(user_id)
        end = deps.clock()
        start = _months_before(deps.calendar.window(Period.MONTH, end).start, RECOMMENDATION_MONTHS)
        rows = await deps.db.requests(start, end, user_id)
        found = advice.recommendations(
            rows, prices=deps.prices, catalog=deps.router.catalog, subject=user_id, tz=deps.calendar.tz, now=end
        )
        return m.Recommendations(
            start=start,
            end=end,
            user_id=user_id,
            recommendations=[
                m.Recommendation(rule=r.rule, subject=r.subject, message=r.message, figures=r.figures) for r in found
            ],
        )

    return api


def _cost(spec: ModelSpec, cost: Decimal) -> m.ModelCost:
    return m.ModelCost(model=spec.name, provider=spec.provider, tier=spec.tier.value, cost=cost)


def _months_before(month_start: datetime, n: int) -> datetime:
    """The first instant of the month ``n`` months before the month starting at ``month_start``."""
    year, month = divmod(month_start.year * 12 + month_start.month - 1 - n, 12)
    return month_start.replace(year=year, month=month + 1)
