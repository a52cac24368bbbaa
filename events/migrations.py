"""Recorded schema migrations for the SQLite file.

Each migration has a name and runs once, inside a transaction with the row that records it in
``_migrations``; a file opened by an older version of the code is brought forward on open.
Projections keep their own files, tables and versions (see ``projections.engine``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone

Migration = tuple[str, Callable[[sqlite3.Connection], None]]


def _run(conn: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: ``executescript`` would commit the open transaction."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""


def _events_table(conn: sqlite3.Connection) -> None:
    _run(
        conn,
        """
        CREATE TABLE events (
            position     INTEGER PRIMARY KEY,   -- the global, gap-free store position
            event_id     TEXT NOT NULL UNIQUE,
            kind         TEXT NOT NULL,
            target_id    TEXT,                  -- what a correction or retraction is about
            content_hash TEXT NOT NULL,         -- sha256 of the canonical JSON without "id"
            recorded_at  TEXT NOT NULL,         -- UTC, fixed width, never decreasing
            raw          BLOB NOT NULL,         -- the event exactly as received
            body         TEXT NOT NULL          -- normalised JSON that projections read
        );
        CREATE INDEX events_target ON events(target_id) WHERE target_id IS NOT NULL;
        CREATE INDEX events_recorded_at ON events(recorded_at);
        CREATE INDEX events_aliases ON events(position) WHERE kind = 'entity_alias';
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is refused'); END;
        """
    )


def _projection_checkpoints(conn: sqlite3.Connection) -> None:
    _run(
        conn,
        """
        CREATE TABLE projection_checkpoints (
            name        TEXT PRIMARY KEY,
            version     INTEGER NOT NULL,  -- the version of the live tables
            position    INTEGER NOT NULL DEFAULT 0,
            state       TEXT NOT NULL DEFAULT 'live',
            tables_tag  TEXT NOT NULL DEFAULT '',
            updated_at  TEXT NOT NULL
        );
        """
    )


def _rebuild_columns(conn: sqlite3.Connection) -> None:
    """Rebuilds beside the live tables: which tables, how far, and a heartbeat."""
    _run(
        conn,
        """
        ALTER TABLE projection_checkpoints ADD COLUMN rebuild_tag TEXT;
        ALTER TABLE projection_checkpoints ADD COLUMN rebuild_version INTEGER;
        ALTER TABLE projection_checkpoints ADD COLUMN rebuild_position INTEGER;
        ALTER TABLE projection_checkpoints ADD COLUMN rebuild_started TEXT;
        ALTER TABLE projection_checkpoints ADD COLUMN rebuild_beat REAL;
        """,
    )


def _rebuild_owner(conn: sqlite3.Connection) -> None:
    """Which process runs a rebuild (``host:pid``), so that a dead one is known at once."""
    conn.execute("ALTER TABLE projection_checkpoints ADD COLUMN rebuild_owner TEXT")


def _event_facts(conn: sqlite3.Connection) -> None:
    """Per-event rows that projections read by position range without parsing JSON.

    Written by the store in the transaction that appends the event, append-only like
    ``events``; existing events are filled in here from their bodies.
    """
    from .models import NEWS_KINDS
    from .store import register_functions

    register_functions(conn)  # partial_start / partial_end: the same code as the append path
    news = ", ".join(f"'{k}'" for k in NEWS_KINDS)
    _run(
        conn,
        """
        CREATE TABLE event_meta (
            position    INTEGER PRIMARY KEY,   -- = events.position
            event_id    TEXT NOT NULL,
            kind        TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            occurred_at TEXT NOT NULL,         -- as written
            ended_at    TEXT,
            start_key   TEXT NOT NULL,         -- start of occurred_at's interval
            end_key     TEXT NOT NULL,         -- end of ended_at's interval, or of occurred_at's
            plain       INTEGER NOT NULL       -- 1: a news event that no correction or retraction
                                               -- stored before it was waiting for
        );
        CREATE TABLE event_entities (          -- the entities of news events, as stored
            position  INTEGER NOT NULL,
            entity_id TEXT NOT NULL,
            name      TEXT NOT NULL,
            type      TEXT NOT NULL,
            role      TEXT NOT NULL,
            PRIMARY KEY (position, entity_id)
        ) WITHOUT ROWID;
        CREATE TRIGGER event_meta_no_update BEFORE UPDATE ON event_meta
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused'); END;
        CREATE TRIGGER event_meta_no_delete BEFORE DELETE ON event_meta
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is refused'); END;
        CREATE TRIGGER event_entities_no_update BEFORE UPDATE ON event_entities
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused'); END;
        CREATE TRIGGER event_entities_no_delete BEFORE DELETE ON event_entities
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is refused'); END;
        """,
    )
    conn.execute(
        f"""INSERT INTO event_meta
            SELECT position, event_id, kind, recorded_at, body ->> 'occurred_at', body ->> 'ended_at',
                   partial_start(body ->> 'occurred_at'),
                   partial_end(coalesce(body ->> 'ended_at', body ->> 'occurred_at')),
                   kind IN ({news}) AND NOT EXISTS (
                       SELECT 1 FROM events c WHERE c.target_id = e.event_id AND c.position < e.position)
            FROM events e ORDER BY position"""
    )
    conn.execute(
        f"""INSERT INTO event_entities
            SELECT e.position, j.value ->> 'id', j.value ->> 'name', j.value ->> 'type', j.value ->> 'role'
            FROM events e, json_each(e.body, '$.entities') j
            WHERE e.kind IN ({news}) ORDER BY e.position"""
    )


def _event_chain(conn: sqlite3.Connection) -> None:
    """A hash per event, chained to the previous one (events.integrity), for `timeline verify`."""
    from .integrity import GENESIS, ROW_COLUMNS, link

    _run(
        conn,
        """
        CREATE TABLE event_chain (
            position INTEGER PRIMARY KEY,  -- = events.position
            hash     TEXT NOT NULL         -- sha256 over the previous hash and this event's row
        );
        CREATE TRIGGER event_chain_no_update BEFORE UPDATE ON event_chain
        BEGIN SELECT RAISE(ABORT, 'the hash chain is append-only: UPDATE is refused'); END;
        CREATE TRIGGER event_chain_no_delete BEFORE DELETE ON event_chain
        BEGIN SELECT RAISE(ABORT, 'the hash chain is append-only: DELETE is refused'); END;
        """,
    )
    previous = GENESIS
    cursor = conn.execute(f"SELECT {ROW_COLUMNS} FROM events ORDER BY position")
    while rows := cursor.fetchmany(5000):
        chained = []
        for row in rows:
            previous = link(previous, row)
            chained.append((row[0], previous))
        conn.executemany("INSERT INTO event_chain (position, hash) VALUES (?, ?)", chained)


def _event_states(conn: sqlite3.Connection) -> None:
    """Each correction's or retraction's outcome and the state of its news event once applied
    (events.history): the next one starts from there instead of folding every earlier one
    again. Written by the store in the transaction that appends the editorial event (or, for
    those that waited for their target, the target); append-only like ``events``, and derived
    from it: ``timeline verify`` folds again from scratch and compares. Existing events are
    filled in here."""
    from .history import EventState, advance, state_row
    from .models import NEWS_KINDS
    from .store import EventStore

    _run(
        conn,
        """
        CREATE TABLE event_states (
            position  INTEGER PRIMARY KEY,  -- = events.position of the correction or retraction
            target_id TEXT NOT NULL,        -- the news event it applies to
            applied   INTEGER NOT NULL,     -- 0: a correction that would break the event, not applied
            error     TEXT,                 -- why it was not applied
            status    TEXT NOT NULL,        -- the news event's status once this is applied
            corrected INTEGER NOT NULL,     -- 1: a correction has been applied to it by then
            entities_at INTEGER NOT NULL,   -- the latest applied correction that set its entities (or 0)
            body      TEXT NOT NULL         -- its body once this is applied (JSON)
        );
        CREATE INDEX event_states_target ON event_states(target_id, position);
        CREATE TRIGGER event_states_no_update BEFORE UPDATE ON event_states
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused'); END;
        CREATE TRIGGER event_states_no_delete BEFORE DELETE ON event_states
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is refused'); END;
        """,
    )
    store = EventStore.over(conn)
    targets = [row[0] for row in conn.execute("SELECT DISTINCT target_id FROM events WHERE target_id IS NOT NULL")]
    for target_id in targets:
        target = store.get(target_id)
        if target is None or target.kind not in NEWS_KINDS:
            continue
        state = EventState(target.body, "active")
        rows = [state_row(item.position, target_id, state, advance(target.kind, state, item))
                for item in store.editorial_for(target_id)]
        conn.executemany(f"INSERT INTO event_states VALUES ({','.join('?' * 8)})", rows)


def _erasures(conn: sqlite3.Connection) -> None:
    """Erasure (events.erasure, docs/erasure.md): the audited record of each erasure, the digests
    that keep an erased event's chain link verifiable, and append-only triggers that allow exactly
    one change: blanking the content of an event listed in ``erased_events`` (and removing its rows
    derived from that content)."""
    _run(
        conn,
        """
        CREATE TABLE erasures (
            seq         INTEGER PRIMARY KEY,   -- 1, 2, ...: the order of erasures
            event_id    TEXT NOT NULL,         -- the event named by the erasure
            position    INTEGER NOT NULL,      -- its store position
            erased_at   TEXT NOT NULL,         -- UTC instant
            reason      TEXT NOT NULL,
            who         TEXT NOT NULL,         -- the OS user (CLI) or the API token's name
            erased_with TEXT NOT NULL,         -- JSON list: the corrections and retraction erased with it
            hash        TEXT NOT NULL          -- chained to the previous erasure and to the event's link
        );
        CREATE TABLE erased_events (
            position    INTEGER PRIMARY KEY,   -- = events.position of a blanked event
            erasure     INTEGER NOT NULL,      -- = erasures.seq
            raw_sha256  TEXT NOT NULL,         -- the digests its chain link was computed over
            body_sha256 TEXT NOT NULL
        );
        CREATE TRIGGER erasures_no_update BEFORE UPDATE ON erasures
        BEGIN SELECT RAISE(ABORT, 'erasures are append-only: UPDATE is refused'); END;
        CREATE TRIGGER erasures_no_delete BEFORE DELETE ON erasures
        BEGIN SELECT RAISE(ABORT, 'erasures are append-only: DELETE is refused'); END;
        CREATE TRIGGER erased_events_no_update BEFORE UPDATE ON erased_events
        BEGIN SELECT RAISE(ABORT, 'erasures are append-only: UPDATE is refused'); END;
        CREATE TRIGGER erased_events_no_delete BEFORE DELETE ON erased_events
        BEGIN SELECT RAISE(ABORT, 'erasures are append-only: DELETE is refused'); END;
        DROP TRIGGER events_no_update;
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        WHEN NOT (OLD.position IN (SELECT position FROM erased_events)
                  AND NEW.position IS OLD.position AND NEW.event_id IS OLD.event_id AND NEW.kind IS OLD.kind
                  AND NEW.target_id IS OLD.target_id AND NEW.content_hash IS OLD.content_hash
                  AND NEW.recorded_at IS OLD.recorded_at AND NEW.raw = X'' AND NEW.body = '')
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused (but blanking an erased event)'); END;
        """,
    )
    for table in ("event_meta", "event_entities", "event_states"):
        conn.execute(f"DROP TRIGGER {table}_no_delete")
        conn.execute(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}\n"
            "        WHEN OLD.position NOT IN (SELECT position FROM erased_events)\n"
            "        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is refused (but an erased event''s rows)'); END"
        )


STORE_TABLES = (
    "events", "event_meta", "event_entities", "event_chain", "event_states", "erasures", "erased_events", "_migrations",
)


def _projections_move_out(conn: sqlite3.Connection) -> None:
    """Projections live in files of their own now (``projections.engine.projection_path``): drop
    their tables and checkpoints from the store. They are rebuilt from the events (a
    projection file that does not exist yet is set up as never built, and rebuilt)."""
    keep = ", ".join(f"'{name}'" for name in STORE_TABLES)
    tables = conn.execute(
        f"SELECT name, sql LIKE 'CREATE VIRTUAL%' FROM sqlite_master WHERE type = 'table'"
        f" AND name NOT IN ({keep}) AND name NOT LIKE 'sqlite_%' ORDER BY 2 DESC"
    ).fetchall()
    for name, _virtual in tables:  # virtual tables first: they drop their own shadow tables
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')


MIGRATIONS: list[Migration] = [
    ("0001_events", _events_table),
    ("0002_projection_checkpoints", _projection_checkpoints),
    ("0003_rebuild_columns", _rebuild_columns),
    ("0004_rebuild_owner", _rebuild_owner),
    ("0005_event_facts", _event_facts),
    ("0006_event_chain", _event_chain),
    ("0007_projections_move_out", _projections_move_out),
    ("0008_event_states", _event_states),
    ("0009_erasures", _erasures),
]


def pending(conn: sqlite3.Connection, migrations: list[Migration] = MIGRATIONS) -> list[str]:
    """The migrations this file has not seen yet, read without writing (a read-only node's check:
    it serves a store only once the writer of its version has brought the store forward)."""
    known = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone()
    applied = {row[0] for row in conn.execute("SELECT name FROM _migrations")} if known else set()
    return [name for name, _ in migrations if name not in applied]


def migrate(conn: sqlite3.Connection, migrations: list[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations this file has not seen yet; return their names."""
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied: list[str] = []
    for name, step in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("COMMIT")
                continue
            step(conn)
            conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                (name, datetime.now(timezone.utc).isoformat()),
            )
            conn.execute("COMMIT")
            applied.append(name)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return applied
