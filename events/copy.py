"""Moving a store between backends (``timeline copy-store SRC DEST``): SQLite to PostgreSQL and
back, or between two of either.

Every row of the store's own tables is copied as it is, in store order (positions, hashes,
recording times, erased events blanked as they were), inside one transaction at the destination
under its write lock; the source is read in one snapshot, so a service may keep appending to it.
Before that transaction commits, the hash chain is re-computed over what arrived and must end
at the source's head hash: a copy that does not verify is rolled back, and nothing is left at
the destination. After it commits, the destination is checked whole (``timeline verify``).

Projections are not copied: they rebuild from the events where the store now is, when
``timeline serve`` starts there (a projection with no tables is set up as never built). The one
table that cannot be rebuilt, the timelines projection's ``tl_removals``, the command carries
after the copy (``timeline.backup.carry_removals``, as ``timeline backup`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import Store, is_postgres, open_store
from .integrity import GENESIS, Report, _events

#: (table, its order key, its columns): the store's own tables (not ``_migrations``: each
#: backend records its own)
TABLES: tuple[tuple[str, str, str], ...] = (
    ("events", "position", "position, event_id, kind, target_id, content_hash, recorded_at, raw, body"),
    ("event_chain", "position", "position, hash"),
    ("event_meta", "position",
     "position, event_id, kind, recorded_at, occurred_at, ended_at, start_key, end_key, plain"),
    ("event_entities", "position, entity_id", "position, entity_id, name, type, role"),
    ("event_states", "position", "position, target_id, applied, error, status, corrected, entities_at, body"),
    ("erasures", "seq", "seq, event_id, position, erased_at, reason, who, erased_with, hash"),
    ("erased_events", "position", "position, erasure, raw_sha256, body_sha256"),
)
CHUNK = 5000


class CopyError(Exception):
    """The copy cannot be made (``status`` 2: a usage error) or does not verify (1)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class CopyResult:
    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    head_hash: str = GENESIS
    seconds: float = 0.0
    verified: Report | None = None


def describe(db: str | Path) -> str:
    if is_postgres(db):
        from .pg.connect import redact

        return redact(str(db))
    return str(db)


def _check_sqlite_dest(dest: Path) -> None:
    """A DEST file that exists must be a store (empty, checked after): opening it as one would
    otherwise write the store's tables into whatever it is (a projection, another program's
    database) or fail on a file that is no database (a store's log)."""
    if not dest.exists() or (dest.is_file() and dest.stat().st_size == 0):
        return
    import sqlite3

    try:
        conn = sqlite3.connect(f"{dest.absolute().as_uri()}?mode=ro", uri=True)
        try:
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        found = None
    if found is None:
        raise CopyError(f"{dest} is not a store: copy-store writes into a new file or an empty store only")


def copy_store(source: str | Path, dest: str | Path, progress: Callable[[str, int], None] | None = None) -> CopyResult:
    """Copy the store at ``source`` into the empty store at ``dest`` (created if need be)."""
    if not is_postgres(source) and not Path(source).is_file():
        raise CopyError(f"no store at {source}")
    if str(source) == str(dest):
        raise CopyError("SRC and DEST are the same store")
    if not is_postgres(dest):
        _check_sqlite_dest(Path(dest))
    started = time.perf_counter()
    result = CopyResult()
    with open_store(source, reader=True) as src, open_store(dest) as dst:
        if dst.head() != 0 or dst.erasure_count() != 0:
            raise CopyError(f"{describe(dest)} already holds events: copy-store fills an empty store only")
        with _snapshot(src), _writing(dst) as write:
            row = src.conn.execute("SELECT hash FROM event_chain ORDER BY position DESC LIMIT 1").fetchone()
            result.head_hash = row[0] if row else GENESIS
            for table, key, columns in TABLES:
                result.rows[table] = 0
                for chunk in _chunks(src, table, key, columns):
                    if table == "event_entities":
                        chunk = _names_as_derived(src, dst, chunk)
                    write(table, columns, chunk)
                    result.rows[table] += len(chunk)
                    if progress is not None:
                        progress(table, result.rows[table])
            result.events = result.rows["events"]
            arrived = _chain_at(dst)
            if not arrived.ok or arrived.head != result.head_hash or arrived.checked != result.events:
                problems = "; ".join(arrived.problems[:5]) or (
                    f"the chain ends at {arrived.head}, the source's at {result.head_hash}")
                raise CopyError(f"the copy does not verify, nothing was written to {describe(dest)}: {problems}", 1)
    result.verified = _verify(dest)
    result.seconds = time.perf_counter() - started
    if not result.verified.ok:
        raise CopyError(f"{describe(dest)} does not verify after the copy: {'; '.join(result.verified.problems[:5])}", 1)
    return result


