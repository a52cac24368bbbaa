"""A read-only node's service (``TIMELINE_READ_ONLY``) on real SQLite files: it reads what a
writer stored and projected, SQLite refuses it any write (store and projection files alike), it
has no projection engine, and it refuses a store that is missing or not migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from projections.engine import projection_path
from timeline.service import ReadOnlyNode, TimelineService, prepare_here
from timeline.settings import Settings

from helpers import append_and_project, news, timeline_ids


def settings(db: Path, **over: object) -> Settings:
    return Settings(TIMELINE_DB=db, REDIS_URL="redis://127.0.0.1:1/0", **over)


def test_reads_what_the_writer_projected_and_cannot_write(db: Path) -> None:
    append_and_project(db, [news("a-1", "2025-05-01", ["acme"]), news("a-2", "2025-05-02", ["acme"])])
    service = TimelineService(settings(db, TIMELINE_READ_ONLY=True))
    try:
        assert service.read_only and service.engine is None
        assert timeline_ids(service.queries, "acme") == ["a-1", "a-2"]
        conn = service.queries.store.conn
        with service.queries.snapshot():
            pass  # the projections' files are attached now
        for sql in ("CREATE TABLE x (y)", "INSERT INTO _migrations VALUES ('x', 'y')",
                    "UPDATE p_timelines.projection_checkpoints SET position = 0"):
            with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
                conn.execute(sql)
        with pytest.raises(ReadOnlyNode, match="read-only node"):
            service.writer()
        with pytest.raises(ReadOnlyNode, match="read-only node"):
            service.project()
        with pytest.raises(ReadOnlyNode, match="read-only node"):
            service.append(prepare_here([(b"1-0", {b"event": b'{"kind": "report"}'})]))
    finally:
        service.close()
    # a writer goes on: the read-only node's connections held nothing that stops it
    append_and_project(db, [news("a-3", "2025-05-03", ["acme"])])
    service = TimelineService(settings(db, TIMELINE_READ_ONLY=True))
    try:
        assert timeline_ids(service.queries, "acme") == ["a-1", "a-2", "a-3"]
    finally:
        service.close()


def test_refuses_a_missing_store_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "none" / "timeline.db"
    with pytest.raises(ReadOnlyNode, match="no store at"):
        TimelineService(settings(db, TIMELINE_READ_ONLY=True))
    assert not db.parent.exists()


def test_refuses_a_store_not_migrated_to_its_version(db: Path) -> None:
    append_and_project(db, [news("a-1", "2025-05-01", ["acme"])])
    conn = sqlite3.connect(db, isolation_level=None)
    row = conn.execute("SELECT name, applied_at FROM _migrations WHERE name = '0009_erasures'").fetchone()
    conn.execute("DELETE FROM _migrations WHERE name = '0009_erasures'")  # as if not migrated yet
    with pytest.raises(ReadOnlyNode, match="lacks migrations 0009_erasures"):
        TimelineService(settings(db, TIMELINE_READ_ONLY=True))
    assert conn.execute("SELECT count(*) FROM _migrations WHERE name = '0009_erasures'").fetchone() == (0,)
    conn.execute("INSERT INTO _migrations VALUES (?, ?)", row)  # migrated
    conn.close()
    TimelineService(settings(db, TIMELINE_READ_ONLY=True)).close()


def test_a_writer_service_still_writes(db: Path) -> None:
    service = TimelineService(settings(db))
    try:
        assert not service.read_only and service.engine is not None
        assert projection_path(db, "timelines").exists()
    finally:
        service.close()


def test_on_postgresql_a_read_only_node_waits_for_the_writer_then_reads_and_cannot_write(
    pg_db: str, tmp_path: Path
) -> None:
    import io
    import json

    import psycopg

    from timeline.importer import import_events

    with pytest.raises(ReadOnlyNode, match="lacks migrations 0001_store"):  # nothing migrated the schema yet
        TimelineService(settings(pg_db, TIMELINE_READ_ONLY=True))
    writer = TimelineService(settings(pg_db))
    try:
        line = json.dumps(news("pg-ro-1", "2025-01", ["acme"])).encode()
        import_events(writer, io.BytesIO(line + b"\n"), tmp_path / "rejects.jsonl", workers=0)
        reader = TimelineService(settings(pg_db, TIMELINE_READ_ONLY=True))
        try:
            assert timeline_ids(reader.queries, "acme") == ["pg-ro-1"]
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                reader.store.conn.raw.execute("CREATE TABLE written_by_a_reader (x int)")
        finally:
            reader.close()
    finally:
        writer.close()
