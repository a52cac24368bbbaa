"""The projection engine: every registered projection runs from its own checkpoint.

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
runs in the transaction that builds its read-side indexes (one projection per transaction, so
appends interleave); from then on its batches are applied as live ones are.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from events.store import EventStore

from .changes import Change, compute_changes

STALE_AFTER = 60.0  # seconds without a batch after which a rebuild is taken to be dead
FINISH_CACHE_KIB = 8 * 1024  # page cache while a rebuild builds its indexes and finishes


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


class ProjectionEngine:
    def __init__(
        self,
        store: EventStore,
        projections: Sequence[Projection],
        batch_size: int = 5000,
        *,
        rebuild_batch_size: int | None = None,
        set_based: bool = True,
    ) -> None:
        self.store = store
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        # Rebuild batches are larger (fewer commits, each page of a growing table written less
        # often); each still holds the write lock for one batch only. Default: four live batches.
        self.rebuild_batch_size = rebuild_batch_size or 4 * batch_size
        self.set_based = set_based  # False: every event through ``apply`` (to check ``bulk`` against)
        self._rebuilding: dict[str, str] = {}  # the rebuilds this engine started: name -> tag
        # (name, rebuild tag) of the rebuilds whose read-side indexes exist and whose ``finish`` ran
        # (projections started together share a tag)
        self._finished: set[tuple[str, str]] = set()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.store.conn

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``work`` in one write transaction, committed without waiting for the disk.

        Projection rows can always be recomputed from the store, so their commits skip the
        fsync that the store's appends pay (``synchronous = NORMAL`` in WAL mode: still atomic
        and consistent; a power cut may lose the last projection commits, rows and checkpoint
        together, and catching up redoes them). The next append's fsync covers them anyway.
        """
        conn = self.conn
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("PRAGMA synchronous = FULL")  # what every append needs

    def setup(self) -> list[str]:
        """Create what new projections need; return those that must be (re)built from the store.

        A projection added to a store that already holds events starts as version 0 (never
        built): its empty tables answer until a rebuild, run in the background, swaps in.
        """

        def work(conn: sqlite3.Connection) -> list[str]:
            outdated = []
            head = self.store.head()
            for p in self.projections.values():
                row = conn.execute("SELECT version FROM projection_checkpoints WHERE name = ?", (p.name,)).fetchone()
                if row is None:
                    version = p.version if head == 0 else 0
                    tag = f"_v{version}"
                    p.drop(conn, tag)
                    p.create(conn, tag)
                    conn.execute(
                        "INSERT INTO projection_checkpoints (name, version, position, state, tables_tag, updated_at)"
                        " VALUES (?, ?, 0, 'live', ?, ?)",
                        (p.name, version, tag, _now()),
                    )
                    if version != p.version:
                        outdated.append(p.name)
                elif row[0] != p.version:
                    outdated.append(p.name)
            return outdated

        return self._transaction(work)

    def checkpoints(self) -> dict[str, dict[str, Any]]:
        return {n: cp for n, cp in read_checkpoints(self.conn).items() if n in self.projections}

    # --- live ----------------------------------------------------------------------------

    def catch_up(self, upto: int | None = None) -> int:
        """Apply every stored event up to ``upto`` (default: the head); return the lowest checkpoint."""
        while True:
            if self.step(upto) is None:
                cps = [c for c in self.checkpoints().values() if self._current(c)]
                return min((c["position"] for c in cps), default=self.store.head())

    def step(self, upto: int | None = None) -> int | None:
        """One committed batch of catching up; the new position, or None when nothing was behind."""
        return self._transaction(lambda conn: self._step(upto))

    def _current(self, cp: dict[str, Any]) -> bool:
        """Live tables written by this code's version (an outdated version waits for its rebuild)."""
        return cp["version"] == self.projections[cp["name"]].version

    def _step(self, upto: int | None) -> int | None:
        head = self.store.head() if upto is None else min(upto, self.store.head())
        behind = [c for c in self.checkpoints().values() if self._current(c) and c["position"] < head]
        if not behind:
            return None
        low = min(c["position"] for c in behind)
        group = [c for c in behind if c["position"] == low]
        new_position = min(low + self.batch_size, head)  # positions have no gaps
        self._apply_range(low, new_position, [(self.projections[c["name"]], c["tag"], False) for c in group])
        for cp in group:
            cur = self.conn.execute(
                "UPDATE projection_checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position < ?",
                (new_position, _now(), cp["name"], new_position),
            )
            if cur.rowcount != 1:
                raise RuntimeError(f"checkpoint of {cp['name']} moved under us")
        return new_position

    def _apply_range(self, low: int, high: int, targets: list[tuple[Projection, str, bool]]) -> None:
        """Apply the events ``low < position <= high`` to each (projection, table tag, deferred)."""
        conn = self.conn
        set_based = self.set_based and all(p.has_bulk for p, _, _ in targets)
        if set_based:
            # Positions have no gaps, and the store writes an event_meta row with every event.
            (facts,) = conn.execute(
                "SELECT COUNT(*) FROM event_meta WHERE position > ? AND position <= ?", (low, high)
            ).fetchone()
            if facts != high - low:
                raise RuntimeError(f"event_meta has {facts} rows for the {high - low} events after {low}")
            rest = self.store.read_where(
                "position IN (SELECT position FROM event_meta WHERE position > ? AND position <= ? AND NOT plain)",
                (low, high),
            )
        else:
            rest = self.store.read(low, high - low, high)
        changes = compute_changes(self.store, rest)
        for projection, tag, deferred in targets:
            if set_based:
                projection.bulk(conn, tag, low, high, deferred=deferred)
            projection.apply(conn, changes, tag, deferred=deferred and set_based)

    def _deferred(self, name: str, tag: str) -> bool:
        """Whether a rebuild's batches leave rows to ``finish`` (set-based rebuilds, until finished).

        The per-change path (``set_based=False``) defers nothing: it is the reference that the
        set-based path, deferring, is checked against."""
        return self.set_based and all(p.has_bulk for p in self.projections.values()) and (name, tag) not in self._finished

    # --- rebuilds ------------------------------------------------------------------------

    def start_rebuild(self, names: Sequence[str] | None = None, *, force: bool = False) -> list[str]:
        """Create fresh tables beside the live ones and mark the projections ``rebuilding``."""
        names = list(names or self.projections)
        unknown = [n for n in names if n not in self.projections]
        if unknown:
            raise KeyError(", ".join(unknown))

        def work(conn: sqlite3.Connection) -> list[str]:
            cps = self.checkpoints()
            for name in names:
                cp = cps[name]
                if not force and rebuild_alive(cp) and cp["rebuild_owner"] != _owner():
                    raise RebuildError(
                        f"{name} is already being rebuilt by {cp['rebuild_owner']} (position {cp['rebuild_position']})"
                    )
            for name in names:
                p, cp = self.projections[name], cps[name]
                if cp["rebuild_tag"]:
                    p.drop(conn, cp["rebuild_tag"])  # a rebuild that died: start again
                tag = f"_v{p.version}_r{int(time.time() * 1000)}"
                p.create(conn, tag, indexes=False)  # the read-side indexes come once caught up
                self._rebuilding[name] = tag
                self._finished.discard((name, tag))
                conn.execute(
                    "UPDATE projection_checkpoints SET state = 'rebuilding', rebuild_tag = ?, rebuild_version = ?,"
                    " rebuild_position = 0, rebuild_started = ?, rebuild_beat = ?, rebuild_owner = ? WHERE name = ?",
                    (tag, p.version, _now(), time.time(), _owner(), name),
                )
            return names

        return self._transaction(work)

    def rebuild_step(self, names: Sequence[str]) -> tuple[int, int, bool]:
        """One batch of a rebuild; swaps when caught up. Returns (position, head, done)."""

        finished: list[tuple[str, str]] = []

        def work(conn: sqlite3.Connection) -> tuple[int, int, bool]:
            cps = self.checkpoints()
            mine = [cps[n] for n in names if cps[n]["rebuild_tag"] and cps[n]["rebuild_tag"] == self._rebuilding.get(n)]
            if len(mine) != len(names):
                raise RebuildError("the rebuild was cancelled or taken over by another one")
            low = min(c["rebuild_position"] for c in mine)
            head = self.store.head()
            applied = low < head
            if applied:
                position = min(low + self.rebuild_batch_size, head)
                group = [c for c in mine if c["rebuild_position"] == low]
                self._apply_range(
                    low,
                    position,
                    [
                        (self.projections[c["name"]], c["rebuild_tag"], self._deferred(c["name"], c["rebuild_tag"]))
                        for c in group
                    ],
                )
                for cp in group:
                    if cp["rebuild_position"] == low:
                        conn.execute(
                            "UPDATE projection_checkpoints SET rebuild_position = ?, rebuild_beat = ? WHERE name = ?",
                            (position, time.time(), cp["name"]),
                        )
                low = min(position if c["rebuild_position"] == low else c["rebuild_position"] for c in mine)
            if low < head:
                return low, head, False
            unfinished = [c for c in mine if (c["name"], c["rebuild_tag"]) not in self._finished]
            if unfinished:
                # Caught up: one projection's read-side indexes, built once over the filled tables,
                # and what its batches deferred, in a transaction of their own; the next steps
                # apply what arrived meanwhile, finish the others and swap.
                if not applied:
                    cp = unfinished[0]
                    tag = cp["rebuild_tag"]
                    # CREATE INDEX and ORDER BY sort with a helper thread; sorting in runs that fit
                    # the CPU's caches is faster than in runs the size of the whole page cache.
                    conn.execute("PRAGMA threads = 2")
                    conn.execute(f"PRAGMA cache_size = -{FINISH_CACHE_KIB}")
                    try:
                        projection = self.projections[cp["name"]]
                        if self._deferred(cp["name"], tag):
                            projection.finish(conn, tag, low)
                        projection.create_indexes(conn, tag)
                        conn.execute(
                            "UPDATE projection_checkpoints SET rebuild_beat = ? WHERE name = ?",
                            (time.time(), cp["name"]),
                        )
                        finished.append((cp["name"], tag))
                    finally:
                        conn.execute("PRAGMA threads = 0")
                        conn.execute(f"PRAGMA cache_size = {cache_size}")
                return low, head, False
            for cp in mine:  # caught up, in the same transaction that saw the head: swap
                self.projections[cp["name"]].drop(conn, cp["tag"])
                conn.execute(
                    "UPDATE projection_checkpoints SET version = rebuild_version, position = rebuild_position,"
                    " tables_tag = rebuild_tag, state = 'live', rebuild_tag = NULL, rebuild_version = NULL,"
                    " rebuild_position = NULL, rebuild_started = NULL, rebuild_beat = NULL, rebuild_owner = NULL,"
                    " updated_at = ?"
                    " WHERE name = ?",
                    (_now(), cp["name"]),
                )
            return head, head, True

        (cache_size,) = self.conn.execute("PRAGMA cache_size").fetchone()
        result = self._transaction(work)
        self._finished.update(finished)
        return result

    def rebuild(
        self,
        names: Sequence[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        force: bool = False,
    ) -> int:
        """Rebuild to completion (blocking); return the position swapped in."""
        names = self.start_rebuild(names, force=force)
        while True:
            position, head, done = self.rebuild_step(names)
            if progress:
                progress(position, head)
            if done:
                return position

    def abandoned_rebuilds(self) -> list[str]:
        """Projections marked ``rebuilding`` whose rebuild has not moved for a while."""
        return [c["name"] for c in self.checkpoints().values() if c["rebuild_tag"] and not rebuild_alive(c)]



def read_checkpoints(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    out = {}
    for name, version, position, state, tag, r_tag, r_version, r_position, r_beat, r_owner in conn.execute(
        f"SELECT {CHECKPOINT_COLUMNS} FROM projection_checkpoints ORDER BY name"
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
