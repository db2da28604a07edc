"""Pipeline overhead per message: pennybot's own work with the LLM and the platform left out.

Each message goes the way a webhook's does after it is parsed: ``Dispatcher.claim`` (the inbox),
then ``Dispatcher.run`` (every stage of ``bot.pipeline.STAGES``, the stored replies, the done mark),
with a provider that answers at once (``InstantProvider``) and a replier that sends nothing. One
message at a time, after a warm-up (every user registered, counters seeded, connections open).

Three passes on the same stores, each with its own bot build:
1. timed: nothing hooked, ``perf_counter_ns`` around claim + run and around ``Pipeline.handle``;
2. counted: Redis and Postgres round trips and SQLite statements per message (benchmarks.roundtrips),
   and each stage's own time (its time minus the stages after it), with the counters on;
3. profiled (``--profile``): cProfile over the same loop, grouped by package and by function
   (benchmarks.profiles).
"""

from __future__ import annotations

import contextlib
import cProfile
import logging
import os
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import roundtrips
from benchmarks.profiles import summarize
from benchmarks.questions import InstantProvider, question
from benchmarks.results import console, cpu_seconds, now_ns, progress, summary_ms
from benchmarks.stores import BenchStores
from bot.turn import Inbound, Next, Stage, Turn


@dataclass(frozen=True)
class Sizes:
    users: int = 50
    warmup: int = 400
    timed: int = 3000
    counted: int = 400
    profiled: int = 1000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(users=10, warmup=30, timed=150, counted=40, profiled=0)


class NullReplier:
    """A channel that sends nothing: the platform client's work is left out."""

    name = "telegram"

    async def send(self, inbound: Inbound, parts: Sequence[str]) -> None:
        return None

    def typing(self, inbound: Inbound) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


@dataclass
class Bench:
    """A bot built on the benchmark's stores, driven one message at a time."""

    deps: Any
    pipeline: Any
    dispatcher: Any
    seq: int
    outcomes: Counter[str] = field(default_factory=Counter)
    handle_ns: list[int] = field(default_factory=list)
    timing: bool = False

    async def message(self, i: int, users: int) -> None:
        self.seq += 1
        uid = str(100_000 + i % users)
        inbound = Inbound("telegram", uid, uid, str(self.seq), question(i))
        if await self.dispatcher.claim(inbound, {"update_id": self.seq}):
            await self.dispatcher.run(inbound)


def outcome_of(turn: Turn) -> str:
    if turn.outcomes.get("cache") == "hit":
        return "cache hit"
    if turn.answer is not None:
        return "answered by the LLM"
    return "other: " + ", ".join(f"{k}={v}" for k, v in turn.outcomes.items() if k != "choose")


@contextlib.asynccontextmanager
async def built(stores: BenchStores, seq: int, chain: Sequence[Stage] | None = None) -> AsyncIterator[Bench]:
    from bot.dispatch import Dispatcher
    from bot.factory import build, close
    from bot.pipeline import STAGES, Pipeline
    from bot.settings import load_settings

    settings = load_settings(
        None,
        **stores.settings(openai_api_key=None, anthropic_api_key=None, model_catalog=None, telegram_bot_token=None),
    )
    made = build(settings, providers={"simulated": InstantProvider()})
    await made.deps.db.migrate()
    pipeline = Pipeline(made.deps, chain if chain is not None else STAGES)
    bench = Bench(made.deps, pipeline, Dispatcher(pipeline, {"telegram": NullReplier()}, made.deps.journal), seq)
    handle = pipeline.handle

    async def handled(inbound: Inbound, **given: Any) -> Turn:
        start = now_ns()
        turn: Turn = await handle(inbound, **given)
        if bench.timing:
            bench.handle_ns.append(now_ns() - start)
        bench.outcomes[outcome_of(turn)] += 1
        return turn

    pipeline.handle = handled  # type: ignore[method-assign]
    try:
        yield bench
    finally:
        await close(made.deps)


@contextlib.contextmanager
def json_logs() -> Any:
    """The per-message JSON log line is formatted as in ``pennybot serve``, and written to /dev/null."""
    from bot.logs import JsonLines

    logger = logging.getLogger("pennybot")
    sink = open(os.devnull, "w")  # noqa: SIM115
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonLines())
    saved = logger.level, logger.propagate, list(logger.handlers)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]
        sink.close()


async def _warm(bench: Bench, sizes: Sizes, label: str, start: int) -> int:
    with progress() as bar:
        task = bar.add_task(f"{label}: warm-up", total=sizes.warmup)
        for i in range(start, start + sizes.warmup):
            await bench.message(i, sizes.users)
            bar.advance(task)
    await bench.deps.recorder.flush()
    return start + sizes.warmup


async def timed_pass(stores: BenchStores, sizes: Sizes, label: str) -> dict[str, Any]:
    total_ns: list[int] = []
    async with built(stores, seq=1_000_000) as bench:
        i = await _warm(bench, sizes, label, 0)
        bench.outcomes.clear()
        bench.timing = True
        cpu0 = cpu_seconds()
        with progress() as bar:
            task = bar.add_task(f"{label}: timed", total=sizes.timed)
            for k in range(i, i + sizes.timed):
                start = now_ns()
                await bench.message(k, sizes.users)
                total_ns.append(now_ns() - start)
                bar.advance(task)
        await bench.deps.recorder.flush()
        cpu = cpu_seconds() - cpu0
    return {
        # The process's CPU time per message (the outbox's background flushes included): waiting on
        # Postgres and Redis is in the wall-clock figures but not here.
        "cpu_ms_per_message": round(cpu / sizes.timed * 1000, 3),
        "message_ms": summary_ms(total_ns),
        "pipeline_handle_ms": summary_ms(bench.handle_ns),
        "outcomes": dict(bench.outcomes),
    }


