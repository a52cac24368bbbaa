"""What `timeline serve` says about itself at start and at exit, and what `timeline info` prints,
on the real process: with REDIS_URL, and with the embedded Redis (running, then stopped)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from timeline.embedded_redis import EmbeddedRedisNotRunning, redis_url_in_use
from timeline.settings import Settings

pytestmark = pytest.mark.e2e

TIMELINE = str(Path(sys.executable).parent / "timeline")


def info(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIMELINE, "info", *args], env={**env, "COLUMNS": "300"}, capture_output=True, text=True, timeout=60
    )


def start_lines(text: str) -> dict[str, str]:
    """``listening``, ``redis`` and ``store`` from the lines serve printed at start."""
    found = {}
    for line in text.splitlines():
        if line.startswith("listening on "):
            found["listening"] = line.removeprefix("listening on ")
        elif line.startswith(("redis: ", "store: ")):
            key, _, value = line.partition(": ")
            found[key] = value
    return found


def test_serve_says_where_it_listens_its_redis_and_store_then_stopped(serve, redis_url: str) -> None:
    server = serve()
    said = start_lines(server.stderr())
    assert said == {
        "listening": server.base_url,
        "redis": redis_url,
        "store": str(server.db.resolve()),
    }, server.stderr()
    assert server.terminate() == 0
    assert server.stderr().rstrip().splitlines()[-1] == "stopped"


def test_info_with_redis_url(serve, redis_url: str) -> None:
    server = serve(autostart=False)
    done = info(server.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"store: {server.db.resolve()} (not created yet)",
        f"projections: {server.db.resolve()}.projections",
        f"stream: {server.stream}",
        f"dead letters: {server.stream}:dead",
        f"redis: {redis_url} (REDIS_URL)",
    ]
    only = info(server.env, "--redis-url")
    assert (only.returncode, only.stdout) == (0, f"{redis_url}\n")


def test_info_names_the_embedded_redis_while_serve_runs_and_says_when_it_does_not(serve) -> None:
    server = serve(autostart=False)
    server.env = {k: v for k, v in server.env.items() if k != "REDIS_URL"}
    redis_dir = server.db.parent.resolve() / "redis"

    before = info(server.env, "--redis-url")
    assert before.returncode == 1 and before.stdout == ""
    assert before.stderr == (
        f"the embedded Redis is not running (data in {redis_dir}): `timeline serve` starts it (or set REDIS_URL)\n"
    )
    assert info(server.env).stdout.splitlines()[-1] == (
        f"redis: embedded, not running (data in {redis_dir}): `timeline serve` starts it"
    )

    server.start()
    said = start_lines(server.stderr())
    match = re.fullmatch(r"(redis://127\.0\.0\.1:(\d+)/0) \(embedded, port (\d+), data in (.+)\)", said["redis"])
    assert match, said
    url, port = match[1], match[2]
    assert match[3] == port and match[4] == str(redis_dir)

    running = info(server.env, "--redis-url")
    assert (running.returncode, running.stdout) == (0, f"{url}\n"), running.stderr
    assert info(server.env).stdout.splitlines()[-1] == (
        f"redis: {url} (embedded, running, port {port}, data in {redis_dir})"
    )
    settings = Settings(db=server.db, redis_url=None)
    assert redis_url_in_use(settings) == url  # what the README's Python example publishes to
    client = redis.Redis.from_url(running.stdout.strip())
    try:  # the URL printed is the embedded server's, holding its files in the data folder
        assert client.config_get("dir")["dir"] == str(redis_dir)
    finally:
        client.close()

    assert server.terminate() == 0
    after = info(server.env, "--redis-url")
    assert after.returncode == 1 and after.stdout == "", after.stdout
    with pytest.raises(EmbeddedRedisNotRunning, match="`timeline serve` starts it"):
        redis_url_in_use(settings)
