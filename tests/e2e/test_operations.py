"""Operations on a real ``timeline serve``: a rebuild requested twice, /health when Redis is away,
and /health's backlog on Redis 6.2 (the embedded server) with a large backlog."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from events.models import parse_event_bytes
from events.store import Candidate, EventStore

pytestmark = pytest.mark.e2e


def fill(db: Path, events: int) -> None:
    """``events`` small reports, straight into the store file (the server projects them)."""
    batch = []
    for i in range(events):
        raw = json.dumps(
            {"id": f"ops-{i}", "kind": "report", "occurred_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
             "headline": f"Report {i}", "entities": [{"id": f"ops-{i % 50}", "name": f"Ops {i % 50}"}]}
        ).encode()
        batch.append(Candidate(parse_event_bytes(raw), raw))
    db.parent.mkdir(parents=True, exist_ok=True)
    with EventStore(db) as store:
        store.append(batch)


def wait_live(http: httpx.Client, timeout: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    projections: list[dict] = []
    while time.monotonic() < deadline:
        projections = http.get("/projections").json()
        if all(p["state"] == "live" and p["lag"] == 0 for p in projections):
            return projections
        time.sleep(0.1)
    raise AssertionError(f"not live within {timeout} s: {projections}")


def test_a_second_rebuild_request_during_a_rebuild_is_answered_409(serve, tmp_path: Path) -> None:
    db = tmp_path / "ops" / "timeline.db"
    fill(db, 30_000)
    server = serve(db=db)
    with server.client() as http:
        wait_live(http)
        first = http.post("/projections/timelines/rebuild")
        second = http.post("/projections/timelines/rebuild")
        assert first.status_code == 202, first.text
        listed = {p["name"]: p["state"] for p in http.get("/projections").json()}
        assert listed["timelines"] == "rebuilding", "the rebuild was over before the second request: too few events"
        assert second.status_code == 409, second.text
        assert "already being rebuilt" in second.json()["error"]
        # Another projection may be rebuilt meanwhile, and this one again once it is live.
        assert http.post("/projections/search/rebuild").status_code == 202
        wait_live(http)
        assert http.post("/projections/timelines/rebuild").status_code == 202
        wait_live(http)
        assert http.get("/timeline", params={"limit": 1}).json()["entries"]


def test_health_names_what_failed_when_redis_is_away_or_hangs(serve, own_redis) -> None:
    server = serve(redis_url=own_redis.url)
    with server.client(timeout=30) as http:
        assert http.get("/health").status_code == 200
        os.kill(own_redis.pid, signal.SIGSTOP)  # there, but not answering
        try:
            hung = http.get("/health")
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        own_redis.stop()
        try:
            away = http.get("/health")
        finally:
            own_redis.start()
    for answer, words in ((hung, ("no answer to ping within 2 s",)), (away, ("connect", "refused"))):
        assert answer.status_code == 503, answer.text
        report = answer.json()
        assert "redis" in report["failing"], report
        said = report["checks"]["redis"]
        assert said.startswith("not answering: ") and any(w in said.lower() for w in words), said


def redis_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_health_backlog_on_redis_6_2_reads_no_entries(serve, own_redis) -> None:
    """102,000 entries waiting on the embedded Redis 6.2 (no group lag), 20 concurrent /health
    calls: each answers quickly with the exact backlog, read from counts (it was a lower bound
    read from up to 10,000 entries), no entry is read for it (XRANGE: only the trimmer's few a
    second), and Redis does not grow (it grew 92 -> 921 MB when each call read the entries)."""
    client = redis.Redis.from_url(own_redis.url)
    assert client.info("server")["redis_version"].startswith("6.2")
    # One entry a batch: the consumer drains slowly, so the backlog stays large while measured.
    server = serve(redis_url=own_redis.url, TIMELINE_BATCH_SIZE="1")
    summary = "x" * 900
    with client.pipeline(transaction=False) as pipe:
        for i in range(102_000):
            pipe.xadd(server.stream, {"event": json.dumps({
                "id": f"backlog-{i}", "kind": "report", "occurred_at": "2025-05",
                "headline": f"Backlog {i}", "summary": summary, "entities": [{"name": "Backlog"}],
            })})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
    before = redis_rss_mb(own_redis.pid)
    client.config_resetstat()
    answers: list[httpx.Response] = []

    def call() -> None:
        with server.client(timeout=60) as http:
            answers.append(http.get("/health"))

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    grew = redis_rss_mb(own_redis.pid) - before
    xrange = client.info("commandstats").get("cmdstat_xrange", {}).get("calls", 0)
    client.close()
    assert grew < 30, f"Redis grew by {grew:.0f} MB under 20 concurrent /health calls"
    assert seconds < 10, f"20 concurrent /health calls took {seconds:.1f} s"
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    reports = [a.json() for a in answers]
    # Exact when computed (each answer's at most 0.1 s old while the consumer settles entries):
    # what was stored plus what was waiting is all that was sent, give or take that moment.
    assert all(r["backlog_exact"] is True for r in reports), reports[0]
    assert all(
        102_000 <= r["backlog"] + r["consumer"]["entries"] <= 102_000 + 2_000 for r in reports
    ), [(r["backlog"], r["consumer"]["entries"]) for r in reports]
    # The trimmer's script reads at most 2 entries a second (XRANGE COUNT 1); a backlog read
    # from entries read 21 pages each time it was computed (10 times a second).
    assert xrange <= 2 * (seconds + 2), f"{xrange} XRANGE calls in {seconds:.1f} s"
