"""Erasure in the store: the content goes, the chain still verifies, nothing else may change.

Real SQLite files and a real PostgreSQL (the ``backend`` fixture); the erasures are made through
``events.erasure.erase`` (what the CLI and the API call) and checked with ``timeline verify``'s
checks and a plain connection. What becomes of the bytes differs: on SQLite they are overwritten
in the file; on PostgreSQL the erasure VACUUMs, and ``VACUUM FULL`` rewrites (docs/postgresql.md).
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import pytest

from events.backend import is_postgres, open_store
from events.erasure import ErasureRefused, erase, erasure_of, erasures
from events.integrity import verify
from events.store import EventStore, connect_read_only
from projections import ProjectionEngine, default_projections
from projections.erasure import capture

from helpers import alias, append, correction, db_errors, ent, make_event, news, plain_connection, retraction

MARK = "Zq7marker"


@pytest.fixture
def db(backend: str) -> str:
    return backend


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    return tmp_path / "timeline.db"


def _store(db: str) -> EventStore:
    store = open_store(db)
    append(
        store,
        make_event(id="keep", headline="Kept story"),
        make_event(id="gone", headline=f"{MARK} headline", summary=f"{MARK} summary",
                   entities=[ent("x"), ent(f"{MARK.lower()}-person", name=f"{MARK} Person", type="person")],
                   sources=[{"url": f"https://news.example/{MARK}"}]),
        correction("gone-fix", "gone", reason=f"{MARK} reason", headline=f"{MARK} fixed"),
        retraction("gone-retracted", "gone", reason=f"{MARK} false"),
        make_event(id="later", headline="Later story"),
    )
    return store


def _verify(db: str):
    if is_postgres(db):
        from events.pg.integrity import verify as verify_pg

        return verify_pg(db)
    conn = connect_read_only(db)
    try:
        return verify(conn)
    finally:
        conn.close()


def _bytes_with(folder: Path, marker: str) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.is_file() and marker.encode() in p.read_bytes()]


def test_erased_content_goes_and_the_chain_still_verifies(db: str) -> None:
    store = _store(db)
    head_before = _verify(db).head
    erasure = erase(store, "gone", "court order 12/2026", "alice")
    assert erasure.erased_with == ["gone-fix", "gone-retracted"]
    assert store.get("gone") is None and store.editorial_for("gone") == []
    assert erasure_of(store.conn, "gone-fix") == erasure_of(store.conn, "gone")
    row = store.conn.execute("SELECT event_id, kind, raw, body FROM events WHERE event_id = 'gone'").fetchone()
    assert row == ("gone", "outage", b"", "")
    report = _verify(db)
    assert report.ok, report.problems
    assert report.head == head_before  # the links did not change
    assert [e["event_id"] for e in report.erasures] == ["gone"]
    assert report.erasures[0]["who"] == "alice"
    store.close()
    if is_postgres(db):
        assert _live_tuples_with(db, MARK) == {}
    else:
        assert _bytes_with(Path(db).parent, MARK) == []
        assert _bytes_with(Path(db).parent, MARK.lower()) == []


def _live_tuples_with(url: str, marker: str, pages: bool = False) -> dict[str, int]:
    """{table: how many tuples in its file (dead ones too, until VACUUM frees them) hold the
    marker}; with ``pages``, how many pages hold its bytes anywhere (free space too). Read from
    the table's file itself (``pg_read_binary_file`` after a CHECKPOINT: superuser), each page's
    line pointers parsed as PostgreSQL lays them out (bufpage.h): no extension needed."""
    from events.pg.connect import connect

    wanted = (marker.encode(), marker.lower().encode())
    out = {}
    with connect(url) as conn:
        conn.execute("CHECKPOINT")  # every dirty page written to the files
        (block,) = conn.execute("SELECT current_setting('block_size')::int").fetchone()
        for table in ("events", "event_meta", "event_entities", "event_states"):
            (path,) = conn.execute("SELECT pg_relation_filepath(%s)", (table,)).fetchone()
            (data,) = conn.execute("SELECT pg_read_binary_file(%s)", (path,)).fetchone()
            found = 0
            for start in range(0, len(data), block):
                page = data[start : start + block]
                if pages:
                    found += any(w in page for w in wanted)
                    continue
                lower = int.from_bytes(page[12:14], "little")  # pd_lower: the end of the line pointers
                for i in range((lower - 24) // 4):
                    (item,) = struct.unpack_from("<I", page, 24 + 4 * i)
                    offset, flags, length = item & 0x7FFF, (item >> 15) & 3, item >> 17
                    if flags == 1 and any(w in page[offset : offset + length] for w in wanted):  # LP_NORMAL
                        found += 1
            if found:
                out[table] = found
    return out


def test_on_postgresql_the_old_versions_are_vacuumed_and_vacuum_full_removes_the_bytes(pg_db: str) -> None:
    """Logical removal at once; the erasure's VACUUM leaves no tuple, live or dead, with the
    content, but its bytes may stay in the pages' free space until ``VACUUM FULL`` rewrites the
    table (what docs/postgresql.md tells an operator to run)."""
    store = _store(pg_db)
    erase(store, "gone", "r", "alice")
    assert _live_tuples_with(pg_db, MARK) == {}
    store.pg.execute("VACUUM FULL events, event_meta, event_entities, event_states")
    assert _live_tuples_with(pg_db, MARK, pages=True) == {}
    assert _verify(pg_db).ok
    store.close()


def test_an_erased_id_is_refused_for_ever(db: str) -> None:
    store = _store(db)
    erase(store, "gone", "request", "alice")
    same = append(store, make_event(id="gone", headline=f"{MARK} headline", summary=f"{MARK} summary",
                                    entities=[ent("x")]))
    assert same[0].status == "rejected" and same[0].reason == "id_conflict" and "erased" in (same[0].error or "")
    late = append(store, correction("late-fix", "gone", headline="x"))
    assert late[0].status == "rejected" and "erased" in (late[0].error or "")
    assert _verify(db).ok


def test_refusals(db: str) -> None:
    store = _store(db)
    with pytest.raises(ErasureRefused) as unknown:
        erase(store, "nope", "r", "alice")
    assert unknown.value.status == 404
    with pytest.raises(ErasureRefused) as editorial:
        erase(store, "gone-fix", "r", "alice")
    assert editorial.value.status == 409 and "'gone'" in editorial.value.error
    with pytest.raises(ErasureRefused) as no_reason:
        erase(store, "gone", "  ", "alice")
    assert no_reason.value.status == 422
    erase(store, "gone", "r", "alice")
    with pytest.raises(ErasureRefused) as again:
        erase(store, "gone", "r", "alice")
    assert again.value.status == 409


def test_a_waiting_correction_and_an_alias_can_be_erased(db: str) -> None:
    store = _store(db)
    append(store, correction("early", "not-yet", headline="x"), alias("al", "twitter", "x"))
    erase(store, "early", "r", "bob")
    erase(store, "al", "r", "bob")
    assert store.aliases() == []
    append(store, news("not-yet", "2025-05"))  # its erased correction is not applied
    assert store.state("not-yet")[1].status == "active"
    report = _verify(db)
    assert report.ok, report.problems
    assert [e["event_id"] for e in report.erasures] == ["early", "al"]
    assert [e.seq for e in erasures(store.conn)] == [1, 2]


@pytest.mark.parametrize("statement", [
    "UPDATE events SET body = '' WHERE event_id = 'keep'",
    "UPDATE events SET raw = ?, body = '' WHERE event_id = 'keep'",
    "UPDATE events SET headline = 1 WHERE event_id = 'gone'",
    "UPDATE events SET kind = 'report', raw = ?, body = '' WHERE event_id = 'gone'",
    "DELETE FROM events WHERE event_id = 'gone'",
    "DELETE FROM event_meta WHERE event_id = 'keep'",
    "DELETE FROM event_entities WHERE position = 1",
    "DELETE FROM erasures",
    "DELETE FROM erased_events",
    "UPDATE erasures SET reason = 'other'",
])
def test_the_triggers_allow_only_blanking_an_erased_event(db: str, statement: str) -> None:
    store = _store(db)
    erase(store, "later", "r", "alice")
    store.close()
    error, _ = db_errors(db)
    with plain_connection(db) as conn:
        with pytest.raises(error):
            conn.execute(statement, (b"",) if "?" in statement else ())


def test_blanking_by_hand_or_editing_an_erasure_is_caught(sqlite_db: Path) -> None:
    """(On PostgreSQL: test_pg_integrity.py's edits behind the service's back.)"""
    db = sqlite_db
    store = _store(db)
    erase(store, "later", "r", "alice")
    store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    # whoever edits the file drops the triggers first; verify names what changed
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("DROP TRIGGER erasures_no_update")
    conn.execute("UPDATE events SET raw = X'', body = '' WHERE event_id = 'keep'")
    conn.execute("UPDATE erasures SET who = 'mallory'")
    conn.close()
    report = _verify(db)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "position 1: the event does not match its hash" in text
    assert "erasure 1 (of 'later') does not match its hash" in text


def test_pages_freed_before_the_erasure_are_overwritten(sqlite_db: Path) -> None:
    db = sqlite_db
    store = _store(db)
    old = "Qx9oldcopy"
    store.conn.execute("CREATE TABLE old_copy (t TEXT)")  # as projection tables in old stores were
    store.conn.execute("INSERT INTO old_copy VALUES (?)", (f"{old} {MARK} " * 2000,))
    store.conn.execute("DROP TABLE old_copy")  # freed, not overwritten (secure_delete = FAST)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert old.encode() in db.read_bytes()
    engine = ProjectionEngine(store, default_projections())
    engine.setup()
    engine.rebuild(force=True)
    engine.rebuild(force=True)  # the first rebuild's tables are dropped: their pages are free
    gone: list = []
    erase(store, "gone", "r", "alice", before=lambda s: gone.append(capture(s, "gone")))
    engine.remove(gone[0])
    engine.close()
    assert _bytes_with(db.parent, old) == []
    assert _bytes_with(db.parent, MARK) == [] and _bytes_with(db.parent, MARK.lower()) == []
    assert _verify(db).ok
    store.close()
