"""The append-only event store: one SQLite file in WAL mode.

``position`` is SQLite's rowid: rows are only ever inserted (triggers refuse UPDATE and DELETE),
so positions are gap-free and give the one global order. A batch is appended in one
``BEGIN IMMEDIATE`` transaction, which also serialises writers from several processes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlite_utils

from .aliases import AliasIndex
from .dates import parse_partial, utc_now_key
from .history import STATE_COLUMNS, EventState, advance, entry, state_row
from .history import fold as fold_state
from .integrity import GENESIS, chain
from .ids import fold
from .migrations import migrate
from .models import NEWS_KINDS, EventRejected, writable
from .records import (  # noqa: F401 - the records, importable from here as before
    AliasDeclaration,
    AppendDone,
    AppendObserver,
    AppendResult,
    Candidate,
    EventHash,
    Facts,
    StoredEvent,
    event_facts,
)

if TYPE_CHECKING:
    from .erasure import Erasure

log = logging.getLogger("events.store")
_CHUNK = 900  # ids per IN (...) query
WRITER_CACHE_KIB = 16 * 1024  # page cache of the writer's connection
READER_CACHE_KIB = 16 * 1024  # of each reader's (one per thread that reads)


def connect(path: str | Path, cache_kib: int = WRITER_CACHE_KIB, page_size: int | None = None) -> sqlite3.Connection:
    """A connection with the settings every user of the file needs (WAL, waits on locks).

    Opened with URI filenames enabled, so that ``attach_read_only`` can attach another file
    read-only. ``page_size`` applies to a file this call creates (SQLite fixes a file's page
    size when its first table is written); an existing file keeps its own."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        _uri(path), isolation_level=None, check_same_thread=False, timeout=30.0, uri=True
    )
    conn.execute("PRAGMA busy_timeout = 30000")
    if page_size is not None:
        conn.execute(f"PRAGMA page_size = {int(page_size)}")
    if str(path) != ":memory:":
        _enable_wal(sqlite_utils.Database(conn))
    conn.execute("PRAGMA synchronous = FULL")  # an acknowledged event survives a power cut
    conn.execute("PRAGMA foreign_keys = ON")
    # Freed pages are not zeroed page by page (this SQLite build's default): dropping a
    # projection's old tables after a rebuild would otherwise rewrite all of them.
    conn.execute("PRAGMA secure_delete = FAST")
    # The writer's projections and rebuilds insert into large B-trees in key order other than
    # arrival (members, pairs, read indexes): a page cache of ``cache_kib`` instead of SQLite's
    # 2 MiB keeps their upper levels and hot leaves in memory. A ceiling, not an allocation.
    conn.execute(f"PRAGMA cache_size = -{cache_kib}")
    register_functions(conn)
    return conn


def _uri(path: str | Path, **params: str) -> str:
    if str(path) == ":memory:":
        return ":memory:"
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(Path(path).absolute()))}" + (f"?{query}" if query else "")


def attach_read_only(conn: sqlite3.Connection, path: str | Path, schema: str) -> None:
    """Attach another file to ``conn`` as ``schema``, read-only: a write transaction on the
    connection (``BEGIN IMMEDIATE``) then takes no write lock on it, and nothing can write it."""
    conn.execute("ATTACH DATABASE ? AS " + schema, (_uri(path, mode="ro"),))


def connect_read_only(path: str | Path) -> sqlite3.Connection:
    """A connection that cannot write the file, nor create any beside it: for checking a store
    (``timeline verify``), even a copy in a read-only directory.

    With a write-ahead log beside the file (a store in use, or one not closed cleanly) it opens
    with ``mode=ro`` and reads through the log (that needs the log's ``-shm`` index, which SQLite
    creates if it can). Without one, everything is in the file itself: it opens ``immutable``,
    which takes no locks and creates no ``-wal`` or ``-shm`` file (``mode=ro`` would create them
    wherever it may)."""
    wal = Path(f"{path}-wal")
    has_log = wal.exists() and wal.stat().st_size > 0
    conn = sqlite3.connect(
        _uri(path, **({"mode": "ro"} if has_log else {"mode": "ro", "immutable": "1"})),
        isolation_level=None, check_same_thread=False, timeout=30.0, uri=True,
    )
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA query_only = ON")
    register_functions(conn)
    return conn


