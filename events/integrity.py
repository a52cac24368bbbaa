"""Tamper evidence: every stored event carries a hash chained to the one before it, and
everything else in the store is derived from the chained events or fixed by the code.

``link(previous, row)`` is the chain's one definition, used when appending and when verifying.
``verify`` reads the whole store (read-only) and names what differs from what the service writes:

- the schema: every table, index, trigger and view, compared by its whole definition with what
  the code's migrations create (a trigger made harmless by ``WHEN 0``, an index or trigger added,
  a table dropped or altered);
- ``_migrations``: the migrations the code has, each once, in order;
- ``events``: the chain re-computed over every row, positions without gaps (``event_chain``);
- ``event_meta``, ``event_entities``, ``event_states``: derived again from the chained events
  (the per-event facts, the entities of each news event, and each correction's fold from
  scratch) and compared row for row, so a row planted, edited or removed there is found;
- SQLite's own ``integrity_check`` (the indexes agree with their tables, the file is sound).

Each problem names its position or its table. What the file alone cannot show: the last events
removed from every table at once, or the whole chain re-computed by whoever rewrote history.
The head hash is printed so that an operator can keep it elsewhere; ``verify(head=...)`` then
checks that the chain still passes through it, which catches both.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

GENESIS = "0" * 64

ROW_COLUMNS = "position, event_id, kind, target_id, content_hash, recorded_at, raw, body"


def link(previous: str, row: tuple) -> str:
    """The hash of one stored event, chained to the previous event's hash."""
    position, event_id, kind, target_id, content_hash, recorded_at, raw, body = row
    return chain(previous, (position, event_id, kind, target_id, content_hash, recorded_at), *digests(raw, body))


def digests(raw: bytes | memoryview, body: str | bytes) -> tuple[bytes, bytes]:
    """The SHA-256 digests of an event's raw bytes and of its stored body: the chain's costly part,
    which needs no earlier event (the store computes it before taking the write lock)."""
    return (
        hashlib.sha256(bytes(raw)).digest(),
        hashlib.sha256(body.encode("utf-8") if isinstance(body, str) else bytes(body)).digest(),
    )


def chain(previous: str, fields: tuple, raw_digest: bytes, body_digest: bytes) -> str:
    """``link`` from the row's first six fields and the two digests."""
    position, event_id, kind, target_id, content_hash, recorded_at = fields
    # Each field followed by a unit separator, then the digests of the raw bytes and the body.
    text = "\x1f".join((previous, str(position), event_id, kind, target_id or "", content_hash, recorded_at))
    return hashlib.sha256(b"".join((text.encode("utf-8"), b"\x1f", raw_digest, body_digest))).hexdigest()


@dataclass
class Report:
    checked: int = 0
    head: str = GENESIS
    head_position: int = 0
    first_bad: int | None = None
    tables: set[str] = field(default_factory=set)  # the tables (or schema objects) found wrong
    problems: list[str] = field(default_factory=list)
    erasures: list[dict[str, Any]] = field(default_factory=list)  # each erasure, as recorded

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad(self, position: int | None, problem: str, table: str | None = None) -> None:
        if position is not None and (self.first_bad is None or position < self.first_bad):
            self.first_bad = position
        if table is not None:
            self.tables.add(table)
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("… more problems not listed")


MAX_PROBLEMS = 200


def verify(conn: sqlite3.Connection, head: str | None = None) -> Report:
    """Check the whole store through ``conn`` (best read-only: ``store.connect_read_only``).

    ``head``: a head hash printed by an earlier verify; the chain must still pass through it."""
    report = Report()
    conn.execute("BEGIN")  # one snapshot for every check
    try:
        _schema(conn, report)
        _migrations(conn, report)
        checks = ((_events, "events"), (_derived, "event_meta"), (_states, "event_states"), (_erasures, "erasures"))
        for check, table in checks:
            try:
                check(conn, report, head)
            except sqlite3.Error as exc:
                report.bad(None, f"table {table} could not be read: {exc}", table)
        _sqlite_integrity(conn, report)
    finally:
        conn.execute("ROLLBACK")
    return report


# --- the schema ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def expected_schema() -> dict[tuple[str, str], tuple[str, str | None]]:
    """``{(type, name): (table, sql)}`` of everything the code's migrations create in a store."""
    from .migrations import migrate
    from .store import register_functions

    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        register_functions(conn)
        migrate(conn)
        return _objects(conn)
    finally:
        conn.close()


