"""The append-only event store on both backends, real SQLite files and a real PostgreSQL
(docs/contract.md §1 idempotency, §3 reasons); the SQLite file's own migrations at the end."""

from __future__ import annotations

import json
import multiprocessing
import re
import sqlite3
import time

import pytest

import events.store as store_module
from events.ids import EVENT_ID_PATTERN
from events.migrations import MIGRATIONS, migrate
from events.models import EventRejected, parse_event_bytes
from events.backend import is_postgres, open_store
from events.store import EventStore, connect
from helpers import (
    DROP, alias, append, append_worker, correction, db_errors, make_event, news, open_worker, plain_connection,
    retraction, sql_rows,
)


@pytest.fixture
def db(backend):
    """The store on each backend in turn (tests/conftest.py ``backend``)."""
    return backend


@pytest.fixture
def sqlite_db(tmp_path):
    return tmp_path / "store.db"


@pytest.fixture
def store(db):
    with open_store(db) as s:
        yield s


def positions(db) -> list[int]:
    return [r[0] for r in sql_rows(db, "SELECT position FROM events ORDER BY position")]


# --- positions and recorded_at ---------------------------------------------------------------


def test_positions_are_gap_free_across_batches(store, db):
    r1 = append(store, *(news(f"a{i}", "2025-05-24") for i in range(3)))
    r2 = append(store, news("b0", "2025"))
    # a batch with a duplicate and a conflict in the middle: no position is used for them
    r3 = append(
        store,
        news("c0", "2025-05"),
        news("a1", "2025-05-24"),  # duplicate
        news("a2", "2025-05-24", headline="other"),  # id_conflict
        news("c1", "2025-05"),
    )
    r4 = append(store, *(news(f"d{i}", "2024") for i in range(5)))
    assert [r.position for r in r1] == [1, 2, 3]
    assert [r.position for r in r2] == [4]
    assert [(r.status, r.position) for r in r3] == [("stored", 5), ("duplicate", 2), ("rejected", 3), ("stored", 6)]
    assert [r.position for r in r4] == [7, 8, 9, 10, 11]
    assert positions(db) == list(range(1, 12))
    assert store.head() == 11
    # reopening continues where the file left off
    store.close()
    with open_store(db) as again:
        (r,) = append(again, news("e0", "2025"))
        assert r.position == 12
    assert positions(db) == list(range(1, 13))


def test_an_empty_batch_stores_nothing(store, db):
    assert store.append([]) == []
    assert store.head() == 0


def test_recorded_at_never_decreases(store, db):
    for i in range(20):
        append(store, news(f"n{i}", "2025-05-24"), news(f"m{i}", "2025"))
    rows = store.read(0, 10_000)
    stamps = [e.recorded_at for e in rows]
    assert len(stamps) == 40
    assert stamps == sorted(stamps)
    # one batch, one recorded_at
    for i in range(0, 40, 2):
        assert stamps[i] == stamps[i + 1]
    # fixed width UTC keys: sortable as text
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", s) for s in stamps)


def test_recorded_at_never_decreases_when_the_clock_steps_back(store, monkeypatch):
    (first,) = append(store, news("before", "2025"))
    stamp = store.get("before").recorded_at
    monkeypatch.setattr(store_module, "utc_now_key", lambda: "2001-01-01T00:00:00.000000Z")
    append(store, news("after", "2025"))
    assert store.get("after").recorded_at >= stamp


# --- raw bytes -------------------------------------------------------------------------------