def _chunks(store: Store, table: str, key: str, columns: str) -> Iterator[list[tuple[Any, ...]]]:
    """The table's rows in key order, a chunk at a time (keyset pages: no OFFSET)."""
    keys = [k.strip() for k in key.split(",")]
    last: tuple[Any, ...] | None = None
    conn: Any = store.conn
    while True:
        if last is None:
            where, args = "", ()
        elif len(keys) == 1:
            where, args = f"WHERE {keys[0]} > ?", last
        else:  # (position, entity_id) > (?, ?), spelt out for SQLite's planner
            where, args = f"WHERE {keys[0]} > ? OR ({keys[0]} = ? AND {keys[1]} > ?)", (last[0], last[0], last[1])
        rows = [tuple(r) for r in conn.execute(
            f"SELECT {columns} FROM {table} {where} ORDER BY {key} LIMIT {CHUNK}", args).fetchall()]
        if not rows:
            return
        yield rows
        names = [c.strip() for c in columns.split(",")]
        last = tuple(rows[-1][names.index(k)] for k in keys)
        if len(rows) < CHUNK:
            return


def _names_as_derived(src: Store, dst: Store, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``event_entities`` rows (position, entity_id, name, type, role) with each name as the
    destination's append derives it from the event: PostgreSQL's ``text`` cannot hold U+0000,
    so its store writes it as U+FFFD (``events.pg.store.pg_text``) where SQLite's keeps it. Into
    PostgreSQL, U+0000 becomes U+FFFD; from PostgreSQL into SQLite, a name holding U+FFFD is
    taken from its event's body again (it may have been U+0000 there, or U+FFFD itself)."""
    if dst.backend == "postgres" and src.backend != "postgres":
        from .pg.store import pg_text

        return [(p, e, pg_text(n), t, r) if "\x00" in n else (p, e, n, t, r) for p, e, n, t, r in rows]
    if src.backend == "postgres" and dst.backend != "postgres":
        import json

        positions = sorted({row[0] for row in rows if "\ufffd" in row[2]})
        if not positions:
            return rows
        named: dict[tuple[int, str], str] = {}
        for position, body in src.conn.execute(  # the source's snapshot: the same events
                "SELECT position, body FROM events WHERE position = ANY(?)", (positions,)):
            for entity in json.loads(body).get("entities", []):
                named[(position, entity["id"])] = entity["name"]
        return [(p, e, named.get((p, e), n), t, r) for p, e, n, t, r in rows]
    return rows


@contextmanager
def _snapshot(store: Store) -> Iterator[None]:
    """Every read of the source in one snapshot (appends may go on meanwhile)."""
    if store.backend == "postgres":
        raw = store.pg  # type: ignore[attr-defined]
        with raw.transaction(force_rollback=True):
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield
        return
    conn: Any = store.conn
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT 1 FROM events LIMIT 1").fetchall()  # the read snapshot starts here
        yield
    finally:
        conn.execute("ROLLBACK")


@contextmanager
def _writing(store: Store) -> Iterator[Callable[[str, str, list[tuple[Any, ...]]], None]]:
    """One transaction at the destination under its write lock; yields ``write(table, columns,
    rows)``. Committed when the block ends without an exception, else rolled back."""
    if store.backend == "postgres":
        raw = store.pg  # type: ignore[attr-defined]

        def copy_rows(table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
            with raw.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

        with raw.transaction():
            store.lock_writes()  # type: ignore[attr-defined]
            yield copy_rows
        return
    conn: Any = store.conn

    def insert_rows(table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns.split(",")))
        conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    conn.execute("BEGIN IMMEDIATE")
    try:
        yield insert_rows
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _chain_at(store: Store) -> Report:
    """The chain re-computed over the events as they arrived (inside the destination's transaction)."""
    report = Report()
    conn: Any = store.conn
    if store.backend == "postgres":
        from .pg.connect import Qmark

        conn = Qmark(store.pg, streaming=True)  # type: ignore[attr-defined]
    _events(conn, report, None)
    return report


def _verify(db: str | Path) -> Report:
    if is_postgres(db):
        from .pg.integrity import verify as verify_pg

        return verify_pg(str(db))
    from .integrity import verify
    from .store import connect_read_only

    conn = connect_read_only(db)
    try:
        return verify(conn)
    finally:
        conn.close()
