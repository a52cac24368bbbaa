"""The store's schema on a real PostgreSQL (events.pg.migrations): the same tables and columns as
on SQLite, migrations recorded once (also when two processes start together), and the
append-only triggers, erasure's one exception included."""

from __future__ import annotations

import sqlite3
import threading

import psycopg
import pytest

from events.migrations import STORE_TABLES as SQLITE_STORE_TABLES
from events.migrations import migrate as migrate_sqlite
from events.pg.connect import advisory_key, connect, current_schema, is_postgres
from events.pg.migrations import MIGRATIONS, STORE_TABLES, migrate


def _insert_event(conn: psycopg.Connection, position: int) -> None:
    conn.execute(
        "INSERT INTO events VALUES (%s, %s, 'report', NULL, 'h', '2025-05-24T00:00:00.000000Z', %s, '{}')",
        (position, f"e{position}", b"{}"),
    )
    conn.execute("INSERT INTO event_chain VALUES (%s, 'x')", (position,))
    conn.execute(
        "INSERT INTO event_meta VALUES (%s, %s, 'report', 'r', '2025', NULL, 's', 'e', 1)", (position, f"e{position}")
    )
    conn.execute("INSERT INTO event_entities VALUES (%s, 'x', 'X', 'organization', 'subject')", (position,))


def test_is_postgres_tells_a_url_from_a_path():
    assert is_postgres("postgresql://root@127.0.0.1/test")
    assert is_postgres("postgres://h/db")
    assert is_postgres("PostgreSQL://h/db")
    assert not is_postgres("data/timeline.db")
    assert not is_postgres("/var/lib/postgresql/timeline.db")


def test_the_same_tables_and_columns_as_on_sqlite(pg_db, tmp_path):
    sqlite = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    migrate_sqlite(sqlite)
    with connect(pg_db) as conn:
        assert migrate(conn) == [name for name, _ in MIGRATIONS]
        assert set(STORE_TABLES) == set(SQLITE_STORE_TABLES)
        for table in STORE_TABLES:
            sqlite_columns = [row[1] for row in sqlite.execute(f"PRAGMA table_info({table})")]
            pg_columns = [row[0] for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = %s ORDER BY ordinal_position", (table,))]
            assert pg_columns == sqlite_columns, table
        # the projections' checkpoint table is in the store's schema (projections.pg reads it)
        assert conn.execute("SELECT count(*) FROM projection_checkpoints").fetchone() == (0,)


def test_migrations_are_recorded_and_run_once(pg_db):
    with connect(pg_db) as conn:
        migrate(conn)
        rows = conn.execute("SELECT name FROM _migrations ORDER BY applied_at").fetchall()
        assert [r[0] for r in rows] == [name for name, _ in MIGRATIONS]
        assert migrate(conn) == []
        assert conn.execute("SELECT count(*) FROM _migrations").fetchone() == (len(MIGRATIONS),)


def test_two_processes_starting_together_migrate_once(pg_db):
    """Many connections migrate the same empty schema at once: each migration runs once (the
    advisory lock), none fails on a table another created."""
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            with connect(pg_db) as conn:
                barrier.wait()
                results.append(migrate(conn))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = [name for names in results for name in names]
    assert sorted(applied) == sorted(name for name, _ in MIGRATIONS)


def test_schemas_are_separate_stores(pg_url):
    from pg_support import drop_schema, fresh_schema

    a, b = fresh_schema(pg_url), fresh_schema(pg_url)
    try:
        with connect(a) as ca, connect(b) as cb:
            migrate(ca)
            migrate(cb)
            _insert_event(ca, 1)
            assert cb.execute("SELECT count(*) FROM events").fetchone() == (0,)
            assert advisory_key(current_schema(ca), "append") != advisory_key(current_schema(cb), "append")
    finally:
        drop_schema(a)
        drop_schema(b)


@pytest.mark.parametrize("table", ["events", "event_meta", "event_entities", "event_chain"])
def test_update_delete_and_truncate_are_refused(pg_db, table):
    with connect(pg_db) as conn:
        migrate(conn)
        _insert_event(conn, 1)
        for statement in (
            f"UPDATE {table} SET position = position",
            f"DELETE FROM {table}",
            f"TRUNCATE {table} CASCADE",
        ):
            with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
                conn.execute(statement)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)


def test_erasure_tables_refuse_change(pg_db):
    with connect(pg_db) as conn:
        migrate(conn)
        conn.execute("INSERT INTO erasures VALUES (1, 'e1', 1, 'now', 'r', 'w', '[]', 'h')")
        conn.execute("INSERT INTO erased_events VALUES (1, 1, 'a', 'b')")
        for table in ("erasures", "erased_events"):
            for statement in (f"UPDATE {table} SET position = position", f"DELETE FROM {table}", f"TRUNCATE {table}"):
                with pytest.raises(psycopg.errors.RestrictViolation, match="erasures are append-only"):
                    conn.execute(statement)


def test_only_an_erased_event_may_be_blanked_and_only_blanked(pg_db):
    with connect(pg_db) as conn:
        migrate(conn)
        _insert_event(conn, 1)
        _insert_event(conn, 2)
        with pytest.raises(psycopg.errors.RestrictViolation):  # not listed as erased
            conn.execute("UPDATE events SET raw = ''::bytea, body = '' WHERE position = 1")
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("DELETE FROM event_meta WHERE position = 1")
        with conn.transaction():
            conn.execute("INSERT INTO erased_events VALUES (1, 1, 'a', 'b')")
            with pytest.raises(psycopg.errors.RestrictViolation):  # listed, but more than blanked
                with conn.transaction():
                    conn.execute("UPDATE events SET raw = ''::bytea, body = '', kind = 'x' WHERE position = 1")
            conn.execute("UPDATE events SET raw = ''::bytea, body = '' WHERE position = 1")
            conn.execute("DELETE FROM event_meta WHERE position = 1")
            conn.execute("DELETE FROM event_entities WHERE position = 1")
        assert conn.execute("SELECT position, body FROM events ORDER BY position").fetchall() == [(1, ""), (2, "{}")]
        assert conn.execute("SELECT position FROM event_meta").fetchall() == [(2,)]
        with pytest.raises(psycopg.errors.RestrictViolation):  # the other event stays untouchable
            conn.execute("DELETE FROM event_entities WHERE position = 2")


def test_a_session_cannot_point_the_erasure_guard_at_its_own_list(pg_db):
    """The guards read the store's ``erased_events``, whatever the session's search_path: a table
    of that name in another schema placed first does not let an event be blanked."""
    with connect(pg_db) as conn:
        migrate(conn)
        _insert_event(conn, 1)
        schema = current_schema(conn)
        conn.execute('CREATE SCHEMA "evil_' + schema + '"')
        try:
            conn.execute(f'CREATE TABLE "evil_{schema}".erased_events (position BIGINT)')
            conn.execute(f'INSERT INTO "evil_{schema}".erased_events VALUES (1)')
            conn.execute(f'SET search_path = "evil_{schema}", "{schema}"')
            with pytest.raises(psycopg.errors.RestrictViolation):
                conn.execute("UPDATE events SET raw = ''::bytea, body = '' WHERE position = 1")
            with pytest.raises(psycopg.errors.RestrictViolation):
                conn.execute("DELETE FROM event_meta WHERE position = 1")
        finally:
            conn.execute(f'DROP SCHEMA "evil_{schema}" CASCADE')