def test_raw_bytes_are_stored_exactly_as_received(store):
    raw = (
        b'{  "kind":"report" ,\n\t"occurred_at" : "2025-05",  "headline": "Soci\\u00e9t\xc3\xa9 G\xc3\xa9n\xc3\xa9rale '
        b'\xe2\x80\x94 \xd0\x92\xd0\xbb\xd0\xb0\xd0\xb4\xd0\xb8\xd0\xbc\xd0\xb8\xd1\x80", '
        b'"entities":[{"name":"Soci\xc3\xa9t\xc3\xa9 G\xc3\xa9n\xc3\xa9rale"}], "id":"raw-1" , '
        b'"details": {"category": "business"}}\n   '
    )
    (r,) = append(store, raw)
    assert r.status == "stored"
    assert store.raw("raw-1") == raw
    # the body projections read is normalised, the raw bytes are not
    body = store.get("raw-1").body
    assert body["entities"][0]["id"] == "societe-generale"
    assert body["entities"][0]["role"] == "mentioned"


def test_raw_bytes_of_an_event_without_id(store):
    raw = json.dumps(news("ignored", "2025-05-24"), indent=3).encode()
    event = json.loads(raw)
    del event["id"]
    raw = json.dumps(event, indent=3).encode()
    (r,) = append(store, raw)
    assert r.status == "stored"
    assert store.raw(r.event_id) == raw


def test_raw_of_unknown_id_is_none(store):
    assert store.raw("nope") is None
    assert store.get("nope") is None


# --- idempotency ------------------------------------------------------------------------------


def test_same_id_same_content_is_a_duplicate_whatever_the_formatting(store, db):
    event = make_event()
    first_raw = json.dumps(event).encode()
    (first,) = append(store, first_raw)
    reordered = dict(reversed(list(event.items())))
    reordered["entities"] = [dict(reversed(list(e.items()))) for e in event["entities"]]
    again_raw = json.dumps(reordered, indent=4, separators=(" , ", " :  ")).encode() + b"\n\n"
    assert again_raw != first_raw
    (again,) = append(store, again_raw)
    assert first.status == "stored"
    assert (again.status, again.event_id, again.position) == ("duplicate", event["id"], first.position)
    assert again.reason is None
    assert positions(db) == [1]
    assert store.raw(event["id"]) == first_raw  # nothing of the second is stored


def test_same_id_other_content_is_an_id_conflict_and_the_first_stays(store, db):
    event = make_event()
    first_raw = json.dumps(event).encode()
    append(store, first_raw)
    other = make_event(headline="X is down for five minutes")
    (r,) = append(store, other)
    assert r.status == "rejected"
    assert r.reason == "id_conflict"
    assert event["id"] in r.error and "id" in r.error
    assert store.get(event["id"]).body["headline"] == event["headline"]
    assert store.raw(event["id"]) == first_raw
    assert positions(db) == [1]


def test_a_missing_optional_field_is_other_content(store):
    append(store, make_event())
    (r,) = append(store, make_event(summary=DROP))
    assert (r.status, r.reason) == ("rejected", "id_conflict")


def test_duplicates_and_conflicts_inside_one_batch(store, db):
    a = news("a", "2025-05-24")
    a_again = json.dumps(dict(reversed(list(a.items()))), indent=2)
    a_other = news("a", "2025-05-24", headline="something else")
    b = news("b", "2025")
    results = append(store, a, a_again, a_other, b, b)
    assert [(r.status, r.event_id, r.position, r.reason) for r in results] == [
        ("stored", "a", 1, None),
        ("duplicate", "a", 1, None),
        ("rejected", "a", 1, "id_conflict"),
        ("stored", "b", 2, None),
        ("duplicate", "b", 2, None),
    ]
    assert positions(db) == [1, 2]
    assert store.get("a").body["headline"] == "headline of a"


def test_derived_ids_make_republishing_idempotent(store, db):
    event = make_event(id=DROP)
    (r1,) = append(store, event)
    assert r1.status == "stored"
    assert re.fullmatch(EVENT_ID_PATTERN, r1.event_id)
    # the same content in another key order / white space derives the same id
    again = json.dumps(dict(reversed(list(event.items()))), indent=1)
    assert parse_event_bytes(again).id == r1.event_id
    (r2,) = append(store, again)
    assert (r2.status, r2.event_id, r2.position) == ("duplicate", r1.event_id, 1)
    # other content, other id: stored beside it
    (r3,) = append(store, make_event(id=DROP, headline="X is down again"))
    assert r3.status == "stored" and r3.event_id != r1.event_id
    assert positions(db) == [1, 2]
    assert store.get(r1.event_id).body["id"] == r1.event_id


