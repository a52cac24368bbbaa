"""`timeline verify`: edits made behind the service's back, with the plain sqlite3 module, are found.

Each tampering is made on a real store file, most with the append-only triggers dropped for the
edit and put back exactly as they were (as whoever edits the file would), so that only the data
can give it away; verify must name its position or its table.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from events.backend import open_store
from events.integrity import GENESIS, ROW_COLUMNS, link, verify
from events.models import parse_event
from events.store import Candidate, EventStore, connect_read_only
from projections import ProjectionEngine, default_projections

N = 30


def filled(path: Path, n: int = N) -> None:
    """``n`` events: reports about one or two entities, and from 20 on, corrections and a retraction
    of earlier ones (and one correction of an event that never arrives). ``path``: a SQLite
    file, or a PostgreSQL URL (test_pg_integrity.py)."""
    with open_store(path) as store:
        for start in range(0, n, 7):
            batch = []
            for i in range(start, min(start + 7, n)):
                event: dict = {"id": f"e-{i}", "kind": "report", "occurred_at": "2025-05", "headline": f"H{i}",
                               "entities": [{"name": "Somebody"}] + ([{"name": "Other", "role": "subject"}] if i % 3 else [])}
                if i in (20, 22, 24):
                    event = {"id": f"e-{i}", "kind": "correction", "occurred_at": "2025-06",
                             "details": {"corrects": f"e-{i - 10}", "changes": {"headline": f"H{i} fixed"}}}
                elif i == 23:
                    event = {"id": "e-23", "kind": "retraction", "occurred_at": "2025-06",
                             "details": {"retracts": "e-12", "reason": "false"}}
                elif i == 25:
                    event = {"id": "e-25", "kind": "correction", "occurred_at": "2025-06",
                             "details": {"corrects": "never", "changes": {"headline": "x"}}}
                raw = json.dumps(event).encode()
                batch.append(Candidate(parse_event(json.loads(raw)), raw))
            assert all(r.status == "stored" for r in store.append(batch))


def run_verify(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIMELINE_DB": str(path), "COLUMNS": "400"}
    return subprocess.run([str(Path(sys.executable).parent / "timeline"), "verify", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def behind_back(path: Path, *statements: str) -> None:
    """Run statements with every trigger dropped, then put the triggers back exactly as they were."""
    conn = sqlite3.connect(path, isolation_level=None)
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    conn.execute("BEGIN")
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    for sql in statements:
        conn.execute(sql)
    for _, sql in triggers:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.close()


def report_of(path: Path, **kwargs: str):
    conn = connect_read_only(path)
    try:
        return verify(conn, **kwargs)
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    filled(path)
    return path


def test_an_untouched_store_verifies(db: Path) -> None:
    report = report_of(db)
    assert report.ok and report.checked == N and report.first_bad is None, report.problems
    done = run_verify(db)
    assert done.returncode == 0 and f"ok: {N} events" in done.stdout, done.stdout + done.stderr
    assert report.head in done.stdout.replace("\n", "")


# (statements, made with the triggers dropped and put back?, the position named)
POSITIONED = {
    "event body edited": (["UPDATE events SET body = replace(body, 'H12', 'H99') WHERE position = 13"], 13),
    "recorded_at edited": (["UPDATE events SET recorded_at = '2000-01-01T00:00:00.000000Z' WHERE position = 4"], 4),
    "event deleted": (["DELETE FROM events WHERE position = 21"], 21),
    "last event deleted, its hash kept": (["DELETE FROM events WHERE position = 30"], 30),
    "event planted": (["INSERT INTO events (position, event_id, kind, content_hash, recorded_at, raw, body)"
                       " VALUES (31, 'forged', 'report', 'x', '2030-01-01T00:00:00.000000Z', X'7B7D', '{}')"], 31),
    "a hash edited": (["UPDATE event_chain SET hash = (CASE substr(hash, 1, 1) WHEN 'f' THEN 'e' ELSE 'f' END) || substr(hash, 2)"
                       " WHERE position = 9"], 9),
    "a hash planted past the end": ([f"INSERT INTO event_chain VALUES (31, '{'a' * 64}')"], 31),
    "event_entities row planted": (["INSERT INTO event_entities VALUES (7, 'elon-musk', 'Elon Musk', 'person', 'subject')"], 7),
    "event_entities row planted past the end": (["INSERT INTO event_entities VALUES (40, 'x', 'X', 'other', 'subject')"], 40),
    "event_entities row edited": (["UPDATE event_entities SET role = 'subject' WHERE position = 5 AND entity_id = 'somebody'"], 5),
    "event_entities row deleted": (["DELETE FROM event_entities WHERE position = 6 AND entity_id = 'other'"], 6),
    "event_entities row for an editorial event": (["INSERT INTO event_entities VALUES (21, 'x', 'X', 'other', 'subject')"], 21),
    "event_meta row edited": (["UPDATE event_meta SET start_key = '1999' || substr(start_key, 5) WHERE position = 3"], 3),
    "event_meta plain flag flipped": (["UPDATE event_meta SET plain = 0 WHERE position = 2"], 2),
    "event_meta row deleted": (["DELETE FROM event_meta WHERE position = 17"], 17),
    "event_meta row planted past the end": (["INSERT INTO event_meta VALUES (31, 'f', 'report', '2030', '2025', NULL,"
                                             " '2025', '2025', 1)"], 31),
    "event_states body edited": (["UPDATE event_states SET body = replace(body, 'H20 fixed', 'H20 forged') WHERE position = 21"], 21),
    "event_states status edited": (["UPDATE event_states SET status = 'active' WHERE position = 24"], 24),
    "event_states entities_at edited": (["UPDATE event_states SET entities_at = 3 WHERE position = 21"], 21),
    "event_states row deleted": (["DELETE FROM event_states WHERE position = 23"], 23),
    "event_states row planted": (["INSERT INTO event_states SELECT 8, target_id, applied, error, status, corrected, entities_at, body"
                                  " FROM event_states WHERE position = 21"], 8),
    "event_states row for a correction still waiting": (["INSERT INTO event_states SELECT 26, 'never', applied, error,"
                                                         " status, corrected, entities_at, body FROM event_states WHERE position = 21"], 26),
}


@pytest.mark.parametrize("case", list(POSITIONED))
@pytest.mark.parametrize("triggers", ["put back", "left dropped"])
def test_an_edit_behind_the_service_is_found_at_its_position(db: Path, case: str, triggers: str) -> None:
    statements, bad = POSITIONED[case]
    if triggers == "put back":
        behind_back(db, *statements)
    else:
        conn = sqlite3.connect(db)
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.commit()
        conn.close()
        tamper(db, *statements)
    report = report_of(db)
    assert not report.ok
    assert report.first_bad == bad, report.problems
    done = run_verify(db)
    assert done.returncode == 1
    assert f"first bad position: {bad}" in done.stdout
    if triggers == "left dropped":
        assert "events_no_update" in done.stdout and "events_no_update" in done.stderr


def test_a_planted_entity_row_would_show_in_timelines_after_a_rebuild(db: Path) -> None:
    """What is at stake: projections rebuild from event_entities, so a planted row becomes a
    timeline entry (the issue's case); verify names it before anyone rebuilds."""
    tamper(db, "INSERT INTO event_entities VALUES (4, 'elon-musk', 'Elon Musk', 'person', 'subject')")
    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        engine.setup()
        engine.rebuild()
        conn = engine.connection("timelines")
        tag = engine.checkpoint("timelines").tag  # type: ignore[union-attr]
        assert conn.execute(f"SELECT position FROM tl_entries{tag} WHERE entity_id = 'elon-musk'").fetchall() == [(4,)]
    report = report_of(db)
    assert report.first_bad == 4 and "event_entities" in report.tables


# (statements, the schema object or table named)
SCHEMA = {
    "a trigger that never fires (WHEN 0)": (
        ["DROP TRIGGER events_no_update",
         "CREATE TRIGGER events_no_update BEFORE UPDATE ON events WHEN 0"
         " BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused'); END"], "events_no_update"),
    "a trigger that refuses only one column": (
        ["DROP TRIGGER events_no_update",
         "CREATE TRIGGER events_no_update BEFORE UPDATE OF raw ON events"
         " BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused'); END"], "events_no_update"),
    "a trigger that ignores instead of refusing": (
        ["DROP TRIGGER event_meta_no_delete",
         "CREATE TRIGGER event_meta_no_delete BEFORE DELETE ON event_meta"
         " BEGIN SELECT RAISE(IGNORE); END"], "event_meta_no_delete"),
    "a trigger dropped": (["DROP TRIGGER events_no_delete"], "events_no_delete"),
    "the chain's trigger dropped": (["DROP TRIGGER event_chain_no_update"], "event_chain_no_update"),
    "the states' trigger dropped": (["DROP TRIGGER event_states_no_delete"], "event_states_no_delete"),
    "a trigger added": (["CREATE TRIGGER sneaky AFTER INSERT ON events BEGIN SELECT 1; END"], "sneaky"),
    "a table added": (["CREATE TABLE notes (x)"], "notes"),
    "a view added": (["CREATE VIEW recent AS SELECT * FROM events"], "recent"),
    "an index added": (["CREATE INDEX events_kind ON events(kind)"], "events_kind"),
    "an index dropped": (["DROP INDEX events_target"], "events_target"),
    "an index redefined": (["DROP INDEX events_aliases", "CREATE INDEX events_aliases ON events(position)"],
                           "events_aliases"),
    "a column added": (["ALTER TABLE event_meta ADD COLUMN note TEXT"], "event_meta"),
    "a migration row removed": (["DELETE FROM _migrations WHERE name = '0006_event_chain'"], "_migrations"),
    "a migration row planted": (["INSERT INTO _migrations VALUES ('0099_backdoor', '2026-01-01T00:00:00+00:00')"],
                                "_migrations"),
    "a migration's time edited": (["UPDATE _migrations SET applied_at = 'yesterday' WHERE name = '0001_events'"],
                                  "_migrations"),
    "the statistics of ANALYZE": (["ANALYZE"], "sqlite_stat1"),
    "an AUTOINCREMENT table (sqlite_sequence)": (["CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, x)",
                                                  "INSERT INTO log (x) VALUES (1)"], "sqlite_sequence"),
    "user_version set": (["PRAGMA user_version = 7"], "user_version"),
}


@pytest.mark.parametrize("case", list(SCHEMA))
def test_a_schema_change_behind_the_service_is_found_by_name(db: Path, case: str) -> None:
    statements, name = SCHEMA[case]
    tamper(db, *statements)
    report = report_of(db)
    assert not report.ok and name in report.tables, report.problems
    assert any(name in p for p in report.problems), report.problems
    done = run_verify(db)
    assert done.returncode == 1 and name in done.stdout, done.stdout


def test_a_trigger_made_harmless_lets_updates_through_and_is_reported(db: Path) -> None:
    """The issue's case: the trigger keeps its name and its text still says RAISE and UPDATE."""
    tamper(db, *SCHEMA["a trigger that never fires (WHEN 0)"][0],
           "UPDATE events SET kind = kind WHERE position = 1")  # goes through
    report = report_of(db)
    assert [p for p in report.problems if "events_no_update" in p and "WHEN 0" in p], report.problems


def rewritten_chain(path: Path, start: int) -> list[str]:
    """What someone who rewrote history would do: re-compute every hash from ``start`` on."""
    conn = sqlite3.connect(path)
    previous = conn.execute("SELECT hash FROM event_chain WHERE position = ?", (start - 1,)).fetchone()
    previous = previous[0] if previous else GENESIS
    rows = conn.execute(f"SELECT {ROW_COLUMNS} FROM events WHERE position >= ? ORDER BY position", (start,)).fetchall()
    conn.close()
    statements = []
    for row in rows:
        previous = link(previous, row)
        statements.append(f"UPDATE event_chain SET hash = '{previous}' WHERE position = {row[0]}")
    return statements


def test_the_last_events_removed_everywhere_are_found_against_a_kept_head_hash(db: Path) -> None:
    kept = report_of(db).head
    behind_back(db, *(f"DELETE FROM {table} WHERE position >= 29" for table in
                      ("events", "event_chain", "event_meta", "event_entities", "event_states")))
    alone = report_of(db)
    assert alone.ok and alone.checked == N - 2  # what the file alone cannot show (docs/integrity.md)
    assert run_verify(db).returncode == 0
    report = report_of(db, head=kept)
    assert not report.ok and "events" in report.tables
    done = run_verify(db, "--head", kept)
    assert done.returncode == 1 and kept in done.stderr.replace("\n", "")
    assert run_verify(db, "--head", report.head).returncode == 0  # an earlier head is still in the chain


def test_a_rewritten_history_is_found_against_a_kept_head_hash(db: Path) -> None:
    kept = report_of(db).head
    behind_back(db, "UPDATE events SET body = replace(body, '\"H5\"', '\"H55\"') WHERE position = 6")
    assert report_of(db).first_bad == 6
    behind_back(db, *rewritten_chain(db, 6))
    assert report_of(db).ok  # consistent again: only a head hash kept elsewhere tells
    report = report_of(db, head=kept)
    assert not report.ok and "events" in report.tables


def test_the_last_events_removed_are_found_by_the_projections_that_applied_them(db: Path) -> None:
    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        engine.setup()
        engine.rebuild()
    behind_back(db, *(f"DELETE FROM {table} WHERE position = 30" for table in
                      ("events", "event_chain", "event_meta", "event_entities", "event_states")))
    done = run_verify(db)
    assert done.returncode == 1, done.stdout
    assert "first bad position: 30" in done.stdout and "up to position 30" in done.stderr.replace("\n", " ")


def test_events_stored_and_projected_while_verify_runs_are_not_taken_for_removed_ones(db: Path) -> None:
    """``timeline verify`` beside a running service: it checks the store as it stood when it
    began, then reads the projections' checkpoints, which the service has moved on meanwhile. It
    said "projection timelines has applied events up to position 70275, but the store ends at
    65275: events were removed from its end" (NOT OK) on an intact store under ingest. Here the
    service's work between the two is done for it: more events stored and projected."""
    from events.integrity import projections_beyond

    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        engine.setup()
        engine.rebuild()
        conn = connect_read_only(db)
        try:
            report = verify(conn)  # the store checked: 30 events
        finally:
            conn.close()
        assert report.ok and report.head_position == N
        more = [{"id": f"late-{i}", "kind": "report", "occurred_at": "2025-07", "headline": f"Late {i}",
                 "entities": [{"name": "Somebody"}]} for i in range(5)]
        assert all(r.status == "stored" for r in store.append(
            [Candidate(parse_event(e), json.dumps(e).encode()) for e in more]))
        engine.catch_up()
    projections_beyond(db, report)  # the checkpoints, read after: at N + 5
    assert report.ok, report.problems
    # and events really removed from the end are still found
    behind_back(db, *(f"DELETE FROM {table} WHERE position = {N + 5}" for table in
                      ("events", "event_chain", "event_meta", "event_entities", "event_states")))
    projections_beyond(db, report)
    assert not report.ok and f"up to position {N + 5}, but the store ends at {N + 4}" in str(report.problems)


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of a folder: (size, mtime in ns, contents)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("tampered", [False, True], ids=["intact", "tampered"])
def test_verify_works_on_a_read_only_copy_and_writes_nothing(db: Path, tmp_path: Path, tampered: bool) -> None:
    """A copy in a read-only folder (tests run as root, whom permission bits do not stop: what is
    asserted is that nothing at all is written, no -wal or -shm file created, nothing changed)."""
    if tampered:
        behind_back(db, "UPDATE events SET body = replace(body, 'H12', 'H99') WHERE position = 13")
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy2(db, folder / "t.db")
    assert [p.name for p in folder.iterdir()] == ["t.db"]
    (folder / "t.db").chmod(0o444)
    folder.chmod(0o555)
    # Root is stopped by the immutable attribute (ext4 and most local file systems): with it, a
    # verify that tried to create its -wal or -shm file would fail, not just leave a trace.
    immutable = subprocess.run(["chattr", "+i", str(folder / "t.db"), str(folder)], capture_output=True).returncode == 0
    try:
        before = snapshot(folder)
        done = run_verify(folder / "t.db")
        assert snapshot(folder) == before
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder), str(folder / "t.db")], check=True)
        folder.chmod(0o755)
    if tampered:
        assert done.returncode == 1 and "first bad position: 13" in done.stdout, done.stdout + done.stderr
    else:
        assert done.returncode == 0 and f"ok: {N} events" in done.stdout, done.stdout + done.stderr
    assert not stat.S_IMODE((folder / "t.db").stat().st_mode) & 0o222


