"""Each projection in a SQLite file of its own, beside the store's: appends and projection
batches do not wait for each other, a store from before the move is brought forward, and the
projections' files hold nothing of the store."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from events.migrations import STORE_TABLES
from events.store import EventStore
from helpers import append, append_and_project, dump_tables, ids, news, project
from projections import ProjectionEngine, default_projections
from projections.engine import PROJECTION_PAGE_SIZE, projection_path
from projections.queries import Queries, TimelineQuery


@pytest.fixture
def db(tmp_path):
    return tmp_path / "timeline.db"


def _tables(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def test_each_projection_writes_a_file_of_its_own_and_the_store_holds_only_events(db):
    append_and_project(db, [news("a1", "2025", ("x", "y")), news("a2", "2026", ("x",))])
    assert _tables(db) <= set(STORE_TABLES)
    for p in default_projections():
        tables = _tables(projection_path(db, p.name))
        assert "projection_checkpoints" in tables
        assert not tables & {"events", "event_meta", "event_entities", "event_chain"}, p.name
        assert {t for t in tables if not t.startswith("projection_")} == {
            t for t in tables if any(t.startswith(base) for base in p.schema)
        }, p.name


def test_an_append_does_not_wait_for_a_projection_batch_in_progress(db):
    append_and_project(db, [news("a1", "2025", ("x",))])
    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        conn = engine.connection("timelines")
        conn.execute("BEGIN IMMEDIATE")  # a projection batch holding its file's write lock
        try:
            store.conn.execute("PRAGMA busy_timeout = 0")  # waiting for a lock would fail at once
            (result,) = append(store, news("a2", "2026", ("x",)))
            assert result.status == "stored"
        finally:
            conn.execute("ROLLBACK")
            store.conn.execute("PRAGMA busy_timeout = 30000")
        # and a projection transaction reads the store as committed, through its attachment
        assert engine.catch_up() == 2


def test_a_projection_cannot_write_the_store_through_its_attachment(db):
    append_and_project(db, [news("a1", "2025", ("x",))])
    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            engine.connection("timelines").execute("DELETE FROM store.events")


def test_projections_catch_up_side_by_side_and_equal_one_by_one(tmp_path):
    events = [news(f"e{i:03d}", f"2025-01-{1 + i % 28:02d}", (f"ent-{i % 7}", f"other-{i % 5}")) for i in range(300)]
    together, alone = tmp_path / "together.db", tmp_path / "alone.db"
    for path, parallel in ((together, True), (alone, False)):
        with EventStore(path) as store:
            with ProjectionEngine(store, default_projections(), parallel=parallel) as engine:
                engine.setup()
            for i in range(0, len(events), 50):
                append(store, *events[i : i + 50])
            with ProjectionEngine(store, default_projections(), batch_size=40, parallel=parallel) as engine:
                threads = {t.name for t in threading.enumerate()}
                assert engine.catch_up() == 300
                engine.rebuild()
                assert parallel == any(t.name.startswith("projection") for t in threading.enumerate() if t.name not in threads)
    assert dump_tables(together) == dump_tables(alone)


def test_a_store_from_before_the_move_drops_its_projection_tables_and_they_are_rebuilt(db):
    append_and_project(db, [news("a1", "2025", ("x",)), news("a2", "2026", ("x", "y"))])
    expected = dump_tables(db)
    # As the code before the move left it: the projections' tables and checkpoints in the store.
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE projection_checkpoints (name TEXT PRIMARY KEY, version INTEGER NOT NULL);
        CREATE TABLE tl_events_v4 (valid_from INTEGER PRIMARY KEY, body TEXT);
        CREATE VIRTUAL TABLE tl_search_v1 USING fts5(headline, summary, content='');
        DELETE FROM _migrations WHERE name = '0007_projections_move_out';
        """
    )
    conn.close()
    for p in default_projections():
        for suffix in ("", "-wal", "-shm"):
            path = projection_path(db, p.name)
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    assert "tl_search_v1_data" in _tables(db)

    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        assert _tables(db) <= set(STORE_TABLES)  # migrated on open; the events are all there
        assert store.head() == 2
        assert sorted(engine.setup()) == sorted(p.name for p in default_projections())  # never built
        engine.rebuild(engine.setup())
    project(db)
    assert dump_tables(db) == expected
    queries = Queries(str(db))
    try:
        assert ids(queries.timeline("x", TimelineQuery())) == ["a1", "a2"]
    finally:
        queries.close()


def test_closing_the_readers_closes_every_threads_connection_and_a_clean_stop_leaves_no_wal(db):
    append_and_project(db, [news("a1", "2025", ("x",))])
    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        engine.setup()
        queries = Queries(str(db))
        readers = [threading.Thread(target=queries.timeline, args=("x", TimelineQuery())) for _ in range(3)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        assert ids(queries.timeline("x", TimelineQuery())) == ["a1"]
        assert len(queries._open) == 4  # one per thread that read
        queries.close()
        assert queries._open == []
        assert ids(queries.timeline("x", TimelineQuery())) == ["a1"]  # a read after close opens again
        queries.close()
    leftovers = [p.name for p in projection_path(db, "timelines").parent.iterdir() if not p.name.endswith(".db")]
    assert leftovers == []  # the last connection to each file checkpointed and removed its WAL
    assert not db.with_name(db.name + "-wal").exists()


def _page_size(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()


def test_a_new_projection_file_gets_the_projections_page_size_and_an_old_one_keeps_its_own(db):
    append_and_project(db, [news("a1", "2025", ("x", "y"))])
    assert _page_size(db) == 4096  # the store's is SQLite's default
    for p in default_projections():
        assert _page_size(projection_path(db, p.name)) == PROJECTION_PAGE_SIZE != 4096, p.name
    # a file made with another page size (before the setting) is used as it is, rebuilt included
    old = projection_path(db, "timelines")
    for suffix in ("", "-wal", "-shm"):
        old.with_name(old.name + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE placeholder (x)")
    conn.close()
    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        engine.setup()
        assert engine.catch_up() == 1
        engine.rebuild(["timelines"])
    assert _page_size(old) == 4096
    queries = Queries(db)
    try:
        assert ids(queries.timeline("x", TimelineQuery())) == ["a1"]
    finally:
        queries.close()
