"""One read cannot stall the service: a slow read runs beside cheap reads and ingest, and is
stopped at ``TIMELINE_READ_TIMEOUT_SECONDS`` with a 503 (a real ``timeline serve``).

The slow read is a relevance search whose every word matches every event many times: SQLite
ranks each match against each word, seconds of work on a few thousand events. ``q`` has at most
32 words (a 125-word query is a 422 now), but a prefix stands for every word it starts: each
``w*`` of the slow query's eight is all 125 words of the events (6,000 events: 21-26 s unloaded,
so it still meets the 4 s limit, whatever the machine). Nothing is timed against a bound the
machine's load could break: the cheap read and the ingest must be done before the slow read's
503 comes back, which a read or a consumer waiting behind it could not be. The events are
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
LIMIT = 4.0  # TIMELINE_READ_TIMEOUT_SECONDS of these servers


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
            ended = time.monotonic()
            slow.update(status=answer.status_code, body=answer.json(), seconds=ended - started, ended=ended)

        reader = threading.Thread(target=slow_read)
        reader.start()
        time.sleep(0.3)  # the slow read is running

        cheap = http.get("/entities/big/timeline", params={"limit": 5})
        cheap_done = time.monotonic()
        assert cheap.status_code == 200, cheap.text

        started = time.monotonic()
        client.xadd(server.stream, {"event": json.dumps({
            "id": "during-the-slow-read", "kind": "report", "occurred_at": "2025-06-01",
            "headline": "Published while a slow read runs", "entities": [{"name": "Small"}],
        })})
        while not stored(db, "during-the-slow-read") and time.monotonic() - started < 60:
            time.sleep(0.02)
        stored_at = time.monotonic()
        reader.join(60)

    client.close()
    assert slow.get("ended"), f"the slow read did not come back: {slow}"
    assert cheap_done < slow["ended"], "a cheap read came back only after the slow one was stopped"
    assert stored_at < slow["ended"], "an event published during a slow read was stored only after it was stopped"
    assert slow["status"] == 503, slow
    assert "TIMELINE_READ_TIMEOUT_SECONDS" in slow["body"]["error"], slow
    assert slow["body"]["detail"] == {"limit_seconds": LIMIT}
    # stopped at the limit, not run to its end (21-26 s unloaded, longer under load)
    assert LIMIT - 0.1 < slow["seconds"] < 3 * LIMIT, f"stopped after {slow['seconds']:.2f} s"

    # The reader that was stopped answers again (its snapshot was rolled back).
    with server.client() as http:
        for _ in range(8):
            again = http.get("/entities/big/timeline", params={"limit": 2})
            assert again.status_code == 200, again.text
