"""Nothing lost, nothing doubled, under crashes, two consumers, Redis restarts, garbage and a full
disk: real Redis, real `timeline serve` processes, real signals."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from e2e_support import dead_letters, pending, report_event, settle, store_counts, store_positions
from timeline.publisher import Publisher

pytestmark = pytest.mark.e2e


def publisher_process(url: str, stream: str, n: int, *, prefix: str, chunk: int = 500, pause: float = 0.0) -> subprocess.Popen[str]:
    """A separate process publishing n events with the project's Publisher; prints accepted ids' count."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from e2e_support import report_event
from timeline.publisher import Publisher
accepted = 0
with Publisher({url!r}, {stream!r}) as pub:
    for start in range(0, {n}, {chunk}):
        report = pub.publish([report_event(i, prefix={prefix!r}) for i in range(start, min(start + {chunk}, {n}))])
        accepted += len(report.accepted)
        print(accepted, flush=True)
        time.sleep({pause})
"""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_50000_events_survive_repeated_sigkills(serve, redis_client: redis.Redis) -> None:
    """A publisher process writes 50,000 events while the server is SIGKILLed 5 times at random moments."""
    rng = random.Random(20250524)
    server = serve()
    # paced (about 17 s in all) so that the publisher is still writing when the fifth kill comes
    pub = publisher_process(server.redis_url, server.stream, 50_000, prefix="k", chunk=1000, pause=0.3)
    kills = 0
    try:
        while kills < 5:
            time.sleep(rng.uniform(0.3, 1.5))
            if pending(redis_client, server.stream) == 0 and pub.poll() is not None:
                break
            server.kill()
            kills += 1
            server.restart(consumer=f"k-{kills}" if kills % 2 else None)  # new names and the same name
        assert pub.wait(timeout=300) == 0, pub.stderr.read() if pub.stderr else ""
    finally:
        if pub.poll() is None:
            pub.kill()
    assert kills == 5
    projections = settle(server, redis_client, timeout=300)
    assert store_counts(server.db) == (50_000, 50_000, 1, 50_000)
    assert all(p["position"] == 50_000 and p["lag"] == 0 for p in projections)
    assert dead_letters(redis_client, server.stream) == []
    with server.client() as http:
        counts = [http.get(f"/entities/k-entity-{i}").json()["event_count"] for i in range(10)]
        assert counts == [5_000] * 10
        assert http.post("/projections/timelines/rebuild").status_code == 202
        deadline = time.monotonic() + 120
        while any(p["state"] != "live" for p in http.get("/projections").json()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert [http.get(f"/entities/k-entity-{i}").json()["event_count"] for i in range(10)] == counts


def test_two_consumers_share_the_stream_and_the_store(serve, backend: str, redis_client: redis.Redis) -> None:
    db = backend  # one SQLite file, or one PostgreSQL schema, for both
    first = serve(db=db, consumer="left")
    second = serve(db=db, consumer="right", TIMELINE_BATCH_SIZE="100")
    errors: list[str] = []
    stop = threading.Event()

    def read(server: Any) -> None:
        with server.client(timeout=30) as http:
            while not stop.is_set():
                for path in ("/timeline?limit=20", "/entities?limit=5", "/projections"):
                    response = http.get(path)
                    if response.status_code != 200:
                        errors.append(f"{path}: {response.status_code} {response.text[:200]}")

    readers = [threading.Thread(target=read, args=(s,)) for s in (first, second)]
    for t in readers:
        t.start()
    try:
        with Publisher(first.redis_url, first.stream) as publisher:
            for start in range(0, 20_000, 1000):
                publisher.publish([report_event(i, prefix="two") for i in range(start, start + 1000)])
        with first.client() as http:  # writes through one API while both consume
            for i in range(20):
                response = http.post("/events?wait=true", json=report_event(100_000 + i, prefix="two"))
                if response.status_code != 201:
                    errors.append(f"POST: {response.status_code} {response.text[:200]}")
        settle(first, redis_client, timeout=180)
        settle(second, redis_client, timeout=180)
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=60)
    assert errors == []
    assert store_counts(db) == (20_020, 20_020, 1, 20_020)
    health = [httpx.get(f"{s.base_url}/health").json() for s in (first, second)]
    assert all(h["status"] == "ok" for h in health)
    assert all(h["consumer"]["entries"] > 0 for h in health), health  # both made progress
    assert sum(h["consumer"]["entries"] for h in health) >= 20_020
    assert "locked" not in first.stderr() + second.stderr()


def test_redis_restart_mid_ingest_loses_nothing_acknowledged(serve, backend: str, own_redis) -> None:
    client = redis.Redis.from_url(own_redis.url)
    server = serve(redis_url=own_redis.url)
    pub = publisher_process(own_redis.url, server.stream, 20_000, prefix="rr", chunk=250, pause=0.02)
    try:
        time.sleep(1.0)
        own_redis.stop()  # a clean stop: the append-only file keeps every acknowledged XADD
        time.sleep(0.5)
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 503
        time.sleep(1.5)
        own_redis.start()
        assert pub.wait(timeout=300) == 0, pub.stderr.read() if pub.stderr else ""
        accepted = int(pub.stdout.read().split()[-1])
        assert accepted == 20_000
        settle(server, client, timeout=240)
        count, distinct, low, high = store_counts(server.db)
        assert (count, distinct) == (20_000, 20_000)
        assert store_positions(server.db) == list(range(1, 20_001))
        assert httpx.get(f"{server.base_url}/health").status_code == 200
    finally:
        if pub.poll() is None:
            pub.kill()
        client.close()


BAD: list[tuple[str, dict[bytes, bytes]]] = [
    ("no_event", {b"evnt": b"{}"}),
    ("too_large", {b"event": b'{"kind":"report","headline":"' + b"x" * (256 * 1024) + b'"}'}),
    ("bad_json", {b"event": b"{'kind': 'report'}"}),
    ("bad_json", {b"event": "{\"kind\": \"report\", \"headline\": \"caf\xe9\"".encode("latin-1")}),
    ("bad_json", {b"event": b"\xff\xfe"}),
    ("schema", {b"event": b'{"kind":"rumour","occurred_at":"2025","headline":"h","entities":[{"name":"A"}]}'}),
    ("schema", {b"event": b'{"kind":"report","occurred_at":"yesterday","headline":"h","entities":[{"name":"A"}]}'}),
    ("schema", {b"event": b'{"kind":"report","occurred_at":"2025","headline":"","entities":[{"name":"A"}]}'}),
    ("schema", {b"event": b'{"kind":"statement","occurred_at":"2025","headline":"h","entities":[{"name":"A"}],'
                          b'"details":{"speaker":"b","quote":"q"}}'}),
    ("schema", {b"event": b"[]"}),
]


def test_garbage_interleaved_with_valid_events(serve, redis_client: redis.Redis) -> None:
    server = serve()
    expected: list[tuple[str, bytes, bytes]] = []  # (reason, original event bytes or fields, source id)
    entry_ids: list[bytes] = []  # from XADD itself: the stream is trimmed as soon as entries are stored
    with redis_client.pipeline(transaction=False) as pipe:
        for i in range(10_000):
            pipe.xadd(server.stream, {"event": json.dumps(report_event(i, prefix="ok"))})
            reason, fields = BAD[i % len(BAD)]
            pipe.xadd(server.stream, fields)
            if i % 500 == 499:
                entry_ids += pipe.execute()
        entry_ids += pipe.execute()
    for i, entry_id in enumerate(entry_ids[1::2]):
        reason, fields = BAD[i % len(BAD)]
        original = fields[b"event"] if b"event" in fields else json.dumps({k.decode(): v.decode() for k, v in fields.items()}).encode()
        expected.append((reason, original, entry_id))
    settle(server, redis_client, timeout=240)
    assert store_counts(server.db)[:2] == (10_000, 10_000)
    dead = dead_letters(redis_client, server.stream)
    assert len(dead) == 10_000
    by_source = {d["source_id"]: d for d in dead}
    for reason, original, source in expected:
        letter = by_source[source]
        assert letter["reason"].decode() == reason
        if reason == "no_event":
            assert json.loads(letter["event"]) == json.loads(original)
        else:
            assert letter["event"] == original
        assert letter["error"]
    assert pending(redis_client, server.stream) == 0
    assert httpx.get(f"{server.base_url}/health").json()["status"] == "ok"


def _mount_tmpfs(path: Path, size: str) -> bool:
    if shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_keeps_entries_pending_until_writing_works_again(serve, redis_client: redis.Redis, tmp_path: Path) -> None:
    disk = tmp_path / "tiny"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        server = serve(db=disk / "timeline.db")
        with Publisher(server.redis_url, server.stream) as publisher:
            for start in range(0, 6_000, 500):
                publisher.publish([report_event(i, prefix="full", summary="s" * 300) for i in range(start, start + 500)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            health = httpx.get(f"{server.base_url}/health", timeout=10)
            if health.status_code == 503 and "store" in health.json().get("failing", []):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the store never filled up: {health.text}")
        stored_while_full = store_counts(server.db)[0]
        assert stored_while_full < 6_000
        assert pending(redis_client, server.stream) > 0  # nothing acknowledged that is not stored
        assert dead_letters(redis_client, server.stream) == []  # retried, not dead-lettered
        assert server.process is not None and server.process.poll() is None  # no crash loop
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        settle(server, redis_client, timeout=180)
        assert store_counts(server.db) == (6_000, 6_000, 1, 6_000)
        assert httpx.get(f"{server.base_url}/health").status_code == 200
        server.terminate()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
