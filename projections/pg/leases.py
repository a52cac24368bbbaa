"""Who writes a projection on PostgreSQL, where several nodes run an engine over one store.

- **Leases.** Each projection is advanced, and rebuilt, by one node at a time: the node that
  holds its *lease*, a session-level advisory lock (``pg_try_advisory_lock``) on the
  projection's connection. A node whose process dies loses its connection and with it the lease;
  another node's next step (the service steps every second or sooner) takes it over, and carries
  on from the committed checkpoint. A node without the lease skips the projection.
- **Writers of one projection in turn.** A node's own erasure (``remove``), or a rebuild started
  on a node that does not hold the lease, writes a projection's tables too: every write
  transaction first takes the projection's transaction-scoped advisory lock, so they take turns
  as SQLite's ``BEGIN IMMEDIATE`` makes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from events.pg.connect import Qmark, advisory_key, current_schema
from events.pg.store import PgEventStore

from ..engine import Checkpoint, Projection, ProjectionEngine, read_checkpoints
from .connection import open_projection, store_url


class LeasedEngine(ProjectionEngine):
    """``ProjectionEngine``'s connections, transactions and checkpoints on PostgreSQL, with a
    lease per projection."""

    def __init__(self, store: Any, projections: Sequence[Projection], batch_size: int = 5000, **kwargs: Any) -> None:
        super().__init__(store, projections, batch_size, **kwargs)
        self.url = store_url(store)
        self._schema: str | None = None
        self._leases: set[str] = set()  # the projections whose lease this engine holds

    @staticmethod
    def _check_store(store: Any) -> None:
        store_url(store)

    def connection(self, name: str) -> Qmark:  # type: ignore[override]
        """The projection's own connection (autocommit; work runs in explicit transactions)."""
        with self._open_lock:
            conn = self._conns.get(name)
            if conn is not None and conn.raw.closed:  # lost (the server restarted, or ended it)
                self._leases.discard(name)  # its lease went with it
                del self._conns[name]
                conn = None
            if conn is None:
                opened = open_projection(self.url, name)
                if self._schema is None:
                    self._schema = current_schema(opened.raw)
                self._conns[name] = opened  # type: ignore[assignment]
                self._views[name] = PgEventStore.over(opened)
                return opened
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

    def _read_checkpoints(self, conn: Any) -> dict[str, Checkpoint]:
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

    def _lost(self, name: str) -> bool:
        """Whether the projection's connection is gone (then so is its lease: forgotten)."""
        conn = self._conns.get(name)
        if conn is None or not conn.raw.closed:
            return False
        self._leases.discard(name)
        return True
