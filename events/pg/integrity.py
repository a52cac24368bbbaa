"""``timeline verify`` on PostgreSQL: the checks of events.integrity, on a store in a schema.

The same report (events.integrity.Report) from the same checks where the SQL is common (the
chain over every event, the erasures' chain, each correction's fold from scratch), and
PostgreSQL's own where it is not:

- the schema: every column, constraint, index, trigger (and whether it is enabled: ``ALTER
  TABLE ... DISABLE TRIGGER`` leaves the definition as it was), rule and trigger function of the
  store's tables, compared with what the code's migrations create, made for the comparison in a
  scratch schema inside a transaction that is rolled back (nothing is left behind). A hot
  standby (a read replica) takes no write, not even that one: there the reference is the
  catalog the migrations create on the server's major version, shipped with the code
  (``catalogs/pgNN.json``, written by ``python -m events.pg.integrity URL`` and checked by
  tests/integration/test_pg_replica_verify.py against what the migrations create, so it
  cannot drift from them); a version without one is reported, not passed. Objects of other
  tables in the schema (the projections') are theirs to check;
- ``event_meta`` and ``event_entities``: derived again in Python from the chained events (the
  append path's own functions) and compared row for row, position by position;
- the projections' checkpoints in the schema, which must not be past the store's last event.

Everything is read in one REPEATABLE READ, READ ONLY transaction: one snapshot, written nothing.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from ..dates import parse_partial
from ..integrity import MAX_PROBLEMS, Report, _erasures, _events, _states, check_migrations
from ..models import NEWS_KINDS
from .connect import Qmark, connect, current_schema
from .migrations import MIGRATIONS, STORE_TABLES, migrate
from .store import PgEventStore, pg_text

WINDOW = 5000  # positions compared at a time
CATALOGS = Path(__file__).with_name("catalogs")  # pgNN.json: what the migrations create on PostgreSQL NN


class NoReference(Exception):
    """A hot standby of a PostgreSQL major version for which no catalog ships."""


def verify(url: str, head: str | None = None) -> Report:
    """Check the store in the schema ``url`` names. ``head``: a head hash printed by an earlier
    verify; the chain must still pass through it."""
    report = Report()
    with connect(url, application_name="timeline-verify") as raw:
        expected: dict[tuple[str, str], str] | None = None
        try:
            expected = expected_catalog(raw)
        except NoReference as exc:
            report.bad(None, str(exc), "the schema")
        with raw.transaction(force_rollback=True):
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            schema = current_schema(raw)
            if expected is not None:
                _check(raw, report, "the schema", lambda: _schema(raw, schema, expected, report))
            _check(raw, report, "_migrations", lambda: _migrations(raw, report))
            streaming = Qmark(raw, streaming=True)
            plain = Qmark(raw)
            _check(raw, report, "events", lambda: _events(streaming, report, head))  # type: ignore[arg-type]
            _check(raw, report, "event_meta", lambda: _derived(plain, report))
            _check(raw, report, "event_states", lambda: _state_rows(plain, report))
            _check(raw, report, "event_states", lambda: _fold(raw, report))
            _check(raw, report, "erasures", lambda: _erasures(plain, report, head))  # type: ignore[arg-type]
            _check(raw, report, "projection_checkpoints", lambda: _projections_beyond(raw, report))
    return report


def _check(raw: psycopg.Connection, report: Report, table: str, work: Callable[[], None]) -> None:
    """Run one check in a savepoint: a table that cannot be read is reported, the others still run."""
    try:
        with raw.transaction():
            work()
    except psycopg.Error as exc:
        report.bad(None, f"table {table} could not be read: {str(exc).strip()}", table)


# --- the schema ----------------------------------------------------------------------------


def expected_catalog(raw: psycopg.Connection) -> dict[tuple[str, str], str]:
    """What the code's migrations create: made in a scratch schema that is rolled back; on a hot
    standby, which refuses that write, the catalog shipped for its major version."""
    (standby,) = raw.execute("SELECT pg_is_in_recovery()").fetchone()  # type: ignore[misc]
    if standby:
        return shipped_catalog(server_major(raw))
    return built_catalog(raw)


def server_major(raw: psycopg.Connection) -> int:
    """The server's major version (16 for 16.2)."""
    return int(raw.info.server_version) // 10000


def shipped_catalog(major: int) -> dict[tuple[str, str], str]:
    """The catalog the migrations create on PostgreSQL ``major``, as shipped (``catalogs/``)."""
    path = CATALOGS / f"pg{major}.json"
    if not path.exists():
        shipped = sorted(p.stem for p in CATALOGS.glob("pg*.json")) if CATALOGS.is_dir() else []
        raise NoReference(
            f"the schema could not be compared: this is a read replica (a hot standby, which cannot build the"
            f" reference) of PostgreSQL {major}, and no catalog of it ships with this version"
            f" (shipped: {', '.join(shipped) or 'none'}): verify the primary")
    return {(kind, name): definition for kind, name, definition in json.loads(path.read_text())}


