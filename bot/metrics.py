"""Prometheus metrics: every metric object in one place, the helpers the pipeline calls (each a
few dict look-ups and increments, since they run on every message), and ``GET /metrics``.

With several worker processes, prometheus-client's multiprocess mode is on when
``PROMETHEUS_MULTIPROC_DIR`` is set before the library is imported (the library reads it
itself): each process writes its values to files there and /metrics merges them. The directory
must start empty on each start of the server (files of a past run would count again). That mode
has no process collector, so this module measures CPU and memory itself.

Label values are bounded: channels, the catalog's providers and models (at most
``MAX_CALL_SERIES`` combinations, then ``other``), fixed statuses, token kinds, scopes, periods
and alert rules. Never a user.
"""

from __future__ import annotations

import atexit
import glob
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    values,
)
from prometheus_client.exposition import choose_encoder

from budget.alerts import AlertLevel, Rule
from budget.periods import Period
from budget.rules import Meter, Scope
from providers.base import Usage

if TYPE_CHECKING:
    from fastapi import APIRouter

OTHER = "other"  # any label value outside its fixed set
ENDPOINTS = frozenset({"telegram", "whatsapp", "console"})  # the channels a message comes through
STATUSES = frozenset({"ok", "error"})
TOKEN_KINDS = ("input", "output", "cached", "cache_write", "reasoning")
SCOPES = frozenset(s.value for s in Scope)
PERIODS = frozenset(p.value for p in Period)
RULES = frozenset(r.value for r in Rule)
LEVELS = frozenset(a.value for a in AlertLevel)
MAX_CALL_SERIES = 512  # (endpoint, provider, model, status) combinations before new ones go to "other"
SAMPLE_EVERY_S = 5.0  # how often each worker refreshes its CPU and memory in multiprocess mode

# From a short gpt-4o-mini reply (about $0.00001) to a long premium one (a few cents).
COST_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip

# A ``_created`` series per counter child would double what Prometheus stores, for nothing the
# dashboard reads; multiprocess mode has none either, so both modes expose the same names.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