def connect_reader(path: str | Path, cache_kib: int = READER_CACHE_KIB) -> sqlite3.Connection:
    """A connection of a read-only node (``TIMELINE_READ_ONLY``): it reads a store that another
    process writes, sees each commit of that process, and cannot write the file.

    ``mode=ro``, never ``immutable`` (which would not see the writer's later commits). The store
    is in WAL mode: SQLite reads through the log's ``-shm`` index, and creates an empty ``-wal``
    and ``-shm`` beside the file when none exist and the folder lets it, as any reader of a WAL
    file does; the store's own file is never written."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no store at {path}")
    conn = sqlite3.connect(_uri(path, mode="ro"), isolation_level=None, check_same_thread=False, timeout=30.0, uri=True)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA query_only = ON")
    conn.execute(f"PRAGMA cache_size = -{cache_kib}")
    register_functions(conn)
    return conn


def _enable_wal(db: sqlite_utils.Database, patience: float = 30.0) -> None:
    """Switch to WAL; the switch does not wait on another opener's lock by itself, so retry."""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.enable_wal()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@lru_cache(maxsize=8192)
def _start_key(text: str) -> str:
    return parse_partial(text).start_key


@lru_cache(maxsize=8192)
def _end_key(text: str) -> str:
    return parse_partial(text).end_key


@lru_cache(maxsize=8192)
def _fold(text: str) -> str:
    return fold(text)


def register_functions(conn: sqlite3.Connection) -> None:
    """SQL functions that set-based projections use; the same code as the Python path."""
    conn.create_function("partial_start", 1, _start_key, deterministic=True)
    conn.create_function("partial_end", 1, _end_key, deterministic=True)
    conn.create_function("fold", 1, _fold, deterministic=True)