def _objects(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {(kind, name): (table, sql) for kind, name, table, sql in conn.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_master")}


def _schema(conn: sqlite3.Connection, report: Report) -> None:
    expected, actual = expected_schema(), _objects(conn)
    for (kind, name), (table, sql) in sorted(expected.items()):
        found = actual.get((kind, name))
        what = _refusal(kind, sql)
        if found is None:
            report.bad(None, f"{kind} {name} is missing{what}", name)
        elif found != (table, sql):
            report.bad(None, f"{kind} {name} was changed: it is not the one the service creates{what};"
                             f" it now reads: {_short(found[1])}", name)
    for (kind, name), (_table, sql) in sorted(actual.items()):
        if (kind, name) not in expected:
            report.bad(None, f"{kind} {name} was added behind the service's back: {_short(sql)}", name)
    for pragma in ("user_version", "application_id"):  # the service sets neither
        (value,) = conn.execute(f"PRAGMA {pragma}").fetchone()
        if value != 0:
            report.bad(None, f"PRAGMA {pragma} is {value}: the service never sets it", pragma)


def _refusal(kind: str, sql: str | None) -> str:
    """For an append-only trigger: what it refuses (so the report says what is at stake)."""
    words = (sql or "").split()
    if kind == "trigger" and "RAISE(ABORT," in words and "ON" in words:
        return f" ({words[words.index('ON') - 1]} on {words[words.index('ON') + 1]} may no longer be refused)"
    return ""


def _short(sql: str | None, limit: int = 160) -> str:
    text = " ".join((sql or "(no SQL)").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _migrations(conn: sqlite3.Connection, report: Report) -> None:
    from .migrations import MIGRATIONS

    try:
        rows = conn.execute("SELECT rowid, name, applied_at FROM _migrations ORDER BY rowid").fetchall()
    except sqlite3.Error as exc:
        report.bad(None, f"table _migrations could not be read: {exc}", "_migrations")
        return
    check_migrations(rows, [name for name, _ in MIGRATIONS], report)


def check_migrations(rows: list[tuple[Any, str, str]], expected: list[str], report: Report) -> None:
    """``_migrations``' rows ``(order, name, applied_at)`` against the code's migrations: each once,
    in order, at instants that never go back."""
    names = [name for _, name, _ in rows]
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing:
        report.bad(None, f"_migrations: not applied: {', '.join(missing)} (a store written by an older"
                         " version is brought forward when the service opens it; or the rows were removed)",
                   "_migrations")
    if extra:
        report.bad(None, f"_migrations: rows the code does not know: {', '.join(extra)}", "_migrations")
    if not missing and not extra and names != expected:
        report.bad(None, "_migrations: the migrations are not recorded in the order they run", "_migrations")
    stamps = []
    for _, name, applied_at in rows:
        try:
            stamps.append(datetime.fromisoformat(applied_at))
        except (TypeError, ValueError):
            report.bad(None, f"_migrations: {name}: applied_at {applied_at!r} is not an instant", "_migrations")
    if stamps != sorted(stamps):
        report.bad(None, "_migrations: applied_at goes back in time", "_migrations")


def _sqlite_integrity(conn: sqlite3.Connection, report: Report) -> None:
    """SQLite's own check: every index agrees with its table, every page is sound."""
    messages = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
    if messages != ["ok"]:
        for message in messages:
            report.bad(None, f"SQLite integrity_check: {message}", "sqlite")


# --- the events and what is derived from them ----------------------------------------------


def _events(conn: sqlite3.Connection, report: Report, head: str | None) -> None:
    """The chain re-computed over every event, in position order, and the positions gap-free."""
    previous = GENESIS
    expected = 1
    found_head = head is None
    cursor = conn.execute(
        f"SELECT e.{ROW_COLUMNS.replace(', ', ', e.')}, c.hash, x.raw_sha256, x.body_sha256 FROM events e"
        " LEFT JOIN event_chain c ON c.position = e.position"
        " LEFT JOIN erased_events x ON x.position = e.position ORDER BY e.position"
    )
    while batch := cursor.fetchmany(5000):
        for row in batch:
            *fields, stored_hash, raw_sha, body_sha = row
            position = fields[0]
            if position != expected:
                report.bad(expected, f"position {expected}: the event is missing (removed?); the next is {position}",
                           "events")
            if raw_sha is None:
                computed = link(previous, tuple(fields))
            else:  # erased: its link was computed over the digests its erasure kept
                computed = chain(previous, tuple(fields[:6]), bytes.fromhex(raw_sha), bytes.fromhex(body_sha))
                if bytes(fields[6]) != b"" or fields[7] != "":
                    report.bad(position, f"position {position}: the event is listed as erased but its content is"
                                         " still stored (the erasure did not complete?)", "events")
            if stored_hash is None:
                report.bad(position, f"position {position}: no hash recorded for this event (added behind the"
                                     " service?)", "events")
            elif stored_hash != computed:
                report.bad(position, f"position {position}: the event does not match its hash (edited?)", "events")
            found_head = found_head or computed == head
            previous = stored_hash or computed
            report.checked += 1
            expected = position + 1
    report.head, report.head_position = previous, expected - 1
    for position, in conn.execute(
        "SELECT position FROM event_chain WHERE position NOT IN (SELECT position FROM events) ORDER BY position"
    ):
        report.bad(position, f"position {position}: a hash is recorded for an event that is gone (removed?)", "events")
    if not found_head:
        report.bad(None, f"the head hash kept from an earlier verify, {head}, is not in the chain: events up to"
                         " where it was taken were changed, or the last ones were removed", "events")


def _derived(conn: sqlite3.Connection, report: Report, _head: str | None) -> None:
    """``event_meta``, ``event_entities`` and which events have ``event_states`` rows, derived
    again from the chained events (the SQL the migrations fill them with: the same rules as the
    append path) and compared both ways: a row edited, removed or planted is named by position."""
    from .models import NEWS_KINDS

    news = ", ".join(f"'{k}'" for k in NEWS_KINDS)
    checks = {
        "event_meta": f"""
            SELECT d.position FROM (
                SELECT position, event_id, kind, recorded_at, body ->> 'occurred_at' AS o, body ->> 'ended_at' AS en,
                       kind IN ({news}) AND NOT EXISTS (
                           SELECT 1 FROM events c WHERE c.target_id = e.event_id AND c.position < e.position
                           AND c.body <> '') AS plain
                FROM events e WHERE e.body <> '') d
            LEFT JOIN event_meta m ON m.position = d.position
            WHERE m.position IS NULL
               OR (m.event_id, m.kind, m.recorded_at, m.occurred_at, m.plain) IS NOT (d.event_id, d.kind, d.recorded_at, d.o, d.plain)
               OR m.ended_at IS NOT d.en OR m.start_key IS NOT partial_start(d.o)
               OR m.end_key IS NOT partial_end(coalesce(d.en, d.o))
            UNION SELECT position FROM event_meta WHERE position NOT IN (SELECT position FROM events WHERE body <> '')""",
        # each entity of each news event has its row, and no position has more rows than that
        "event_entities": f"""
            SELECT e.position FROM events e, json_each(nullif(e.body, ''), '$.entities') j
            LEFT JOIN event_entities m ON m.position = e.position AND m.entity_id = j.value ->> 'id'
            WHERE e.kind IN ({news}) AND (m.position IS NULL OR CASE
                  -- SQLite's ->> ends a string at U+0000: such a name is compared as JSON text
                  WHEN instr(j.value -> 'name', '\\u0000') THEN json_quote(m.name) IS NOT j.value -> 'name'
                  ELSE m.name IS NOT j.value ->> 'name' END
                  OR m.type IS NOT j.value ->> 'type' OR m.role IS NOT j.value ->> 'role')
            UNION SELECT m.position FROM (SELECT position, count(*) AS n FROM event_entities GROUP BY position) m
            LEFT JOIN events e ON e.position = m.position
            WHERE e.position IS NULL OR e.kind NOT IN ({news})
               OR json_array_length(nullif(e.body, ''), '$.entities') IS NOT m.n""",
        # a row for each correction or retraction of a stored news event, and no other
        "event_states": f"""
            SELECT position FROM (
                SELECT e.position, e.target_id FROM events e JOIN events t ON t.event_id = e.target_id
                WHERE t.kind IN ({news}) AND e.body <> '' AND t.body <> ''
                EXCEPT SELECT position, target_id FROM event_states)
            UNION SELECT position FROM (
                SELECT position, target_id FROM event_states
                EXCEPT SELECT e.position, e.target_id FROM events e JOIN events t ON t.event_id = e.target_id
                WHERE t.kind IN ({news}) AND e.body <> '' AND t.body <> '')""",
    }
    for table, sql in checks.items():
        try:
            positions = _positions(conn, sql)
        except sqlite3.Error as exc:
            report.bad(None, f"table {table} could not be read: {exc}", table)
            continue
        for position in positions:
            report.bad(position, f"{table}: position {position}: the rows are not those its event gives"
                                 " (edited, removed, or planted where no event gives one)", table)


def _positions(conn: sqlite3.Connection, sql: str) -> list[int]:
    return [row[0] for row in conn.execute(f"SELECT DISTINCT position FROM ({sql}) ORDER BY 1 LIMIT {MAX_PROBLEMS}")]


def _states(conn: sqlite3.Connection, report: Report, _head: str | None, store: Any = None) -> None:
    """Each news event's corrections and retraction folded again from scratch (events.history),
    compared with the states the store kept (``event_states``) row for row. ``store``: the store
    read through ``conn`` (the SQLite store over it when not given)."""
    from .history import STATE_COLUMNS, EventState, advance, state_row
    from .models import NEWS_KINDS
    from .store import EventStore

    store = store if store is not None else EventStore.over(conn)
    news = ", ".join(f"'{k}'" for k in NEWS_KINDS)
    targets = [row[0] for row in conn.execute(
        f"SELECT DISTINCT e.target_id FROM events e JOIN events t ON t.event_id = e.target_id"
        f" WHERE t.kind IN ({news}) AND e.body <> '' AND t.body <> '' ORDER BY e.target_id")]
    for target_id in targets:
        target = store.get(target_id)
        assert target is not None
        kept = {row[0]: row for row in conn.execute(
            f"SELECT {STATE_COLUMNS} FROM event_states WHERE target_id = ? ORDER BY position", (target_id,))}
        state = EventState(target.body, "active")
        for item in store.editorial_for(target_id):
            expected = state_row(item.position, target_id, state, advance(target.kind, state, item))
            state.history = []
            row = kept.get(item.position)
            if row is not None and row != expected:
                report.bad(item.position, f"event_states: position {item.position}: the state kept for {target_id!r}"
                                          " is not the fold of its corrections from scratch (edited?)", "event_states")


def _erasures(conn: sqlite3.Connection, report: Report, _head: str | None) -> None:
    """Each erasure's record chained again (``events.erasure.erasure_link``), every blanked event
    listed by an erasure, and the erasures listed in the report."""
    from .erasure import ERASURE_COLUMNS, erasure_link

    previous = GENESIS
    blanked: dict[int, list[tuple[int, str, str]]] = {}
    for position, seq, raw_sha, body_sha in conn.execute(
        "SELECT position, erasure, raw_sha256, body_sha256 FROM erased_events ORDER BY position"
    ):
        blanked.setdefault(seq, []).append((position, raw_sha, body_sha))
    expected = 1
    for row in conn.execute(
        f"SELECT r.{ERASURE_COLUMNS.replace(', ', ', r.')}, c.hash FROM erasures r"
        " LEFT JOIN event_chain c ON c.position = r.position ORDER BY seq"
    ):
        *fields, stored, event_link = row
        seq, event_id, position = fields[:3]
        if seq != expected:
            report.bad(None, f"erasures: erasure {expected} is missing (removed?)", "erasures")
        rows = blanked.pop(seq, [])
        if event_link is None or position not in {p for p, _, _ in rows}:
            report.bad(position, f"erasures: erasure {seq} names position {position}, which it did not blank", "erasures")
        if erasure_link(previous, event_link or "", tuple(fields), rows) != stored:
            report.bad(position, f"erasures: erasure {seq} (of {event_id!r}) does not match its hash (edited?)",
                       "erasures")
        previous, expected = stored, seq + 1
        report.erasures.append({
            "seq": seq, "event_id": event_id, "position": position, "erased_at": fields[3], "reason": fields[4],
            "who": fields[5], "erased_with": json.loads(fields[6]),
        })
    for seq, rows in sorted(blanked.items()):
        for position, _, _ in rows:
            report.bad(position, f"erased_events: position {position} names erasure {seq}, which is not recorded",
                       "erasures")


def projections_beyond(store_path: str | Path, report: Report) -> None:
    """The projections beside the store (read-only) that applied events past its last position:
    the last events were removed from the store (what the store alone cannot show)."""
    from .store import connect_read_only

    folder = Path(f"{store_path}.projections")
    for path in sorted(folder.glob("*.db")) if folder.is_dir() else []:
        try:
            conn = connect_read_only(path)
            try:
                rows = conn.execute(
                    "SELECT name, max(position, coalesce(rebuild_position, 0)) FROM projection_checkpoints").fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            continue  # not a projection file, or one being set up: nothing to learn from it
        for name, position in rows:
            if position > report.head_position and position > (head := _head_now(store_path)):
                report.bad(head + 1,
                           f"projection {name} ({path.name}) has applied events up to position {position}, but the"
                           f" store ends at {head}: events were removed from its end", "events")


def _head_now(store_path: str | Path) -> int:
    """The store's last position now. The checks read the store before the projections' files,
    and a service that runs meanwhile stores and projects more: a checkpoint past the head the
    checks saw is compared with the head read after it (a projection applies only stored
    events, so it can be past that one only if events were removed)."""
    from .store import connect_read_only

    conn = connect_read_only(store_path)
    try:
        return conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
    finally:
        conn.close()
