"""Live catch-up: each projection applies the stored events after its checkpoint, a committed
batch at a time, rows and checkpoint in one transaction.

The checkpoint only moves forward (``WHERE position < :new``), so a batch is applied exactly
once whatever crashes. ``_apply_range`` turns a range of stored events into a projection's rows;
a rebuild's batches (``rebuilds``) go through it too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from events.store import EventStore

from ..changes import compute_changes
from ..groups import declarations
from .base import EngineBase
from .checkpoints import now
from .projection import Projection


class LiveEngine(EngineBase):
    def catch_up(self, upto: int | None = None) -> int:
        """Apply every stored event up to ``upto`` (default: the head); return the lowest checkpoint.

        Each projection catches up in a thread of its own, a committed batch at a time."""
        current = {name: cp.position for name, cp in self.checkpoints().items() if self.is_current(cp)}

        def run(name: str) -> int:
            position = current[name]
            while True:
                moved = self._step_one(name, upto)
                if moved is None:
                    break
                position = moved
            return position

        positions = self._each(list(current), run)
        return min(positions) if positions else self.head()

    def step(self, upto: int | None = None, *, only: Sequence[str] | None = None,
             errors: dict[str, Exception] | None = None) -> int | None:
        """One committed batch for each projection behind (side by side; ``only``: of these); the
        highest new position, or None when none was behind. With ``errors``, a projection whose
        batch failed has its error put there, and the others' batches count (see ``_each``)."""
        names = [name for name in self.projections if only is None or name in only]
        moved = [p for p in self._each(names, lambda name: self._step_one(name, upto), errors) if p is not None]
        return max(moved) if moved else None

    def lowest(self) -> int:
        """The lowest checkpoint of the projections at this code's version (the head if none)."""
        positions = [cp.position for cp in self.checkpoints().values() if self.is_current(cp)]
        return min(positions) if positions else self.head()

    def _step_one(self, name: str, upto: int | None) -> int | None:
        def work(conn: sqlite3.Connection, store: EventStore) -> int | None:
            cp = self._read_checkpoints(conn).get(name)
            head = store.head() if upto is None else min(upto, store.head())
            if cp is None or not self.is_current(cp) or cp.position >= head:
                return None
            low = cp.position
            new_position = min(low + self.batch_size, head)  # positions have no gaps
            self._apply_range(conn, store, low, new_position, self.projections[name], cp.tag, deferred=False)
            cur = conn.execute(
                "UPDATE projection_checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position < ?",
                (new_position, now(), name, new_position),
            )
            if cur.rowcount != 1:
                raise RuntimeError(f"checkpoint of {name} moved under us")
            return new_position

        return self._transaction(name, work)

    def _apply_range(
        self,
        conn: sqlite3.Connection,
        store: EventStore,
        low: int,
        high: int,
        projection: Projection,
        tag: str,
        *,
        deferred: bool,
    ) -> None:
        """Apply the events ``low < position <= high`` to a projection's tables of a tag."""
        set_based = self.set_based and projection.has_bulk
        if set_based:
            # Positions have no gaps, and the store writes an event_meta row with every event
            # (an erasure removes an erased event's row).
            (facts,) = conn.execute(
                "SELECT (SELECT COUNT(*) FROM event_meta WHERE position > ? AND position <= ?)"
                " + (SELECT COUNT(*) FROM erased_events WHERE position > ? AND position <= ?)", (low, high, low, high)
            ).fetchone()
            if facts != high - low:
                raise RuntimeError(f"event_meta has {facts} rows for the {high - low} events after {low}")
            rest = store.read_not_plain(low, high)
        else:
            rest = store.read(low, high - low, high)
        changes = compute_changes(store, rest)
        if set_based:
            projection.bulk(conn, tag, low, high, deferred=deferred)
        projection.apply(conn, changes, tag, deferred=deferred and set_based)
        declared = declarations(rest)
        if declared:
            projection.declare(conn, tag, declared, deferred=deferred and set_based)
