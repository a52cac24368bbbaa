"""The append-only event store on PostgreSQL: ``events.backend.Store``'s second implementation.

The same rules as the SQLite store (``events.store.EventStore``), by inheritance: the append's
logic (idempotency, id conflicts, alias cycles, corrections and retractions folded into
``event_states``, the hash chain) and every read are that class's code, and its SQL runs here
unchanged through ``events.pg.connect.Qmark``. What differs is how a write is serialised:

- An append is one transaction that first takes ``pg_advisory_xact_lock`` on a key derived from
  the schema's name (events.pg.connect.advisory_key). Every writer of the store, on any machine,
  takes it, so positions are assigned one batch at a time as ``MAX(position) + 1`` and are
  gap-free: a batch that rolls back used none (a sequence would leave holes). The lock is
  released when the transaction ends, also when the connection drops.
- Under READ COMMITTED each statement sees what committed before it began, so the appender,
  holding the lock, sees every earlier batch.
- An erasure takes the same lock (it is ordered with appends), and afterwards VACUUMs the
  tables it changed, so the old row versions' space is reclaimed (docs/postgresql.md says what
  that does and does not remove: PostgreSQL has no ``secure_delete``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg

from ..erasure import Erasure, ErasureIncomplete, erase_locked, erasure_request
from ..records import AppendResult, Candidate
from ..store import EventStore
from .connect import Qmark, advisory_key, connect, current_schema, pg_text, redact
from .migrations import migrate

#: the tables an erasure changes: VACUUMed after it
ERASED_TABLES = ("events", "event_meta", "event_entities", "event_states")
#: the tables appends fill: ANALYZEd after a bulk write (``analyze``)
APPENDED_TABLES = ("events", "event_meta", "event_entities", "event_chain", "event_states")


def _storable(candidate: Candidate) -> Candidate:
    """The candidate, with U+0000 in its entities' names as U+FFFD in the rows derived from it
    (``event_entities``); its raw bytes and body, and so its hash and content, stay as they came."""
    occurred_at, ended_at, entities = candidate.facts
    if not any("\x00" in name for _, name, _, _ in entities):
        return candidate
    facts = (occurred_at, ended_at, tuple((i, pg_text(name), t, r) for i, name, t, r in entities))
    return Candidate.restore(candidate.event, candidate.raw, candidate.body_json, candidate.digests, facts)


class StandbyStore(RuntimeError):
    """The store opened to be written on a hot standby (a read replica), which takes no write:
    refused at once, in one line, rather than by PostgreSQL at the first write."""


class PgEventStore(EventStore):
    """Append, look up and read events in a PostgreSQL schema."""

    backend = "postgres"
    _store_errors = (psycopg.Error, sqlite3.Error, MemoryError)

    def __init__(self, url: str, *, reader: bool = False) -> None:
        """Open (and migrate, unless ``reader``) the store in the schema ``url`` names."""
        self.path = url
        self.url = url
        self._application = "timeline-reader" if reader else "timeline"
        raw = connect(url, application_name=self._application)
        self.conn = Qmark(raw)  # type: ignore[assignment]
        self.schema = current_schema(raw)
        self._append_key = advisory_key(self.schema, "append")
        self._alias_index = None
        self._erasures_seen = 0
        self.observers = []
        if not reader:
            (standby,) = raw.execute("SELECT pg_is_in_recovery()").fetchone()  # type: ignore[misc]
            if standby:
                raw.close()
                raise StandbyStore(
                    f"{redact(url)} is a read replica (a hot standby, in recovery), which takes no writes:"
                    " a node that writes must name the primary; serve the replica read-only"
                    " (timeline serve --read-only)")
            migrate(raw)

    @classmethod
    def over(cls, conn: Any) -> "PgEventStore":  # type: ignore[override]
        """Read the store through a connection opened elsewhere (a psycopg connection, or a
        ``Qmark``): inside that connection's transactions."""
        store = cls.__new__(cls)
        store.conn = conn if isinstance(conn, Qmark) else Qmark(conn)  # type: ignore[assignment]
        store.path = store.url = ""
        store._application = ""
        store.schema = current_schema(store.conn.raw)  # type: ignore[attr-defined]
        store._append_key = advisory_key(store.schema, "append")
        store._alias_index = None
        store._erasures_seen = 0
        store.observers = []
        return store

    @property
    def pg(self) -> psycopg.Connection:
        """The psycopg connection under ``conn`` (transactions, COPY)."""
        return self.conn.raw  # type: ignore[attr-defined,no-any-return]

    def analyze(self) -> None:
        """``ANALYZE`` the tables appends fill (``APPENDED_TABLES``): a table just filled has no
        statistics until autovacuum comes by (once it grew by a tenth, a minute later at the
        earliest), and the reads that follow would be planned on guesses (docs/performance.md).
        The projections' tables are their engine's (``PgProjectionEngine.analyze``)."""
        self.pg.execute(f"ANALYZE {', '.join(APPENDED_TABLES)}")

    def revive(self) -> bool:
        """Open a new connection if this store's was lost (PostgreSQL restarted, the session was
        terminated, the network dropped): called before each write, outside any transaction, so
        that a lost connection fails one batch (retried) rather than every batch after it.
        Return whether it reconnected. A store ``over`` another's connection leaves it alone."""
        if not self.url or not self.pg.broken and not self.pg.closed:
            return False
        try:
            self.pg.close()
        finally:
            self.conn = Qmark(connect(self.url, application_name=self._application))  # type: ignore[assignment]
            self._alias_index = None
        return True

    def replication(self) -> dict[str, Any] | None:
        """On a hot standby (a streaming read replica): ``{"standby": True, "replay": "not
        paused" | "paused" | "pause requested", "lag_seconds": ...}``, the lag being 0 when the
        standby has replayed all the WAL it received, else the age of the last transaction it
        replayed (None before it replayed one). ``{"standby": False}`` on a primary. One query
        of three functions: cheap enough for every ``/health``."""
        row = self.conn.raw.execute(
            "SELECT pg_is_in_recovery(),"
            " CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END,"
            " CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0"
            " ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END"
        ).fetchone()
        if row is None or not row[0]:
            return {"standby": False}
        lag = None if row[2] is None else round(max(float(row[2]), 0.0), 3)
        return {"standby": True, "replay": row[1], "lag_seconds": lag}

    def lock_writes(self) -> None:
        """Inside a transaction of ``self.pg``: wait for, then hold until it ends, the store's
        write lock (the one every append and erasure takes)."""
        self.conn.execute("SELECT pg_advisory_xact_lock(?)", (self._append_key,))

    def _in_chunks(self, sql: str, ids: list[str], *args: Any) -> Iterator[tuple[Any, ...]]:
        """Rows of ``sql`` with its ``IN ({marks})`` as one array parameter (``= ANY(?)``): one
        statement for any number of ids, parsed once."""
        unique = list(dict.fromkeys(ids))
        if unique:
            yield from self.conn.execute(sql.replace("IN ({marks})", "= ANY(?)"), (unique, *args))

    # --- writing -------------------------------------------------------------------------

    def append(self, batch: Sequence[Candidate]) -> list[AppendResult]:
        """Append a batch in one transaction under the store's advisory lock; idempotent per id
        (``EventStore.append`` says what becomes of each event)."""
        if not batch:
            return []
        self.revive()
        batch = [_storable(c) for c in batch]
        started_ns, started = time.time_ns(), time.perf_counter()
        try:
            with self.pg.transaction():
                self.lock_writes()
                results = self._append_locked(batch)
        except BaseException:
            self._alias_index = None  # it may hold this batch's declarations: read again next time
            raise
        if self.observers:
            self._observed(started_ns, started, batch, results)
        return results

    # --- erasure -------------------------------------------------------------------------

    def erase(
        self, event_id: str, reason: str, who: str, before: Callable[[Any], None] | None = None
    ) -> Erasure:
        """Erase an event and the corrections and retraction that target it (events.erasure), in
        one transaction under the store's write lock; then VACUUM what it changed."""
        reason, who = erasure_request(reason, who)
        self.revive()
        with self.pg.transaction():
            self.lock_writes()
            erasure = erase_locked(self.conn, event_id, reason, who, lambda: before(self) if before else None)
        self.forget_aliases()
        self.scrub()
        return erasure

    def scrub(self) -> None:
        """VACUUM the tables an erasure changes: the erased rows' old versions (the content) are
        removed from their pages and their space reused. Dead versions that a transaction still
        running may see stay until it ends (docs/postgresql.md)."""
        try:
            self.pg.execute(f"VACUUM {', '.join(ERASED_TABLES)}")
        except psycopg.Error as exc:
            raise ErasureIncomplete(
                f"the erasure is recorded, but VACUUM failed ({exc}): run it again (an erased id is scrubbed again)"
            ) from exc
