"""End-to-end throughput: ``POST /webhook/telegram`` to the reply at a local Bot API server, with
an instant local LLM server and every ai_request committed to the ledger.

The bot is the real ``pennybot serve`` (uvicorn, one worker) in its own process, or two of them
sharing Postgres and Redis with the webhooks split between them as a load balancer would. The
fake Bot API and OpenAI API (benchmarks.fakeapis) and the load generator share this process, so
none of their CPU is counted as the bot's. The load is a closed loop: each of C workers sends an
update and waits for its reply before sending the next, so C messages are in flight (concurrency
1, 16, 64). A level's window ends when every reply arrived and every ai_request row is in the
ledger. CPU seconds come from /proc for each bot process (the per-core figure is messages per bot
CPU-second), and for the whole machine (Postgres, Redis and this process included).

The floor runs the same loop against benchmarks.floor: the same server stack and clients, with
nothing of pennybot in between.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fakeapis import TOKEN, FakeAPIs
from benchmarks.profiles import summarize
from benchmarks.questions import question
from benchmarks.results import console, cpu_seconds, progress, summary_ms
from benchmarks.stores import BenchStores, servers_up

SECRET = "bench-webhook-secret"  # noqa: S105 - the fake webhook secret of a local run
ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("floor", "embedded-1", "pg_redis-1", "pg_redis-2")
# Settings the bot processes must not inherit from the shell running the benchmark.
_INHERITED_OUT = ("DATABASE_URL", "REDIS_URL", "SUPABASE_", "MODEL_CATALOG", "TELEGRAM_", "TWILIO_", "OUTBOX_PATH",
                  "PROMETHEUS_MULTIPROC_DIR", "ADMIN_", "LOG_", "RATE_LIMIT", "SIMULATED_")  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    levels: tuple[int, ...] = (1, 16, 64)
    messages: tuple[int, ...] = (600, 2000, 2000)  # per level
    users_per_worker: int = 4
    warmup: int = 200  # after start, before the first level
    profiled: int = 1000  # with --profile, after the levels

    @classmethod
    def quick(cls) -> Sizes:
        return cls(levels=(1, 16), messages=(40, 80), users_per_worker=2, warmup=20, profiled=40)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Conn:
    """One keep-alive HTTP/1.1 connection that posts a body and reads the status (cheap on CPU)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        """POST and read the status; a keep-alive connection the server closed meanwhile (uvicorn
        closes one idle for 5 s, as a worker's is while it waits for a slow reply) is opened again.
        Sending the update twice would be harmless too: the bot drops a repeated update_id."""
        try:
            return await self._post(path, body, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            return await self._post(path, body, headers)

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\ncontent-type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"content-length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = next((int(v) for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "content-length"), 0)
        if length:
            await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class Driver:
    """The load generator: closed-loop workers, each waiting for its reply at the fake Bot API."""

    apis: FakeAPIs
    waiting: dict[str, asyncio.Future[int]] = field(default_factory=dict)
    update_id: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def on_message(self, chat_id: str, text: str) -> None:
        future = self.waiting.pop(chat_id, None)
        if future is not None and not future.done():
            future.set_result(time.perf_counter_ns())

    def body(self, user: int, i: int) -> bytes:
        self.update_id += 1
        sender = {"id": user, "is_bot": False, "first_name": "User"}
        message = {
            "message_id": self.update_id,
            "date": int(time.time()),
            "chat": {"id": user, "type": "private", "first_name": "User"},
            "from": sender,
            "text": question(i),
        }
        return json.dumps({"update_id": self.update_id, "message": message}).encode()

    async def loop(
        self, ports: Sequence[int], workers: int, n: int, users: int, user_base: int, label: str, offset: int
    ) -> tuple[list[int], int]:
        """Send n messages through ``workers`` closed loops; latencies (ns) and how many got no reply."""
        latencies: list[int] = []
        missing = 0
        counter = iter(range(n))
        with progress() as bar:
            task = bar.add_task(label, total=n)

            async def worker(w: int) -> None:
                nonlocal missing
                conns = [Conn(p) for p in ports]
                try:
                    for i in counter:
                        user = user_base + w * users + (i // workers) % users
                        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                        self.waiting[str(user)] = future
                        start = time.perf_counter_ns()
                        status = await conns[i % len(conns)].post(
                            "/webhook/telegram",
                            self.body(user, offset + i),
                            {"x-telegram-bot-api-secret-token": SECRET},
                        )
                        self.statuses[status] = self.statuses.get(status, 0) + 1
                        try:
                            latencies.append(await asyncio.wait_for(future, 30) - start)
                        except TimeoutError:
                            missing += 1
                            self.waiting.pop(str(user), None)
                        bar.advance(task)
                finally:
                    for c in conns:
                        await c.close()

            await asyncio.gather(*(worker(w) for w in range(workers)))
        return latencies, missing


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.endswith("_BASE_URL") and not k.startswith(_INHERITED_OUT)
    }
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env | extra


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    procs: list[asyncio.subprocess.Process]
    ports: list[int]
    logs: list[Path]
    tmp: Path
    config: str

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def start(config: str, apis: FakeAPIs, stores: BenchStores | None, tmp: Path, profile: bool = False) -> Served:
    """The bot processes (or the floor's) for ``config``, each answering /healthz; with ``profile``
    each runs under benchmarks.profiled, ready to profile a window on SIGUSR1 / SIGUSR2."""
    count = int(config.rsplit("-", 1)[1]) if "-" in config else 1
    base = {
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET, "TELEGRAM_API_BASE_URL": apis.bot_api_url,
        "OPENAI_API_KEY": "sk-bench-not-a-real-key", "OPENAI_BASE_URL": apis.openai_url, "LOG_FORMAT": "json",
    }  # fmt: skip
    served = Served([], [], [], tmp, config)
    for k in range(count):
        port = _free_port()
        log = tmp / f"{config}-{k}.log"
        if stores is None:
            cmd = [sys.executable, "-m", "benchmarks.floor", "--port", str(port)]
            env = _env(base)
        else:
            cmd = [sys.executable, "-c", "from bot.cli import main; main()", "serve", "--port", str(port)]
            env = _env(base | stores.env(OUTBOX_PATH=str(stores.outbox(f"outbox-{k}"))))
        if profile:
            which = "floor" if stores is None else "pennybot"
            cmd = [sys.executable, "-m", "benchmarks.profiled", str(tmp / f"{config}-{k}.pstats"), which, *cmd[3:]]
        with open(log, "wb") as sink:  # noqa: ASYNC230 - a local file opened once per process start
            proc = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=tmp, stdout=sink, stderr=sink)
        served.procs.append(proc)
        served.ports.append(port)
        served.logs.append(log)
        if k == 0 and count > 1:
            await _healthy(proc, port, log)  # the first one migrates the schema alone
    for proc, port, log in zip(served.procs, served.ports, served.logs, strict=True):
        await _healthy(proc, port, log)
    return served


