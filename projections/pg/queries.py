"""The read side over a PostgreSQL store: ``projections.queries.Queries``' plumbing on
PostgreSQL, and the reads that need no projection SQL of their own.

- **Connections.** Each reading thread has its own connection (a ``PgEventStore`` reader), as
  on SQLite; the projections' tables are in the store's schema, so nothing is attached.
- **Snapshots.** ``snapshot()`` is one ``REPEATABLE READ, READ ONLY`` transaction: the store's
  rows, the projections' rows and their checkpoints are read as they stood at its first
  statement, as SQLite's read transaction reads the store and the attached files.
- **Time limits.** ``time_limit`` yields the connection's cancel (callable from any thread, as
  SQLite's ``interrupt``): the statement running is cancelled and the read raises
  ``ReadTimeout``; its transaction is rolled back.
- **Reads.** ``projections()`` (status, lag) and ``event()`` (the store's state of an event, as
  of a time; 410 for an erased one) answer as on SQLite. The reads of the projections' tables
  (timelines, entities, the directory, related entities, search) are written in SQLite's SQL in
  ``projections.queries`` and are not yet written for PostgreSQL: they raise ``NotOnPostgres``
  (docs/postgresql-projections.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from events.pg.store import PgEventStore

from ..engine import read_checkpoints, status_row
from ..queries import Queries, ReadTimeout


class NotOnPostgres(NotImplementedError):
    """A read of the projections' tables that the PostgreSQL read side does not answer yet."""


class PgQueries(Queries):
    @property
    def store(self) -> PgEventStore:  # type: ignore[override]
        store = getattr(self._local, "store", None)
        if store is None or self._local.generation != self._generation:
            store = self._local.store = PgEventStore(self.path, reader=True)
            if self.read_only:  # a read-only node's: no transaction of this connection can write
                store.conn.raw.execute("SET default_transaction_read_only = on")
            self._local.attached = set()
            self._local.generation = self._generation
            with self._open_lock:
                self._open.append(store)
        return store

    @contextmanager
    def snapshot(self) -> Iterator[Any]:  # type: ignore[override]
        """One read-only transaction over the store and the projections (one snapshot of both)."""
        conn = self.store.conn
        with conn.raw.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    @contextmanager
    def time_limit(self, deadline: float) -> Iterator[Callable[[], None]]:
        if time.monotonic() >= deadline:
            raise ReadTimeout("the read did not start before its time limit")
        raw = self.store.conn.raw
        cancel = getattr(raw, "cancel_safe", None) or raw.cancel
        try:
            yield cancel
        except psycopg.errors.QueryCanceled:
            raise ReadTimeout("the read was stopped at its time limit") from None

    def _checkpoint(self, conn: Any, name: str) -> tuple[int, str]:
        row = conn.execute("SELECT position, tables_tag FROM projection_checkpoints WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise RuntimeError(f"projection {name!r} is not set up")
        return row[0], row[1]

    def projections(self) -> list[dict[str, Any]]:
        with self.snapshot() as conn:
            head = self.store.head()
            checkpoints = {n: cp for n, cp in read_checkpoints(conn, "").items() if n in self.names}
        return [status_row(cp, head) for cp in checkpoints.values()]

    def projected(self, conn: Any) -> int:
        found = {n: cp["position"] for n, cp in read_checkpoints(conn, "").items() if n in self.names}
        return min(found.values()) if len(found) == len(self.names) else 0

    # --- not yet on PostgreSQL ------------------------------------------------------------

    def _not_yet(self, *_: Any, **__: Any) -> Any:
        raise NotOnPostgres("this read of the projections is not written for PostgreSQL yet")

    entity = entities = directory = related = timeline = render_rows = _not_yet  # type: ignore[assignment]
