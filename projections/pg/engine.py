"""The projection engine on PostgreSQL: the same engine (``projections.engine``), with the
projections' tables in the store's database and schema.

What differs from SQLite, and only that, is here:

- **Where the tables are.** A projection's tables sit beside the store's (same schema, tagged
  names as on SQLite), so its SQL joins ``event_meta`` and ``event_entities`` directly, and its
  checkpoint is a row of the store's ``projection_checkpoints``: rows and checkpoint commit in
  one transaction of the projection's own connection.
- **Who writes.** Each projection is advanced, and rebuilt, by one node at a time: the node that
  holds its *lease*, a session-level advisory lock (``pg_try_advisory_lock``) on the projection's
  connection. A node whose process dies loses its connection and with it the lease; another
  node's next step (the service steps every second or sooner) takes it over, and carries on from
  the committed checkpoint. A node without the lease skips the projection.
- **Writers of one projection in turn.** A node's own erasure (``remove``), or a rebuild started
  on a node that does not hold the lease, writes a projection's tables too: every write
  transaction first takes the projection's transaction-scoped advisory lock, so they take turns
  as SQLite's ``BEGIN IMMEDIATE`` makes them.
- **Rebuilds.** Only the lease holder fills a rebuild's tables. A rebuild asked for on another
  node (``start_rebuild``) is recorded in the checkpoint, and the lease holder, finding a rebuild
  it did not start (``abandoned_rebuilds``), starts it again as its own; the live tables answer
  until the swap. The swap is one transaction: the checkpoint names the new tables and the old
  ones are dropped (a read that had picked the old tag just before reads again: the read side's
  ``projections.pg.queries``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from events.pg.connect import Qmark, advisory_key, connect, current_schema
from events.pg.store import PgEventStore, pg_text

from ..engine import Projection, ProjectionEngine, RebuildError, read_checkpoints
from ..erasure import Erased

LEASE_POLL = 1.0  # seconds between tries for a lease that another node holds (``rebuild``)


def store_url(store: Any) -> str:
    """The URL of a PostgreSQL store (a store object with ``url``, or the URL itself)."""
    return store if isinstance(store, str) else str(store.url)


def _storable(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(pg_text(v) if isinstance(v, str) else v for v in params)


class ProjectionConnection(Qmark):
    """A projection's connection: ``Qmark``, with U+0000 in text parameters written as U+FFFD
    (``events.pg.store.pg_text``). A headline, summary or entity name may carry one (validation
    lets it through, and SQLite stores it); PostgreSQL's ``text`` cannot hold it, and a batch that
    failed on it would fail again at every step."""

    __slots__ = ()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        return super().execute(sql, _storable(params) if params else params)

    def executemany(self, sql: str, rows: Any) -> Any:
        return super().executemany(sql, [_storable(row) for row in rows])


class PgProjectionEngine(ProjectionEngine):
    """``ProjectionEngine`` over a PostgreSQL store: same methods, same guarantees, plus leases."""

    def __init__(self, store: Any, projections: Sequence[Projection], batch_size: int = 5000, **kwargs: Any) -> None:
        super().__init__(store, projections, batch_size, **kwargs)
        self.url = store_url(store)
        self._schema: str | None = None
        self._leases: set[str] = set()  # the projections whose lease this engine holds

    @staticmethod
    def _check_store(store: Any) -> None:
        store_url(store)

    # --- connections, transactions, leases ------------------------------------------------

    def connection(self, name: str) -> Qmark:  # type: ignore[override]
        """The projection's own connection (autocommit; work runs in explicit transactions)."""
        with self._open_lock:
            conn = self._conns.get(name)
            if conn is not None and conn.raw.closed:  # lost (the server restarted, or ended it)
                self._leases.discard(name)  # its lease went with it
                del self._conns[name]
                conn = None
            if conn is None:
                raw = connect(self.url, application_name=f"timeline-projection-{name}")
                # The server finds a node whose machine or network died (no FIN: the socket just
                # goes quiet) within ~10 s by TCP keepalives, and ends its session, which frees
                # its leases for another node (PostgreSQL's defaults wait for the system's: hours).
                for setting, value in (("tcp_keepalives_idle", 5), ("tcp_keepalives_interval", 1),
                                       ("tcp_keepalives_count", 5)):
                    raw.execute(f"SET {setting} = {value}")
                # Projection rows can always be recomputed from the store: their commits do not
                # wait for the write-ahead log to reach the disk (SQLite's projections skip the
                # fsync the same way). A crash may lose the last commits, rows and checkpoint
                # together (never one without the other), and catching up redoes them.
                raw.execute("SET synchronous_commit = off")
                if self._schema is None:
                    self._schema = current_schema(raw)
                conn = ProjectionConnection(raw)
                self._conns[name] = conn  # type: ignore[assignment]
                self._views[name] = PgEventStore.over(conn)
            return conn  # type: ignore[return-value]

    def close(self) -> None:
        super().close()  # closing a connection releases its lease
        self._leases.clear()

    def _key(self, what: str, name: str) -> int:
        assert self._schema is not None
        return advisory_key(self._schema, f"projection-{what}:{name}")

    def _transaction(self, name: str, work: Callable[[Any, Any], Any]) -> Any:  # type: ignore[override]
        """Run ``work(conn, store)`` in one transaction of the projection's connection, after every
        other writer of this projection (on any node) has committed."""
        conn = self.connection(name)
        with self._locks[name]:
            with conn.raw.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(?)", (self._key("write", name),))
                return work(conn, self._views[name])

    def _read_checkpoints(self, conn: Any) -> dict[str, dict[str, Any]]:
        return read_checkpoints(conn, "")

    def lease(self, name: str) -> bool:
        """Whether this engine holds the projection's lease, taking it if no node does."""
        if name in self._leases:
            return True
        conn = self.connection(name)
        with self._locks[name]:
            (got,) = conn.execute("SELECT pg_try_advisory_lock(?)", (self._key("lease", name),)).fetchone()
        if got:
            self._leases.add(name)
        return bool(got)

    def leases(self) -> list[str]:
        """The projections this engine holds the lease of."""
        return sorted(self._leases)

    def release(self, name: str) -> None:
        """Give the lease up (another node takes it at its next step)."""
        if name in self._leases:
            conn = self.connection(name)
            with self._locks[name]:
                conn.execute("SELECT pg_advisory_unlock(?)", (self._key("lease", name),))
            self._leases.discard(name)

    # --- live ------------------------------------------------------------------------------

    def _step_one(self, name: str, upto: int | None) -> int | None:
        try:
            if not self.lease(name):
                return None  # another node advances it
            return super()._step_one(name, upto)
        except psycopg.OperationalError:
            if not self._lost(name):
                raise
            return None  # the next step connects again and takes the lease if it is free

    def _lost(self, name: str) -> bool:
        """Whether the projection's connection is gone (then so is its lease: forgotten)."""
        conn = self._conns.get(name)
        if conn is None or not conn.raw.closed:
            return False
        self._leases.discard(name)
        return True

    # --- erasure ---------------------------------------------------------------------------

    def remove(self, gone: Erased | None) -> None:
        """Take an erased event out of every projection's live tables and a rebuild's, at once (in
        each projection's transaction). The bytes leave the database's files when PostgreSQL
        reuses the dead rows' space (VACUUM) and recycles its write-ahead log (docs/erasure.md)."""
        if gone is None:
            return

        def run(name: str) -> None:
            projection = self.projections[name]

            def work(conn: Any, _store: Any) -> None:
                cp = self._read_checkpoints(conn).get(name)
                if cp is None:
                    return
                for tag, reached in ((cp["tag"], cp["position"]), (cp["rebuild_tag"], cp["rebuild_position"])):
                    if tag is not None and reached is not None:
                        projection.remove(conn, tag, gone, reached)

            self._transaction(name, work)

        self._each(list(self.projections), run)

    # --- rebuilds --------------------------------------------------------------------------

    def _rebuild_step_one(self, name: str) -> tuple[int, int, bool]:
        try:
            if self.lease(name):
                return super()._rebuild_step_one(name)
        except psycopg.errors.DeadlockDetected:
            # the swap's DROPs against a read that holds one old table and waits for another:
            # PostgreSQL rolled the step back whole; the next step swaps again
            pass
        except psycopg.OperationalError:
            if not self._lost(name):
                raise
        head = self.head()
        cp = self.checkpoint(name) or {}
        return cp.get("rebuild_position") or 0, head, False

    def _finish(self, conn: Any, p: Projection, tag: str, position: int) -> None:
        if self._deferred(p.name, tag):
            p.finish(conn, tag, position)
        p.create_indexes(conn, tag)
        conn.execute("UPDATE projection_checkpoints SET rebuild_beat = ? WHERE name = ?", (time.time(), p.name))

    def rebuild(
        self,
        names: Sequence[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        force: bool = False,
    ) -> int:
        """Rebuild to completion (blocking). Where another node holds a projection's lease, that
        node rebuilds it (it takes the rebuild recorded here over) and this waits for the swap."""
        names = list(names or self.projections)
        mine = [n for n in names if self.lease(n)]
        others = [n for n in names if n not in mine]
        before = {n: self.checkpoint(n) for n in others}
        reached = super().rebuild(mine, progress, force=force) if mine else self.head()
        if others:
            self.start_rebuild(others, force=True)  # recorded: the holder takes it over
            while True:
                if self._cancelled.is_set():
                    raise RebuildError("the rebuild was interrupted")
                pending = []
                for n in others:
                    cp = self.checkpoint(n) or {}
                    if cp.get("rebuild_tag") or cp.get("tag") == (before[n] or {}).get("tag"):
                        pending.append(n)
                if not pending:
                    break
                if any(self.lease(n) for n in pending):  # the holder went away: rebuild here
                    reached = min(reached, super().rebuild([n for n in pending if n in self._leases], progress, force=True))
                    continue
                time.sleep(LEASE_POLL)
            reached = min(reached, min((self.checkpoint(n) or {}).get("position", 0) for n in others))
        return reached

    def abandoned_rebuilds(self) -> list[str]:
        """Rebuilds recorded in a checkpoint that no process of this engine is running, of the
        projections whose lease this engine holds: their owner died, lost the lease, or asked the
        lease holder (this node) to rebuild. The caller starts them again (``start_rebuild``)."""
        out = []
        for name, cp in self.checkpoints().items():
            if not cp["rebuild_tag"] or not self.lease(name):
                continue
            if self._rebuilding.get(name) != cp["rebuild_tag"]:
                out.append(name)
        return out