async def _healthy(proc: asyncio.subprocess.Process, port: int, log: Path, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start:\n{_tail(log)}")


async def stop(served: Served) -> None:
    """SIGINT (uvicorn's graceful shutdown), then SIGKILL after 40 s."""
    for proc in served.procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
    for proc in served.procs:
        try:
            await asyncio.wait_for(proc.wait(), 40)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _committed(stores: BenchStores | None, expected: int, timeout_s: float = 60) -> int:
    """Wait until the ledger holds ``expected`` answer rows; returns how many it holds."""
    if stores is None:
        return expected
    deadline = time.monotonic() + timeout_s
    while True:
        n = await stores.count_answers()
        if n >= expected or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.02)


async def profile_window(
    served: Served, driver: Driver, sizes: Sizes, out_dir: Path, measured_us: float | None
) -> dict[str, Any]:
    """Profile the first process over ``sizes.profiled`` messages at concurrency 16; not part of
    the figures above, which ran without a profiler. Shares are scaled by ``measured_us``."""
    stats = served.tmp / f"{served.config}-0.pstats"
    stats.unlink(missing_ok=True)
    for proc in served.procs:
        proc.send_signal(signal.SIGUSR1)
    await asyncio.sleep(0.2)
    level, users = 16, sizes.users_per_worker
    await driver.loop(served.ports, level, sizes.profiled, users, 90_000_000, f"{served.config}: profiled", 0)
    for proc in served.procs:
        proc.send_signal(signal.SIGUSR2)
    for _ in range(100):
        if _written(stats):
            break
        await asyncio.sleep(0.1)
    messages = sizes.profiled // len(served.procs)
    path = out_dir / f"e2e-{served.config}-profile.txt"
    return {"concurrency": level} | summarize(stats, messages, path, measured_us)


