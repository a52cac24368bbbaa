"""The read side's plumbing on PostgreSQL (projections.pg.queries): the same answers as on SQLite
for what it reads so far (an event, as of a time, erased; the projections' status), and reads
stopped at their time limit."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from events.erasure import Gone
from events.pg.store import PgEventStore
from events.store import EventStore
from projections import open_engine, open_queries
from projections.pg.queries import NotOnPostgres, PgQueries
from projections.queries import Queries, ReadTimeout
from test_pg_projections import append_raw, news_event_body


def correction(i: int, target: str, headline: str) -> dict:
    return {"id": f"c{i}", "kind": "correction", "occurred_at": "2025-06-01",
            "details": {"corrects": target, "changes": {"headline": headline}, "reason": "typo"}}


def unrecorded(value):
    """Without the recording times (each store records its own)."""
    if isinstance(value, dict):
        return {k: unrecorded(v) for k, v in value.items() if k != "recorded_at"}
    if isinstance(value, list):
        return [unrecorded(v) for v in value]
    return value


def test_events_and_status_read_the_same_on_both(pg_db, tmp_path: Path):
    raws = [json.dumps(news_event_body(i)).encode() for i in range(20)]
    raws += [json.dumps(correction(1, "n3", "Corrected")).encode(),
             json.dumps({"id": "r1", "kind": "retraction", "occurred_at": "2025-06-02",
                         "details": {"retracts": "n4", "reason": "wrong"}}).encode()]
    path = tmp_path / "t.db"
    with EventStore(path) as lite, PgEventStore(pg_db) as pg:
        engines = [open_engine(s) for s in (lite, pg)]
        for engine in engines:
            engine.setup()
        for store in (lite, pg):
            append_raw(store, raws[:12])
        time.sleep(0.01)
        instant = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # after the first 12 events
        time.sleep(0.01)
        for store in (lite, pg):
            append_raw(store, raws[12:])
            store.erase("n7", "test", "pytest", before=lambda s: None)
        for engine in engines:
            engine.catch_up()
            engine.close()
    a, b = open_queries(str(path)), open_queries(pg_db)
    assert isinstance(a, Queries) and isinstance(b, PgQueries)
    try:
        for event_id in ["n0", "n3", "n4", "c1", "r1"]:
            assert unrecorded(b.event(event_id)) == unrecorded(a.event(event_id)), event_id
        for event_id in ["n0", "n3", "n4"]:  # as they stood before their correction and retraction
            assert unrecorded(b.event(event_id, as_of=instant)) == unrecorded(a.event(event_id, as_of=instant))
            assert b.event(event_id, as_of=instant)["status"] == "active"
        assert b.event("n3")["headline"] == "Corrected" and b.event("n4")["status"] == "retracted"
        for q in (a, b):
            with pytest.raises(LookupError):
                q.event("c1", as_of=instant)  # not stored yet then
        for missing in ["n7", "nope"]:
            errors = []
            for q in (a, b):
                with pytest.raises((LookupError, Gone)) as caught:
                    q.event(missing)
                errors.append((type(caught.value), str(caught.value)))
            assert errors[0] == errors[1]
        assert b.projections() == a.projections()
        assert [row["name"] for row in b.projections()] == ["entities", "related", "search", "timelines"]
        with pytest.raises(NotOnPostgres):
            b.timeline(None, None)  # type: ignore[arg-type]
    finally:
        a.close()
        b.close()


def test_a_read_is_stopped_at_its_time_limit(pg_db):
    with PgEventStore(pg_db) as store:
        open_engine(store).setup()
    q = PgQueries(pg_db)
    try:
        started = time.monotonic()
        with pytest.raises(ReadTimeout):
            with q.time_limit(started + 0.3) as stop:
                threading.Timer(0.3, stop).start()
                with q.snapshot() as conn:
                    conn.execute("SELECT pg_sleep(10)")
        assert time.monotonic() - started < 5
        assert q.projections()  # the connection reads on
    finally:
        q.close()
