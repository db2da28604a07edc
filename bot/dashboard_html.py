"""The dashboard's HTML, rendered on the server from ``bot.dashboard_figures``' text.

Every value passes through ``html.escape``; the figures go into the page once more as JSON in
``<script type="application/json" id="pb-data">`` with ``<``, ``>`` and ``&`` written as ``\\uXXXX``,
so a user id holding ``</script>`` cannot end the element. No inline script or style: the page
works under a Content-Security-Policy of ``script-src 'self'; style-src 'self'``. Each chart has a
table beside it, its text fallback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

RANGES = (7, 30, 90, 366)
HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{title}</title>
<link rel="icon" href="/favicon.ico">
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
{script}</head>
"""
NUM = ' class="num"'
BRAND = '<span class="brand"><span class="coin" aria-hidden="true">¢</span>pennybot <b>costs</b></span>'


def e(value: object) -> str:
    return escape(str(value), quote=True)


def json_for_script(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` left as themselves."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, code in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, code)
    return text


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, numeric: Sequence[int] = (), strong: str = ""
) -> str:
    """A table; a row whose first cell is ``strong`` stands out (the bill's total)."""
    head = "".join(f'<th scope="col"{NUM if i in numeric else ""}>{e(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        ('<tr class="strong">' if strong and row[0] == strong else "<tr>")
        + "".join(f"<td{NUM if i in numeric else ''}>{e(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fallback(table: str) -> str:
    return f'<details class="fallback"><summary>Show as a table</summary>{table}</details>'


def _chart(key: str, empty: bool, label: str) -> str:
    inner = '<p class="empty">no data yet</p>' if empty else ""
    return f'<div class="chart" id="chart-{key}" data-chart="{key}" data-label="{e(label)}">{inner}</div>'


def _card(key: str, title: str, body: str, *, wide: bool = False, note: str = "") -> str:
    cls = "card wide" if wide else "card"
    sub = f'<p class="note">{e(note)}</p>' if note else ""
    head = f'<h2 id="h-{key}">{e(title)}</h2>'
    return f'<section class="{cls}" id="card-{key}" aria-labelledby="h-{key}">{head}{sub}{body}</section>'


def _figures(pairs: Iterable[tuple[str, str]]) -> str:
    return '<dl class="figures">' + "".join(f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in pairs) + "</dl>"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _kpi(label: str, value: str, sub: str, key: str) -> str:
    spans = (
        f'<span class="label">{e(label)}</span><span class="value">{e(value)}</span><span class="sub">{e(sub)}</span>'
    )
    return f'<div class="kpi" id="kpi-{key}">{spans}</div>'


def dashboard_page(d: dict[str, Any]) -> str:
    """The whole page for the figures ``d``."""
    w, burn, cache, bill, daily = d["window"], d["burn"], d["cache"], d["bill"], d["daily"]
    act = d["activity"]
    total = next((x["text"] for x in bill["lines"] if x["key"] == "total"), bill["total"])
    limit = burn["limit"]["text"] if burn["limit"] else "no monthly limit"
    kpis = "".join([
        _kpi("Whole bill", total, f"last {w['days']} days, everything included", "total"),
        _kpi("LLM spend", d["llm"], f"{_n(act['answers'], 'answer')}, {_n(act['requests'], 'AI call')}, "
             f"{_n(act['errors'], 'error')}", "llm"),
        _kpi("Saved by the cache", cache["saved"], f"hit rate {cache['rate_text']}", "saved"),
        _kpi(f"Forecast for {burn['month']}", burn["projected"], f"{burn['spent']} so far; limit {limit}", "forecast"),
    ])  # fmt: skip
    cards = [
        _card("daily", "LLM spend per day", _chart("daily", daily["empty"], "LLM spend per day")
              + '<div class="legend" id="legend-daily"></div>'
              + _fallback(_table(["Day", "LLM cost", "By provider"], (
                  (x["date"], x["text"], ", ".join(f"{p['name']} {p['text']}" for p in x["parts"]) or "-")
                  for x in daily["days"]), numeric=[1])), wide=True, note=daily["summary"]),
        _card("burn", f"Budget burn-down, {burn['month']}", _chart("burn", burn["empty"], "Budget burn-down")
              + _figures([("Spent", burn["spent"]), ("Monthly limit", limit), ("Used", burn["used"]),
                          ("Forecast", f"{burn['projected']} ({burn['projected_used']} of the limit)"),
                          ("Daily rate", f"{burn['rate']} ({burn['method']})")])
              + _fallback(_table(["Day", "Spent so far"], ((x["day"], x["text"]) for x in burn["actual"][1:]),
                                 numeric=[1])), wide=True,
              note="LLM spend this month against the global monthly limit; the dashed line is the forecast."),
        _card("provider", "Cost by provider", _chart("provider", not d["by_provider"], "Cost by provider")
              + _fallback(_table(["Provider", "Cost", "Share"], ((x["name"], x["text"], x["share"])
                                  for x in d["by_provider"]), numeric=[1, 2]))),
        _card("model", "Cost by model", _chart("model", not d["by_model"], "Cost by model")
              + _fallback(_table(["Model", "Provider", "Cost", "Share"], (
                  (x["name"], x.get("provider", ""), x["text"], x["share"]) for x in d["by_model"]), numeric=[2, 3]))),
        _card("users", "Top users", _chart("users", not d["top_users"], "Top users")
              + (_table(["User", "LLM cost", "Share"], ((x["name"], x["text"], x["share"]) for x in d["top_users"]),
                        numeric=[1, 2]) if d["top_users"] else ""),
              note=f"{_n(act['users'], 'active user')} in the window"),
        _card("cache", "Answer cache", _chart("cache", cache["rate"] is None, "Cache hit rate")
              + _figures([("Hit rate", cache["rate_text"]), ("Hits", f"{cache['hits']} of {cache['answers']} answers"),
                          ("Saved", cache["saved"]), ("LLM cost without the cache", cache["without"]),
                          ("Share saved", cache["saved_share"])])),
        _card("bill", "The whole bill", _chart("bill", bill["empty"], "The whole bill")
              + '<div class="legend" id="legend-bill"></div>'
              + _table(["Line", "USD", "Share of total"], (
                  (x["label"], x["text"], x.get("share", "")) for x in bill["lines"]), numeric=[1, 2], strong="Total"),
              wide=True,
              note="LLM spend, channel fees and fixed costs over the window."),
        _card("alerts", "Recent alerts", _table(["When", "Level", "Rule", "Subject", "Period", "Message"], (
            (a["time"], a["level"], a["rule"], a["subject"], a["period"], a["message"]) for a in d["alerts"]))
              if d["alerts"] else '<p class="empty">no alerts in this window</p>', wide=True),
    ]  # fmt: skip
    ranges = "".join(
        f'<a href="/dashboard?days={n}"{" aria-current=page" if n == w["days"] else ""}>{n} days</a>' for n in RANGES
    )
    script = '<script src="/dashboard/static/dashboard.js" defer></script>\n'
    return (
        HEAD.format(title="pennybot · costs", script=script)
        + '<body class="dash"><header class="top">'
        + BRAND
        + f'<nav class="ranges" aria-label="Window">{ranges}</nav>'
        + '<form method="post" action="/dashboard/logout"><button type="submit" class="ghost">Log out</button></form>'
        + "</header><main>"
        + f'<p class="window">{e(w["start"])} to {e(w["end"])} ({e(w["tz"])}), the last {e(w["days"])} days</p>'
        + f'<section class="kpis" aria-label="Totals">{kpis}</section>'
        + '<div class="grid">'
        + "".join(cards)
        + "</div></main>"
        + f'<script type="application/json" id="pb-data">{json_for_script(d)}</script>'
        + "</body></html>\n"
    )


def login_page(message: str = "", *, form: bool = True) -> str:
    """The login form (or, with ``form=False``, only the message: the dashboard is off)."""
    note = f'<p class="message" role="alert">{e(message)}</p>' if message else ""
    field = (
        '<form method="post" action="/dashboard/login" class="login">'
        # A username field (hidden) lets password managers file the token under a name.
        '<input type="text" name="username" value="admin" autocomplete="username" hidden>'
        '<label for="token">Admin token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
        '<button type="submit">Log in</button></form>'
        '<p class="hint">The value of ADMIN_API_TOKEN. It stays on the server; '
        "the browser keeps only a session cookie.</p>"
        if form
        else ""
    )
    return (
        HEAD.format(title="pennybot · log in", script="")
        + f'<body class="plain"><main class="login-box">{BRAND}<h1>Cost dashboard</h1>{note}{field}</main>'
        + "</body></html>\n"
    )
