"""The reads' plumbing: the dialect, the snapshot and time limit, checkpoints and events."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from events.erasure import Gone, erasure_count, tombstone
from events.ids import compact_json
from events.store import EventStore, attach_read_only

from .. import default_projections
from ..aliases import AliasIndex
from ..directory import group_naming, naming
from ..engine import ProjectionStatus, Tables, projection_path, read_checkpoints
from ..members import packed

from .cards import LaterChanges, STORED_FIELDS, StoredCards
from .cursors import as_of_key
from .errors import NotFound, ReadTimeout


PROJECTIONS = tuple(p.name for p in default_projections())  # whose files the reads attach


class QueriesBase:
    # --- the dialect: what the reads' SQL says differently on PostgreSQL -------------------
    # (``projections.pg.queries.PgQueries`` overrides these and nothing of the reads themselves)
    later_class = LaterChanges
    naming = staticmethod(naming)
    group_naming = staticmethod(group_naming)
    packed = staticmethod(packed)
    NO_LIMIT: Any = -1  # ``LIMIT`` without a bound
    # an entity's rows filed under several of its ids, once an event (one version an event at p)
    BY_EVENT = " GROUP BY v.position"
    BY_HIT = BY_EVENT  # the same, of a search's hits ``h`` (each with its score)

    @staticmethod
    def _in(expr: str, values: Sequence[Any], *, negate: bool = False) -> tuple[str, list[Any]]:
        """SQL: ``expr`` is (``negate``: is not) one of ``values``; and its arguments."""
        return f"{expr} {'NOT ' if negate else ''}IN (SELECT value FROM json_each(?))", [compact_json(list(values))]

    @staticmethod
    def _ordered(values: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL: a table ``(value, key)`` of ``values`` with their index; and its arguments."""
        return "SELECT value, key FROM json_each(?)", [compact_json(list(values))]

    @staticmethod
    def _pairs(pairs: Sequence[tuple[int, int]]) -> tuple[str, list[Any]]:
        """SQL: a table ``(position, version)`` of integer pairs; and its arguments."""
        return "SELECT value ->> 0, value ->> 1 FROM json_each(?)", [json.dumps(pairs)]

    @staticmethod
    def _contains(column: str) -> str:
        return f"instr({column}, ?)"

    DISTINCT = "IS NOT"  # one value differs from another, NULL a value like any

    @staticmethod
    def reread(read: Callable[..., Any], *args: Any) -> Any:
        """``read(*args)``, read again if a rebuild's swap dropped the tables it read (on
        PostgreSQL; SQLite's snapshot keeps them)."""
        return read(*args)

    @staticmethod
    def _has_table(conn: Any, projection: str, table: str) -> bool:
        """Whether a projection's table exists (in the snapshot's view)."""
        return conn.execute(f"SELECT 1 FROM p_{projection}.sqlite_master WHERE name = ?", (table,)).fetchone() is not None

    @staticmethod
    def _in_file(projection: str, table: str) -> str:
        """A projection's table as a statement names it."""
        return f"p_{projection}.{table}"

    @staticmethod
    def _text_max(expr: str) -> str:
        return f"MAX({expr})"

    @staticmethod
    def _stored_rows(conn: Any, positions: Sequence[int]) -> Iterator[tuple[Any, ...]]:
        """``(position, event_id, recorded_at, dates, texts, entities)`` of stored events: their
        dates and headline, and their sources and details, as JSON objects (``STORED_FIELDS``),
        their entities as JSON text."""
        return conn.execute(
            f"SELECT position, event_id, recorded_at, {STORED_FIELDS}, body -> '$.entities' FROM events"
            f" WHERE position IN ({','.join('?' * len(positions))}) AND body <> ''",
            positions,
        )

    @staticmethod
    def _entities_at(conn: Any, versions: Sequence[tuple[int, int]]) -> Iterator[tuple[int, str | None]]:
        """``(position, entities as JSON)`` of events at versions: the latest change to each up to
        the version's start."""
        return conn.execute(
            "SELECT d.value ->> 0, (SELECT s.body -> '$.entities' FROM event_states s"
            "  WHERE s.target_id = (SELECT event_id FROM events WHERE position = d.value ->> 0)"
            "  AND s.position <= d.value ->> 1 ORDER BY s.position DESC LIMIT 1)"
            " FROM json_each(?) d",
            (compact_json(versions),),
        )

    def _match(self, q: str, expression: str) -> str:
        """What a user typed in ``q`` in the index's language (``expression``: as FTS5's, what a
        cursor is bound to on either database)."""
        return expression

    @staticmethod
    def _search_join(fts: str) -> tuple[str, str, str]:
        """SQL joining the search index ``s`` to the versions ``v``: what goes in FROM (with the
        query's argument, if it takes it there), the condition in WHERE (or there), and a
        version's score (lower first)."""
        return f" JOIN {fts} s", f"s.rowid = v.valid_from AND {fts} MATCH ?", f"bm25({fts})"

    @staticmethod
    def _hits(fts: str, score: str, within: str) -> str:
        """SQL: ``(id, score)`` of the index's matches (the query's argument first) among the
        versions ``within`` selects."""
        # ``+rowid``: not a constraint the index would be asked with once per value
        return f"SELECT rowid AS id, {score} AS score FROM {fts} WHERE {fts} MATCH ? AND +rowid IN ({within})"

    def __init__(self, path: str, names: Sequence[str] = PROJECTIONS, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only  # a read-only node's: every connection opened so that it cannot write
        self.names = tuple(names)  # the projections whose files readers attach
        self.aliases = AliasIndex()
        self.later = self.later_class()
        self.cards = StoredCards()
        self._kept_names: tuple[tuple[int, str] | None, dict[str, str]] = (None, {})  # ``_directory_names``
        self._kept_entities: tuple[tuple[Any, ...] | None, dict[int, str]] = (None, {})  # ``_involved``
        self._local = threading.local()
        self._open: list[EventStore] = []  # every thread's connection, for ``close``
        self._open_lock = threading.Lock()
        self._generation = 0  # bumped by ``close``: a thread's older connection is closed
        self._erasures = 0  # erasures made when the memory below was read

    # --- plumbing ------------------------------------------------------------------------

    def _refresh(self) -> AliasIndex:
        """The alias index, read on. After an erasure (made by any process) what the read side
        keeps in memory (aliases, later changes, cached entries) is dropped and read again
        without what was erased (docs/erasure.md)."""
        store = self.store
        erased = erasure_count(store.conn)
        if erased != self._erasures:
            self.aliases, self.later, self.cards = AliasIndex(), self.later_class(), StoredCards()
            self._erasures = erased
        self.aliases.refresh(store)
        return self.aliases

    @property
    def store(self) -> EventStore:
        store = getattr(self._local, "store", None)
        if store is None or self._local.generation != self._generation:
            store = self._local.store = EventStore(self.path, reader=True, read_only=self.read_only)
            self._local.attached = set()
            self._local.generation = self._generation
            with self._open_lock:
                self._open.append(store)
        return store

    @contextmanager
    def time_limit(self, deadline: float) -> Iterator[Callable[[], None]]:
        """Run this thread's read until ``deadline`` (``time.monotonic()``) at the latest.

        Yields the function that stops the read (``sqlite3.Connection.interrupt``, callable from
        any thread): whoever keeps the time calls it at the deadline, and again while the read
        goes on (an interrupt that falls between two statements is lost). The read then raises
        ``ReadTimeout``; its snapshot is rolled back."""
        if time.monotonic() >= deadline:
            raise ReadTimeout("the read did not start before its time limit")
        conn = self.store.conn
        try:
            yield conn.interrupt
        except sqlite3.OperationalError as exc:
            if str(exc) != "interrupted":
                raise
            raise ReadTimeout("the read was stopped at its time limit") from None
        finally:
            if conn.in_transaction:  # an interrupted read leaves its snapshot open
                conn.execute("ROLLBACK")

    def _attach(self) -> None:
        """Attach the projections' files (``p_<name>``, read-only) that exist and are not yet."""
        conn, attached = self.store.conn, self._local.attached
        for name in self.names:
            if name not in attached and projection_path(self.path, name).exists():
                attach_read_only(conn, projection_path(self.path, name), f"p_{name}")
                attached.add(name)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction over the store and the projections' files: each file is read
        as it was at the first read of it (a projection's rows and checkpoint agree)."""
        conn = self.store.conn
        if len(self._local.attached) < len(self.names):
            self._attach()  # not inside a transaction: ATTACH cannot be
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection (each thread opens another if it reads again)."""
        with self._open_lock:
            stores, self._open = self._open, []
            self._generation += 1
        for store in stores:
            store.close()
        self._local.store = None

    def _checkpoint(self, conn: sqlite3.Connection, name: str) -> Tables:
        row = None
        if name in self._local.attached:
            row = conn.execute(
                f"SELECT position, tables_tag FROM p_{name}.projection_checkpoints WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise RuntimeError(f"projection {name!r} is not set up")
        return Tables(row[0], row[1])

    def projections(self) -> list[ProjectionStatus]:
        """Each projection's version, checkpoint, the store's head, the lag and the state."""
        with self.snapshot() as conn:
            head = self.store.head()
            checkpoints = {}
            for name in sorted(self._local.attached):
                checkpoints.update(read_checkpoints(conn, f"p_{name}"))
        return [ProjectionStatus(cp, head) for cp in checkpoints.values()]

    def projected(self, conn: sqlite3.Connection) -> int:
        """The lowest checkpoint of the projections (inside a snapshot); 0 when one is not set up."""
        positions = [self._checkpoint(conn, name)[0] for name in self.names if name in self._local.attached]
        return min(positions) if len(positions) == len(self.names) else 0

    # --- events --------------------------------------------------------------------------

    def event(self, event_id: str, as_of: str | None = None) -> dict[str, Any]:
        with self.snapshot():
            store = self.store
            upto = store.position_at(as_of_key(as_of)) if as_of else None
            found = store.state(event_id, upto)
            left = tombstone(store.conn, event_id) if found is None else None
        if left is not None:
            raise Gone(left)
        if found is None:
            raise NotFound(f"no event {event_id!r}" + (f" as of {as_of}" if as_of else ""))
        event, state = found
        return {
            **state.body,
            "position": event.position,
            "recorded_at": event.recorded_at,
            "status": state.status,
            "history": state.history,
        }

    # --- entities ------------------------------------------------------------------------