def test_derived_ids_inside_one_batch(store, db):
    event = make_event(id=DROP)
    results = append(store, event, json.dumps(event, indent=2), event)
    assert [r.status for r in results] == ["stored", "duplicate", "duplicate"]
    assert len({r.event_id for r in results}) == 1
    assert positions(db) == [1]


# --- append-only ------------------------------------------------------------------------------


def test_update_and_delete_are_refused_through_a_plain_connection(store, db):
    append(store, make_event(), news("other", "2025"))
    before = store.read(0)
    error, _ = db_errors(db)
    with plain_connection(db) as conn:
        with pytest.raises(error, match="append-only"):
            conn.execute("UPDATE events SET body = '{}' WHERE position = 1")
        with pytest.raises(error, match="append-only"):
            conn.execute("UPDATE events SET raw = ?", (b"\x00",))
        with pytest.raises(error, match="append-only"):
            conn.execute("DELETE FROM events WHERE position = 2")
        with pytest.raises(error, match="append-only"):
            conn.execute("DELETE FROM events")
    assert store.read(0) == before
    assert positions(db) == [1, 2]


def test_update_and_delete_are_refused_as_integrity_errors(store, db):
    append(store, make_event())
    _, integrity = db_errors(db)
    with plain_connection(db) as conn:
        with pytest.raises(integrity, match="append-only"):
            conn.execute("UPDATE events SET kind = 'report'")
        with pytest.raises(integrity, match="append-only"):
            conn.execute("DELETE FROM events")


def test_insert_or_replace_cannot_overwrite_an_event(store, db):
    """REPLACE (SQLite) deletes the old row first, an upsert (PostgreSQL) updates it: the
    triggers must still fire, or the unique id must refuse. Either way the first event stays."""
    append(store, make_event())
    error, _ = db_errors(db)
    columns = "(position, event_id, kind, content_hash, recorded_at, raw, body) VALUES (1, 'x', 'report', 'h', 'r', ?, '{}')"
    with plain_connection(db) as conn:
        if is_postgres(db):
            statement = f"INSERT INTO events {columns} ON CONFLICT (position) DO UPDATE SET event_id = excluded.event_id"
        else:
            conn.execute("PRAGMA recursive_triggers = ON")
            statement = f"INSERT OR REPLACE INTO events {columns}"
        with pytest.raises(error):
            conn.execute(statement, (b"\x00",))
    assert store.get("x-outage-2025-05-24") is not None


# --- per-event rows for projections ----------------------------------------------------------


def facts(db) -> tuple[list[tuple], list[tuple]]:
    return (
        sql_rows(db, "SELECT * FROM event_meta ORDER BY position"),
        sql_rows(db, "SELECT * FROM event_entities ORDER BY position, entity_id"),
    )


def test_each_stored_event_has_its_facts_written_with_it(store, db):
    append(store, make_event(occurred_at="2025-05-24T14:30:00+02:00", ended_at="2025-05-25"))
    append(store, news("n", "2025", ("x",)), news("n", "2025", ("x",)), alias("al", "twitter", "x"))
    meta, members = facts(db)
    recorded = [e.recorded_at for e in store.read(0)]
    assert meta == [
        (1, "x-outage-2025-05-24", "outage", recorded[0], "2025-05-24T14:30:00+02:00", "2025-05-25",
         "2025-05-24T12:30:00.000000Z", "2025-05-25T23:59:59.999999Z", 1),
        (2, "n", "report", recorded[1], "2025", None, "2025-01-01T00:00:00.000000Z", "2025-12-31T23:59:59.999999Z", 1),
        (3, "al", "entity_alias", recorded[2], "2023-07-24", None, "2023-07-24T00:00:00.000000Z",
         "2023-07-24T23:59:59.999999Z", 0),
    ]
    assert members == [
        (1, "downdetector", "Downdetector", "organization", "mentioned"),
        (1, "x", "X", "organization", "subject"),
        (2, "x", "X", "organization", "subject"),
    ]


