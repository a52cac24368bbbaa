"""Erasure: an event's content removed from the store, its place in the chain kept (docs/erasure.md).

An erasure blanks the ``raw`` and ``body`` of an event, and of the corrections and retraction
that target it, and removes their rows derived from that content (``event_meta``,
``event_entities``, ``event_states``). What stays: the id, position, kind, target, content hash
and recording time, and the erasure's record (``erasures``: when, why, who) with the digests each
blanked event's chain link was computed over (``erased_events``), so ``timeline verify`` still
re-computes every link. The append-only triggers allow exactly this change and no other.

Each erasure's record is itself chained: its hash covers the previous erasure's hash, the
erased event's chain link and every field of the record (``erasure_link``).

The store file is written with ``secure_delete`` on during the erasure and its write-ahead log
checkpointed and truncated afterwards, so the blanked text is overwritten, not merely freed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .integrity import GENESIS, digests
from .models import NEWS_KINDS

if TYPE_CHECKING:
    from .backend import Store as EventStore

ERASED_BODY = ""  # the body (and, as bytes, the raw) of an erased event
EDITORIAL_KINDS = ("correction", "retraction")


class ErasureIncomplete(RuntimeError):
    """The erasure is recorded, but a file could not be scrubbed yet (run it again)."""


class ErasureRefused(Exception):
    """An erasure that cannot be made: ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


@dataclass(frozen=True, slots=True)
class Erasure:
    seq: int
    event_id: str
    position: int
    kind: str
    erased_at: str
    reason: str
    who: str
    erased_with: list[str]

    def tombstone(self) -> dict[str, Any]:
        """What ``GET /events/{id}`` answers (410) for an erased event."""
        return {"status": "erased", "erased_at": self.erased_at, "reason": self.reason}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ERASURE_COLUMNS = "seq, event_id, position, erased_at, reason, who, erased_with, hash"


def erasure_link(previous: str, event_link: str, row: tuple[Any, ...], blanked: list[tuple[int, str, str]]) -> str:
    """An erasure record's hash: the previous erasure's, the erased event's chain link, the record's
    fields and each blanked event's position and digests."""
    seq, event_id, position, erased_at, reason, who, erased_with = row
    text = "\x1f".join((previous, event_link, str(seq), event_id, str(position), erased_at, reason, who, erased_with))
    text += "".join(f"\x1e{p}:{raw}:{body}" for p, raw, body in sorted(blanked))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


SCRUB_CHUNK_PAGES = 16_384  # free pages overwritten per row (a blob of at most 256 MiB at 16 KiB pages)


def zero_free_pages(conn: sqlite3.Connection) -> int:
    """Overwrite every page on the file's freelist with zeros; return how many there were.

    ``secure_delete = ON`` zeroes what is freed from now on, but pages freed earlier (a table a
    rebuild dropped, a full-text segment merged away, projection tables the store once held)
    keep whatever they held. SQLite allocates from the freelist before it grows the file, so a
    scratch table of zero-filled blobs as large as the freelist takes every free page and writes
    zeros over it; dropping it (``secure_delete`` on) gives them back, zeroed again. Run inside
    the caller's write transaction, with ``secure_delete`` on; nothing of it stays in the schema."""
    (free,) = conn.execute("PRAGMA main.freelist_count").fetchone()
    if not free:
        return 0
    (page_size,) = conn.execute("PRAGMA main.page_size").fetchone()
    conn.execute("CREATE TABLE main._erasure_scrub (b BLOB)")
    left = free
    while left > 0:
        pages = min(left, SCRUB_CHUNK_PAGES)
        conn.execute("INSERT INTO main._erasure_scrub (b) VALUES (zeroblob(?))", (pages * page_size,))
        left -= pages
    conn.execute("DROP TABLE main._erasure_scrub")
    return free


