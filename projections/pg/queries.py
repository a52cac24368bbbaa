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
- **Reads.** Every read is ``projections.queries``' own: only its dialect differs (the
  ``Queries`` members under "the dialect"): lists as arrays (``= ANY``, ``unnest``) where SQLite
  reads JSON (``json_each``), stored events' fields taken from their JSON in Python where SQLite
  renders them in SQL, the search index as a ``tsquery`` (``projections.pg.search``), grouped
  rows grouped by the version's key.
- **Swaps.** A rebuild's swap drops the old tables: a read that read the checkpoint's tag just
  before finds them gone (``UndefinedTable``) and reads again, from a new snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import functools
import json

import psycopg

from events.pg.store import PgEventStore

from ..engine import ProjectionStatus, Tables, read_checkpoints
from ..queries import ConnectionLost, LaterChanges, Queries, QueryError, ReadTimeout, StoreUnreachable
from ..search import SearchSyntaxError
from .directory import naming
from .members import packed
from .search import CONFIG, tsquery_expression

SWAP_RETRIES = 5  # reads again after a swap dropped the tables it was about to read


class PgLaterChanges(LaterChanges):
    @staticmethod
    def statement(*, cold: bool) -> str:
        return (
            "SELECT c.position, t.position, (c.body::json #> '{details,changes,entities}')::text,"
            " (SELECT coalesce(json_agg(entity_id), '[]')::text FROM event_entities e WHERE e.position = t.position)"
            " FROM events c JOIN events t ON t.event_id = c.target_id"
            " WHERE c.target_id IS NOT NULL AND c.position > ? AND c.position <= ?"
            " AND t.position < c.position AND c.body <> '' AND t.body <> '' ORDER BY c.position"
        )


def _object(body: dict[str, Any], keys: tuple[str, ...]) -> str:
    return json.dumps({k: body.get(k) for k in keys}, ensure_ascii=False, separators=(",", ":"))[1:-1]