def test_verify_reads_a_store_in_use_through_its_write_ahead_log(db: Path) -> None:
    """With the service's connection open, recent events are in the -wal file, not yet in the
    store's own file: verify reads them too."""
    with EventStore(db) as store:
        store.conn.execute("PRAGMA wal_autocheckpoint = 0")
        raw = json.dumps({"id": "late", "kind": "report", "occurred_at": "2025", "headline": "late",
                          "entities": [{"name": "Late"}]}).encode()
        store.append([Candidate(parse_event(json.loads(raw)), raw)])
        assert Path(f"{db}-wal").stat().st_size > 0
        done = run_verify(db)
        assert done.returncode == 0 and f"ok: {N + 1} events" in done.stdout, done.stdout + done.stderr
        store.conn.execute("PRAGMA wal_autocheckpoint = 1000")


def test_an_entity_name_holding_u0000_verifies_and_its_edit_is_still_found(tmp_path: Path) -> None:
    """Found by a user's trial: an accepted event whose entity name holds U+0000 made `timeline
    verify` report the untouched store as edited (SQLite's ``->>`` ends a string at U+0000, so the
    stored name never matched its event's). Such a name is compared as JSON text: the store
    verifies, and cutting the name at its U+0000 behind the service's back is still found."""
    path = tmp_path / "t.db"
    filled(path, 3)
    raw = json.dumps({"id": "nul-1", "kind": "report", "occurred_at": "2025-05", "headline": "h\u0000",
                      "entities": [{"name": "Nul\u0000Name"}, {"name": "Plain"}]}).encode()
    with open_store(path) as store:
        assert [r.status for r in store.append([Candidate(parse_event(json.loads(raw)), raw)])] == ["stored"]
    report = report_of(path)
    assert report.ok, report.problems
    behind_back(path, "UPDATE event_entities SET name = 'Nul' WHERE entity_id = 'nul-name'")
    report = report_of(path)
    assert not report.ok and report.first_bad == 4, report.problems
