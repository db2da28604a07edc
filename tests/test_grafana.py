"""The Grafana dashboard (grafana/pennybot.json) is valid and built only on metrics the bot
exports: every query names at least one, each of them in bot.metrics' registry, and every metric
the bot exports is on the dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "grafana" / "pennybot.json"

# The sample names prometheus-client exposes for each type of metric family.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}

# PromQL's functions are told apart by the "(" after them, its aggregations by that or by a
# ``by``/``without`` clause; these words are not followed by one, or by a list of label names.
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile", "limitk", "limit_ratio"}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
LITERALS = {"inf", "nan"}
TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+\b)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punct>[(){}\[\],])
  | (?P<operator>[-+*/%^]|[=!<>]=|=~|!~|[<>=])
    """,
    re.VERBOSE,
)


def tokens(expr: str) -> list[tuple[str, str]]:
    found, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read {expr[pos:]!r} in {expr!r}")
        pos = m.end()
        assert m.lastgroup is not None
        if m.lastgroup != "space":
            found.append((m.lastgroup, m.group()))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL query selects: names not inside a label matcher ``{...}``, a
    range ``[...]`` or a ``by (...)`` list, and not a function or aggregation (followed by ``(``)."""
    toks = tokens(expr)
    names, depth, i = set(), {"{": 0, "[": 0}, 0
    closing = {"}": "{", "]": "["}
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text in depth:
            depth[text] += 1
        elif text in closing:
            depth[closing[text]] -= 1
        elif kind == "name" and not any(depth.values()):
            if text in LABEL_LISTS and following == "(":
                while toks[i][1] != ")":  # a list of label names
                    i += 1
            elif text in AGGREGATIONS and following in ("by", "without"):
                pass
            elif following != "(" and text not in KEYWORDS and text.lower() not in LITERALS:
                names.add(text)
        i += 1
    return names


def balanced(expr: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for _, text in tokens(expr):
        if text in "([{":
            stack.append(text)
        elif text in pairs and (not stack or stack.pop() != pairs[text]):
            return False
    return not stack


def exported_names() -> set[str]:
    """Every sample name the bot's registry exposes, from the metric families it describes."""
    names = set()
    for family in metrics.REGISTRY.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def walk(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return list(walk(dashboard["panels"], "expr"))


def test_the_extractor_reads_promql() -> None:
    expr = (
        'sum by (provider, model) (rate(cost_provider_api_calls_total{status="error", model=~"gpt.*"}[5m] offset 1d))'
        " / on (provider) group_left sum without (status) (increase(cost_x_total[$__range])) * 1e9"
        " + histogram_quantile(0.95, sum(rate(cost_request_cost_usd_bucket[${__rate_interval}])) by (le))"
        " > bool 0.5 or vector(0) and cost_cpu_usage_cores unless max(cost_memory_usage_bytes offset 7d) - Inf"
    )
    assert metric_names(expr) == {
        "cost_provider_api_calls_total", "cost_x_total", "cost_request_cost_usd_bucket", "cost_cpu_usage_cores",
        "cost_memory_usage_bytes",
    }  # fmt: skip
    assert balanced(expr)
    assert not balanced("sum(rate(x[5m])")


def test_the_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert p["targets"] and len(refs) == len(set(refs)), p["title"]
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    used = {m for e in exprs(dashboard) for m in re.findall(r"\$(\w+)", e) if not m.startswith("__")}
    assert used <= defined, f"undefined dashboard variables: {used - defined}"
    assert {"cpu_core_hour_price", "memory_gb_hour_price", "infra_monthly_cost"} <= used


def test_every_query_names_only_metrics_the_bot_exports(dashboard: dict[str, Any]) -> None:
    exported = exported_names()
    assert "cost_provider_api_calls_total" in exported and "cost_request_cost_usd_bucket" in exported
    queries = exprs(dashboard)
    assert len(queries) >= 30
    for expr in queries:
        assert balanced(expr), expr
        names = metric_names(expr)
        assert names, f"names no metric: {expr}"
        assert names <= exported, f"not exported by the bot: {names - exported} in {expr}"


def test_every_metric_the_bot_exports_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    used = {n for expr in exprs(dashboard) for n in metric_names(expr)}
    for family in metrics.REGISTRY.collect():
        assert any(family.name + s in used for s in SUFFIXES[family.type]), f"{family.name} is on no panel"


def test_the_whole_bill_and_the_breakdowns_are_there(dashboard: dict[str, Any]) -> None:
    titles = {p["title"]: p for p in dashboard["panels"]}
    bill = " ".join(t["expr"] for t in titles["Whole bill, last 30 days"]["targets"])
    parts = ("cost_request_cost_usd_sum", "cost_channel_fees_usd_total", "cost_cpu_usage_cores", "$cpu_core_hour_price",
             "cost_memory_usage_bytes", "$memory_gb_hour_price", "$infra_monthly_cost")  # fmt: skip
    for part in parts:
        assert part in bill
    for title in ("Cost per day", "Cost per week", "Cost per month (30 days)", "Cost per endpoint",
                  "Cost per provider", "Cost per model", "Resource cost (USD per hour)", "Cache hit rate",
                  "Spend rate (USD per hour)", "Budget used"):  # fmt: skip
        assert title in titles
