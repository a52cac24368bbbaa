"""Tamper evidence: every stored event carries a hash chained to the one before it.

``link(previous, row)`` is the chain's one definition, used when appending and when verifying.
``verify`` re-reads the whole store, re-computes the chain and checks the append-only triggers,
and names the first position where the file disagrees (a row edited, removed, or added behind
the service's back). The head hash is printed so that an operator can keep it elsewhere: a
chain recomputed from scratch by someone who rewrote history would then not match it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field

GENESIS = "0" * 64

#: the triggers that make the tables append-only, and what each must refuse
TRIGGERS = {
    "events_no_update": ("events", "UPDATE"),
    "events_no_delete": ("events", "DELETE"),
    "event_meta_no_update": ("event_meta", "UPDATE"),
    "event_meta_no_delete": ("event_meta", "DELETE"),
    "event_entities_no_update": ("event_entities", "UPDATE"),
    "event_entities_no_delete": ("event_entities", "DELETE"),
    "event_chain_no_update": ("event_chain", "UPDATE"),
    "event_chain_no_delete": ("event_chain", "DELETE"),
}

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
    first_bad: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad(self, position: int | None, problem: str) -> None:
        if position is not None and (self.first_bad is None or position < self.first_bad):
            self.first_bad = position
        self.problems.append(problem)


def _rows(conn: sqlite3.Connection) -> Iterator[tuple]:
    cursor = conn.execute(
        f"SELECT e.{ROW_COLUMNS.replace(', ', ', e.')}, c.hash FROM events e"
        " LEFT JOIN event_chain c ON c.position = e.position ORDER BY e.position"
    )
    while batch := cursor.fetchmany(5000):
        yield from batch


def verify(conn: sqlite3.Connection) -> Report:
    """Check the triggers and re-compute the chain over every stored event."""
    report = Report()
    triggers = {name: sql or "" for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")}
    for name, (table, action) in TRIGGERS.items():
        sql = triggers.get(name, "")
        if not sql:
            report.bad(None, f"trigger {name} is missing: {action} on {table} is no longer refused")
        elif action not in sql.upper() or "RAISE" not in sql.upper():
            report.bad(None, f"trigger {name} was changed: it no longer refuses {action} on {table}")
    previous = GENESIS
    expected = 1
    for row in _rows(conn):
        *fields, stored_hash = row
        position = fields[0]
        if position != expected:
            report.bad(expected, f"position {expected}: the event is missing (removed?); the next is {position}")
            expected = position
        computed = link(previous, tuple(fields))
        if stored_hash is None:
            report.bad(position, f"position {position}: no hash recorded for this event (added behind the service?)")
        elif stored_hash != computed:
            report.bad(position, f"position {position}: the event does not match its hash (edited?)")
        previous = stored_hash or computed
        report.checked += 1
        expected = position + 1
    extra = conn.execute("SELECT MIN(position), COUNT(*) FROM event_chain WHERE position >= ?", (expected,)).fetchone()
    if extra[1]:
        report.bad(extra[0], f"position {extra[0]}: the hash chain goes on for {extra[1]} events that are gone (removed?)")
    report.head = previous
    return report
