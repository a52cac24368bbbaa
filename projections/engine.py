"""The projection engine: every registered projection runs from its own checkpoint, in a
SQLite file of its own (``projection_path``), which attaches the store read-only.

A projection is a name, a version, its tables and ``apply(conn, changes, tag)``, and optionally
``bulk(conn, tag, low, high)``, which applies the plain news events of a range set-based, in SQL,
from the store's per-event rows (``event_meta``, ``event_entities``). The engine
reads stored events after a projection's checkpoint, turns them into changes and applies them;
the rows and the new checkpoint commit in one transaction, and the checkpoint only moves
forward (``WHERE position < :new``), so a batch is applied exactly once whatever crashes.

Tables carry a *tag*. A rebuild fills a second set of tables beside the live one, from
position 0, one committed batch at a time (live traffic interleaves), and swaps the tags in the
transaction where it has caught up with the store's head. The new tables are filled without
their read-side indexes (``Projection.indexes``), which are built once, in a transaction of
their own, when the rebuild has caught up, before the swap. Until then every read uses the live
tables; a rebuild killed at any moment leaves them untouched. A projection whose code version
differs from its live tables' version is rebuilt the same way, the old tables serving meanwhile.

A rebuild *defers* what is cheaper done once over everything than batch after batch: while it
fills its tables, ``bulk`` and ``apply`` get ``deferred=True`` and may leave out rows that
``Projection.finish`` derives in one pass once caught up (aggregates such as counts per entity
or per pair, rows that sort by another key than the store's order). Each projection's finish
runs in the transaction that builds its read-side indexes (a transaction of its own, so live
batches interleave); from then on its batches are applied as live ones are.

Projections are independent: each runs in a thread of its own (catching up, rebuilding), and
none waits for the store's appends, which write another file. SQLite does its work outside the
interpreter lock, so on two cores two projections, or a projection and an append, progress at
once.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from events.erasure import truncate_log, zero_free_pages
from events.store import EventStore, attach_read_only, connect

from .changes import Change, compute_changes
from .erasure import Erased
from .groups import declarations

STALE_AFTER = 60.0  # seconds without a batch after which a rebuild is taken to be dead
FINISH_CACHE_KIB = 8 * 1024  # page cache while a rebuild builds its indexes and finishes
# Page cache of each projection's connection: rebuilds and batches insert into large B-trees in
# key orders other than arrival (members, pairs, read indexes); a ceiling, not an allocation.
PROJECTION_CACHE_KIB = 8 * 1024
# Page size of a projection file, set when the file is created. A rebuild writes and sorts
# millions of rows; at SQLite's 4 KiB pages it spends a good part of its time in system calls
# moving them one small page at a time; 16 KiB pages cut that, larger ones did not cut more, and
# timeline reads cost the same (docs/performance.md).
# A file made before keeps its page size (delete the projections' directory to have them remade).
PROJECTION_PAGE_SIZE = 16 * 1024

T = TypeVar("T")


class Projection(ABC):
    name: str
    version: int
    #: base table name -> CREATE statements of the table and of the indexes that writing it
    #: needs, with ``{t}`` for the tagged table name
    schema: dict[str, list[str]]
    #: base table name -> CREATE INDEX statements that only reads need: a rebuild fills its
    #: tables without them and creates them once caught up, before the swap
    indexes: dict[str, list[str]] = {}
    #: base names of tables that earlier versions had and this one has not: dropped with a tag
    retired: tuple[str, ...] = ()

    def table(self, base: str, tag: str) -> str:
        return f"{base}{tag}"

    def create(self, conn: sqlite3.Connection, tag: str, *, indexes: bool = True) -> None:
        for base, statements in self.schema.items():
            for sql in statements:
                conn.execute(sql.format(t=self.table(base, tag), tag=tag))
        if indexes:
            self.create_indexes(conn, tag)

    def create_indexes(self, conn: sqlite3.Connection, tag: str) -> None:
        for base, statements in self.indexes.items():
            for sql in statements:
                conn.execute(sql.format(t=self.table(base, tag), tag=tag))

    def drop(self, conn: sqlite3.Connection, tag: str) -> None:
        for base in (*self.schema, *self.retired):
            conn.execute(f"DROP TABLE IF EXISTS {self.table(base, tag)}")

    @abstractmethod
    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str, *, deferred: bool = False) -> None:
        """Write the rows for these changes (inside the engine's transaction).

        ``deferred``: a set-based rebuild that has not finished yet (see ``finish``): rows that
        ``finish`` derives may be left out.
        """

    def bulk(self, conn: sqlite3.Connection, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        """Optionally, apply the plain news events of ``low < position <= high`` set-based, in SQL.

        Plain news events are those that no correction or retraction waited for (most of
        them): the store's ``event_meta`` rows with ``plain = 1``, whose entities are in
        ``event_entities``. ``apply`` then gets the changes of the rest. A projection that
        implements this must give the same rows whatever the order.

        ``deferred``: a rebuild that has not finished yet; rows that ``finish`` derives (from the
        store's plain events up to its position, or from the tables) may be left out.
        """
        raise NotImplementedError

    def finish(self, conn: sqlite3.Connection, tag: str, position: int) -> None:
        """Once, when a set-based rebuild (every batch ``deferred``) has caught up with ``position``:
        write the rows that were deferred, so that the tables are what live batches would have
        made. Runs before ``create_indexes``, in the same transaction (a finish that needs one of
        the read-side indexes creates it; they say IF NOT EXISTS). Default: nothing deferred."""

    def declare(
        self, conn: sqlite3.Connection, tag: str, declarations: list[tuple[int, str, str]], *, deferred: bool = False
    ) -> None:
        """The alias declarations ``(position, alias, canonical)`` of a batch, in store order,
        after its changes (``projections.groups``). Default: aliases change no rows.

        ``deferred``: as for ``apply`` (rows that ``finish`` derives may be left out)."""

    def remove(self, conn: sqlite3.Connection, tag: str, gone: "Erased", reached: int) -> None:
        """Take an erased news event out of the tables of a tag that has applied the events up to
        ``reached`` (projections.erasure): afterwards they are what a rebuild without it makes."""
        raise NotImplementedError(f"{self.name} cannot remove an erased event")

    def carry(self, conn: sqlite3.Connection, old: str, new: str) -> None:
        """At a rebuild's swap, before the tables of tag ``old`` are dropped: keep in those of
        ``new`` what the store cannot give a rebuild (default: nothing)."""

    @property
    def has_bulk(self) -> bool:
        return type(self).bulk is not Projection.bulk


class RebuildError(RuntimeError):
    pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


CHECKPOINT_COLUMNS = (
    "name, version, position, state, tables_tag, rebuild_tag, rebuild_version, rebuild_position, rebuild_beat,"
    " rebuild_owner"
)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def rebuild_alive(cp: dict[str, Any]) -> bool:
    """Whether the rebuild recorded in a checkpoint still has a live process behind it."""
    if not cp.get("rebuild_tag"):
        return False
    host, _, pid = (cp.get("rebuild_owner") or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    beat = cp.get("rebuild_beat")
    return beat is not None and time.time() - beat < STALE_AFTER


def projections_dir(store_path: str | Path) -> Path:
    """Where a store's projections live: one SQLite file each, beside the store's."""
    return Path(f"{store_path}.projections")


def projection_path(store_path: str | Path, name: str) -> Path:
    return projections_dir(store_path) / f"{name}.db"


CHECKPOINT_TABLE = """CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name            TEXT PRIMARY KEY,
    version         INTEGER NOT NULL,  -- the version of the live tables
    position        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL DEFAULT 'live',
    tables_tag      TEXT NOT NULL DEFAULT '',
    updated_at      TEXT NOT NULL,
    rebuild_tag     TEXT,
    rebuild_version INTEGER,
    rebuild_position INTEGER,
    rebuild_started TEXT,
    rebuild_beat    REAL,
    rebuild_owner   TEXT               -- host:pid of the process running the rebuild
)"""


class ProjectionEngine:
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

    def __enter__(self) -> "ProjectionEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, name: str) -> Path:
        return projection_path(self.store.path, name)

    def connection(self, name: str) -> sqlite3.Connection:
        """The projection's own connection: its file as ``main``, the store attached read-only."""
        with self._open_lock:
            conn = self._conns.get(name)
            if conn is None:
                conn = connect(self.path(name), PROJECTION_CACHE_KIB, page_size=PROJECTION_PAGE_SIZE)
                # Projection rows can always be recomputed from the store, so their commits skip
                # the fsync that the store's appends pay (WAL: still atomic and consistent; a
                # power cut may lose the last commits, rows and checkpoint together, and
                # catching up redoes them).
                conn.execute("PRAGMA synchronous = NORMAL")
                attach_read_only(conn, self.store.path, "store")
                conn.execute(CHECKPOINT_TABLE)
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
                    (name, version, tag, _now()),
                )
                return version != p.version

            return bool(self._transaction(name, work))

        return [name for name in self.projections if outdated(name)]

    def checkpoint(self, name: str) -> dict[str, Any] | None:
        """The projection's checkpoint row; None before ``setup`` has created it."""
        conn = self.connection(name)
        with self._locks[name]:
            return self._read_checkpoints(conn).get(name)

    def checkpoints(self) -> dict[str, dict[str, Any]]:
        """The checkpoints of the projections that are set up."""
        out = {name: self.checkpoint(name) for name in sorted(self.projections)}
        return {name: cp for name, cp in out.items() if cp is not None}

    # --- live ----------------------------------------------------------------------------

    def catch_up(self, upto: int | None = None) -> int:
        """Apply every stored event up to ``upto`` (default: the head); return the lowest checkpoint.

        Each projection catches up in a thread of its own, a committed batch at a time."""
        current = {name: cp["position"] for name, cp in self.checkpoints().items() if self._current(cp)}

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
        positions = [cp["position"] for cp in self.checkpoints().values() if self._current(cp)]
        return min(positions) if positions else self.head()

    def head(self) -> int:
        """The store's head, read through a projection's connection (the store's own belongs to
        the appending thread)."""
        name = next(iter(self.projections))
        self.connection(name)  # opened (with its view) if it was not
        with self._locks[name]:
            return self._views[name].head()

    def _current(self, cp: dict[str, Any]) -> bool:
        """Live tables written by this code's version (an outdated version waits for its rebuild)."""
        return cp["version"] == self.projections[cp["name"]].version

    def _step_one(self, name: str, upto: int | None) -> int | None:
        def work(conn: sqlite3.Connection, store: EventStore) -> int | None:
            cp = self._read_checkpoints(conn).get(name)
            head = store.head() if upto is None else min(upto, store.head())
            if cp is None or not self._current(cp) or cp["position"] >= head:
                return None
            low = cp["position"]
            new_position = min(low + self.batch_size, head)  # positions have no gaps
            self._apply_range(conn, store, low, new_position, self.projections[name], cp["tag"], deferred=False)
            cur = conn.execute(
                "UPDATE projection_checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position < ?",
                (new_position, _now(), name, new_position),
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

    def _deferred(self, name: str, tag: str) -> bool:
        """Whether a rebuild's batches leave rows to ``finish`` (set-based rebuilds, until finished).

        The per-change path (``set_based=False``) defers nothing: it is the reference that the
        set-based path, deferring, is checked against."""
        return self.set_based and all(p.has_bulk for p in self.projections.values()) and (name, tag) not in self._finished

    # --- erasure -------------------------------------------------------------------------

    def remove(self, gone: Erased | None) -> None:
        """Take an erased event out of every projection, live tables and a rebuild's, with the
        freed bytes overwritten (``secure_delete``, and the pages freed earlier: ``zero_free_pages``)
        and the write-ahead log emptied after. ``None``: only overwrite and empty (again)."""
        def run(name: str) -> None:
            projection, conn = self.projections[name], self.connection(name)

            def work(conn: sqlite3.Connection, _store: EventStore) -> None:
                cp = self._read_checkpoints(conn).get(name)
                if cp is None or gone is None:
                    zero_free_pages(conn)
                    return
                for tag, reached in ((cp["tag"], cp["position"]), (cp["rebuild_tag"], cp["rebuild_position"])):
                    if tag is not None and reached is not None:
                        projection.remove(conn, tag, gone, reached)
                zero_free_pages(conn)  # what earlier rebuilds and merges freed

            with self._locks[name]:
                conn.execute("PRAGMA secure_delete = ON")
                try:
                    self._transaction(name, work)
                    truncate_log(conn)
                finally:
                    conn.execute("PRAGMA secure_delete = FAST")

        self._each(list(self.projections), run)

    # --- rebuilds ------------------------------------------------------------------------

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
            if not force and rebuild_alive(cp) and cp["rebuild_owner"] != _owner():
                raise RebuildError(
                    f"{name} is already being rebuilt by {cp['rebuild_owner']} (position {cp['rebuild_position']})"
                )
        stamp = int(time.time() * 1000)
        self._cancelled.clear()

        def start(name: str) -> None:
            p = self.projections[name]

            def work(conn: sqlite3.Connection, store: EventStore) -> None:
                cp = self._read_checkpoints(conn)[name]
                if cp["rebuild_tag"]:
                    p.drop(conn, cp["rebuild_tag"])  # a rebuild that died: start again
                tag = f"_v{p.version}_r{stamp}"
                p.create(conn, tag, indexes=False)  # the read-side indexes come once caught up
                self._rebuilding[name] = tag
                self._finished.discard((name, tag))
                conn.execute(
                    "UPDATE projection_checkpoints SET state = 'rebuilding', rebuild_tag = ?, rebuild_version = ?,"
                    " rebuild_position = 0, rebuild_started = ?, rebuild_beat = ?, rebuild_owner = ? WHERE name = ?",
                    (tag, p.version, _now(), time.time(), _owner(), name),
                )

            self._transaction(name, work)

        for name in names:
            start(name)
        return names

    def rebuild_step(self, names: Sequence[str]) -> tuple[int, int, bool]:
        """One batch of each rebuild not done yet (side by side); a rebuild swaps its tables in
        when it has caught up. Returns (lowest position, head, all done)."""
        results = self._each(list(names), self._rebuild_step_one)
        return min(r[0] for r in results), max(r[1] for r in results), all(r[2] for r in results)

    def _rebuild_step_one(self, name: str) -> tuple[int, int, bool]:
        """One committed batch of a projection's rebuild: fill, then finish, then swap."""
        tag = self._rebuilding.get(name)
        if tag is not None and (name, tag) in self._swapped:
            head = self.head()
            return head, head, True
        p = self.projections[name]

        def work(conn: sqlite3.Connection, store: EventStore) -> tuple[int, int, bool, bool]:
            cp = self._read_checkpoints(conn)[name]
            if not cp["rebuild_tag"] or cp["rebuild_tag"] != tag:
                raise RebuildError("the rebuild was cancelled or taken over by another one")
            low, head = cp["rebuild_position"], store.head()
            if low < head:
                position = min(low + self.rebuild_batch_size, head)
                self._apply_range(conn, store, low, position, p, tag, deferred=self._deferred(name, tag))
                conn.execute(
                    "UPDATE projection_checkpoints SET rebuild_position = ?, rebuild_beat = ? WHERE name = ?",
                    (position, time.time(), name),
                )
                return position, head, False, False
            if (name, tag) not in self._finished:
                # Caught up: the read-side indexes, built once over the filled tables, and what the
                # batches deferred, in a transaction of their own; the next step applies what
                # arrived meanwhile, then swaps.
                self._finish(conn, p, tag, low)
                return low, head, False, True
            # Caught up, in the same transaction that saw the head: swap.
            p.carry(conn, cp["tag"], tag)
            p.drop(conn, cp["tag"])
            conn.execute(
                "UPDATE projection_checkpoints SET version = rebuild_version, position = rebuild_position,"
                " tables_tag = rebuild_tag, state = 'live', rebuild_tag = NULL, rebuild_version = NULL,"
                " rebuild_position = NULL, rebuild_started = NULL, rebuild_beat = NULL, rebuild_owner = NULL,"
                " updated_at = ? WHERE name = ?",
                (_now(), name),
            )
            return head, head, True, False

        position, head, done, finished = self._transaction(name, work)
        assert tag is not None
        if finished:  # committed: later batches are applied as live ones are
            self._finished.add((name, tag))
        if done:
            self._swapped.add((name, tag))
        return position, head, done

    def _finish(self, conn: sqlite3.Connection, p: Projection, tag: str, position: int) -> None:
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

    def _read_checkpoints(self, conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
        return read_checkpoints(conn)

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
        return [c["name"] for c in self.checkpoints().values() if c["rebuild_tag"] and not rebuild_alive(c)]


def read_checkpoints(conn: Any, schema: str = "main") -> dict[str, dict[str, Any]]:
    """The checkpoint rows (of the tables in ``schema``; ``""``: the connection's own, as on
    PostgreSQL, where they are in the store's schema)."""
    table = f"{schema}.projection_checkpoints" if schema else "projection_checkpoints"
    out = {}
    for name, version, position, state, tag, r_tag, r_version, r_position, r_beat, r_owner in conn.execute(
        f"SELECT {CHECKPOINT_COLUMNS} FROM {table} ORDER BY name"
    ):
        out[name] = {
            "name": name, "version": version, "position": position, "state": state, "tag": tag,
            "rebuild_tag": r_tag, "rebuild_version": r_version, "rebuild_position": r_position, "rebuild_beat": r_beat,
            "rebuild_owner": r_owner,
        }
    return out


def status_row(cp: dict[str, Any], head: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": cp["name"],
        "version": cp["version"],
        "position": cp["position"],
        "head": head,
        "lag": head - cp["position"],
        "state": cp["state"],
    }
    if cp.get("rebuild_tag"):
        row["rebuild"] = {"version": cp["rebuild_version"], "position": cp["rebuild_position"], "lag": head - cp["rebuild_position"]}
    return row