def _written(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


async def run_config(
    config: str, driver: Driver, sizes: Sizes, tmp: Path, profile: bool = False, out_dir: Path = Path()
) -> dict[str, Any]:
    kind = None if config == "floor" else config.rsplit("-", 1)[0]
    if kind is not None:
        down = await servers_up(kind)
        if down:
            console.print(f"[yellow]e2e {config}: skipped, {down} is down")
            return {"skipped": down}
    stores = BenchStores(kind) if kind is not None else None
    served = await start(config, driver.apis, stores, tmp, profile)
    out: dict[str, Any] = {"processes": len(served.procs), "levels": {}}
    sent = 0
    try:
        users = sizes.users_per_worker
        latencies, missing = await driver.loop(served.ports, 8, sizes.warmup, 2, 900_000, f"{config}: warm-up", 0)
        sent += sizes.warmup
        await _committed(stores, sent - missing)
        for level, n in zip(sizes.levels, sizes.messages, strict=True):
            user_base = 1_000_000 * (level + 1)
            # Warm-up of this level's users: registered, counters seeded, before the clock starts.
            _, lost = await driver.loop(
                served.ports, level, level * users, users, user_base, f"{config} c={level}: users", 0
            )
            sent += level * users - lost
            await _committed(stores, sent)
            cpu0 = [cpu_seconds(pid) for pid in served.pids]
            me0, box0 = cpu_seconds(), machine_busy_seconds()
            t0 = time.perf_counter()
            latencies, missing = await driver.loop(
                served.ports, level, n, users, user_base, f"{config} c={level}", 1000 * level
            )
            replied = time.perf_counter()
            sent += n - missing
            rows = await _committed(stores, sent)
            t1 = time.perf_counter()
            cpu = [cpu_seconds(pid) - c for pid, c in zip(served.pids, cpu0, strict=True)]
            bot_cpu = sum(cpu)
            answered = n - missing
            out["levels"][str(level)] = {
                "messages": n,
                "replies_missing": missing,
                "rows_committed_ok": rows >= sent,
                "wall_s": round(t1 - t0, 3),
                "commit_lag_s": round(t1 - replied, 3),
                "msg_per_s": round(answered / (t1 - t0), 1),
                "bot_cpu_s": [round(c, 2) for c in cpu],
                "bot_cpu_ms_per_msg": round(bot_cpu / max(1, answered) * 1000, 3),
                "msg_per_bot_cpu_s": round(answered / bot_cpu, 1) if bot_cpu else None,
                "driver_and_fakes_cpu_s": round(cpu_seconds() - me0, 2),
                "machine_cpu_s": round(machine_busy_seconds() - box0, 2),
                "latency_ms": summary_ms(latencies),
            }
        if profile and sizes.profiled:
            level16 = out["levels"].get("16", {}).get("bot_cpu_ms_per_msg")
            measured = level16 * 1000 if level16 else None
            out["profile"] = await profile_window(served, driver, sizes, out_dir, measured)
    finally:
        await stop(served)
        if stores is not None:
            await stores.drop()
    return out


async def run(configs: Sequence[str], sizes: Sizes, out_dir: Path, profile: bool = False) -> dict[str, Any]:
    import tempfile

    apis = FakeAPIs()
    driver = Driver(apis)
    apis.on_message = driver.on_message
    await apis.start()
    tmp = Path(tempfile.mkdtemp(prefix="pb-bench-e2e-"))
    results: dict[str, Any] = {"sizes": sizes.__dict__, "configs": {}}
    try:
        for config in configs:
            try:
                results["configs"][config] = await run_config(config, driver, sizes, tmp, profile, out_dir)
            except Exception as error:  # one config failing still reports the others
                console.print_exception()
                results["configs"][config] = {"error": f"{type(error).__name__}: {error}"}
    finally:
        await apis.stop()
    results["http_statuses"] = {str(k): v for k, v in driver.statuses.items()}
    results["fake_api_calls"] = dict(apis.calls)
    floor = results["configs"].get("floor", {}).get("levels", {})
    for config, data in results["configs"].items():
        if config == "floor" or "levels" not in data:
            continue
        for level, figures in data["levels"].items():
            base = floor.get(level)
            if base and base.get("bot_cpu_ms_per_msg"):
                figures["cpu_vs_floor"] = round(figures["bot_cpu_ms_per_msg"] / base["bot_cpu_ms_per_msg"], 2)
    return results