class EventStore:
    """Append, look up and read events. Only this module writes the ``events`` table.

    The SQLite implementation of ``events.backend.Store``."""

    backend = "sqlite"
    #: what an append lets through rather than refuse one event for: the batch is retried
    _store_errors: tuple[type[BaseException], ...] = (sqlite3.Error, MemoryError)

    def __init__(self, path: str | Path, *, reader: bool = False, read_only: bool = False) -> None:
        """Open (and migrate) the store; a ``reader`` leaves the schema to the writer; a
        ``read_only`` one (a read-only node's) opens the file so that it cannot be written
        (``connect_reader``; it must exist)."""
        self.path = str(path)
        reader = reader or read_only
        if read_only:
            self.conn = connect_reader(self.path)
        else:
            self.conn = connect(self.path, READER_CACHE_KIB if reader else WRITER_CACHE_KIB)
        self._alias_index: AliasIndex | None = None  # the writer's, for the cycle check
        self._erasures_seen = 0  # erasures made when it was read (an erased declaration goes)
        #: called after each committed append, whoever appends (the consumer, an import)
        self.observers: list[AppendObserver] = []
        if not reader:
            migrate(self.conn)

    @classmethod
    def over(cls, conn: sqlite3.Connection) -> "EventStore":
        """Read the store through a connection opened elsewhere (one that attached it, say):
        inside that connection's transactions, so reads and the caller's writes share a snapshot."""
        store = cls.__new__(cls)
        store.path = ""
        store.conn = conn
        store._alias_index = None
        store._erasures_seen = 0
        store.observers = []
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------

    def append(self, batch: Sequence[Candidate]) -> list[AppendResult]:
        """Append a batch in one transaction; idempotent per event id.

        The same id with the same content is a ``duplicate`` (a no-op); with other content it
        is ``rejected`` with reason ``id_conflict``. Rules that depend on what is already
        stored (alias cycles, a correction that would break its target) reject with
        ``schema``. Either all of the batch's new events are stored, or none are.
        """
        if not batch:
            return []
        conn = self.conn
        started_ns, started = time.time_ns(), time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = self._append_locked(batch)
            conn.execute("COMMIT")
        except BaseException:
            self._alias_index = None  # it may hold this batch's declarations: read again next time
            if conn.in_transaction:  # a failed COMMIT (disk full, say) may have rolled back already
                conn.execute("ROLLBACK")
            raise
        if self.observers:
            self._observed(started_ns, started, batch, results)
        return results

    def _observed(self, started_ns: int, started: float, batch: Sequence[Candidate], results: list[AppendResult]) -> None:
        done = AppendDone(
            started_ns, time.perf_counter() - started, len(batch), sum(r.status == "stored" for r in results)
        )
        for observe in self.observers:
            try:
                observe(done)
            except Exception:  # noqa: BLE001 - the batch is committed: a report must not undo that
                log.exception("an append observer failed")

    def _append_locked(self, batch: Sequence[Candidate]) -> list[AppendResult]:
        conn = self.conn
        known = self.hashes([c.event.id for c in batch])
        row = conn.execute("SELECT position, recorded_at FROM events ORDER BY position DESC LIMIT 1").fetchone()
        position, last_recorded = (row[0], row[1]) if row else (0, "")
        recorded_at = max(utc_now_key(), last_recorded)
        aliases: AliasIndex | None = None
        results: list[AppendResult] = []
        rows: list[tuple[Any, ...]] = []
        row_digests: list[tuple[bytes, bytes]] = []
        batch_stored: dict[str, Candidate] = {}  # this batch's events stored so far
        meta_rows: list[tuple[Any, ...]] = []
        entity_rows: list[tuple[Any, ...]] = []
        # The folded state of the news events this batch changes (events.history), and the
        # editorial events of this batch whose target has not arrived, by target.
        states: dict[str, tuple[str, EventState]] = {}
        waiting: dict[str, list[StoredEvent]] = {}
        state_rows: list[tuple[Any, ...]] = []
        # News events that a correction or retraction stored before them was waiting for.
        waited = self.targeted([c.event.id for c in batch if c.event.kind in NEWS_KINDS])
        for candidate in batch:
            event = candidate.event
            existing = known.get(event.id)
            if existing is not None:
                results.append(_known(event.id, event.content_hash, existing))
                continue
            editorial: StoredEvent | None = None
            applied: tuple[str, EventState, dict[str, Any]] | None = None
            try:
                if event.kind == "entity_alias":
                    if aliases is None:
                        aliases = self._aliases_now()
                    _check_alias(aliases, candidate.body["details"])
                elif event.target is not None:
                    editorial = StoredEvent(position + 1, event.id, event.kind, event.target, recorded_at, candidate.body)
                    applied = self._apply_editorial(editorial, batch_stored, states)
            except EventRejected as exc:
                results.append(AppendResult("rejected", event.id, None, exc.reason, exc.error))
                continue
            except self._store_errors:  # the store's or the machine's state: the batch is retried
                raise
            except Exception as exc:  # noqa: BLE001 - judging one event against the store must not fail
                # its batch (it would stay pending, retried for ever): refused, naming the failure
                results.append(AppendResult(
                    "rejected", event.id, None, "schema",
                    writable(f"event: cannot be checked against the stored events ({type(exc).__name__}: {exc})"),
                ))
                continue
            position += 1
            known[event.id] = EventHash(position, event.content_hash, False)
            if aliases is not None and event.kind == "entity_alias":
                details = candidate.body["details"]
                aliases.add(position, details["alias"], details["canonical"], details.get("name"))
            occurred_at, ended_at, entities = candidate.facts
            news = event.kind in NEWS_KINDS
            meta_rows.append(
                (
                    position, event.id, event.kind, recorded_at, occurred_at, ended_at, _start_key(occurred_at),
                    _end_key(ended_at or occurred_at), int(news and event.id not in waited),
                )
            )
            batch_stored[event.id] = candidate
            if news:
                entity_rows.extend((position, *entity) for entity in entities)
                if event.id in waited:  # fold what waited for it, in store order
                    earlier = [*self.editorial_for(event.id), *waiting.pop(event.id, [])]
                    state = EventState(candidate.body, "active")
                    for item in earlier:
                        state_rows.append(state_row(item.position, event.id, state, advance(event.kind, state, item)))
                    state.history = []
                    states[event.id] = (event.kind, state)
            elif editorial is not None:
                if applied is None:  # waits for its target
                    waiting.setdefault(editorial.target_id or "", []).append(editorial)
                    waited.add(event.target or "")
                else:
                    kind, state, outcome = applied
                    states[editorial.target_id or ""] = (kind, state)
                    state_rows.append(state_row(position, editorial.target_id or "", state, outcome))
            rows.append(
                (
                    position,
                    event.id,
                    event.kind,
                    event.target,
                    event.content_hash,
                    recorded_at,
                    candidate.raw,
                    candidate.body_json,
                )
            )
            row_digests.append(candidate.digests)
            results.append(AppendResult("stored", event.id, position))
        conn.executemany(
            "INSERT INTO events (position, event_id, kind, target_id, content_hash, recorded_at, raw, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if rows:
            last = conn.execute("SELECT hash FROM event_chain ORDER BY position DESC LIMIT 1").fetchone()
            previous = last[0] if last else GENESIS
            chained = []
            for row, (raw_digest, body_digest) in zip(rows, row_digests):
                previous = chain(previous, row[:6], raw_digest, body_digest)
                chained.append((row[0], previous))
            conn.executemany("INSERT INTO event_chain (position, hash) VALUES (?, ?)", chained)
        conn.executemany(f"INSERT INTO event_meta VALUES ({','.join('?' * 9)})", meta_rows)
        conn.executemany("INSERT INTO event_entities VALUES (?, ?, ?, ?, ?)", entity_rows)
        if state_rows:
            conn.executemany(f"INSERT INTO event_states ({STATE_COLUMNS}) VALUES ({','.join('?' * 8)})", state_rows)
        return results

    def targeted(self, ids: list[str], upto: int | None = None) -> set[str]:
        """The ids among these that stored corrections or retractions (up to a position) are about."""
        sql = "SELECT DISTINCT target_id FROM events WHERE target_id IN ({marks}) AND position <= ? AND body <> ''"
        return {row[0] for row in self._in_chunks(sql, ids, upto if upto is not None else 2**62)}

    def hashes(self, ids: list[str]) -> dict[str, EventHash]:
        """``{event_id: EventHash(position, content_hash, erased)}`` for the ids that are stored."""
        sql = "SELECT event_id, position, content_hash, body = '' FROM events WHERE event_id IN ({marks})"
        return {
            event_id: EventHash(position, digest, bool(erased))
            for event_id, position, digest, erased in self._in_chunks(sql, ids)
        }

    def _in_chunks(self, sql: str, ids: list[str], *args: Any) -> Iterable[tuple[Any, ...]]:
        """Rows of ``sql`` with its ``IN ({marks})`` filled by the ids, a chunk at a time."""
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), _CHUNK):
            chunk = unique[i : i + _CHUNK]
            yield from self.conn.execute(sql.format(marks=",".join("?" * len(chunk))), (*chunk, *args))

    def forget_aliases(self) -> None:
        """Drop the cached alias index (an erased declaration must no longer count)."""
        self._alias_index = None

    def _aliases_now(self) -> AliasIndex:
        """The alias index, with every declaration stored so far (other writers' too: read inside
        the append's transaction)."""
        erased = self.conn.execute("SELECT coalesce(MAX(seq), 0) FROM erasures").fetchone()[0]
        if self._alias_index is None or erased != self._erasures_seen:  # another process erased one
            self._alias_index, self._erasures_seen = AliasIndex(), erased
        self._alias_index.refresh(self)
        return self._alias_index

    def _apply_editorial(
        self, item: StoredEvent, pending: dict[str, Candidate], states: dict[str, tuple[str, EventState]]
    ) -> tuple[str, EventState, dict[str, Any]] | None:
        """A correction or retraction applied to its target's current state: (the target's kind,
        its new state, the history entry); None when the target is not known yet (it waits).

        Starts from the state kept after the last change (``event_states``, or this batch's), so
        the n-th change of an event costs what the first did. A change of a known target must fit
        it: of a news event, and a correction whose result keeps the event valid."""
        target_id = item.target_id or ""
        field = "details.corrects" if item.kind == "correction" else "details.retracts"
        if target_id == item.event_id:  # (parse_event refuses it too; the store takes candidates from anyone)
            raise EventRejected("schema", f"{field}: {target_id!r} is this {item.kind}'s own id; it cannot be its own target")
        if target_id in states:
            kind, current = states[target_id]
        else:
            target = self.get(target_id)
            if target is None and _erased(self.hashes([target_id]).get(target_id)):
                raise EventRejected("schema", f"{field}: {target_id!r} was erased; an erased event does not change")
            if target is None and target_id in pending:
                earlier = pending[target_id]
                target = StoredEvent(0, target_id, earlier.event.kind, None, "", earlier.body)
            if target is None:
                return None  # waits for its target: applied when that arrives
            if target.kind not in NEWS_KINDS:
                raise EventRejected(
                    "schema", f"{field}: {target_id!r} is a {target.kind}, not a news event; only news events change"
                )
            kind, (_, current) = target.kind, self.folded(target)
        state = EventState(current.body, current.status, [], current.corrected, current.entities_at)
        outcome = advance(kind, state, item)
        if not outcome["applied"]:
            raise EventRejected("schema", outcome["error"])
        state.history = []
        return kind, state, outcome

    def analyze(self) -> None:
        """Refresh the query planner's statistics after a bulk write (``timeline import``):
        nothing here (SQLite's reads are planned without them; PostgreSQL's store analyzes)."""

    # --- reading -------------------------------------------------------------------------

    def replication(self) -> dict[str, Any] | None:
        """How far a read replica trails its primary: None here (a SQLite file has no replica;
        PostgreSQL's store answers for a hot standby, events.pg.store)."""
        return None

    def head(self) -> int:
        row = self.conn.execute("SELECT MAX(position) FROM events").fetchone()
        return row[0] or 0

    def recorded_at(self, position: int) -> str | None:
        """When the event at ``position`` was stored (None if there is none)."""
        row = self.conn.execute("SELECT recorded_at FROM events WHERE position = ?", (position,)).fetchone()
        return row[0] if row else None

    def get(self, event_id: str, upto: int | None = None) -> StoredEvent | None:
        sql = "SELECT position, event_id, kind, target_id, recorded_at, body FROM events WHERE event_id = ? AND body <> ''"
        row = self.conn.execute(sql, (event_id,)).fetchone()
        if row is None or (upto is not None and row[0] > upto):
            return None
        return _stored(row)

    def raw(self, event_id: str) -> bytes | None:
        row = self.conn.execute("SELECT raw FROM events WHERE event_id = ? AND body <> ''", (event_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def editorial_for(self, target_id: str, upto: int | None = None) -> list[StoredEvent]:
        """The corrections and retractions about an event, in store order."""
        rows = self.conn.execute(
            "SELECT position, event_id, kind, target_id, recorded_at, body FROM events"
            " WHERE target_id = ? AND position <= ? AND body <> '' ORDER BY position",
            (target_id, upto if upto is not None else 2**62),
        )
        return [_stored(r) for r in rows]

    def state(self, event_id: str, upto: int | None = None) -> tuple[StoredEvent, EventState] | None:
        """An event as it stands at a position (corrections and retraction applied), with its history."""
        event = self.get(event_id, upto)
        if event is None:
            return None
        if event.kind not in NEWS_KINDS:  # only a news event changes; what waited for this id is history
            return event, fold_state(event, self.editorial_for(event_id, upto))
        _, state = self.folded(event, upto)
        state.history = self.history(event_id, upto)
        return event, state

    def folded(self, event: StoredEvent, upto: int | None = None) -> tuple[int, EventState]:
        """A news event's state at a position, without its history, and the position of the change
        that made it (the event's own when none did): read from ``event_states``, not folded."""
        row = self.conn.execute(
            "SELECT position, status, corrected, entities_at, body FROM event_states"
            " WHERE target_id = ? AND position <= ? ORDER BY position DESC LIMIT 1",
            (event.event_id, upto if upto is not None else 2**62),
        ).fetchone()
        if row is None:
            return event.position, EventState(event.body, "active")
        return max(row[0], event.position), EventState(json.loads(row[4]), row[1], [], bool(row[2]), row[3])

    def history(self, event_id: str, upto: int | None = None) -> list[dict[str, Any]]:
        """The corrections and retraction applied to a news event, in store order, with their outcome."""
        rows = self.conn.execute(
            "SELECT e.position, e.event_id, e.kind, e.target_id, e.recorded_at, e.body, s.applied, s.error"
            " FROM event_states s JOIN events e ON e.position = s.position"
            " WHERE s.target_id = ? AND s.position <= ? ORDER BY s.position",
            (event_id, upto if upto is not None else 2**62),
        )
        out = []
        for *fields, applied, error in rows:
            item = entry(_stored(fields))
            item["applied"] = bool(applied)
            if error is not None:
                item["error"] = error
            out.append(item)
        return out

    def read(self, after: int, limit: int = 1000, upto: int | None = None) -> list[StoredEvent]:
        """Events with ``after < position <= upto``, in order, at most ``limit``."""
        rows = self.conn.execute(
            "SELECT position, event_id, kind, target_id, recorded_at, body FROM events"
            " WHERE position > ? AND position <= ? AND body <> '' ORDER BY position LIMIT ?",
            (after, upto if upto is not None else 2**62, limit),
        )
        return [_stored(r) for r in rows]

    def read_not_plain(self, after: int, upto: int) -> list[StoredEvent]:
        """Events with ``after < position <= upto`` that are not plain news events (``event_meta``'s
        ``plain``: editorial events, aliases, news events that a change waited for), in order."""
        rows = self.conn.execute(
            "SELECT position, event_id, kind, target_id, recorded_at, body FROM events WHERE position IN"
            " (SELECT position FROM event_meta WHERE position > ? AND position <= ? AND plain = 0) AND body <> ''"
            " ORDER BY position",
            (after, upto),
        )
        return [_stored(r) for r in rows]

    def position_at(self, instant_key: str) -> int:
        """The last position recorded at or before an instant (0 when none)."""
        # recorded_at never decreases along positions: the last entry of its index up to the
        # instant (MAX(position) over the range scanned the whole range)
        row = self.conn.execute(
            "SELECT position FROM events WHERE recorded_at <= ? ORDER BY recorded_at DESC, position DESC LIMIT 1",
            (instant_key,),
        ).fetchone()
        return row[0] if row else 0

    def aliases(self, after: int = 0) -> list[AliasDeclaration]:
        """Alias declarations after a position, in store order."""
        rows = self.conn.execute(
            "SELECT position, body FROM events WHERE kind = 'entity_alias' AND position > ? AND body <> ''"
            " ORDER BY position",
            (after,),
        )
        return [alias_declaration(position, body) for position, body in rows]

    # --- erasure (events.erasure) ------------------------------------------------------------

    def erase(
        self, event_id: str, reason: str, who: str, before: Callable[[Any], None] | None = None
    ) -> Erasure:
        """Erase an event and the changes that target it (``events.erasure.erase``)."""
        from .erasure import erase

        return erase(self, event_id, reason, who, before)

    def scrub(self) -> None:
        """Overwrite the file's free pages and empty its log again (``events.erasure.scrub``)."""
        from .erasure import scrub

        scrub(self)

    def erasure_of(self, event_id: str) -> Erasure | None:
        """The erasure that blanked an event (named by it, or erased with it), or None."""
        from .erasure import erasure_of

        return erasure_of(self.conn, event_id)

    def tombstone(self, event_id: str) -> dict[str, Any] | None:
        """What is left of an erased event; None when it is not erased."""
        from .erasure import tombstone

        return tombstone(self.conn, event_id)

    def erasures(self, after: int = 0, limit: int = 1000) -> list[Erasure]:
        """The erasures, in the order they were made."""
        from .erasure import erasures

        return erasures(self.conn, after, limit)

    def erased_ids(self, ids: list[str]) -> set[str]:
        """The ids among these whose events are erased."""
        from .erasure import erased_ids

        return erased_ids(self.conn, ids)

    def erasure_count(self) -> int:
        """How many erasures were made (a cheap token for caches that must forget what was erased)."""
        from .erasure import erasure_count

        return erasure_count(self.conn)


def _known(event_id: str, content_hash: str, existing: EventHash) -> AppendResult:
    """What becomes of an event whose id is already stored: a duplicate or an ``id_conflict``."""
    if existing.erased:
        return AppendResult(
            "rejected", event_id, existing.position, "id_conflict",
            f"id: {event_id!r} was erased (position {existing.position}); an erased id is never stored again",
        )
    if existing.content_hash == content_hash:
        return AppendResult("duplicate", event_id, existing.position)
    return AppendResult(
        "rejected", event_id, existing.position, "id_conflict",
        f"id: {event_id!r} is already stored (position {existing.position}) with other content",
    )


def _erased(found: EventHash | None) -> bool:
    return found is not None and found.erased


def alias_declaration(position: int, body: str) -> AliasDeclaration:
    details = json.loads(body)["details"]
    return AliasDeclaration(position, details["alias"], details["canonical"], details.get("name"))


def _stored(row: Iterable[Any]) -> StoredEvent:
    position, event_id, kind, target_id, recorded_at, body = row
    return StoredEvent(position, event_id, kind, target_id, recorded_at, json.loads(body))


def _check_alias(aliases: AliasIndex, details: dict[str, Any]) -> None:
    """Reject an alias that would close a cycle (the check is complete: no chain is too long)."""
    alias, canonical = details["alias"], details["canonical"]
    if aliases.would_cycle(alias, canonical):
        path = aliases.chain(canonical)
        if len(path) > 8:
            path = [*path[:3], f"… {len(path) - 6} more …", *path[-3:]]
        raise EventRejected(
            "schema",
            f"details.canonical: {canonical!r} already resolves to {alias!r}, so this alias would close a cycle"
            f" ({' → '.join([alias, *path])})",
        )
