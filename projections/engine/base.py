"""The engine's shell: its projections, their connections and transactions, the threads they run
on, and their checkpoints. ``live`` and ``rebuilds`` build on it; the PostgreSQL engine
(``projections.pg.engine``) overrides where connections and transactions differ.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from events.store import EventStore

from .checkpoints import Checkpoint, now, read_checkpoints
from .files import open_projection, projection_path
from .projection import Projection

T = TypeVar("T")


class RebuildError(RuntimeError):
    pass


class EngineBase:
    """Runs each projection in a SQLite file of its own (``projection_path``).

    A projection's connection attaches the store read-only (as ``store``): its transactions
    read the store's events and facts and write only its own file, so appends to the store and
    the projections' batches do not wait for one another, and the projections run side by side,
    one thread each (SQLite works outside the interpreter lock). A projection's rows and its
    checkpoint are in the same file and commit together.
    """

    def __init__(
        self,
        store: EventStore,
        projections: Sequence[Projection],
        batch_size: int = 5000,
        *,
        rebuild_batch_size: int | None = None,
        set_based: bool = True,
        parallel: bool = True,
        lock_wait: float | None = None,
    ) -> None:
        self._check_store(store)
        self.store = store
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        # Rebuild batches are larger (fewer commits, each page of a growing table written less
        # often); each still holds the write lock for one batch only. Default: four live batches.
        self.rebuild_batch_size = rebuild_batch_size or 4 * batch_size
        self.set_based = set_based  # False: every event through ``apply`` (to check ``bulk`` against)
        self.parallel = parallel  # False: one projection after the other, on the caller's thread
        # Seconds a write transaction waits for another process's write lock on a projection's file
        # before failing with ``database is locked`` (None: the connection's 30 s). A command that
        # reads (``timeline show``) waits briefly, then reads what is projected.
        self.lock_wait = lock_wait
        self._rebuilding: dict[str, str] = {}  # the rebuilds this engine started: name -> tag
        # (name, rebuild tag) of the rebuilds whose read-side indexes exist and whose ``finish`` ran
        # (projections started together share a tag)
        self._finished: set[tuple[str, str]] = set()
        self._swapped: set[tuple[str, str]] = set()  # (name, rebuild tag) swapped in by this engine
        self._conns: dict[str, sqlite3.Connection] = {}
        self._views: dict[str, EventStore] = {}
        self._locks = {name: threading.RLock() for name in self.projections}  # one batch at a time each
        self._open_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._cancelled = threading.Event()

    @staticmethod
    def _check_store(store: Any) -> None:
        if store.path in ("", ":memory:"):
            raise ValueError("projections need the store in a file (they attach it)")

    def close(self) -> None:
        with self._open_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        with self._open_lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            self._views.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connections, transactions, threads ---------------------------------------------

    def path(self, name: str) -> Path:
        return projection_path(self.store.path, name)

    def connection(self, name: str) -> sqlite3.Connection:
        """The projection's own connection: its file as ``main``, the store attached read-only."""
        with self._open_lock:
            conn = self._conns.get(name)
            if conn is None:
                conn = open_projection(self.store.path, name)
                if self.lock_wait is not None:
                    conn.execute(f"PRAGMA busy_timeout = {int(self.lock_wait * 1000)}")
                self._conns[name] = conn
                self._views[name] = EventStore.over(conn)
            return conn

    def _transaction(self, name: str, work: Callable[[sqlite3.Connection, EventStore], Any]) -> Any:
        """Run ``work(conn, store)`` in one write transaction of the projection's file; ``store``
        reads the store through the same connection (one snapshot of both)."""
        conn = self.connection(name)
        with self._locks[name]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn, self._views[name])
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT (disk full, say) may have rolled back already
                    conn.execute("ROLLBACK")
                raise

    def _each(self, names: Sequence[str], fn: Callable[[str], T],
              errors: dict[str, Exception] | None = None) -> list[T]:
        """``fn(name)`` for each projection, side by side (a thread each); the first error is raised
        once all have returned. With ``errors``, each projection's error is put there instead
        (its result None) and the others' results are returned."""
        if not self.parallel or len(names) <= 1:
            if errors is None:
                return [fn(name) for name in names]
            out: list[Any] = []
            for name in names:
                try:
                    out.append(fn(name))
                except Exception as exc:  # noqa: BLE001 - the caller's to report
                    errors[name] = exc
                    out.append(None)
            return out
        with self._open_lock:
            if self._pool is None:
                # Two threads a projection: a rebuild's batches need not wait for a live catch-up
                # (another caller's) to drain; the projection's lock takes them one at a time.
                self._pool = ThreadPoolExecutor(max_workers=2 * len(self.projections), thread_name_prefix="projection")
            pool = self._pool
        futures = [pool.submit(fn, name) for name in names]
        results: list[Any] = []
        error: BaseException | None = None
        try:
            for name, future in zip(names, futures):
                try:
                    results.append(future.result())
                except Exception as exc:  # noqa: BLE001 - raised below, once every thread is done
                    if errors is not None:
                        errors[name] = exc
                    else:
                        error = error or exc
                    results.append(None)
        except BaseException:  # interrupted while waiting: a rebuild's threads stop after their batch
            self._cancelled.set()
            raise
        if error is not None:
            raise error
        return results

    # --- setup and checkpoints ----------------------------------------------------------

    def setup(self) -> list[str]:
        """Create what new projections need; return those that must be (re)built from the store.

        A projection added to a store that already holds events (or whose file is gone) starts
        as version 0 (never built): its empty tables answer until a rebuild, run in the
        background, swaps in.
        """

        def outdated(name: str) -> bool:
            p = self.projections[name]

            def work(conn: sqlite3.Connection, store: EventStore) -> bool:
                row = conn.execute("SELECT version FROM projection_checkpoints WHERE name = ?", (name,)).fetchone()
                if row is not None:
                    return bool(row[0] != p.version)
                version = p.version if store.head() == 0 else 0
                tag = f"_v{version}"
                p.drop(conn, tag)
                p.create(conn, tag)
                conn.execute(
                    "INSERT INTO projection_checkpoints (name, version, position, state, tables_tag, updated_at)"
                    " VALUES (?, ?, 0, 'live', ?, ?)",
                    (name, version, tag, now()),
                )
                return version != p.version

            return bool(self._transaction(name, work))

        return [name for name in self.projections if outdated(name)]

    def checkpoint(self, name: str) -> Checkpoint | None:
        """The projection's checkpoint; None before ``setup`` has created it."""
        conn = self.connection(name)
        with self._locks[name]:
            return self._read_checkpoints(conn).get(name)

    def analyze(self) -> None:
        """Refresh the query planner's statistics of the live tables after a bulk catch-up:
        nothing on SQLite (PostgreSQL's engine analyzes, ``projections.pg.engine``)."""

    def checkpoints(self) -> dict[str, Checkpoint]:
        """The checkpoints of the projections that are set up."""
        out = {name: self.checkpoint(name) for name in sorted(self.projections)}
        return {name: cp for name, cp in out.items() if cp is not None}

    def _read_checkpoints(self, conn: Any) -> dict[str, Checkpoint]:
        return read_checkpoints(conn)

    def is_current(self, cp: Checkpoint) -> bool:
        """Whether its live tables were written by this code's version (an outdated version waits
        for its rebuild)."""
        return cp.version == self.projections[cp.name].version

    # --- who writes each projection ------------------------------------------------------

    def lease(self, name: str) -> bool:
        """Whether this engine writes the projection: on SQLite, always (one process writes a
        store; ``projections.pg.engine`` takes a lease per projection among several)."""
        return name in self.projections

    def leases(self) -> list[str]:
        """The projections this engine writes."""
        return sorted(self.projections)

    def release(self, name: str) -> None:
        """Give the projection's writing up: nothing to give up on SQLite."""

    def head(self) -> int:
        """The store's head, read through a projection's connection (the store's own belongs to
        the appending thread)."""
        name = next(iter(self.projections))
        self.connection(name)  # opened (with its view) if it was not
        with self._locks[name]:
            return self._views[name].head()
