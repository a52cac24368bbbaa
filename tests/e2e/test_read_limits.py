"""One read cannot stall the service: a slow read runs beside cheap reads and ingest, and is
stopped at ``TIMELINE_READ_TIMEOUT_SECONDS`` with a 503 (a real ``timeline serve``).

The slow read is a relevance search whose every word matches every event many times: SQLite
ranks each match against each word, seconds of work on a few thousand events. ``q`` has at most
32 words (a 125-word query is a 422 now), but a prefix stands for every word it starts: each
``w*`` of the slow query's eight is all 125 words of the events (6,000 events: 21-26 s unloaded,
so it still meets the 2 s limit, whatever the machine). The events are
written straight into the store file before the server starts (it builds its projections from
them), which takes a second rather than the minute publishing them would.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from events.models import parse_event_bytes
from events.store import Candidate, EventStore

pytestmark = pytest.mark.e2e

WORDS = [f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(125)]
SLOW_QUERY = {"q": " ".join(["w*"] * 8), "order": "relevance"}  # 8 words, each a prefix of all 125
LIMIT = 2.0  # TIMELINE_READ_TIMEOUT_SECONDS of these servers


def fill(db: Path, events: int) -> None:
    """``events`` reports about entity ``big``, each summary made of WORDS over and over."""
    summary = ((" ".join(WORDS) + " ") * 10)[:4999]
    batch = []
    for i in range(events):
        raw = json.dumps(
            {
                "id": f"big-{i}", "kind": "report", "occurred_at": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "headline": f"Report {i} about Big", "summary": summary,
                "entities": [{"id": "big", "name": "Big", "role": "subject"}],
            }
        ).encode()
        batch.append(Candidate(parse_event_bytes(raw), raw))
    db.parent.mkdir(parents=True, exist_ok=True)
    with EventStore(db) as store:
        store.append(batch)


def wait_projected(http: httpx.Client, head: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    projections: Any = None
    while time.monotonic() < deadline:
        projections = http.get("/projections").json()
        if all(p["state"] == "live" and p["position"] >= head for p in projections):
            return
        time.sleep(0.2)
    raise AssertionError(f"projections not built within {timeout} s: {projections}")


def stored(db: Path, event_id: str) -> bool:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone() is not None
    finally:
        conn.close()


def test_a_slow_read_delays_neither_other_reads_nor_ingest_and_is_stopped(serve, tmp_path: Path) -> None:
    db = tmp_path / "slow" / "timeline.db"
    fill(db, 6000)
    server = serve(db=db, TIMELINE_READ_TIMEOUT_SECONDS=str(LIMIT))
    client = redis.Redis.from_url(server.redis_url)
    with server.client(timeout=120) as http:
        wait_projected(http, 6000)
        assert http.get("/timeline", params={"q": "wzz", "limit": 1}).status_code == 200  # search is built
        too_many = http.get("/timeline", params={"q": " ".join(WORDS), "order": "relevance"})
        assert too_many.status_code == 422 and too_many.json()["error"].startswith("q: at most 32 words"), too_many.text

        slow: dict[str, Any] = {}

        def slow_read() -> None:
            started = time.monotonic()
            with server.client(timeout=120) as own:
                answer = own.get("/timeline", params=SLOW_QUERY)
            slow.update(status=answer.status_code, body=answer.json(), seconds=time.monotonic() - started)

        reader = threading.Thread(target=slow_read)
        reader.start()
        time.sleep(0.3)  # the slow read is running

        started = time.monotonic()
        cheap = http.get("/entities/big/timeline", params={"limit": 5})
        cheap_seconds = time.monotonic() - started
        assert cheap.status_code == 200, cheap.text

        started = time.monotonic()
        client.xadd(server.stream, {"event": json.dumps({
            "id": "during-the-slow-read", "kind": "report", "occurred_at": "2025-06-01",
            "headline": "Published while a slow read runs", "entities": [{"name": "Small"}],
        })})
        while not stored(db, "during-the-slow-read") and time.monotonic() - started < 30:
            time.sleep(0.02)
        ingest_seconds = time.monotonic() - started
        still_running = reader.is_alive()
        reader.join(60)

    client.close()
    assert cheap_seconds < 1.0, f"a cheap read waited {cheap_seconds:.2f} s behind a slow one"
    assert ingest_seconds < 1.5, f"an event published during a slow read was stored {ingest_seconds:.2f} s later"
    assert still_running, f"the slow read was over before the cheap ones were timed: {slow}"
    assert slow["status"] == 503, slow
    assert "TIMELINE_READ_TIMEOUT_SECONDS" in slow["body"]["error"], slow
    assert slow["body"]["detail"] == {"limit_seconds": LIMIT}
    assert LIMIT - 0.1 < slow["seconds"] < LIMIT + 1.5, f"stopped after {slow['seconds']:.2f} s"

    # The reader that was stopped answers again (its snapshot was rolled back).
    with server.client() as http:
        for _ in range(8):
            again = http.get("/entities/big/timeline", params={"limit": 2})
            assert again.status_code == 200, again.text