@pytest.mark.parametrize("same_batch", [False, True])
def test_a_news_event_that_a_correction_or_retraction_waited_for_is_not_plain(store, db, same_batch):
    waiting = [correction("c1", "n1", headline="fixed"), retraction("r2", "n2")]
    arriving = [news("n1", "2025"), news("n2", "2025"), news("n3", "2025")]
    if same_batch:
        append(store, *waiting, *arriving)
    else:
        append(store, *waiting)
        append(store, *arriving)
    append(store, correction("c3", "n3", headline="later"))  # after its target: n3 stays plain
    meta, _ = facts(db)
    assert [(row[1], row[8]) for row in meta] == [("c1", 0), ("r2", 0), ("n1", 0), ("n2", 0), ("n3", 1), ("c3", 0)]


def test_the_facts_are_append_only_too(store, db):
    append(store, make_event())
    _, integrity = db_errors(db)
    with plain_connection(db) as conn:
        for sql in ("UPDATE event_meta SET plain = 0", "DELETE FROM event_meta",
                    "UPDATE event_entities SET name = 'Y'", "DELETE FROM event_entities"):
            with pytest.raises(integrity, match="append-only"):
                conn.execute(sql)


# --- the SQLite file's migrations (PostgreSQL's: test_pg_schema.py) --------------------------


def test_the_facts_migration_fills_them_in_for_events_stored_before_it(sqlite_db):
    db = sqlite_db
    store = EventStore(db)
    append(store, correction("c1", "n1", headline="fixed"), news("n0", "2024-02", ("x", "y")))
    append(store, news("n1", "2025-05-24T14:30Z", ("x",), ended_at="2025-06"), alias("al", "y", "x"))
    append(store, make_event(), retraction("r1", "n0"), news("n2", "2025", ("z",)))
    expected = facts(db)
    store.close()
    conn = sqlite3.connect(str(db))  # the file as an older version of the code left it
    conn.execute("DROP TABLE event_meta")
    conn.execute("DROP TABLE event_entities")
    conn.execute("DELETE FROM _migrations WHERE name = '0005_event_facts'")
    conn.commit()
    conn.close()
    with EventStore(db) as again:
        assert again.head() == 7
    assert facts(db) == expected


# --- migrations -------------------------------------------------------------------------------


def test_migrations_are_recorded_and_never_applied_twice(sqlite_db):
    db = sqlite_db
    with EventStore(db) as store:
        append(store, make_event())
    conn = sqlite3.connect(str(db))
    first = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
    conn.close()
    assert [name for name, _ in first] == [name for name, _ in MIGRATIONS]
    assert {"0001_events", "0002_projection_checkpoints"} <= {name for name, _ in first}

    # reopening applies nothing: no error (CREATE TABLE would fail), same rows, data kept
    for _ in range(3):
        with EventStore(db) as store:
            assert store.head() == 1
    conn = connect(db)
    try:
        assert migrate(conn) == []
        again = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
    finally:
        conn.close()
    assert again == first


def test_a_new_migration_runs_once_on_an_existing_file(sqlite_db):
    db = sqlite_db
    with EventStore(db) as store:
        append(store, make_event())
    calls = []

    def step(conn):
        calls.append(1)
        conn.execute("CREATE TABLE extra (x INTEGER)")

    extended = [*MIGRATIONS, ("9999_extra", step)]
    conn = connect(db)
    try:
        assert migrate(conn, extended) == ["9999_extra"]
        assert migrate(conn, extended) == []
        names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
    finally:
        conn.close()
    assert calls == [1]
    assert names == sorted([name for name, _ in MIGRATIONS] + ["9999_extra"])


