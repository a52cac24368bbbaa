"""A ``timeline serve`` child process for the benchmark: start, wait until healthy, read its
peak memory, stop. Always on 127.0.0.1, with ``REDIS_URL`` given (never the embedded Redis)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def redis_url_or_embedded(url: str | None) -> Iterator[str]:
    """The Redis a benchmark talks to: ``url`` when given, else a private embedded
    ``redis-server`` (no AOF) for the duration of the block."""
    if url:
        yield url
        return
    from timeline.embedded_redis import RedisServer

    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        own = RedisServer(Path(tmp) / "redis", appendonly=False)
        try:
            yield own.start()
        finally:
            own.stop()


def _command() -> list[str]:
    script = Path(sys.executable).parent / "timeline"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "timeline.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a live process (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    """The live child processes of a process (its validating processes, say)."""
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
        except FileNotFoundError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_backends(db: str, servers: list[Server]) -> set[int]:
    """The PostgreSQL server processes (backends) that serve ``servers``' connections: those
    ``pg_stat_activity`` shows connected from the servers' TCP sockets; over a Unix socket (a
    server started for the benchmark, pgserver's), whose peers it does not show, every client
    backend but this one. Empty unless the database server runs on this machine (its processes'
    CPU is read from /proc)."""
    import psutil
    import psycopg

    with psycopg.connect(db, autocommit=True) as pg:
        if pg.info.hostaddr == "" and pg.pgconn.host.startswith(b"/"):
            pids = {r[0] for r in pg.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")}
        else:
            ports = set()
            for server in servers:
                try:
                    for conn in psutil.Process(server.pid).net_connections(kind="tcp"):
                        if conn.raddr and conn.status == psutil.CONN_ESTABLISHED:
                            ports.add(conn.laddr.port)
                except psutil.Error:
                    continue
            pids = {r[0] for r in pg.execute(
                "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) AND client_addr IS NOT NULL"
                " AND host(client_addr) IN ('127.0.0.1', '::1')", (sorted(ports),))} if ports else set()
    return {pid for pid in pids if os.path.exists(f"/proc/{pid}")}


def database_cpu_seconds(pids: set[int]) -> float:
    """CPU time the live ones of ``pids`` (database server processes on this machine) used so far."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


class Server:
    def __init__(
        self, db: Path, redis_url: str, workdir: Path, *, batch_size: int | None = None,
        stream: str | None = None, env: dict[str, str] | None = None, prefix: list[str] | None = None,
    ) -> None:
        self.prefix = prefix or []  # before the command: ``taskset -c 0``, say
        self.db = db
        self.redis_url = redis_url
        self.workdir = workdir
        self.stream = stream or f"bench:{uuid.uuid4().hex}:events"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"serve-{self.stream.split(':')[1][:8]}.log"
        self.env = {
            **os.environ,
            "TIMELINE_DB": str(db),
            "TIMELINE_STREAM": self.stream,
            "REDIS_URL": redis_url,
            "TIMELINE_CONSUMER": f"bench-{uuid.uuid4().hex[:8]}",
            "PYTHONPATH": str(ROOT),
        }
        if batch_size:
            self.env["TIMELINE_BATCH_SIZE"] = str(batch_size)
        self.env.update(env or {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 120.0) -> "Server":
        return self.launch().wait_healthy(timeout)

    def launch(self) -> "Server":
        """The process started, not waited for (``wait_healthy``): servers that need not start
        one after the other start together."""
        self.port = free_port()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                [*self.prefix, *_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, cwd=str(self.workdir), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        return self

    def wait_healthy(self, timeout: float = 120.0) -> "Server":
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"timeline serve exited with {self.process.returncode}:\n{self.tail()}")
            try:
                response = httpx.get(f"{self.url}/health", timeout=5.0)
                if response.status_code == 200:
                    return self
                last = f"{response.status_code} {response.text}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"timeline serve not healthy within {timeout:.0f} s ({last}):\n{self.tail()}")

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def peak_rss_mb(self) -> float:
        """The server's peak RSS plus its child processes' (each its own VmHWM: an upper bound
        on their peak together)."""
        return vm_hwm_mb(self.pid) + sum(vm_hwm_mb(child) for child in children(self.pid))

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def cpu_seconds_with_children(self) -> float:
        """CPU time of the server and its live child processes (its validating processes)."""
        return cpu_seconds(self.pid) + sum(cpu_seconds(child) for child in children(self.pid))

    def stop(self) -> None:
        self.terminate()
        self.wait_stopped()

    def terminate(self) -> None:
        """SIGTERM sent, not waited for (``wait_stopped``): servers stop together (``stop_all``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None
        client = redis.Redis.from_url(self.redis_url)
        try:
            client.delete(self.stream, f"{self.stream}:dead")
        finally:
            client.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_all(servers: list[Server]) -> None:
    """Every server stopped, their graceful stops (a second or two each) overlapping."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.wait_stopped()
