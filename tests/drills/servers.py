"""Throwaway servers for drills that stop and start them: never the shared ones (FACTS.md)."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/local/bin"))


# Below Linux's ephemeral range (32768-60999), so bind(0) and outgoing connections never take one.
_PORTS = range(20_000, 32_000)
_HELD: dict[int, int] = {}  # port -> the descriptor of its lock file, held while this process lives


def free_port() -> int:
    """A port free now that no other test process on this machine takes while this one lives:
    a drill's server stopped on purpose leaves its port free, and a parallel run picking it for
    a server of its own would mix the two (each port has a lock file, held until exit)."""
    folder = Path(tempfile.gettempdir()) / "pennybot-test-ports"
    folder.mkdir(exist_ok=True)
    for port in random.sample(_PORTS, 500):
        if port in _HELD:
            continue
        fd = os.open(folder / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:  # locked by another process, or in use
            os.close(fd)
            continue
        _HELD[port] = fd
        return port
    raise RuntimeError("no free port found for a test server")


def wait_for_port(port: int, what: str, timeout_s: float = 10.0) -> None:
    """Return once something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start")


class ThrowawayPostgres:
    """A Postgres cluster of its own in a temp dir on a spare port (initdb takes about 1 s)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pb-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0  # initdb refuses root

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> Self:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "30",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def __enter__(self) -> Self:
        self.init().start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ThrowawayRedis:
    """A redis-server of its own on a spare port, keeping nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, "redis-server")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class PgBouncer:
    """Debian's pgbouncer in transaction mode in front of a Postgres, on a spare port: the way
    Supabase's pooler behaves (no server-side prepared statements survive a transaction)."""

    def __init__(self, upstream_port: int = 5432, database: str = "test") -> None:
        self.port = free_port()
        self.upstream_port = upstream_port
        self.database = database
        self.dir = Path(tempfile.mkdtemp(prefix="pb-pgb-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> None:
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{self.database} = host=127.0.0.1 port={self.upstream_port} dbname={self.database}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 200\ndefault_pool_size = 5\n"
            f"unix_socket_dir = {self.dir}\nlogfile = {self.dir / 'log'}\n"
        )
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        cmd = ["pgbouncer", str(ini)]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
            for f in self.dir.iterdir():
                shutil.chown(f, "postgres", "postgres")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, "pgbouncer")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