def truncate_log(conn: sqlite3.Connection, attempts: int = 20) -> None:
    """Copy the write-ahead log into the file and empty it (``wal_checkpoint(TRUNCATE)``), waiting
    for readers that still read from it; raise when they do not let go."""
    for _ in range(attempts):
        busy, _log, _done = conn.execute("PRAGMA main.wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        time.sleep(0.1)
    raise ErasureIncomplete(
        "the write-ahead log could not be emptied (readers kept it busy): it still holds the erased"
        " content; run the erasure again (an erased id is scrubbed again)"
    )


def now_instant() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def erase(
    store: "EventStore", event_id: str, reason: str, who: str, before: Callable[["EventStore"], None] | None = None
) -> Erasure:
    """Erase an event and the corrections and retraction that target it, in one transaction of
    the store's writer lock (``BEGIN IMMEDIATE``: ordered with the appends of a running service),
    then overwrite the freed bytes and truncate the write-ahead log.

    ``before(store)`` runs in that transaction once the erasure is allowed, before the content
    goes: to read what must be removed elsewhere (projections.erasure.capture).

    A store of another backend erases its own way (``PgEventStore.erase``)."""
    if store.backend != "sqlite":
        return store.erase(event_id, reason, who, before)
    reason, who = erasure_request(reason, who)
    conn = store.conn
    conn.execute("PRAGMA secure_delete = ON")  # blanked cells and freed pages are zeroed
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            erasure = erase_locked(conn, event_id, reason, who, lambda: before(store) if before else None)
            zero_free_pages(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        store.forget_aliases()
        # Every page written since the last checkpoint, old versions of the erased rows included,
        # is in the log: copy the current pages into the file, then empty the log.
        truncate_log(conn)
    finally:
        conn.execute("PRAGMA secure_delete = FAST")
    return erasure


def erasure_request(reason: str, who: str) -> tuple[str, str]:
    """An erasure's reason and who, stripped; refused (422) when either is empty or holds U+0000.

    The record is kept as written and its hash covers it (``erasure_link``): PostgreSQL's text
    cannot hold U+0000 (SQLite's can), so such a record could not be kept as written on one
    backend; it is refused on both."""
    reason, who = reason.strip(), who.strip()
    if not reason:
        raise ErasureRefused(422, "reason: an erasure needs a reason (it is kept in the erasure record)")
    if not who:
        raise ErasureRefused(422, "who: an erasure is never anonymous")
    for field, text in (("reason", reason), ("who", who)):
        if "\x00" in text:
            raise ErasureRefused(422, f"{field}: must not hold U+0000 (the erasure record is kept as written)")
    return reason, who


def scrub(store: "EventStore") -> None:
    """Overwrite the store's free pages and empty its log again (after an erasure whose log could
    not be emptied, say)."""
    if store.backend != "sqlite":
        return store.scrub()
    conn = store.conn
    conn.execute("PRAGMA secure_delete = ON")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            zero_free_pages(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        truncate_log(conn)
    finally:
        conn.execute("PRAGMA secure_delete = FAST")


def erase_locked(conn: Any, event_id: str, reason: str, who: str, before: Callable[[], None]) -> Erasure:
    """The erasure itself, inside the caller's write transaction, through a connection whose
    ``execute`` takes ``?`` marks (SQLite's, or ``events.pg.connect.Qmark`` on PostgreSQL)."""
    row = conn.execute(
        "SELECT position, kind, target_id, body = '' FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    if row is None:
        raise ErasureRefused(404, f"event {event_id!r} is not stored")
    position, kind, target_id, blank = row
    if blank:
        raise ErasureRefused(409, f"event {event_id!r} is already erased")
    if kind in EDITORIAL_KINDS and target_id is not None:
        target = conn.execute("SELECT kind FROM events WHERE event_id = ?", (target_id,)).fetchone()
        if target is not None and target[0] in NEWS_KINDS:
            raise ErasureRefused(
                409,
                f"event {event_id!r} is a {kind} of {target_id!r}: a correction or retraction is erased with the"
                f" event it changes (erase {target_id!r}), not alone",
            )
    before()
    with_rows = []
    if kind in NEWS_KINDS:
        with_rows = conn.execute(
            "SELECT position, event_id FROM events WHERE target_id = ? AND body <> '' ORDER BY position", (event_id,)
        ).fetchall()
    positions = [position, *(p for p, _ in with_rows)]
    blanked = []
    for p in positions:
        raw, body = conn.execute("SELECT raw, body FROM events WHERE position = ?", (p,)).fetchone()
        raw_digest, body_digest = digests(raw, body)
        blanked.append((p, raw_digest.hex(), body_digest.hex()))
    last = conn.execute("SELECT seq, hash FROM erasures ORDER BY seq DESC LIMIT 1").fetchone()
    seq, previous = (last[0] + 1, last[1]) if last else (1, GENESIS)
    (event_link,) = conn.execute("SELECT hash FROM event_chain WHERE position = ?", (position,)).fetchone()
    erased_with = [e for _, e in with_rows]
    record = (seq, event_id, position, now_instant(), reason, who, json.dumps(erased_with))
    conn.execute(
        f"INSERT INTO erasures ({ERASURE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (*record, erasure_link(previous, event_link, record, blanked)),
    )
    conn.executemany(
        "INSERT INTO erased_events (position, erasure, raw_sha256, body_sha256) VALUES (?, ?, ?, ?)",
        [(p, seq, raw, body) for p, raw, body in blanked],
    )
    marks = ",".join("?" * len(positions))
    for table in ("event_entities", "event_meta", "event_states"):
        conn.execute(f"DELETE FROM {table} WHERE position IN ({marks})", positions)
    conn.execute(f"UPDATE events SET raw = ?, body = '' WHERE position IN ({marks})", [b"", *positions])
    return Erasure(seq, event_id, position, kind, record[3], reason, who, erased_with)


def erasure_of(conn: Any, event_id: str) -> Erasure | None:
    """The erasure that blanked an event (named by it, or erased with it), or None."""
    row = conn.execute(
        "SELECT r.seq, r.event_id, r.position, n.kind, r.erased_at, r.reason, r.who, r.erased_with"
        " FROM events e JOIN erased_events x ON x.position = e.position JOIN erasures r ON r.seq = x.erasure"
        " JOIN events n ON n.position = r.position WHERE e.event_id = ?",
        (event_id,),
    ).fetchone()
    return None if row is None else _erasure(row)


class Gone(Exception):
    """A read of an erased event: ``tombstone`` is what is left of it."""

    def __init__(self, tombstone: dict[str, Any]) -> None:
        super().__init__(f"event {tombstone['id']!r} was erased")
        self.tombstone = tombstone


def tombstone(conn: Any, event_id: str) -> dict[str, Any] | None:
    """What is left of an erased event: its id, kind, position, recording time and the erasure's
    ``status`` (``erased``), ``erased_at`` and ``reason``; None when it is not erased."""
    erasure = erasure_of(conn, event_id)
    if erasure is None:
        return None
    kind, position, recorded_at = conn.execute(
        "SELECT kind, position, recorded_at FROM events WHERE event_id = ?", (event_id,)).fetchone()
    return {"id": event_id, "kind": kind, "position": position, "recorded_at": recorded_at, **erasure.tombstone()}


def erasures(conn: Any, after: int = 0, limit: int = 1000) -> list[Erasure]:
    """The erasures, in the order they were made."""
    rows = conn.execute(
        "SELECT r.seq, r.event_id, r.position, e.kind, r.erased_at, r.reason, r.who, r.erased_with"
        " FROM erasures r JOIN events e ON e.position = r.position WHERE r.seq > ? ORDER BY r.seq LIMIT ?",
        (after, limit),
    )
    return [_erasure(row) for row in rows]


def erased_ids(conn: Any, ids: list[str]) -> set[str]:
    """The ids among these whose events are erased."""
    out: set[str] = set()
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), 900):
        chunk = unique[i : i + 900]
        out.update(row[0] for row in conn.execute(
            f"SELECT event_id FROM events WHERE event_id IN ({','.join('?' * len(chunk))}) AND body = ''", chunk))
    return out


def erasure_count(conn: Any) -> int:
    """How many erasures were made (a cheap token for caches that must forget what was erased)."""
    return conn.execute("SELECT coalesce(MAX(seq), 0) FROM erasures").fetchone()[0]


def _erasure(row: tuple[Any, ...]) -> Erasure:
    seq, event_id, position, kind, erased_at, reason, who, erased_with = row
    return Erasure(seq, event_id, position, kind, erased_at, reason, who, json.loads(erased_with))
