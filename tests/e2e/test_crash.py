"""End to end: a ``timeline serve`` process SIGKILLed or SIGTERMed while it ingests.

docs/contract.md §2: an entry is acknowledged only once its event is durably in the store; a consumer
that dies leaves its entries pending, and another one (or the same one restarted) takes them
over after ``TIMELINE_CLAIM_IDLE_SECONDS`` (1 s here). So after any crash and a restart the
store holds every event exactly once, positions gap-free, and the timelines agree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import pytest
import redis

from e2e_support import (
    GROUP,
    PROJECT_ROOT,
    Server,
    ServerFailed,
    all_pages,
    dead_letters,
    jsonl,
    pending,
    report_event,
    settle,
    store_counts,
    store_positions,
)
from timeline.publisher import Publisher

pytestmark = pytest.mark.e2e

N = 5000
ENTITIES = 10


def crash_events(n: int = N) -> list[dict]:
    return [report_event(i, prefix="crash") for i in range(n)]


def consumer_pending(client: redis.Redis, stream: str, consumer: str) -> int:
    """Entries the named consumer has read and not acknowledged (XPENDING summary)."""
    try:
        summary = client.xpending(stream, GROUP)
    except redis.ResponseError:
        return 0
    for item in summary.get("consumers") or []:
        name = item["name"]
        if (name.decode() if isinstance(name, bytes) else name) == consumer:
            return int(item["pending"])
    return 0


def stored(db: Path | str) -> int:
    try:
        return store_counts(db)[0]
    except Exception:  # noqa: BLE001 - the file may not be there yet
        return 0


def kill_while_pending(server: Server, client: redis.Redis, *, min_stored: int = 0, total: int = N,
                       timeout: float = 30.0) -> tuple[int, int]:
    """SIGKILL the server the moment its consumer has entries read but not acknowledged (and
    the store holds at least ``min_stored`` events). Returns (pending left behind, stored)."""
    deadline = time.monotonic() + timeout
    consumer = server.consumer
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise ServerFailed(f"server exited by itself ({server.process.returncode}):\n{server.stderr()}")
        if consumer_pending(client, server.stream, consumer) > 0 and (not min_stored or stored(server.db) >= min_stored):
            server.kill()
            return consumer_pending(client, server.stream, consumer), stored(server.db)
        if min_stored and stored(server.db) >= total:
            break
        time.sleep(0.001)
    raise AssertionError(
        f"never saw entries pending for {consumer} (stored {stored(server.db)} of {total}): the kill point was missed"
    )


def wait_pending_zero(server: Server, client: redis.Redis, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pending(client, server.stream) == 0:
            return
        time.sleep(0.05)
    raise AssertionError(
        f"entries still pending {timeout} s after the restart: {client.xpending(server.stream, GROUP)}\n{server.stderr()}"
    )


def verify_complete(server: Server, client: redis.Redis, n: int = N) -> None:
    """Exactly ``n`` distinct events, positions 1..n, nothing pending, the timelines agree."""
    projections = settle(server, client, timeout=90)
    assert pending(client, server.stream) == 0
    summary = client.xpending(server.stream, GROUP)
    assert summary["pending"] == 0, summary
    count, distinct, low, high = store_counts(server.db)
    assert (count, distinct, low, high) == (n, n, 1, n), f"store: {count} rows, {distinct} ids, positions {low}..{high}"
    assert store_positions(server.db) == list(range(1, n + 1))
    assert dead_letters(client, server.stream) == []  # an event seen twice is a no-op, not a dead letter
    for p in projections:
        assert (p["position"], p["head"], p["lag"]) == (n, n, 0), p
    with server.client() as http:
        health = http.get("/health").json()
        assert health["backlog"] == 0, health
        timeline = all_pages(http, "/timeline", limit=500)
        assert len(timeline) == n
        assert len({e["event_id"] for e in timeline}) == n
        positions = sorted(e["position"] for e in timeline)
        assert positions == list(range(1, n + 1))
        for k in range(ENTITIES):
            entity_id = f"crash-entity-{k}"
            entity = http.get(f"/entities/{entity_id}").json()
            assert entity["event_count"] == n // ENTITIES, entity
            entries = all_pages(http, f"/entities/{entity_id}/timeline", limit=500)
            assert len(entries) == n // ENTITIES
            assert {e["event_id"] for e in entries} == {f"crash-{i}" for i in range(k, n, ENTITIES)}


def publisher_process(redis_url: str, stream: str, events: list[dict], workdir: Path) -> subprocess.Popen[bytes]:
    """``timeline publish -``: a separate process that publishes with the Python Publisher."""
    script = Path(sys.executable).parent / "timeline"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "timeline.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update({"REDIS_URL": redis_url, "TIMELINE_STREAM": stream, "TIMELINE_DB": str(workdir / "publisher.db"),
                "PYTHONPATH": str(PROJECT_ROOT)})
    data = workdir / "events.jsonl"
    data.write_bytes(jsonl(events))
    with open(data, "rb") as stdin:
        return subprocess.Popen(  # noqa: S603
            [*command, "publish", "-"], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=str(workdir),
        )


@pytest.mark.parametrize(
    ("min_stored", "same_name"),
    [(0, False), (2500, False), (1500, True)],
    ids=["first-batch-new-consumer", "midway-new-consumer", "midway-same-consumer"],
)
def test_sigkill_while_a_publisher_process_publishes(
    serve, redis_client: redis.Redis, redis_url: str, stream_name: str, tmp_path: Path, min_stored: int, same_name: bool
) -> None:
    server = serve()
    first_consumer = server.consumer
    publisher = publisher_process(redis_url, stream_name, crash_events(), tmp_path)
    try:
        left, at = kill_while_pending(server, redis_client, min_stored=min_stored)
        out, err = publisher.communicate(timeout=60)
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
    assert publisher.returncode == 0, err.decode()
    assert b"published 5000, rejected 0" in out, (out, err)
    assert 0 <= at < N

    server.restart(consumer=None if same_name else f"e2e-restarted-{uuid4().hex[:8]}")
    assert (server.consumer == first_consumer) is same_name
    verify_complete(server, redis_client)
    if left:  # the dead consumer's entries were taken over
        assert consumer_pending(redis_client, stream_name, first_consumer) == 0


@pytest.mark.parametrize(
    ("backend", "same_name"),
    [("sqlite", False), ("sqlite", True), ("postgres", False)],
    ids=["sqlite-new-consumer", "sqlite-same-consumer", "postgres-new-consumer"],
    indirect=["backend"],
)
def test_sigkill_at_several_points(
    serve, backend: str, redis_client: redis.Redis, redis_url: str, stream_name: str, same_name: bool
) -> None:
    """Published in four chunks; after each of the first three, killed with entries pending,
    restarted (taking the dead consumer's entries over), then the next chunk. On both backends.

    The consumer's name decides only how Redis hands the dead consumer's entries back (its own
    pending list, or a claim); the store sees the same thing either way: events of a batch it
    may already hold, appended again. So PostgreSQL runs the new consumer (the claim), SQLite
    both: a fourth run (~30 s on CI) would show the store nothing new."""
    server = serve()
    events = crash_events()
    chunk = N // 4
    left_behind = []
    with Publisher(redis_url, stream_name) as publisher:
        for k in range(4):
            report = publisher.publish(events[k * chunk : (k + 1) * chunk])
            assert len(report.accepted) == chunk and not report.rejected
            if k == 3:
                break
            left, at = kill_while_pending(server, redis_client)
            left_behind.append((left, at))
            server.restart(consumer=None if same_name else f"e2e-restarted-{k}-{uuid4().hex[:8]}")
            wait_pending_zero(server, redis_client)  # the claimer took the dead consumer's entries over
    assert any(left for left, _ in left_behind), f"no kill left entries pending: {left_behind}"
    verify_complete(server, redis_client)
    consumers = {c["name"] for c in redis_client.xinfo_consumers(stream_name, GROUP)}
    assert len(consumers) == (1 if same_name else 4), consumers


def test_sigterm_finishes_the_batch_and_exits_0(
    serve, backend: str, redis_client: redis.Redis, redis_url: str, stream_name: str
) -> None:
    server = serve()
    n = 3000
    with Publisher(redis_url, stream_name) as publisher:
        assert len(publisher.publish(crash_events(n)).accepted) == n
    deadline = time.monotonic() + 30
    while consumer_pending(redis_client, stream_name, server.consumer) == 0 or stored(server.db) < 500:
        assert time.monotonic() < deadline, "never saw entries pending mid-way"
        assert stored(server.db) < n, "ingest finished before SIGTERM could be sent mid-way"
        time.sleep(0.001)
    before = stored(server.db)
    status = server.terminate(timeout=40)
    after = stored(server.db)
    left = consumer_pending(redis_client, stream_name, server.consumer)
    context = f"after SIGTERM (store {before} → {after} of {n}): exit status {status}, {left} entries left pending"
    assert left == 0, f"{context}; stderr:\n{server.stderr()}"
    stderr = server.stderr()
    # a restart picks up the rest
    server.restart()
    verify_complete(server, redis_client, n)
    assert status == 0, f"{context}; stderr:\n{stderr}"


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            for child in map(int, fh.read().split()):
                out |= {child} | _descendants(child)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("stop", ["sigkill", "sigterm"])
def test_the_validating_process_leaves_with_the_server(serve, redis_url: str, stream_name: str, stop: str) -> None:
    server = serve()
    with Publisher(redis_url, stream_name) as publisher:
        assert len(publisher.publish(crash_events(500)).accepted) == 500
    assert server.pid is not None
    deadline = time.monotonic() + 30
    helpers: set[int] = set()
    while len(helpers) < 2:  # the validating process and multiprocessing's resource tracker
        helpers = _descendants(server.pid)
        assert time.monotonic() < deadline, f"no validating process under timeline serve: {helpers}"
        time.sleep(0.05)
    if stop == "sigkill":
        server.kill()
    else:
        assert server.terminate() == 0
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in helpers):
        assert time.monotonic() < deadline, f"left behind: {[p for p in helpers if _alive(p)]}"
        time.sleep(0.1)
