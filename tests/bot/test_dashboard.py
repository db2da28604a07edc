"""The dashboard: the real app on uvicorn with seeded data, read with httpx and in a real Chromium.

The data goes in through the real Database API (a SQLite file), on a fixed clock, so every figure
on the page is known exactly. The browser test drives Debian's chromium through Playwright (its
own browser download does not work offline) and saves a screenshot to tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bot.dashboard import COOKIE, CSP, FAIL_WINDOW_S, FAILS_PER_CLIENT, SESSION_S, favicon
from bot.factory import build
from bot.server import create_app
from bot.settings import load_settings
from bot.turn import Deps
from budget.records import AIRequest, Kind, Status, StoredAlert
from providers.base import Usage
from tests.bot.server_harness import until
from tests.conftest import Clock, require_server
from tests.drills.servers import free_port

TOKEN = "pb-dash-0123456789abcdef0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
EVE = "console:</script><b>eve"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SETTINGS: dict[str, Any] = {
    "redis_url": "memory://",
    "admin_api_token": TOKEN,
    "global_monthly_limit": "10",
    "infra_monthly_cost": "6.0875",  # x 30 days / 30.4375 days a month = $6.00 exactly
    "cpu_core_hour_price": "0.05",
    "memory_gb_hour_price": "0.01",
    "shutdown_grace_s": 5,
}
# What the seed below adds up to (checked against the seed itself in test_seed_sums).
LLM, FEES, SAVED = Decimal("8.767402"), Decimal("0.15"), Decimal("0.56127")
TOTAL = LLM + FEES + Decimal("6.00") + Decimal("0.50") + Decimal("0.20")  # infra, 10 core-hours, 20 GiB-hours
MONTH = Decimal("6.065363")  # the LLM spend of November 1 to 20


# -- the seed ------------------------------------------------------------------------------------


def _row(n: int, user: str, when: datetime, provider: str, model: str, cost: str, **kw: Any) -> AIRequest:
    return AIRequest(
        request_id=f"seed-{n}", created_at=when, user_key=user, channel=user.split(":")[0], message_id=f"m{n}",
        kind=kw.pop("kind", Kind.ANSWER), provider=provider, model=model, status=kw.pop("status", Status.OK),
        usage=Usage(input_tokens=400, output_tokens=120), cost=Decimal(cost), **kw,
    )  # fmt: skip


def seed_rows() -> list[AIRequest]:
    """Thirty days of traffic ending at NOW: six users, two providers, four models, cache hits,
    a failed attempt, a summary; and two rows from before the window, which must not count."""
    rows: list[AIRequest] = []

    def add(user: str, when: datetime, provider: str, model: str, cost: str, **kw: Any) -> None:
        rows.append(_row(len(rows), user, when, provider, model, cost, **kw))

    for back in range(30):
        day = NOW.replace(hour=9) - timedelta(days=back)
        add("telegram:alice", day, "openai", "gpt-4o-mini", str(Decimal("0.0123") + Decimal("0.000457") * (back % 5)))
        if back % 2 == 0:
            add("whatsapp:bob", day.replace(hour=11), "anthropic", "claude-sonnet-4-5",
                str(Decimal("0.4125") + Decimal("0.013579") * (back % 3)))  # fmt: skip
        if back % 3 == 0:
            add("console:carol", day.replace(hour=12), "openai", "gpt-4.1-mini", "0.087654")
        if back % 4 == 1:
            add("telegram:dave", day.replace(hour=13), "anthropic", "claude-haiku-4-5", "0.054321")
        if back % 3 == 1:
            add("telegram:alice", day.replace(hour=10), "openai", "gpt-4o-mini", "0", status=Status.CACHED,
                saved=Decimal("0.0123"))  # fmt: skip
        if back % 7 == 0:
            add("console:carol", day.replace(hour=14), "openai", "gpt-4.1-mini", "0", status=Status.CACHED,
                saved=Decimal("0.087654"))  # fmt: skip
    add(EVE, NOW - timedelta(days=2, hours=3), "openai", "gpt-4o-mini", "0.333333")
    add(EVE, NOW - timedelta(days=9, hours=3), "openai", "gpt-4o-mini", "0.333333")
    add("telegram:frank", NOW - timedelta(days=5), "anthropic", "claude-haiku-4-5", "0.001234")
    add("whatsapp:bob", NOW - timedelta(days=3), "anthropic", "claude-sonnet-4-5", "0", status=Status.ERROR)
    add("telegram:alice", NOW - timedelta(days=4), "openai", "gpt-4o-mini", "0.000789", kind=Kind.SUMMARY)
    add("telegram:alice", datetime(2026, 10, 21, 10, tzinfo=UTC), "openai", "gpt-4o-mini", "5")  # before the window
    add("telegram:alice", datetime(2026, 10, 2, 10, tzinfo=UTC), "openai", "gpt-4o-mini", "7")
    return rows


def in_window(rows: list[AIRequest]) -> list[AIRequest]:
    return [r for r in rows if r.created_at >= NOW - timedelta(days=30)]


ALERTS = [
    StoredAlert("budget_threshold", "bot", "2026-11", "warning", "The bot has used 80% of its monthly budget.",
                NOW - timedelta(hours=2)),
    StoredAlert("forecast_over_budget", "bot", "2026-11", "warning", "Month-end forecast $12.08 is over the $10 "
                "budget.", NOW - timedelta(days=1)),
    StoredAlert("daily_cost", "bot", "2026-11-12", "critical", "Daily cost $5.20 is over $5.00.",
                datetime(2026, 11, 12, 21, tzinfo=UTC)),
    StoredAlert("error_rate", "bot", "2026-10-01T10", "warning", "Too old to show.", datetime(2026, 10, 1, tzinfo=UTC)),
]  # fmt: skip


async def seed(deps: Deps) -> None:
    rows = seed_rows()
    await deps.db.record(rows)
    for r in in_window(rows):
        if r.user_key == "whatsapp:bob" and r.status is Status.OK:  # Twilio charges each way
            for direction in ("in", "out"):
                await deps.db.record_fee(
                    "whatsapp", r.user_key, direction, r.request_id, Decimal("0.005"), r.created_at
                )
    for alert in sorted(ALERTS, key=lambda a: a.created_at):  # as the jobs fire them: in time order
        await deps.db.add_alert(alert)
    gib_hour = 3600 * 2**30
    await deps.db.record_resources("seed-host:1", NOW - timedelta(days=10), NOW - timedelta(days=9), 36_000_000_000,
                                   20 * gib_hour)  # fmt: skip


def usd(v: Decimal) -> str:
    """How the page writes an amount: exact, at least cents."""
    exp = v.normalize().as_tuple().exponent
    assert isinstance(exp, int)
    return f"${v:,.{max(2, -exp)}f}"


# -- serving -------------------------------------------------------------------------------------


@dataclass
class Site:
    url: str
    http: httpx.AsyncClient
    deps: Deps
    clock: Clock

    async def page_data(self, **kw: Any) -> dict[str, Any]:
        r = await self.http.get("/dashboard", headers=AUTH, **kw)
        assert r.status_code == 200, r.text
        found = re.search(r'<script type="application/json" id="pb-data">(.*?)</script>', r.text, re.S)
        assert found is not None
        data: dict[str, Any] = json.loads(found.group(1))
        return data


@asynccontextmanager
async def site(tmp_path: Path, *, seeded: bool = True, **overrides: Any) -> AsyncIterator[Site]:
    settings = load_settings(
        None,
        **(SETTINGS | {"database_url": f"sqlite:///{tmp_path}/pb.db", "outbox_path": tmp_path / "ob.db"} | overrides),
    )
    clock = Clock(NOW)
    app = create_app(settings, build(settings, clock=clock))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done())
    if task.done():
        task.result()
    deps = app.state.runtime.built.deps
    if seeded:
        await seed(deps)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10, follow_redirects=False) as http:
            yield Site(url, http, deps, clock)
    finally:
        server.should_exit = True
        await task


# -- the figures ---------------------------------------------------------------------------------


def test_seed_sums() -> None:
    rows = in_window(seed_rows())
    assert sum((r.cost for r in rows), Decimal(0)) == LLM
    assert sum((r.saved for r in rows), Decimal(0)) == SAVED
    assert 2 * Decimal("0.005") * sum(1 for r in rows if r.user_key == "whatsapp:bob" and r.status is Status.OK) == FEES
    month = [r for r in rows if r.created_at >= datetime(2026, 11, 1, tzinfo=UTC)]
    assert sum((r.cost for r in month), Decimal(0)) == MONTH


async def test_figures_are_exact_sums_of_the_seed(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        d = await s.page_data()
    rows = in_window(seed_rows())
    bill = {x["key"]: x["text"] for x in d["bill"]["lines"]}
    assert bill["llm"] == usd(LLM) == "$8.767402"
    assert bill["channel_fees"] == "$0.15"
    assert bill["infra"] == "$6.00"
    assert bill["cpu"] == "$0.50" and bill["memory"] == "$0.20"
    assert bill["total"] == usd(TOTAL) == "$15.617402"
    users = {r.user_key for r in rows}
    answers = sum(1 for r in rows if r.kind is Kind.ANSWER and r.status in (Status.OK, Status.CACHED))
    assert bill["per_active_user"] == usd((TOTAL / len(users)).quantize(Decimal("1e-9"), rounding="ROUND_CEILING"))
    assert bill["per_message"] == usd((TOTAL / answers).quantize(Decimal("1e-9"), rounding="ROUND_CEILING"))
    assert d["cache"]["saved"] == usd(SAVED)
    hits = sum(1 for r in rows if r.status is Status.CACHED)
    assert (d["cache"]["hits"], d["cache"]["answers"]) == (hits, answers)
    # Every day of the window has a bar (31: Oct 21, partly, to Nov 20), summing to the LLM cost.
    days = d["daily"]["days"]
    assert [x["date"] for x in days] == [(date(2026, 10, 21) + timedelta(days=k)).isoformat() for k in range(31)]
    assert sum(Decimal(x["value"]) for x in days) == LLM
    assert sum(Decimal(p["value"]) for x in days for p in x["parts"]) == LLM
    assert [x["name"] for x in d["by_provider"]] == ["anthropic", "openai"]
    assert sum(Decimal(x["value"]) for x in d["by_model"]) == LLM
    spent = {u: sum((r.cost for r in rows if r.user_key == u), Decimal(0)) for u in users}
    top = sorted(spent, key=lambda u: -spent[u])[:5]
    assert [x["name"] for x in d["top_users"]] == top and "telegram:frank" not in top and EVE in top
    assert [x["text"] for x in d["top_users"]] == [usd(spent[u]) for u in top]
    burn = d["burn"]
    assert burn["spent"] == usd(MONTH) and burn["today"] == 20 and burn["days_in_month"] == 30
    assert len(burn["actual"]) == 21 and Decimal(burn["actual"][-1]["value"]) == MONTH
    assert burn["limit"]["text"] == "$10.00"
    assert [(t["name"], t["text"]) for t in burn["thresholds"]] == [("80%", "$8.00"), ("95%", "$9.50")]
    assert [a["rule"] for a in d["alerts"]] == ["budget_threshold", "forecast_over_budget", "daily_cost"]


async def test_an_empty_bot_shows_no_data_yet(tmp_path: Path) -> None:
    async with site(tmp_path, seeded=False, infra_monthly_cost="0") as s:
        r = await s.http.get("/dashboard", headers=AUTH)
    assert r.status_code == 200
    for chart in ("daily", "burn", "provider", "model", "users", "cache", "bill"):
        assert re.search(f'id="chart-{chart}"[^>]*><p class="empty">no data yet</p>', r.text), chart
    assert "no alerts in this window" in r.text


# -- who may see it ------------------------------------------------------------------------------


async def test_off_while_no_token_is_set(tmp_path: Path) -> None:
    async with site(tmp_path, seeded=False, admin_api_token=None) as s:
        page = await s.http.get("/dashboard", headers=AUTH)
        login = await s.http.post("/dashboard/login", data={"token": TOKEN})
    assert page.status_code == login.status_code == 401
    assert "The dashboard is off: set ADMIN_API_TOKEN" in page.text
    assert 'name="token"' not in page.text and COOKIE not in login.headers.get("set-cookie", "")


async def test_bearer_header_headers_and_params(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        ok = await s.http.get("/dashboard", headers=AUTH, params={"days": 7})
        wrong = await s.http.get("/dashboard", headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
        basic = await s.http.get("/dashboard", headers={"Authorization": f"Basic {TOKEN}"})
        bad_days = [(await s.http.get("/dashboard", headers=AUTH, params={"days": n})).status_code for n in (0, 367)]
    assert ok.status_code == 200 and 'id="pb-data"' in ok.text and "the last 7 days" in ok.text
    assert ok.headers["content-security-policy"] == CSP
    assert ok.headers["cache-control"] == "no-store" and ok.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in ok.text and " style=" not in ok.text  # nothing inline: the CSP allows none
    assert wrong.status_code == basic.status_code == 401 and 'name="token"' in wrong.text
    assert bad_days == [422, 422]
    assert TOKEN not in ok.text + wrong.text


async def test_cookie_login_logout(tmp_path: Path) -> None:
    async with site(tmp_path, seeded=False) as s:
        form = await s.http.get("/dashboard")
        assert form.status_code == 200 and 'action="/dashboard/login"' in form.text
        assert form.headers["content-security-policy"] == CSP and "pb-data" not in form.text
        wrong = await s.http.post("/dashboard/login", data={"token": TOKEN + "x"})
        assert wrong.status_code == 401 and "Wrong token." in wrong.text and "set-cookie" not in wrong.headers
        done = await s.http.post("/dashboard/login", data={"token": TOKEN})
        assert done.status_code == 303 and done.headers["location"] == "/dashboard"
        cookie = done.headers["set-cookie"]
        value = s.http.cookies[COOKIE]
        assert TOKEN not in cookie and re.fullmatch(r"\d+\.[0-9a-f]{64}", value)
        attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/dashboard", f"max-age={SESSION_S}"} <= attrs
        assert "secure" not in attrs  # plain http here
        page = await s.http.get("/dashboard")
        assert page.status_code == 200 and 'id="pb-data"' in page.text
        out = await s.http.post("/dashboard/logout")
        assert out.status_code == 303 and COOKIE not in s.http.cookies
        assert 'name="token"' in (await s.http.get("/dashboard")).text
        # An old cookie stops working when it expires, and a forged one never works.
        s.http.cookies.clear()

        async def with_cookie(v: str) -> httpx.Response:
            return await s.http.get("/dashboard", headers={"Cookie": f"{COOKIE}={v}"})

        assert 'id="pb-data"' in (await with_cookie(value)).text
        forged = await with_cookie(value[:-1] + ("0" if value[-1] != "0" else "1"))
        assert "The session has ended" in forged.text and 'name="token"' in forged.text
        assert (
            forged.headers["set-cookie"].startswith(f'{COOKIE}="";')
            and "max-age=0" in forged.headers["set-cookie"].lower()
        )
        s.clock.advance(seconds=SESSION_S - 1)
        assert 'id="pb-data"' in (await with_cookie(value)).text
        s.clock.advance(seconds=1)
        assert "The session has ended" in (await with_cookie(value)).text


async def test_the_cookie_is_secure_over_https(tmp_path: Path) -> None:
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1, as from a TLS proxy on the same host.
    async with site(tmp_path, seeded=False) as s:
        done = await s.http.post("/dashboard/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
    assert done.status_code == 303
    assert "secure" in {a.strip().lower() for a in done.headers["set-cookie"].split(";")}


async def test_cross_site_posts_are_refused(tmp_path: Path) -> None:
    async with site(tmp_path, seeded=False, public_base_url="https://bot.example.com") as s:
        for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": s.url, "Sec-Fetch-Site": "same-site"}):  # fmt: skip
            r = await s.http.post("/dashboard/login", data={"token": TOKEN}, headers=headers)
            assert r.status_code == 403 and "set-cookie" not in r.headers, headers
            r = await s.http.post("/dashboard/logout", headers=headers)
            assert r.status_code == 403 and "set-cookie" not in r.headers, headers
        for origin in (s.url, "https://bot.example.com"):
            r = await s.http.post("/dashboard/login", data={"token": TOKEN}, headers={"Origin": origin})
            assert r.status_code == 303, origin


async def test_failed_logins_are_rate_limited(tmp_path: Path) -> None:
    async with site(tmp_path, seeded=False) as s:
        for _ in range(FAILS_PER_CLIENT):
            assert (await s.http.post("/dashboard/login", data={"token": "guess"})).status_code == 401
        blocked = await s.http.post("/dashboard/login", data={"token": TOKEN})  # even the right one
        assert blocked.status_code == 429 and "set-cookie" not in blocked.headers
        assert 0 < int(blocked.headers["retry-after"]) <= FAIL_WINDOW_S
        s.clock.advance(seconds=FAIL_WINDOW_S)
        assert (await s.http.post("/dashboard/login", data={"token": TOKEN})).status_code == 303
        # The count over every client together: a guess spread over many addresses meets it.
        slot = int(s.clock().timestamp() // FAIL_WINDOW_S)
        await s.deps.hot.incr(f"pb:{{dashboard}}:login_failed:*:{slot}", 50)
        assert (await s.http.post("/dashboard/login", data={"token": TOKEN})).status_code == 429


async def test_a_user_id_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        r = await s.http.get("/dashboard", headers=AUTH)
        data = await s.page_data()
    assert EVE not in r.text and "<b>eve" not in r.text
    assert "console:&lt;/script&gt;&lt;b&gt;eve" in r.text  # the tables
    assert "console:\\u003c/script\\u003e\\u003cb\\u003eeve" in r.text  # the JSON
    assert EVE in [u["name"] for u in data["top_users"]]
    assert r.text.count("</script>") == 2  # dashboard.js's tag and pb-data's own end


async def test_static_files_and_favicon(tmp_path: Path) -> None:
    async with site(tmp_path, seeded=False) as s:
        js = await s.http.get("/dashboard/static/dashboard.js")
        css = await s.http.get("/dashboard/static/dashboard.css")
        other = await s.http.get("/dashboard/static/..%2Fserver.py")
        icon = await s.http.get("/favicon.ico")
    assert js.status_code == css.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript") and "pb-data" in js.text
    assert css.headers["content-type"].startswith("text/css")
    assert other.status_code == 404
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content == favicon() and icon.content[:4] == b"\x00\x00\x01\x00" and b"PNG" in icon.content[:40]


# -- in a real browser ---------------------------------------------------------------------------

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]  # fmt: skip


def require_chromium() -> None:
    if not CHROMIUM.exists():
        require_server(False, f"Debian's chromium ({CHROMIUM}; scripts/test.sh installs it)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        require_server(False, "Python playwright (the test extra)")


async def test_in_chromium(tmp_path: Path) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    rows = in_window(seed_rows())
    async with site(tmp_path) as s, async_playwright() as pw:
        with tempfile.TemporaryDirectory(prefix="pb-chromium-") as profile:
            browser = await pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=ARGS,
                viewport={"width": 1360, "height": 900}, device_scale_factor=1,
            )  # fmt: skip
            try:
                page = browser.pages[0] if browser.pages else await browser.new_page()
                errors: list[str] = []
                urls: list[str] = []
                page.on(
                    "console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                )
                page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: errors.append(f"failed: {r.url} {r.failure}"))
                page.on("response", lambda r: errors.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
                page.on("request", lambda r: urls.append(r.url))

                await page.goto(f"{s.url}/dashboard")
                await page.fill("#token", TOKEN)
                await page.click("form.login button")
                await page.wait_for_selector("body[data-drawn=true]", timeout=10_000)
                assert page.url == f"{s.url}/dashboard"

                async def count(selector: str) -> int:
                    return await page.locator(selector).count()

                async def points(selector: str) -> int:
                    return len((await page.get_attribute(selector, "points") or "").split())

                days_spent = {(r.created_at.date(), r.provider) for r in rows if r.cost}
                assert await count("#chart-daily svg g.day") == 31
                assert await count("#chart-daily svg rect.seg") == len(days_spent)
                assert await count("#legend-daily .item") == 2
                assert await count("#chart-provider svg g.bar") == 2
                assert await count("#chart-model svg g.bar") == 4
                assert await count("#chart-users svg g.bar") == 5
                assert await count("#chart-cache svg circle.arc") == 1
                assert await points("#chart-burn svg polyline.actual") == 21  # day 0 to day 20
                assert await points("#chart-burn svg polyline.forecast") == 2  # now to the month's end
                assert await count("#chart-burn svg line.limit") == 1
                assert await count("#chart-burn svg line.threshold") == 2
                assert await count("#chart-bill svg g.part") == 5  # LLM, fees, infrastructure, CPU, memory
                for chart, title in (("daily", "LLM spend per day"), ("burn", "Budget burn-down"),
                                     ("bill", "The whole bill"), ("users", "Top users")):  # fmt: skip
                    assert await page.text_content(f"#chart-{chart} svg > title") == title
                    assert await page.get_attribute(f"#chart-{chart} svg", "role") == "img"

                assert await page.inner_text("#kpi-total .value") == "$15.617402"
                assert await page.inner_text("#kpi-llm .value") == "$8.767402"
                assert await page.inner_text("#kpi-saved .value") == usd(SAVED)
                bill = await page.locator("#card-bill tbody tr").all_inner_texts()
                assert f"LLM\t$8.767402\t{100 * LLM / TOTAL:.1f}%" in bill and "Total\t$15.617402\t" in bill
                assert EVE in await page.inner_text("#card-users table")
                assert await count("#card-alerts tbody tr") == 3

                ARTIFACTS.mkdir(exist_ok=True)
                shot = ARTIFACTS / "dashboard.png"
                await page.screenshot(path=str(shot), full_page=True)
                print(f"\nscreenshot: {shot}")
                await asyncio.sleep(0.2)  # late requests (the favicon) report their errors too
                assert errors == []
                assert urls and all(u.startswith(f"{s.url}/") for u in urls), urls
                cookies = await browser.cookies()
                assert [c["name"] for c in cookies] == [COOKIE] and TOKEN not in cookies[0]["value"]
                assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
            finally:
                await browser.close()