REQUEST_COST = Histogram(
    "cost_request_cost_usd",
    "Cost in USD of each AI call attempt, as recorded on the ledger (ai_requests).",
    ("endpoint", "provider", "model"),
    buckets=COST_BUCKETS,
    registry=REGISTRY,
)
API_CALLS = Counter(
    "cost_provider_api_calls", "AI call attempts by outcome.", ("provider", "model", "status"), registry=REGISTRY
)
TOKENS = Counter(
    "cost_provider_tokens",
    "Tokens billed, as on the ledger: input includes cached and cache_write, output includes reasoning.",
    ("provider", "model", "kind"),
    registry=REGISTRY,
)
CACHE_HITS = Counter("cost_cache_hits", "Answer-cache look-ups that hit.", ("endpoint",), registry=REGISTRY)
CACHE_MISSES = Counter("cost_cache_misses", "Answer-cache look-ups that missed.", ("endpoint",), registry=REGISTRY)
BUDGET_WARNINGS = Counter(
    "cost_budget_warnings", "Budget warnings given (once per user, budget and period).", ("scope", "period"),
    registry=REGISTRY,
)  # fmt: skip
BUDGET_BLOCKS = Counter(
    "cost_budget_blocks",
    "Messages refused an AI reply by a budget: a user's past its critical threshold, the bot's on cache only.",
    ("scope", "period"),
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "cost_rate_limited_messages", "Messages refused by the rate limiter.", ("endpoint",), registry=REGISTRY
)
ALERTS_FIRED = Counter("cost_alerts_fired", "Alerts fired.", ("rule", "level"), registry=REGISTRY)
CHANNEL_FEES = Counter(
    "cost_channel_fees_usd", "Channel fees in USD (Twilio per message).", ("channel", "direction"), registry=REGISTRY
)
# A share of one shared budget: every process reads the same counters, so the latest reading wins.
BUDGET_USED = Gauge(
    "cost_budget_used_ratio",
    "Budget used (settled and reserved) as a share of its limit: global is the bot's, user the fullest user's.",
    ("scope", "period"),
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
# Each live process's own use; the bot's is their sum, and a dead worker uses nothing.
CPU_CORES = Gauge(
    "cost_cpu_usage_cores", "CPU in use, in cores (CPU seconds per second).", multiprocess_mode="livesum",
    registry=REGISTRY,
)  # fmt: skip
MEMORY_BYTES = Gauge(
    "cost_memory_usage_bytes", "Resident memory (RSS) in bytes.", multiprocess_mode="livesum", registry=REGISTRY
)

LABELLED = (
    REQUEST_COST, API_CALLS, TOKENS, CACHE_HITS, CACHE_MISSES, BUDGET_WARNINGS, BUDGET_BLOCKS, RATE_LIMITED,
    ALERTS_FIRED, CHANNEL_FEES, BUDGET_USED,
)  # fmt: skip


def _bound(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


@dataclass(frozen=True, slots=True)
class _CallSeries:
    cost: Histogram
    calls: Counter
    tokens: tuple[Counter, ...]  # in TOKEN_KINDS order


class _Series:
    """The labelled children, looked up once: ``labels()`` costs about 1 µs, a dict look-up 0.05.
    Series of the fixed sets start at zero, so the first increment shows in ``increase()``."""

    def __init__(self) -> None:
        self.fill()

    def fill(self) -> None:
        endpoints = (*sorted(ENDPOINTS), OTHER)
        self.calls: dict[tuple[str, str, str, str], _CallSeries] = {}
        self.hits = {e: CACHE_HITS.labels(e) for e in endpoints}
        self.misses = {e: CACHE_MISSES.labels(e) for e in endpoints}
        self.rate_limited = {e: RATE_LIMITED.labels(e) for e in endpoints}
        self.budget = {
            (kind, scope, period): counter.labels(scope, period)
            for kind, counter in (("warning", BUDGET_WARNINGS), ("block", BUDGET_BLOCKS))
            for scope in sorted(SCOPES)
            for period in sorted(PERIODS)
        }
        self.used: dict[tuple[str, str], Gauge] = {}

    def call(self, key: tuple[str, str, str, str]) -> _CallSeries:
        endpoint, provider, model, status = key
        if len(self.calls) >= MAX_CALL_SERIES:
            provider = model = OTHER
        series = _CallSeries(
            REQUEST_COST.labels(_bound(endpoint, ENDPOINTS), provider, model),
            API_CALLS.labels(provider, model, _bound(status, STATUSES)),
            tuple(TOKENS.labels(provider, model, kind) for kind in TOKEN_KINDS),
        )
        if len(self.calls) < MAX_CALL_SERIES:
            self.calls[key] = series
        return series


_series = _Series()


def reset() -> None:
    """Forget every labelled series (for tests: metrics are process-global). Single-process mode
    only; in multiprocess mode the files in PROMETHEUS_MULTIPROC_DIR keep their values."""
    for metric in LABELLED:
        metric.clear()
    _series.fill()


# --- what the pipeline calls ---------------------------------------------------------------------


def observe_call(endpoint: str, provider: str, model: str, status: str, usage: Usage, cost: Decimal) -> None:
    """One AI call attempt, once its ai_request row is recorded."""
    key = (endpoint, provider, model, status)
    series = _series.calls.get(key) or _series.call(key)
    series.calls.inc()
    series.cost.observe(float(cost))
    counts = (
        usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens,
        usage.reasoning_tokens,
    )  # fmt: skip
    for counter, n in zip(series.tokens, counts, strict=True):
        if n:
            counter.inc(n)


def cache_lookup(endpoint: str, hit: bool) -> None:
    """One answer-cache look-up (an unreachable cache counts as a miss, as the pipeline treats it)."""
    children = _series.hits if hit else _series.misses
    (children.get(endpoint) or children[OTHER]).inc()


def budget_event(kind: Literal["warning", "block"], scope: str, period: str) -> None:
    """A budget warning given or a message blocked by a budget."""
    counter = _series.budget.get((kind, scope, period))
    if counter is None:
        metric = BUDGET_WARNINGS if kind == "warning" else BUDGET_BLOCKS
        counter = metric.labels(_bound(scope, SCOPES), _bound(period, PERIODS))
    counter.inc()


def rate_limited(endpoint: str) -> None:
    """A message refused by the rate limiter."""
    (_series.rate_limited.get(endpoint) or _series.rate_limited[OTHER]).inc()


def alert_fired(rule: str, level: str) -> None:
    """An alert fired (once per subject, period and level)."""
    ALERTS_FIRED.labels(_bound(rule, RULES), _bound(level, LEVELS)).inc()


def channel_fee(channel: str, direction: Literal["in", "out"], usd: Decimal) -> None:
    """A channel's fee for one message in or out."""
    CHANNEL_FEES.labels(_bound(channel, ENDPOINTS), direction).inc(float(usd))


def budget_used(scope: str, period: str, ratio: float) -> None:
    """The share of a budget used (1.0 is all of it)."""
    gauge = _series.used.get((scope, period))
    if gauge is None:
        gauge = BUDGET_USED.labels(_bound(scope, SCOPES), _bound(period, PERIODS))
        if scope in SCOPES and period in PERIODS:
            _series.used[(scope, period)] = gauge
    gauge.set(ratio)


def budget_meters(meters: Iterable[Meter]) -> None:
    """The bot's budgets, from the meters every message reads. A user's meters are left out: the
    last user's share says nothing of the others (the fullest user's comes from the alert job)."""
    for m in meters:
        if m.scope is Scope.GLOBAL and m.limit is not None:
            budget_used(m.scope, m.period, m.used / m.limit if m.limit > 0 else 1.0)


def fullest_user(meters: Iterable[Meter]) -> None:
    """The fullest user's share of their budget per period, from every active user's meters (the
    alert job reads them all); a period no active user has a limit for reads 0."""
    worst = dict.fromkeys(PERIODS, 0.0)
    for m in meters:
        if m.scope is Scope.USER and m.limit is not None:
            worst[m.period] = max(worst.get(m.period, 0.0), m.used / m.limit if m.limit > 0 else 1.0)
    for period, ratio in worst.items():
        budget_used(Scope.USER, period, ratio)


# --- CPU and memory ------------------------------------------------------------------------------

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident memory, from /proc (Linux); elsewhere its peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except OSError:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class Resources:
    """This process's CPU in cores (CPU-time delta over wall-time delta since the last sample)
    and its RSS, written to two gauges at each scrape and, with several workers, every few
    seconds (/metrics is served by one worker at a time; the others keep their own figures)."""

    MIN_WINDOW_S = 0.2  # two samples closer than this keep the previous figure

    def __init__(
        self,
        cpu: Gauge = CPU_CORES,
        memory: Gauge = MEMORY_BYTES,
        cpu_time: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
        rss: Callable[[], int] = rss_bytes,
    ) -> None:
        self._gauges, self._cpu_time, self._clock, self._rss = (cpu, memory), cpu_time, clock, rss
        self._lock = threading.Lock()
        self._since = (cpu_time(), clock())
        self._thread_pid: int | None = None

    def sample(self) -> None:
        with self._lock:
            cpu, now = self._cpu_time(), self._clock()
            elapsed = now - self._since[1]
            if elapsed >= self.MIN_WINDOW_S:
                self._gauges[0].set(max(cpu - self._since[0], 0.0) / elapsed)
                self._since = (cpu, now)
            self._gauges[1].set(self._rss())

    def run_every(self, interval_s: float) -> None:
        """Sample in a daemon thread, once per process."""
        if self._thread_pid == os.getpid():
            return
        self._thread_pid = os.getpid()
        threading.Thread(target=self._loop, args=(interval_s,), name="pennybot-metrics", daemon=True).start()

    def _loop(self, interval_s: float) -> None:
        while True:
            time.sleep(interval_s)
            self.sample()

    def after_fork(self) -> None:
        """A forked child starts its own window (its CPU time starts at zero) and, if the parent
        sampled in a thread, its own thread (threads do not survive a fork)."""
        self._lock = threading.Lock()
        self._since = (self._cpu_time(), self._clock())
        if self._thread_pid is not None:
            self._thread_pid = None
            self.run_every(SAMPLE_EVERY_S)


_resources = Resources()
os.register_at_fork(after_in_child=_resources.after_fork)


def sample_resources() -> None:
    """Write this process's CPU and memory to their gauges now."""
    _resources.sample()


# --- several worker processes --------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, when the library is in it: the library decided at its
    import, from the same environment variable."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def reap_dead_workers(path: str) -> None:
    """Drop the live gauges of workers that died without exiting cleanly (killed, or ended with
    os._exit as forked workers are): a dead worker uses no CPU or memory. Counters stay."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = name.rsplit("_", 1)[1].removesuffix(".db")
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]


def _exiting() -> None:
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


atexit.register(_exiting)


# --- GET /metrics --------------------------------------------------------------------------------


def render(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition and its content type (Prometheus text, or OpenMetrics when asked for),
    merged over every process in multiprocess mode."""
    _resources.sample()
    path = multiprocess_dir()
    registry = REGISTRY
    if path is not None:
        reap_dead_workers(path)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def metrics_router() -> APIRouter:
    """``GET /metrics`` for Prometheus. With several workers each one samples its own CPU and
    memory every ``SAMPLE_EVERY_S``. FastAPI is imported here: the chat CLI needs none of it."""
    from fastapi import APIRouter
    from starlette.requests import Request
    from starlette.responses import Response

    def serve(request: Request) -> Response:  # sync: run in the thread pool, off the event loop
        body, content_type = render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    if multiprocess_dir() is not None:
        _resources.run_every(SAMPLE_EVERY_S)
    router = APIRouter()
    router.add_route("/metrics", serve, methods=["GET"], include_in_schema=False)
    return router
