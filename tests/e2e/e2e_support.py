"""Support for the end-to-end tier: the ``timeline serve`` child process and helpers.

:class:`Server` runs ``timeline serve`` (the console script beside ``sys.executable``, else
``python -m timeline.cli``) on a free port and waits until ``GET /health`` answers 200. The
helpers read Redis (pending, undelivered, dead letters) and the SQLite file directly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from events.backend import is_postgres

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0  # a bound, not a speed check: under -n 2 on a machine shared with others a start took > 20 s
GROUP = "store"


def _command() -> list[str]:
    script = Path(sys.executable).parent / "timeline"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "timeline.cli"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerFailed(AssertionError):
    pass


class Server:
    """One ``timeline serve`` child process (restartable with the same settings)."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str, netns: Any = None) -> None:
        self.env = env
        self.workdir = workdir
        self.name = name
        self.netns = netns  # a tests/e2e/netns.py Namespace: the process runs inside it
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stderr_path = workdir / f"{name}.stderr"

    # --- settings ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """Where the test reaches the process: the loopback, or its namespace's address."""
        return "127.0.0.1" if self.netns is None else self.netns.address

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def db(self) -> Path | str:
        """The store: a SQLite file's path, or a PostgreSQL URL (kept a string)."""
        db = self.env["TIMELINE_DB"]
        return db if is_postgres(db) else Path(db)

    @property
    def stream(self) -> str:
        return self.env["TIMELINE_STREAM"]

    @property
    def dead_stream(self) -> str:
        return self.stream + ":dead"

    @property
    def consumer(self) -> str:
        return self.env["TIMELINE_CONSUMER"]

    @property
    def redis_url(self) -> str:
        return self.env["REDIS_URL"]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=kwargs.pop("timeout", 60.0), **kwargs)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> "Server":
        assert self.process is None or self.process.poll() is not None, "already running"
        last_error = ""
        for _attempt in range(3):  # a free port can be taken before uvicorn binds it
            self.port = _free_port() if self.netns is None else 8000  # a namespace's ports are its own
            self.starts += 1
            with open(self.stderr_path, "ab") as err:
                err.write(f"\n----- start #{self.starts} on port {self.port} as {self.consumer} -----\n".encode())
                err.flush()
                offset = err.tell()
                argv = [*_command(), "serve", "--host", self.host, "--port", str(self.port)]
                self.process = subprocess.Popen(  # noqa: S603
                    argv if self.netns is None else self.netns.command(argv),
                    env=self.env,
                    cwd=str(self.workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                )
            try:
                self._wait_ready(offset)
                return self
            except ServerFailed as exc:
                last_error = str(exc)
                if "address already in use" not in last_error.lower():
                    raise
        raise ServerFailed(last_error)

    def _wait_ready(self, offset: int) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"timeline serve exited with {self.process.returncode} while starting;"
                    f" stderr:\n{self.stderr(offset)}"
                )
            try:
                response = httpx.get(f"{self.base_url}/health", timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        self.kill()
        raise ServerFailed(
            f"timeline serve: GET /health not 200 within {READY_TIMEOUT:.0f} s (last: {last}); stderr:\n"
            f"{self.stderr(offset)}"
        )

    def stderr(self, offset: int = 0) -> str:
        try:
            with open(self.stderr_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", "replace")[-20_000:]
        except OSError:
            return "(no stderr)"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def kill(self) -> int | None:
        """SIGKILL (a crash); returns the exit status."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        return proc.wait()

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait; returns the exit status (SIGKILL after ``timeout``, then fails)."""
        proc = self.process
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ServerFailed(f"timeline serve did not exit {timeout} s after SIGTERM; stderr:\n{self.stderr()}")

    def restart(self, consumer: str | None = None) -> "Server":
        """Stop (SIGTERM) if still running, then start with the same env (optionally renamed)."""
        if self.process is not None and self.process.poll() is None:
            self.terminate()
        if consumer is not None:
            self.env = {**self.env, "TIMELINE_CONSUMER": consumer}
        return self.start()

    def close(self) -> None:
        """Kill (SIGKILL) after the test: a graceful stop takes about a second and checks nothing
        (tests of stopping call :meth:`terminate`); its helpers leave with it (PR_SET_PDEATHSIG)."""
        self.kill()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def group_info(client: redis.Redis, stream: str) -> dict[str, Any] | None:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return None
    for group in groups:
        name = group["name"]
        if (name.decode() if isinstance(name, bytes) else name) == GROUP:
            return group
    return None


def pending(client: redis.Redis, stream: str, consumer: str | None = None) -> int:
    """Entries read by the group ``store`` but not acknowledged (for one consumer if given)."""
    try:
        if consumer is None:
            return int(client.xpending(stream, GROUP)["pending"])
        return len(client.xpending_range(stream, GROUP, min="-", max="+", count=100_000, consumername=consumer))
    except redis.ResponseError:
        return 0


def _id(value: Any) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def undelivered(client: redis.Redis, stream: str) -> int:
    """Entries after the group's last delivered id."""
    group = group_info(client, stream)
    if group is None:
        return client.xlen(stream)
    last = group["last-delivered-id"]
    last = last.decode() if isinstance(last, bytes) else last
    return len(client.xrange(stream, f"({last}", "+"))


def settle(server: Server, client: redis.Redis, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Wait until every entry is delivered and acknowledged and projections have lag 0."""
    deadline = time.monotonic() + timeout
    state: Any = None
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise ServerFailed(f"server exited with {server.process.returncode}; stderr:\n{server.stderr()}")
        try:
            answer = httpx.get(f"{server.base_url}/projections", timeout=5)
        except httpx.HTTPError as exc:
            state = repr(exc)
            time.sleep(0.1)
            continue
        if answer.status_code != 200:  # e.g. 503 from a reader whose PostgreSQL connection was lost
            state = f"{answer.status_code} {answer.text[:300]}"
            time.sleep(0.1)
            continue
        projections = answer.json()
        p, u = pending(client, server.stream), undelivered(client, server.stream)
        state = {"pending": p, "undelivered": u, "projections": projections}
        if p == 0 and u == 0 and all(x["lag"] == 0 for x in projections):
            # one more look: a batch may have been acknowledged but not yet projected
            again = httpx.get(f"{server.base_url}/projections", timeout=5).json()
            if all(x["lag"] == 0 for x in again):
                return again
        time.sleep(0.1)
    raise ServerFailed(f"not settled within {timeout} s: {state}; stderr:\n{server.stderr()}")


def store_rows(db: Path | str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query read straight from the store: the SQLite file (read-only), or the
    PostgreSQL schema the URL names."""
    if is_postgres(db):
        with psycopg.connect(str(db), autocommit=True) as pg:
            return [tuple(r) for r in pg.execute(sql).fetchall()]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def store_counts(db: Path | str) -> tuple[int, int, int, int]:
    """``(count, distinct ids, min position, max position)`` read straight from the store."""
    ((count, distinct, low, high),) = store_rows(
        db, "SELECT COUNT(*), COUNT(DISTINCT event_id), MIN(position), MAX(position) FROM events"
    )
    return count, distinct, low or 0, high or 0


def store_positions(db: Path | str) -> list[int]:
    return [r[0] for r in store_rows(db, "SELECT position FROM events ORDER BY position")]


def dead_letters(client: redis.Redis, stream: str) -> list[dict[str, bytes]]:
    out = []
    for entry_id, fields in client.xrange(stream + ":dead"):
        out.append({k.decode(): v for k, v in fields.items()} | {"_id": entry_id})
    return out


def all_pages(http: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every entry of a timeline, following ``next_cursor``."""
    entries: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        response = http.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        entries += body["entries"]
        cursor = body["next_cursor"]
        if not cursor:
            return entries
    raise AssertionError("too many pages")


def report_event(i: int, *, prefix: str = "ev", entities: list[dict[str, Any]] | None = None, **over: Any) -> dict[str, Any]:
    """A small valid ``report`` event."""
    event: dict[str, Any] = {
        "id": f"{prefix}-{i}",
        "kind": "report",
        "occurred_at": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "headline": f"Report number {i}",
        "entities": entities or [{"id": f"{prefix}-entity-{i % 10}", "name": f"Entity {i % 10}", "role": "subject"}],
    }
    event.update(over)
    return event


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)


def redis_cli() -> str | None:
    return shutil.which("redis-cli")