def built_catalog(raw: psycopg.Connection) -> dict[tuple[str, str], str]:
    """What the code's migrations create, made in a scratch schema that is rolled back."""
    scratch = f"timeline_verify_{uuid.uuid4().hex[:12]}"
    with raw.transaction(force_rollback=True):
        raw.execute(f'CREATE SCHEMA "{scratch}"')
        raw.execute(f'SET LOCAL search_path = "{scratch}"')
        migrate(raw)
        return catalog(raw, scratch)


def catalog(raw: psycopg.Connection, schema: str) -> dict[tuple[str, str], str]:
    """``{(kind, name): definition}`` of the store's tables and what hangs on them."""
    tables = list(STORE_TABLES)
    out: dict[tuple[str, str], str] = {}

    def unqualified(text: str) -> str:
        """The definition without the schema's name (qualified names, a function's search_path)."""
        for named in (f'"{schema}".', f"{schema}.", f"'{schema}'", f'"{schema}"'):
            text = text.replace(named, "" if named.endswith(".") else "<schema>")
        return " ".join(text.split())

    for table, columns in raw.execute(
        "SELECT table_name, string_agg(concat_ws(' ', column_name, data_type, is_nullable, column_default), ', '"
        " ORDER BY ordinal_position) FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = ANY(%s) GROUP BY table_name", (schema, tables)):
        out[("table", table)] = columns
    oids = [row[0] for row in raw.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind = 'r'", (schema, tables))]
    for name, definition in raw.execute(
        "SELECT conname, conrelid::regclass::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = ANY(%s)", (oids,)):
        out[("constraint", name)] = unqualified(definition)
    for name, definition in raw.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = ANY(%s)", (oids,)):
        out[("index", name)] = unqualified(definition)
    for name, definition, enabled in raw.execute(
        "SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger WHERE tgrelid = ANY(%s) AND NOT tgisinternal",
        (oids,)):
        state = {"O": "", "D": " [DISABLED]", "R": " [ENABLED REPLICA ONLY]", "A": " [ENABLED ALWAYS]"}
        out[("trigger", name)] = unqualified(definition) + state.get(enabled, f" [tgenabled {enabled}]")
    for name, definition in raw.execute(
        "SELECT rulename, definition FROM pg_rules WHERE schemaname = %s AND tablename = ANY(%s)", (schema, tables)):
        out[("rule", name)] = unqualified(definition)
    for name, definition in raw.execute(
        "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s AND p.proname IN (SELECT DISTINCT f.proname FROM pg_trigger t"
        " JOIN pg_proc f ON f.oid = t.tgfoid WHERE t.tgrelid = ANY(%s))", (schema, oids)):
        out[("function", name)] = unqualified(definition)
    return out


def _schema(raw: psycopg.Connection, schema: str, expected: dict[tuple[str, str], str], report: Report) -> None:
    actual = catalog(raw, schema)
    for (kind, name), definition in sorted(expected.items()):
        found = actual.get((kind, name))
        what = f" ({name} may no longer refuse a change)" if kind in ("trigger", "function") else ""
        if found is None:
            report.bad(None, f"{kind} {name} is missing{what}", name)
        elif found != definition:
            report.bad(None, f"{kind} {name} was changed: it is not the one the service creates{what};"
                             f" it now reads: {_short(found)}", name)
    for (kind, name), definition in sorted(actual.items()):
        if (kind, name) not in expected:
            report.bad(None, f"{kind} {name} was added behind the service's back: {_short(definition)}", name)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _migrations(raw: psycopg.Connection, report: Report) -> None:
    rows = raw.execute("SELECT ctid, name, applied_at FROM _migrations ORDER BY ctid").fetchall()
    check_migrations(rows, [name for name, _ in MIGRATIONS], report)


# --- what is derived from the events -------------------------------------------------------


def _facts(kind: str, body_text: str) -> tuple[tuple[str, str | None, str, str], set[tuple[str, str, str, str]]]:
    """An event's ``event_meta`` facts (occurred_at, ended_at, start_key, end_key) and entities,
    from its body, as the append path derives them (events.records.event_facts)."""
    body = json.loads(body_text)
    occurred_at, ended_at = body["occurred_at"], body.get("ended_at")
    entities: set[tuple[str, str, str, str]] = set()
    if kind in NEWS_KINDS:
        entities = {(e["id"], pg_text(e["name"]), e["type"], e["role"]) for e in body["entities"]}
    keys = (occurred_at, ended_at, parse_partial(occurred_at).start_key, parse_partial(ended_at or occurred_at).end_key)
    return keys, entities


def _derived(conn: Qmark, report: Report) -> None:
    """``event_meta`` and ``event_entities``, derived again from the events, window by window."""
    (last,) = conn.execute(
        "SELECT GREATEST((SELECT MAX(position) FROM events), (SELECT MAX(position) FROM event_meta),"
        " (SELECT MAX(position) FROM event_entities))").fetchone() or (None,)
    targeted: set[str] = set()  # the ids that a (not erased) event stored so far targets
    low = 0
    while last is not None and low < last and len(report.problems) < MAX_PROBLEMS:
        high = low + WINDOW
        events = conn.execute(
            "SELECT position, event_id, kind, target_id, recorded_at, body FROM events"
            " WHERE position > ? AND position <= ? ORDER BY position", (low, high)).fetchall()
        meta = {row[0]: tuple(row) for row in conn.execute(
            "SELECT * FROM event_meta WHERE position > ? AND position <= ?", (low, high))}
        entities: dict[int, set[tuple[str, str, str, str]]] = {}
        for position, *entity in conn.execute(
                "SELECT position, entity_id, name, type, role FROM event_entities WHERE position > ? AND position <= ?",
                (low, high)):
            entities.setdefault(position, set()).add(tuple(entity))  # type: ignore[arg-type]
        for position, event_id, kind, target_id, recorded_at, body in events:
            if body == "":  # erased: no derived rows
                expected_meta, expected_entities = None, set()
            else:
                try:
                    keys, expected_entities = _facts(kind, body)
                except (ValueError, KeyError, TypeError):  # the chain check names an edited body
                    keys, expected_entities = ("", None, "", ""), set()
                plain = int(kind in NEWS_KINDS and event_id not in targeted)
                expected_meta = (position, event_id, kind, recorded_at, keys[0], keys[1], keys[2], keys[3], plain)
                if target_id is not None:
                    targeted.add(target_id)
            found = meta.pop(position, None)
            if found != expected_meta:
                report.bad(position, f"event_meta: position {position}: the rows are not those its event gives"
                                     " (edited, removed, or planted where no event gives one)", "event_meta")
            if entities.pop(position, set()) != expected_entities:
                report.bad(position, f"event_entities: position {position}: the rows are not those its event gives"
                                     " (edited, removed, or planted where no event gives one)", "event_entities")
        for table, left in (("event_meta", meta), ("event_entities", entities)):
            for position in sorted(left):
                report.bad(position, f"{table}: position {position}: the rows are not those its event gives"
                                     " (planted where no event is)", table)
        low = high


def _state_rows(conn: Qmark, report: Report) -> None:
    """A row in ``event_states`` for each correction or retraction of a stored news event, and no other."""
    news = ", ".join(f"'{k}'" for k in NEWS_KINDS)
    given = (f"SELECT e.position, e.target_id FROM events e JOIN events t ON t.event_id = e.target_id"
             f" WHERE t.kind IN ({news}) AND e.body <> '' AND t.body <> ''")
    kept = "SELECT position, target_id FROM event_states"
    for (position,) in conn.execute(
            f"SELECT DISTINCT position FROM (({given} EXCEPT {kept}) UNION ({kept} EXCEPT {given})) AS d"
            f" ORDER BY 1 LIMIT {MAX_PROBLEMS}"):
        report.bad(position, f"event_states: position {position}: the rows are not those its event gives"
                             " (edited, removed, or planted where no event gives one)", "event_states")


def _fold(raw: psycopg.Connection, report: Report) -> None:

    store = PgEventStore.over(raw)
    _states(store.conn, report, None, store=store)  # type: ignore[arg-type]


def _projections_beyond(raw: psycopg.Connection, report: Report) -> None:
    """The projections in the schema that applied events past the store's last position: the last
    events were removed from the store (what the store alone cannot show)."""
    exists = raw.execute("SELECT to_regclass('projection_checkpoints') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return
    for name, position in raw.execute(
            "SELECT name, GREATEST(position, coalesce(rebuild_position, 0)) FROM projection_checkpoints ORDER BY name"):
        if position > report.head_position:
            report.bad(report.head_position + 1,
                       f"projection {name} has applied events up to position {position}, but the store ends at"
                       f" {report.head_position}: events were removed from its end", "events")




def write_catalog(url: str) -> Path:
    """Write ``catalogs/pgNN.json`` from what the migrations create on the server at ``url`` (one
    that takes writes): a new PostgreSQL major version, or after a migration changed."""
    with connect(url, application_name="timeline-verify") as raw:
        major, built = server_major(raw), built_catalog(raw)
    path = CATALOGS / f"pg{major}.json"
    rows = [[kind, name, definition] for (kind, name), definition in sorted(built.items())]
    path.write_text("[\n" + ",\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n]\n")
    return path


if __name__ == "__main__":  # python -m events.pg.integrity URL
    print(write_catalog(sys.argv[1]))
