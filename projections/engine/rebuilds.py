"""Rebuilds: fresh tables filled from position 0 beside the live ones, then swapped in.

A rebuild fills a second set of tables (a new *tag*), one committed batch at a time (live
batches interleave), without their read-side indexes and, set-based, leaving out the rows that
``Projection.finish`` derives in one pass (``deferred``). Once caught up with the store's head it
*finishes* (the deferred rows and the read-side indexes, in a transaction of its own) and then
*swaps*: in the transaction that sees it caught up, the checkpoint names the new tables and the
old ones are dropped. Until then every read uses the live tables; a rebuild killed at any moment
leaves them untouched.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from events.store import EventStore

from .base import RebuildError
from .checkpoints import now, owner
from .live import LiveEngine
from .projection import Projection

FINISH_CACHE_KIB = 8 * 1024  # page cache while a rebuild builds its indexes and finishes


class RebuildStep(NamedTuple):
    """Where rebuilds stand after a step: the lowest position reached, the store's head, and
    whether every one has swapped in."""

    position: int
    head: int
    done: bool


class RebuildingEngine(LiveEngine):
    def start_rebuild(self, names: Sequence[str] | None = None, *, force: bool = False) -> list[str]:
        """Create fresh tables beside the live ones and mark the projections ``rebuilding``.

        Projections started together share a tag (a rebuild's tables are named by it)."""
        names = list(names or self.projections)
        unknown = [n for n in names if n not in self.projections]
        if unknown:
            raise KeyError(", ".join(unknown))
        for name in names:
            cp = self.checkpoint(name)
            if cp is None:
                raise RebuildError(f"{name} is not set up")
            r = cp.rebuild
            if not force and r is not None and r.alive() and r.owner != owner():
                raise RebuildError(f"{name} is already being rebuilt by {r.owner} (position {r.position})")
        stamp = int(time.time() * 1000)
        self._cancelled.clear()

        def start(name: str) -> None:
            p = self.projections[name]

            def work(conn: sqlite3.Connection, store: EventStore) -> None:
                cp = self._read_checkpoints(conn)[name]
                if cp.rebuild is not None:
                    p.drop(conn, cp.rebuild.tag)  # a rebuild that died: start again
                tag = f"_v{p.version}_r{stamp}"
                p.create(conn, tag, indexes=False)  # the read-side indexes come once caught up
                self._rebuilding[name] = tag
                self._finished.discard((name, tag))
                conn.execute(
                    "UPDATE projection_checkpoints SET state = 'rebuilding', rebuild_tag = ?, rebuild_version = ?,"
                    " rebuild_position = 0, rebuild_started = ?, rebuild_beat = ?, rebuild_owner = ? WHERE name = ?",
                    (tag, p.version, now(), time.time(), owner(), name),
                )

            self._transaction(name, work)

        for name in names:
            start(name)
        return names

    def rebuild_step(self, names: Sequence[str]) -> RebuildStep:
        """One batch of each rebuild not done yet (side by side); a rebuild swaps its tables in
        when it has caught up."""
        results = self._each(list(names), self._rebuild_step_one)
        return RebuildStep(min(r.position for r in results), max(r.head for r in results), all(r.done for r in results))

    def _rebuild_step_one(self, name: str) -> RebuildStep:
        """One committed batch of a projection's rebuild: fill, then finish, then swap."""
        tag = self._rebuilding.get(name)
        if tag is not None and (name, tag) in self._swapped:
            head = self.head()
            return RebuildStep(head, head, True)
        p = self.projections[name]

        def work(conn: sqlite3.Connection, store: EventStore) -> tuple[RebuildStep, bool]:
            cp = self._read_checkpoints(conn)[name]
            if cp.rebuild is None or cp.rebuild.tag != tag:
                raise RebuildError("the rebuild was cancelled or taken over by another one")
            low, head = cp.rebuild.position, store.head()
            if low < head:
                position = min(low + self.rebuild_batch_size, head)
                self._apply_range(conn, store, low, position, p, tag, deferred=self._deferred(name, tag))
                conn.execute(
                    "UPDATE projection_checkpoints SET rebuild_position = ?, rebuild_beat = ? WHERE name = ?",
                    (position, time.time(), name),
                )
                return RebuildStep(position, head, False), False
            if (name, tag) not in self._finished:
                # Caught up: the read-side indexes, built once over the filled tables, and what the
                # batches deferred, in a transaction of their own; the next step applies what
                # arrived meanwhile, then swaps.
                self._finish(conn, p, tag, low)
                return RebuildStep(low, head, False), True
            # Caught up, in the same transaction that saw the head: swap.
            p.carry(conn, cp.tag, tag)
            p.drop(conn, cp.tag)
            conn.execute(
                "UPDATE projection_checkpoints SET version = rebuild_version, position = rebuild_position,"
                " tables_tag = rebuild_tag, state = 'live', rebuild_tag = NULL, rebuild_version = NULL,"
                " rebuild_position = NULL, rebuild_started = NULL, rebuild_beat = NULL, rebuild_owner = NULL,"
                " updated_at = ? WHERE name = ?",
                (now(), name),
            )
            return RebuildStep(head, head, True), False

        step, finished = self._transaction(name, work)
        assert tag is not None
        if finished:  # committed: later batches are applied as live ones are
            self._finished.add((name, tag))
        if step.done:
            self._swapped.add((name, tag))
        return step

    def _deferred(self, name: str, tag: str) -> bool:
        """Whether a rebuild's batches leave rows to ``finish`` (set-based rebuilds, until finished).

        The per-change path (``set_based=False``) defers nothing: it is the reference that the
        set-based path, deferring, is checked against."""
        return self.set_based and all(p.has_bulk for p in self.projections.values()) and (name, tag) not in self._finished

    def _finish(self, conn: Any, p: Projection, tag: str, position: int) -> None:
        """A caught-up rebuild's deferred rows (``Projection.finish``) and read-side indexes."""
        (cache_size,) = conn.execute("PRAGMA cache_size").fetchone()
        # CREATE INDEX and ORDER BY sort with a helper thread; sorting in runs that fit
        # the CPU's caches is faster than in runs the size of the whole page cache.
        conn.execute("PRAGMA threads = 2")
        conn.execute(f"PRAGMA cache_size = -{FINISH_CACHE_KIB}")
        try:
            if self._deferred(p.name, tag):
                p.finish(conn, tag, position)
            p.create_indexes(conn, tag)
            conn.execute("UPDATE projection_checkpoints SET rebuild_beat = ? WHERE name = ?", (time.time(), p.name))
        finally:
            conn.execute("PRAGMA threads = 0")
            conn.execute(f"PRAGMA cache_size = {cache_size}")

    def rebuild(
        self,
        names: Sequence[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        force: bool = False,
    ) -> int:
        """Rebuild to completion (blocking), each projection in a thread of its own; return the
        lowest position swapped in. ``progress(position, head)`` gets the rebuilds' mean position."""
        names = self.start_rebuild(names, force=force)
        reached = {name: (0, 0) for name in names}
        lock = threading.Lock()

        def run(name: str) -> int:
            while True:
                if self._cancelled.is_set():
                    raise RebuildError("the rebuild was interrupted")
                position, head, done = self._rebuild_step_one(name)
                if progress is not None:
                    with lock:
                        reached[name] = (position, head)
                        progress(sum(p for p, _ in reached.values()) // len(reached), max(h for _, h in reached.values()))
                if done:
                    return position

        return min(self._each(names, run))

    def abandoned_rebuilds(self) -> list[str]:
        """Projections marked ``rebuilding`` whose rebuild has not moved for a while."""
        return [c.name for c in self.checkpoints().values() if c.rebuild is not None and not c.rebuild.alive()]
