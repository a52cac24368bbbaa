"""Recorded schema migrations of the store on PostgreSQL (the counterpart of events.migrations).

The tables and columns are those of the SQLite store, with PostgreSQL's types (INTEGER ->
BIGINT, BLOB -> BYTEA, 0/1 flags as SMALLINT), so that code reading them by name reads either.
Append-only is enforced the same way, by triggers: UPDATE and DELETE are refused row by row
and, because PostgreSQL's TRUNCATE fires no row trigger, TRUNCATE is refused per statement. The
one change allowed is erasure's (events.erasure): blanking the content of an event listed in
``erased_events`` and removing its derived rows.

Each migration runs once, in a transaction with the row that records it in ``_migrations``,
under a transaction-scoped advisory lock of the schema: nodes starting together migrate once.
"""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg

from .connect import advisory_key, current_schema

#: the trigger functions: one refusal for every append-only table, and erasure's two exceptions.
#: Each runs with the search_path it was created with (the store's schema): a session whose own
#: search_path puts another ``erased_events`` first cannot make a guard read that one.
_FUNCTIONS = """
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    RAISE EXCEPTION '% are append-only: % is refused', TG_ARGV[0], TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE FUNCTION events_guard_update() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM erased_events x WHERE x.position = OLD.position)
       AND NEW.position = OLD.position AND NEW.event_id = OLD.event_id AND NEW.kind = OLD.kind
       AND NEW.target_id IS NOT DISTINCT FROM OLD.target_id AND NEW.content_hash = OLD.content_hash
       AND NEW.recorded_at = OLD.recorded_at AND NEW.raw = ''::bytea AND NEW.body = '' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'events are append-only: UPDATE is refused (but blanking an erased event)'
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE FUNCTION erased_rows_only() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM erased_events x WHERE x.position = OLD.position) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'events are append-only: DELETE is refused (but an erased event''s rows)'
        USING ERRCODE = 'restrict_violation';
END $$;
"""

_TABLES = """
CREATE TABLE events (
    position     BIGINT PRIMARY KEY,    -- the global, gap-free store position
    event_id     TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    target_id    TEXT,                  -- what a correction or retraction is about
    content_hash TEXT NOT NULL,         -- sha256 of the canonical JSON without "id"
    recorded_at  TEXT NOT NULL,         -- UTC, fixed width, never decreasing
    raw          BYTEA NOT NULL,        -- the event exactly as received
    body         TEXT NOT NULL          -- normalised JSON that projections read (text: the chain hashes it)
);
CREATE INDEX events_target ON events (target_id) WHERE target_id IS NOT NULL;
CREATE INDEX events_recorded_at ON events (recorded_at);
CREATE INDEX events_aliases ON events (position) WHERE kind = 'entity_alias';

CREATE TABLE event_meta (
    position    BIGINT PRIMARY KEY,     -- = events.position
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    occurred_at TEXT NOT NULL,          -- as written
    ended_at    TEXT,
    start_key   TEXT NOT NULL,          -- start of occurred_at's interval
    end_key     TEXT NOT NULL,          -- end of ended_at's interval, or of occurred_at's
    plain       SMALLINT NOT NULL       -- 1: a news event that no correction or retraction
                                        -- stored before it was waiting for
);
CREATE TABLE event_entities (           -- the entities of news events, as stored
    position  BIGINT NOT NULL,
    entity_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    type      TEXT NOT NULL,
    role      TEXT NOT NULL,
    PRIMARY KEY (position, entity_id)
);
CREATE TABLE event_chain (
    position BIGINT PRIMARY KEY,        -- = events.position
    hash     TEXT NOT NULL              -- sha256 over the previous hash and this event's row
);
CREATE TABLE event_states (
    position    BIGINT PRIMARY KEY,     -- = events.position of the correction or retraction
    target_id   TEXT NOT NULL,          -- the news event it applies to
    applied     SMALLINT NOT NULL,      -- 0: a correction that would break the event, not applied
    error       TEXT,                   -- why it was not applied
    status      TEXT NOT NULL,          -- the news event's status once this is applied
    corrected   SMALLINT NOT NULL,      -- 1: a correction has been applied to it by then
    entities_at BIGINT NOT NULL,        -- the latest applied correction that set its entities (or 0)
    body        TEXT NOT NULL           -- its body once this is applied (JSON)
);
CREATE INDEX event_states_target ON event_states (target_id, position);
CREATE TABLE erasures (
    seq         BIGINT PRIMARY KEY,     -- 1, 2, ...: the order of erasures
    event_id    TEXT NOT NULL,          -- the event named by the erasure
    position    BIGINT NOT NULL,        -- its store position
    erased_at   TEXT NOT NULL,          -- UTC instant
    reason      TEXT NOT NULL,
    who         TEXT NOT NULL,          -- the OS user (CLI) or the API token's name
    erased_with TEXT NOT NULL,          -- JSON list: the corrections and retraction erased with it
    hash        TEXT NOT NULL           -- chained to the previous erasure and to the event's link
);
CREATE TABLE erased_events (
    position    BIGINT PRIMARY KEY,     -- = events.position of a blanked event
    erasure     BIGINT NOT NULL,        -- = erasures.seq
    raw_sha256  TEXT NOT NULL,          -- the digests its chain link was computed over
    body_sha256 TEXT NOT NULL
);
"""

