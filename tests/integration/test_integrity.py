"""`timeline verify`: edits made behind the service's back, with the plain sqlite3 module, are found."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from events.integrity import verify
from events.models import parse_event
from events.store import Candidate, EventStore


def filled(path: Path, n: int = 30) -> None:
    with EventStore(path) as store:
        for start in range(0, n, 7):
            batch = []
            for i in range(start, min(start + 7, n)):
                raw = json.dumps({"id": f"e-{i}", "kind": "report", "occurred_at": "2025-05", "headline": f"H{i}",
                                  "entities": [{"name": "Somebody"}]}).encode()
                batch.append(Candidate(parse_event(json.loads(raw)), raw))
            store.append(batch)


def run_verify(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIMELINE_DB": str(path)}
    return subprocess.run([str(Path(sys.executable).parent / "timeline"), "verify"], env=env,
                          capture_output=True, text=True, timeout=60)


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def test_an_untouched_store_verifies(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    filled(db)
    with EventStore(db) as store:
        report = verify(store.conn)
    assert report.ok and report.checked == 30 and report.first_bad is None
    done = run_verify(db)
    assert done.returncode == 0 and "ok: 30 events" in done.stdout


@pytest.mark.parametrize(
    ("statements", "bad"),
    [
        (["DROP TRIGGER events_no_update", "UPDATE events SET body = replace(body, 'H12', 'H99') WHERE position = 13"], 13),
        (["DROP TRIGGER events_no_update", "UPDATE events SET recorded_at = '2000-01-01T00:00:00.000000Z' WHERE position = 4"], 4),
        (["DROP TRIGGER events_no_delete", "DELETE FROM events WHERE position = 21"], 21),
        (["DROP TRIGGER events_no_delete", "DELETE FROM events WHERE position = 30"], 30),
        (["INSERT INTO events (position, event_id, kind, content_hash, recorded_at, raw, body)"
          " VALUES (31, 'forged', 'report', 'x', '2030-01-01T00:00:00.000000Z', X'7B7D', '{}')"], 31),
    ],
)
def test_an_edit_behind_the_service_is_found_at_its_position(tmp_path: Path, statements: list[str], bad: int) -> None:
    db = tmp_path / "t.db"
    filled(db)
    tamper(db, *statements)
    with EventStore(db) as store:
        report = verify(store.conn)
    assert not report.ok
    assert report.first_bad == bad, report.problems
    done = run_verify(db)
    assert done.returncode == 1
    assert f"first bad position: {bad}" in done.stdout


def test_a_dropped_trigger_alone_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    filled(db)
    tamper(db, "DROP TRIGGER events_no_delete")
    with EventStore(db) as store:
        report = verify(store.conn)
    assert not report.ok and report.first_bad is None
    assert any("events_no_delete" in p for p in report.problems)
    assert run_verify(db).returncode == 1


def test_the_chain_is_written_in_the_append_transaction_and_is_append_only(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    filled(db, 10)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM event_chain").fetchone()[0] == 10
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE event_chain SET hash = 'x' WHERE position = 1")
    conn.close()