def instrument(stage: Stage, own_ns: dict[str, int]) -> Stage:
    """The stage, timed by its own work (the stages after it excluded), and named for the counters."""
    name = getattr(stage, "__name__", "stage")

    async def wrapped(turn: Turn, next: Next) -> Turn:
        outer = roundtrips.TALLY.stage
        inner = 0

        async def after(t: Turn) -> Turn:
            nonlocal inner
            start = now_ns()
            try:
                return await next(t)
            finally:
                inner += now_ns() - start
                roundtrips.TALLY.stage = name

        roundtrips.TALLY.stage = name
        start = now_ns()
        try:
            return await stage(turn, after)
        finally:
            own_ns[name] = own_ns.get(name, 0) + now_ns() - start - inner
            roundtrips.TALLY.stage = outer

    wrapped.__name__ = name
    return wrapped


async def counted_pass(stores: BenchStores, sizes: Sizes, label: str) -> dict[str, Any]:
    from bot.pipeline import STAGES

    uninstall = roundtrips.install()
    tally = roundtrips.TALLY
    own: dict[str, int] = {}
    per_stage: dict[str, list[int]] = defaultdict(list)
    counts: list[roundtrips.MessageCount] = []
    total_ns: list[int] = []
    try:
        chain = [instrument(s, own) for s in STAGES]
        async with built(stores, seq=2_000_000, chain=chain) as bench:
            handle = bench.pipeline.handle

            async def staged(inbound: Inbound, **given: Any) -> Turn:
                tally.stage = "pipeline (turn, log line)"
                try:
                    turn: Turn = await handle(inbound, **given)
                    return turn
                finally:
                    tally.stage = "dispatch (inbox, replies)"

            bench.pipeline.handle = staged
            i = await _warm(bench, sizes, label, 10_000_000)
            bench.outcomes.clear()
            tally.events.clear()
            tally.active = True
            with progress() as bar:
                task = bar.add_task(f"{label}: counted", total=sizes.counted)
                for k in range(i, i + sizes.counted):
                    own.clear()
                    tally.stage = "dispatch (inbox, replies)"
                    tally.begin(k)
                    start = now_ns()
                    await bench.message(k, sizes.users)
                    total_ns.append(now_ns() - start)
                    counts.append(tally.end())
                    for name, ns in own.items():
                        per_stage[name].append(ns)
                    per_stage["(all stages)"].append(sum(own.values()))
                    bar.advance(task)
            sync_total: Counter[str] = Counter()
            for c in counts:
                sync_total.update(c.sync)
            await bench.deps.recorder.flush()
            tally.active = False
            background = tally.background(sync_total)
    finally:
        tally.active = False
        uninstall()
    n = max(1, len(counts))
    result = roundtrips.per_message(counts)
    result["background_per_message"] = {store: round(background[store] / n, 2) for store in roundtrips.STORES}
    result["message_ms_with_counters"] = summary_ms(total_ns)
    order = [getattr(s, "__name__", "stage") for s in STAGES] + ["(all stages)"]
    result["stage_own_us"] = {
        name: {
            "messages": len(v),
            "mean": round(sum(v) / len(v) / 1e3, 1),
            "p50": round(summary_ms(v)["p50"] * 1e3, 1),
            "p99": round(summary_ms(v)["p99"] * 1e3, 1),
        }
        for name, v in sorted(per_stage.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    }
    result["outcomes"] = dict(bench.outcomes)
    return result


async def profiled_pass(
    stores: BenchStores, sizes: Sizes, label: str, path: Path, measured_us: float | None
) -> dict[str, Any]:
    profiler = cProfile.Profile()  # wall clock; benchmarks.profiles takes the epoll waits out
    async with built(stores, seq=3_000_000) as bench:
        i = await _warm(bench, sizes, label, 20_000_000)
        with progress() as bar:
            task = bar.add_task(f"{label}: profiled", total=sizes.profiled)
            profiler.enable()
            for k in range(i, i + sizes.profiled):
                await bench.message(k, sizes.users)
                bar.advance(task)
            profiler.disable()
        await bench.deps.recorder.flush()
    return summarize(profiler, sizes.profiled, path, measured_us)


async def run(kinds: Sequence[str], sizes: Sizes, profile: bool, out: Path) -> dict[str, Any]:
    """The overhead benchmark on each kind of store; the result document."""
    from benchmarks.stores import servers_up

    results: dict[str, Any] = {"sizes": sizes.__dict__, "configs": {}}
    with json_logs():
        for kind in kinds:
            down = await servers_up(kind)
            if down:
                console.print(f"[yellow]overhead {kind}: skipped, {down} is down")
                results["configs"][kind] = {"skipped": down}
                continue
            async with BenchStores(kind) as stores:
                config: dict[str, Any] = {"database_url": _shape(stores.database_url), "redis_url": stores.redis_url}
                config["timed"] = await timed_pass(stores, sizes, kind)
                config["counted"] = await counted_pass(stores, sizes, kind)
                if profile and sizes.profiled:
                    # Shares scaled by the CPU time per message measured in the timed pass.
                    cpu_us = config["timed"]["cpu_ms_per_message"] * 1000
                    path = out / f"overhead-{kind}-profile.txt"
                    config["profile"] = await profiled_pass(stores, sizes, kind, path, cpu_us)
                results["configs"][kind] = config
    return results


def _shape(url: str) -> str:
    return url.split("?")[0] if "sqlite" in url else url
