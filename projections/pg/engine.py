"""The projection engine on PostgreSQL: the same engine (``projections.engine``), with the
projections' tables in the store's database and schema.

What differs from SQLite, and only that, is here and in ``leases`` and ``connection``:

- **Where the tables are.** A projection's tables sit beside the store's (same schema, tagged
  names as on SQLite), so its SQL joins ``event_meta`` and ``event_entities`` directly, and its
  checkpoint is a row of the store's ``projection_checkpoints``: rows and checkpoint commit in
  one transaction of the projection's own connection (``connection``).
- **Who writes.** One node at a time per projection, the holder of its lease; other writers of a
  projection take turns (``leases``).
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

from ..engine import Checkpoint, Projection, RebuildError, RebuildStep
from ..erasure import Erased
from .connection import ProjectionConnection, store_url
from .leases import LeasedEngine

LEASE_POLL = 1.0  # seconds between tries for a lease that another node holds (``rebuild``)

__all__ = ["LEASE_POLL", "PgProjectionEngine", "ProjectionConnection", "store_url"]


class PgProjectionEngine(LeasedEngine):
    """``ProjectionEngine`` over a PostgreSQL store: same methods, same guarantees, plus leases."""

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
                for tables in cp.tables():
                    projection.remove(conn, tables.tag, gone, tables.position)

            self._transaction(name, work)

        self._each(list(self.projections), run)

    # --- statistics ------------------------------------------------------------------------

    def analyze(self) -> None:
        """``ANALYZE`` every projection's live tables, after a bulk catch-up (``timeline import``
        into a store that held events): tables just grown have statistics only once autovacuum
        comes by, and the reads would be planned on guesses. A rebuild analyzes its own tables
        before it swaps them in (``_finish``)."""
        for name, cp in self.checkpoints().items():
            projection = self.projections[name]
            self.connection(name).execute(f"ANALYZE {', '.join(projection.table(b, cp.tag) for b in projection.schema)}")

    # --- rebuilds --------------------------------------------------------------------------

    def _rebuild_step_one(self, name: str) -> RebuildStep:
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
        cp = self.checkpoint(name)
        return RebuildStep(cp.rebuild.position if cp is not None and cp.rebuild is not None else 0, head, False)

    def _finish(self, conn: Any, p: Projection, tag: str, position: int) -> None:
        if self._deferred(p.name, tag):
            p.finish(conn, tag, position)
        p.create_indexes(conn, tag)
        for base in p.schema:  # statistics before the swap: the first reads are planned on them
            conn.execute(f"ANALYZE {p.table(base, tag)}")
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
                pending = [n for n in others if not self._swapped_since(n, before[n])]
                if not pending:
                    break
                if any(self.lease(n) for n in pending):  # the holder went away: rebuild here
                    reached = min(reached, super().rebuild([n for n in pending if n in self._leases], progress, force=True))
                    continue
                time.sleep(LEASE_POLL)
            reached = min(reached, min(self._position(n) for n in others))
        return reached

    def _swapped_since(self, name: str, before: Checkpoint | None) -> bool:
        """Whether the projection's live tables are others than ``before``'s, with no rebuild
        running: the rebuild asked for has swapped in."""
        cp = self.checkpoint(name)
        if cp is not None and cp.rebuild is not None:
            return False
        return (cp.tag if cp else None) != (before.tag if before else None)

    def _position(self, name: str) -> int:
        cp = self.checkpoint(name)
        return cp.position if cp is not None else 0

    def abandoned_rebuilds(self) -> list[str]:
        """Rebuilds recorded in a checkpoint that no process of this engine is running, of the
        projections whose lease this engine holds: their owner died, lost the lease, or asked the
        lease holder (this node) to rebuild. The caller starts them again (``start_rebuild``)."""
        out = []
        for name, cp in self.checkpoints().items():
            if cp.rebuild is None or not self.lease(name):
                continue
            if self._rebuilding.get(name) != cp.rebuild.tag:
                out.append(name)
        return out