def _swapped(read: Callable[..., Any]) -> Callable[..., Any]:
    """A read that reads again when a rebuild's swap dropped the tables its snapshot named (or
    deadlocked with it: the read held an old table the swap drops and waited for another)."""

    @functools.wraps(read)
    def again(self: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(SWAP_RETRIES):
            try:
                return read(self, *args, **kwargs)
            except (psycopg.errors.UndefinedTable, psycopg.errors.DeadlockDetected):
                if attempt == SWAP_RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    return again


class PgQueries(Queries):
    # --- the dialect (``Queries``' own SQL, PostgreSQL's way) ------------------------------
    later_class = PgLaterChanges
    naming = staticmethod(naming)
    packed = staticmethod(packed)
    NO_LIMIT = None
    # one version an event at p: grouped by the version's key (its columns then are its own)
    BY_EVENT = " GROUP BY v.valid_from, en.start_key, en.position"
    BY_HIT = BY_EVENT + ", h.score"

    @staticmethod
    def _in(expr: str, values: Sequence[Any], *, negate: bool = False) -> tuple[str, list[Any]]:
        values = list(values)
        # An empty list has no element type: psycopg sends it untyped and the server takes the
        # column's (a text[] cast would refuse ``bigint = text``). One placeholder either way:
        # live streams use this SQL as a template for other lists.
        cast = "" if not values else "::bigint[]" if all(type(v) is int for v in values) else "::text[]"
        return f"{'NOT ' if negate else ''}({expr} = ANY(?{cast}))", [values]

    @staticmethod
    def _ordered(values: Sequence[Any]) -> tuple[str, list[Any]]:
        return "SELECT value, key FROM unnest(?::text[]) WITH ORDINALITY AS u(value, key)", [list(values)]

    @staticmethod
    def _pairs(pairs: Sequence[tuple[int, int]]) -> tuple[str, list[Any]]:
        return "SELECT * FROM unnest(?::bigint[], ?::bigint[])", [[a for a, _ in pairs], [b for _, b in pairs]]

    @staticmethod
    def _contains(column: str) -> str:
        return f"strpos({column}, ?) > 0"

    DISTINCT = "IS DISTINCT FROM"

    @staticmethod
    def reread(read: Callable[..., Any], *args: Any) -> Any:
        return _swapped(lambda _self, *a: read(*a))(None, *args)

    @staticmethod
    def _has_table(conn: Any, projection: str, table: str) -> bool:
        (found,) = conn.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()
        return bool(found)

    @staticmethod
    def _in_file(projection: str, table: str) -> str:
        return table

    @staticmethod
    def _text_max(expr: str) -> str:
        return f'MAX(({expr}) COLLATE "C")'

    @staticmethod
    def _stored_rows(conn: Any, positions: Sequence[int]) -> Iterator[tuple[Any, ...]]:
        # SQLite renders these in SQL (``STORED_FIELDS``); PostgreSQL's JSON functions space
        # their output and ``jsonb`` reorders keys: taken from the body here, the same text
        for position, event_id, recorded_at, text in conn.execute(
            "SELECT position, event_id, recorded_at, body FROM events WHERE position = ANY(?::bigint[]) AND body <> ''",
            (list(positions),),
        ):
            body = json.loads(text)
            dated = "{" + _object(body, ("occurred_at", "ended_at", "headline", "summary")) + "}"
            described = json.dumps(
                {"sources": body.get("sources", []), "details": body.get("details", {})},
                ensure_ascii=False, separators=(",", ":"),
            )
            entities = body.get("entities")
            yield position, event_id, recorded_at, dated, described, (
                None if entities is None else json.dumps(entities, ensure_ascii=False)
            )

    @staticmethod
    def _entities_at(conn: Any, versions: Sequence[tuple[int, int]]) -> Iterator[tuple[int, str | None]]:
        return conn.execute(
            "SELECT d.position, (SELECT (s.body::json -> 'entities')::text FROM event_states s"
            "  WHERE s.target_id = (SELECT event_id FROM events WHERE position = d.position)"
            "  AND s.position <= d.version ORDER BY s.position DESC LIMIT 1)"
            " FROM unnest(?::bigint[], ?::bigint[]) AS d(position, version)",
            ([a for a, _ in versions], [b for _, b in versions]),
        )

    def _match(self, q: str, expression: str) -> str:
        try:
            return tsquery_expression(q)
        except SearchSyntaxError as exc:
            raise QueryError("q", str(exc)) from None

    @staticmethod
    def _search_join(fts: str) -> tuple[str, str, str]:
        return (
            f" JOIN {fts} s ON s.version = v.valid_from CROSS JOIN to_tsquery('{CONFIG}', ?) tq",
            "s.doc @@ tq",
            "-ts_rank(s.doc, tq)",
        )

    @staticmethod
    def _hits(fts: str, score: str, within: str) -> str:
        return (
            f"SELECT s.version AS id, {score} AS score FROM {fts} s CROSS JOIN to_tsquery('{CONFIG}', ?) tq"
            f" WHERE s.doc @@ tq AND s.version IN ({within})"
        )

    # --- plumbing --------------------------------------------------------------------------

    @property
    def store(self) -> PgEventStore:  # type: ignore[override]
        store = getattr(self._local, "store", None)
        if store is not None and self._local.generation == self._generation and store.revive():
            # its connection was lost (the server restarted, or the network dropped): a new one
            self._local.attached = set()
            if self.read_only:
                store.conn.raw.execute("SET default_transaction_read_only = on")
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
        raw = None
        try:
            raw = self.store.conn.raw
            cancel = getattr(raw, "cancel_safe", None) or raw.cancel
            yield cancel
        except psycopg.errors.QueryCanceled:
            raise ReadTimeout("the read was stopped at its time limit") from None
        except psycopg.OperationalError as exc:  # the connection is lost: the next read opens another
            message = f"the store cannot be reached: {str(exc).splitlines()[0]}"
            if raw is not None and raw.broken:  # it was open: worth one more try on a new one
                raise ConnectionLost(message) from None
            raise StoreUnreachable(message) from None

    def _checkpoint(self, conn: Any, name: str) -> Tables:
        row = conn.execute("SELECT position, tables_tag FROM projection_checkpoints WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise RuntimeError(f"projection {name!r} is not set up")
        return Tables(row[0], row[1])

    def projections(self) -> list[ProjectionStatus]:
        with self.snapshot() as conn:
            head = self.store.head()
            checkpoints = {n: cp for n, cp in read_checkpoints(conn, "").items() if n in self.names}
        return [ProjectionStatus(cp, head) for cp in checkpoints.values()]

    def projected(self, conn: Any) -> int:
        found = {n: cp.position for n, cp in read_checkpoints(conn, "").items() if n in self.names}
        return min(found.values()) if len(found) == len(self.names) else 0

    # --- the reads: ``Queries``' own, read again after a swap ------------------------------

    entity = _swapped(Queries.entity)
    directory = _swapped(Queries.directory)
    related = _swapped(Queries.related)
    timeline = _swapped(Queries.timeline)