def test_a_failing_migration_is_not_recorded(sqlite_db):
    db = sqlite_db
    EventStore(db).close()

    def broken(conn):
        conn.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("boom")

    conn = connect(db)
    try:
        with pytest.raises(RuntimeError):
            migrate(conn, [*MIGRATIONS, ("9998_broken", broken)])
        assert conn.execute("SELECT 1 FROM _migrations WHERE name = '9998_broken'").fetchone() is None
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'half'").fetchone() is None
    finally:
        conn.close()


# --- aliases ----------------------------------------------------------------------------------


def test_an_alias_that_closes_a_two_cycle_is_rejected(store, db):
    (ok,) = append(store, alias("al-1", "a", "b"))
    (r,) = append(store, alias("al-2", "b", "a"))
    assert ok.status == "stored"
    assert (r.status, r.reason) == ("rejected", "schema")
    assert "details.canonical" in r.error
    assert store.get("al-2") is None
    assert positions(db) == [1]


def test_an_alias_that_closes_a_three_cycle_is_rejected(store, db):
    results = [append(store, e)[0] for e in (alias("al-1", "a", "b"), alias("al-2", "b", "c"), alias("al-3", "c", "a"))]
    assert [r.status for r in results] == ["stored", "stored", "rejected"]
    assert results[2].reason == "schema"
    assert "details.canonical" in results[2].error
    assert positions(db) == [1, 2]


def test_an_alias_cycle_inside_one_batch_is_rejected(store, db):
    results = append(store, alias("al-1", "a", "b"), alias("al-2", "b", "c"), alias("al-3", "c", "a"),
                     news("n", "2025", ("a",)))
    assert [(r.status, r.reason) for r in results] == [("stored", None), ("stored", None), ("rejected", "schema"),
                                                       ("stored", None)]
    assert "details.canonical" in results[2].error
    assert positions(db) == [1, 2, 3]


def test_an_alias_of_itself_is_rejected(store):
    with pytest.raises(EventRejected) as exc:
        append(store, alias("al-self", "x", "x"))
    assert exc.value.reason == "schema"
    assert "details.alias" in exc.value.error


def test_a_chain_that_does_not_close_is_accepted(store):
    results = [append(store, e)[0] for e in (alias("al-1", "twitter-inc", "twitter"), alias("al-2", "twitter", "x"))]
    assert [r.status for r in results] == ["stored", "stored"]


def test_a_correction_or_retraction_of_an_alias_event_is_rejected(store, db):
    append(store, alias("al-1", "twitter", "x"))
    (c,) = append(store, correction("c-1", "al-1", headline="nope"))
    (r,) = append(store, retraction("r-1", "al-1"))
    assert (c.status, c.reason) == ("rejected", "schema")
    assert "details.corrects" in c.error
    assert (r.status, r.reason) == ("rejected", "schema")
    assert "details.retracts" in r.error
    # in the same batch as the alias, too
    results = append(store, alias("al-2", "twitter-inc", "twitter"), correction("c-2", "al-2", headline="nope"))
    assert [(x.status, x.reason) for x in results] == [("stored", None), ("rejected", "schema")]
    assert positions(db) == [1, 2]


def test_a_correction_that_would_break_its_target_is_rejected(store):
    append(store, news("n-1", "2025-05-24", ("x", "y")))
    # ended_at before occurred_at starts: breaks a rule of §1 once applied
    (r,) = append(store, correction("c-1", "n-1", ended_at="2025-05-01"))
    assert (r.status, r.reason) == ("rejected", "schema")
    assert "ended_at" in r.error


def test_a_correction_of_an_unknown_id_waits(store):
    (r,) = append(store, correction("c-1", "not-yet", headline="later"))
    assert r.status == "stored"