#: (table, the noun of its refusal, how UPDATE and DELETE are guarded)
_GUARDS = (
    ("events", "events", "events_guard_update()", "refuse_change('events')"),
    ("event_meta", "events", "refuse_change('events')", "erased_rows_only()"),
    ("event_entities", "events", "refuse_change('events')", "erased_rows_only()"),
    ("event_states", "events", "refuse_change('events')", "erased_rows_only()"),
    ("event_chain", "the hash chain", "refuse_change('the hash chain')", "refuse_change('the hash chain')"),
    ("erasures", "erasures", "refuse_change('erasures')", "refuse_change('erasures')"),
    ("erased_events", "erasures", "refuse_change('erasures')", "refuse_change('erasures')"),
)


def _triggers() -> str:
    out = []
    for table, noun, on_update, on_delete in _GUARDS:
        out.append(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {on_update};\n"
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {on_delete};\n"
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION refuse_change('{noun}');\n"
        )
    return "".join(out)


#: the projections' checkpoints (projections.pg): in the store's schema, as the design names them
_CHECKPOINTS = """
CREATE TABLE projection_checkpoints (
    name             TEXT PRIMARY KEY,
    version          BIGINT NOT NULL,    -- the version of the live tables
    position         BIGINT NOT NULL DEFAULT 0,
    state            TEXT NOT NULL DEFAULT 'live',
    tables_tag       TEXT NOT NULL DEFAULT '',
    updated_at       TEXT NOT NULL,
    rebuild_tag      TEXT,
    rebuild_version  BIGINT,
    rebuild_position BIGINT,
    rebuild_started  TEXT,
    rebuild_beat     DOUBLE PRECISION,
    rebuild_owner    TEXT                -- host:pid of the process running the rebuild
);
"""

MIGRATIONS: list[tuple[str, str]] = [
    ("0001_store", _FUNCTIONS + _TABLES + _triggers()),
    ("0002_projection_checkpoints", _CHECKPOINTS),
]

#: the store's own tables (copied by ``timeline copy-store``, checked by ``timeline verify``)
STORE_TABLES = (
    "events", "event_meta", "event_entities", "event_chain", "event_states", "erasures", "erased_events", "_migrations",
)


def pending(conn: psycopg.Connection, migrations: list[tuple[str, str]] = MIGRATIONS) -> list[str]:
    """The migrations this schema has not seen yet, read without writing (a read-only node's
    check, as ``events.migrations.pending`` on SQLite)."""
    known = conn.execute("SELECT to_regclass('_migrations') IS NOT NULL").fetchone()[0]
    applied = {row[0] for row in conn.execute("SELECT name FROM _migrations")} if known else set()
    return [name for name, _ in migrations if name not in applied]


def migrate(conn: psycopg.Connection, migrations: list[tuple[str, str]] = MIGRATIONS) -> list[str]:
    """Apply the migrations this schema has not seen yet; return their names.

    ``conn`` is in autocommit mode (events.pg.connect): each step is its own transaction."""
    key = advisory_key(current_schema(conn), "migrate")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    applied: list[str] = []
    for name, script in migrations:
        if name in done:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            if conn.execute("SELECT 1 FROM _migrations WHERE name = %s", (name,)).fetchone():
                continue  # another process applied it while this one waited
            conn.execute(script)
            conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (%s, %s)",
                (name, datetime.now(timezone.utc).isoformat()),
            )
        applied.append(name)
    return applied
