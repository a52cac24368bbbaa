"""End to end: commands that start while Redis is not ready yet (loading its data, restarting).

A Redis that starts from a large append-only file answers PING and INFO at once but refuses
data commands with ``LOADING`` until it has read the file. ``timeline serve`` with no
``REDIS_URL`` starts its embedded Redis on its own AOF at every start: with tens of MB of AOF
it used to fail at ``XGROUP CREATE`` with ``BusyLoadingError``. Every command now waits (at most
``TIMELINE_REDIS_READY_SECONDS``) and says what it waits for; past that, a one-line error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from e2e_support import PROJECT_ROOT, _command, dead_letters, jsonl, report_event, settle, store_counts
from timeline.embedded_redis import PORT_FILE, RedisServer, free_port

pytestmark = pytest.mark.e2e

N = 11_000
SUMMARY = 4_900  # characters (at most 5,000): ~5 KB an entry, so N entries make more than 50 MB of AOF
AOF_BYTES = 50 * 2**20
LOADING = "loading its dataset into memory"


def big_event(i: int) -> dict:
    filler = f"Paragraph {i} of a long report. " * (SUMMARY // 30)
    return report_event(i, prefix="aof", summary=filler[:SUMMARY])


def fill_aof(redis_dir: Path, stream: str) -> int:
    """XADD the N events straight into a Redis on the embedded server's data directory (as a
    scraper would have while no ``timeline serve`` ran); returns the AOF's size."""
    with RedisServer(redis_dir, appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        try:
            lines = jsonl([big_event(i) for i in range(N)]).splitlines()
            for start in range(0, N, 2000):
                with client.pipeline(transaction=False) as pipe:
                    for line in lines[start : start + 2000]:
                        pipe.xadd(stream, {"event": line})
                    pipe.execute()
        finally:
            client.close()
    return (redis_dir / "appendonly.aof").stat().st_size


def stored(db: Path) -> int:
    try:
        return store_counts(db)[0]
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def embedded_client(redis_dir: Path) -> redis.Redis:
    port = int((redis_dir / PORT_FILE).read_text())
    return redis.Redis(host="127.0.0.1", port=port)


def test_serve_restarts_on_a_large_aof_of_its_own(serve, tmp_path: Path, stream_name: str) -> None:
    db = tmp_path / "store" / "timeline.db"
    redis_dir = db.parent / "redis"  # Settings.redis_dir: where serve's embedded Redis keeps its AOF
    assert fill_aof(redis_dir, stream_name) >= AOF_BYTES

    server = serve(db=db, REDIS_URL="", autostart=False)
    offsets: list[int] = []

    def start() -> None:
        offsets.append(server.stderr_path.stat().st_size if server.stderr_path.exists() else 0)
        server.start()
        assert f"{LOADING}" in server.stderr(offsets[-1]), server.stderr(offsets[-1])  # it did meet LOADING

    # Five SIGTERM/start cycles, each stopping in the middle of the ingest.
    for cycle in range(5):
        start()
        aof = (redis_dir / "appendonly.aof").stat().st_size
        assert aof >= AOF_BYTES, f"start {cycle + 1}: only {aof} bytes of AOF to load"
        before, deadline = stored(db), time.monotonic() + 30
        while stored(db) < min(N, before + N // 8) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.terminate() == 0, server.stderr(offsets[-1])

    # Redis itself SIGKILLed under a running serve, which is then stopped and started again.
    start()
    client = embedded_client(redis_dir)
    try:
        redis_pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    time.sleep(0.5)
    os.kill(redis_pid, signal.SIGKILL)
    server.terminate()
    start()

    client = embedded_client(redis_dir)
    try:
        settle(server, client, timeout=120)
        count, distinct, low, high = store_counts(db)
        assert (count, distinct, low, high) == (N, N, 1, N)
        assert dead_letters(client, stream_name) == []
    finally:
        client.close()
    assert "BusyLoadingError" not in server.stderr()


# --- an external REDIS_URL that is not ready yet -------------------------------------------


def cli_env(redis_url: str, tmp_path: Path, stream: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update(
        REDIS_URL=redis_url,
        TIMELINE_DB=str(tmp_path / "cli" / "timeline.db"),
        TIMELINE_STREAM=stream,
        PYTHONPATH=str(PROJECT_ROOT),
        **extra,
    )
    return env


def wait_for_text(read, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in read():
        assert time.monotonic() < deadline, f"{text!r} not seen within {timeout} s:\n{read()}"
        time.sleep(0.05)


def test_serve_and_publish_wait_for_an_external_redis_that_starts_late(
    serve, tmp_path: Path, stream_name: str
) -> None:
    port = free_port()
    late = RedisServer(tmp_path / "late-redis", port=port)
    url = f"redis://127.0.0.1:{port}/0"
    waiting = f"waiting for Redis at {url}: not accepting connections"
    server = serve(redis_url=url, autostart=False)
    failed: list[BaseException] = []

    def start_server() -> None:
        try:
            server.start()  # returns once GET /health answers 200
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            failed.append(exc)

    starting = threading.Thread(target=start_server)
    starting.start()
    try:
        wait_for_text(server.stderr, waiting)
        late.start()  # Redis comes up only once serve is waiting for it
        starting.join(60)
        assert not failed, failed

        # Redis restarts: a publish started meanwhile waits for it, then publishes.
        late.stop()
        events = tmp_path / "events.jsonl"
        events.write_bytes(jsonl([report_event(i, prefix="late") for i in range(50)]))
        publish_err = tmp_path / "publish.stderr"
        with open(publish_err, "wb") as err_file:
            publishing = subprocess.Popen(  # noqa: S603
                [*_command(), "publish", str(events)], env=cli_env(url, tmp_path, stream_name),
                stdout=subprocess.PIPE, stderr=err_file,
            )  # fmt: skip
        wait_for_text(lambda: publish_err.read_text(errors="replace"), waiting)
        late.start()
        out, _ = publishing.communicate(timeout=60)
        assert publishing.returncode == 0, publish_err.read_text()
        assert "published 50, rejected 0" in out.decode()

        client = redis.Redis.from_url(url)
        try:
            settle(server, client, timeout=60)
        finally:
            client.close()
        assert store_counts(server.db)[:2] == (50, 50)
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    finally:
        starting.join(60)
        late.stop()


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["publish", "-"], ["demo"]])
def test_a_redis_never_ready_is_a_one_line_error(command: list[str], tmp_path: Path, stream_name: str) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    done = subprocess.run(
        [*_command(), *command], env=cli_env(url, tmp_path, stream_name, TIMELINE_REDIS_READY_SECONDS="1.5"),
        input=jsonl([report_event(1)]), capture_output=True, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "Traceback" not in stderr and "hunter2" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    shown = url.replace("hunter2", "***")
    assert last.startswith(f"error: Redis at {shown} was not ready within 1.5 s"), stderr
    assert "(setting TIMELINE_REDIS_READY_SECONDS): still not accepting connections" in last, stderr
    assert "Connection refused" in last, stderr
    assert 1.5 <= elapsed < 30, elapsed


# --- a stop while Redis is gone or hung ----------------------------------------------------


@pytest.mark.parametrize("redis_signal", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_stop_is_prompt_whatever_redis_does(serve, tmp_path: Path, stream_name: str, redis_signal: int) -> None:
    """Redis killed or hung (SIGSTOP: commands time out rather than fail) while serve has
    batches in hand: SIGTERM still stops serve within 40 s (a hung Redis took it 46-52 s: every
    batch in hand, and the entries left pending, waited for Redis in turn, then the embedded
    Redis's stop waited 25 s). What was not acknowledged stays pending: after a new start, every
    event is stored once."""
    n = 10_000
    db = tmp_path / "store" / "timeline.db"
    redis_dir = db.parent / "redis"
    server = serve(db=db, REDIS_URL="")
    client = embedded_client(redis_dir)
    try:
        lines = jsonl([report_event(i, prefix="stop", summary="x" * 3000) for i in range(n)]).splitlines()
        with client.pipeline(transaction=False) as pipe:
            for line in lines:
                pipe.xadd(stream_name, {"event": line})
            pipe.execute()
        redis_pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    deadline = time.monotonic() + 30
    while stored(db) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(redis_pid, redis_signal)
    try:
        assert 0 < stored(db) < n, "no batch in hand when Redis went"
        server.terminate(timeout=40)  # raises ServerFailed past it
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(redis_pid, signal.SIGCONT)

    server.start()  # a new embedded Redis on the same append-only file
    client = embedded_client(redis_dir)
    try:
        settle(server, client, timeout=120)
        assert store_counts(db) == (n, n, 1, n)
        assert dead_letters(client, stream_name) == []
    finally:
        client.close()