# --- two processes ----------------------------------------------------------------------------


def _run_two_writers(db, count: int) -> list[tuple[str, int, list[str]]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    # A writer that appends back to back can hold SQLite's lock for the whole run while the other
    # sleeps in its busy handler; a real consumer reads from Redis between batches.
    procs = [
        ctx.Process(target=append_worker, args=(str(db), p, count, barrier, results, 0.0005)) for p in ("p1", "p2")
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return sorted(out)


def test_two_processes_append_concurrently(db):
    open_store(db).close()  # the store exists and is migrated before the writers start
    # PostgreSQL commits one append in a few round trips more than SQLite: fewer events show the
    # same interleaving in the same time
    count = 500 if is_postgres(db) else 2000
    started = time.monotonic()
    out = _run_two_writers(db, count)
    elapsed = time.monotonic() - started
    assert out == [("p1", count, []), ("p2", count, [])], f"after {elapsed:.1f}s"
    assert positions(db) == list(range(1, 2 * count + 1))
    with open_store(db) as store:
        events = store.read(0, 10_000)
        assert len({e.event_id for e in events}) == 2 * count
        stamps = [e.recorded_at for e in events]
        assert stamps == sorted(stamps)
        # both writers really interleaved (not one after the other)
        owners = [e.event_id[:2] for e in events]
        switches = sum(1 for a, b in zip(owners, owners[1:]) if a != b)
        assert switches > 1


def test_two_processes_open_new_files_concurrently(tmp_path):
    """Two writers create and migrate the same new file at the same moment (200 files in turn:
    the race is short). Every open must succeed, as every append does."""
    paths = [str(tmp_path / f"new-{n}.db") for n in range(200)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [ctx.Process(target=open_worker, args=(paths, p, 2, barrier, results)) for p in ("p1", "p2")]
    for p in procs:
        p.start()
    out = sorted(results.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert out == [("p1", 400, []), ("p2", 400, [])]
    for path in paths:
        assert positions(path) == list(range(1, 5))
        conn = sqlite3.connect(path)
        try:
            names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
        finally:
            conn.close()
        assert names == sorted(name for name, _ in MIGRATIONS)


# --- PostgreSQL: a lost connection ------------------------------------------------------------


def test_a_lost_connection_fails_one_append_and_the_next_reconnects(pg_db):
    """PostgreSQL restarted or the session terminated: the batch in hand fails (the consumer retries
    it), nothing of it is stored, and the next append opens a new connection and goes on."""
    import psycopg

    with open_store(pg_db) as store:
        append(store, news("n1", "2025"))
        (pid,) = store.pg.execute("SELECT pg_backend_pid()").fetchone()
        with plain_connection(pg_db) as other:
            other.execute("SELECT pg_terminate_backend(?)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            append(store, news("n2", "2025"))
        (again,) = append(store, news("n2", "2025"))
        assert (again.status, again.position) == ("stored", 2)
        assert positions(pg_db) == [1, 2]


def test_an_entity_name_with_u0000_is_stored_on_either_backend(store, db):
    """PostgreSQL's text cannot hold U+0000 (SQLite's can): the event is stored all the same, its
    raw bytes and body exactly, the derived entity row with U+FFFD there (never a batch failing,
    and retried, for ever)."""
    raw = json.dumps(news("nul", "2025", [{"id": "x-y", "name": "X\u0000Y", "type": "organization",
                                            "role": "subject"}])).encode()
    (r,) = append(store, raw)
    assert r.status == "stored"
    assert store.raw("nul") == raw
    assert store.get("nul").body["entities"][0]["name"] == "X\u0000Y"
    name = "X\ufffdY" if is_postgres(db) else "X\u0000Y"
    assert sql_rows(db, "SELECT name FROM event_entities WHERE position = 1") == [(name,)]
    if is_postgres(db):
        from events.pg.integrity import verify

        assert verify(db).ok
