"""``timeline backup DEST``: a consistent copy of the store, taken while the service runs, then
verified (``events.integrity.verify``, what ``timeline verify`` runs).

How: SQLite's online backup API (``sqlite3.Connection.backup``) copying every page in ONE step.
The store is in WAL mode, where a reader never blocks the writer: the step is one read
transaction, so the copy is the store exactly as it stood at one commit (a gap-free prefix of
positions 1..N, hash chain included) while appends go on into the write-ahead log. Copying a
few pages per step (what the API offers for rollback-journal files, where a reader does block
the writer) would restart from the first page whenever another connection commits between two
steps: under steady ingest a large store would never finish. ``VACUUM INTO`` reads the same
snapshot but rebuilds every table and index row by row: the same consistency for several times
the CPU; the page copy is as fast as the disk.

Only the store is copied: it is the source of truth. The projections (a file each beside it)
are derived and rebuild by themselves when ``timeline serve`` starts on the copy. All but one
table: the timelines projection's ``tl_removals`` (the erasures told to live streams, see
``projections.timelines``) holds what the store no longer does (which entities an erased event
was filed under, what an erased alias had merged), so a rebuild takes it over from the tables it
replaces instead of deriving it. ``carry_removals`` gives the copy such tables: its timelines
projection is set up as never built, its ``tl_removals`` holding the store's rows of the
erasures the copy holds, and the rebuild that ``timeline serve`` starts carries them over; the
copy's live streams then tell a resuming client what the store's do. ``timeline copy-store``
carries them the same way, into a SQLite file or a PostgreSQL schema.

The copy is written to ``DEST.partial`` beside DEST, verified, flushed to disk and renamed to
DEST: a DEST that exists is a whole, verified copy. One that fails verification is kept as
``DEST.unverified`` for inspection (the live store then needs ``timeline verify`` too).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from events.integrity import Report, verify
from events.store import connect, connect_read_only

from .stores import owned_message


class BackupError(Exception):
    """A backup that cannot be made (the message says why); nothing was written at DEST."""


@dataclass(frozen=True)
class BackupResult:
    dest: Path
    events: int  # the copy's last position (it holds 1..events)
    head_hash: str
    bytes: int
    seconds: float
    report: Report = field(repr=False)


def _parts(dest: Path) -> list[Path]:
    return [dest, Path(f"{dest}-wal"), Path(f"{dest}-shm"), Path(f"{dest}.projections")]


def leftovers(dest: Path) -> list[Path]:
    """What belongs to a store at ``dest``: the file, its log and index, its projections."""
    return [path for path in _parts(dest) if path.exists()]


def _check_dest(source: Path, dest: Path, force: bool) -> None:
    if not source.is_file():
        raise BackupError(f"no store at {source}")
    if not dest.parent.is_dir():
        raise BackupError(f"the folder {dest.parent} does not exist: create it first")
    if dest.is_dir():
        raise BackupError(f"{dest} is a folder: name the copy's file (say {dest / source.name})")
    # what this writes, renames in or removes with --force: none of it may be part of the store
    written = [part for path in (dest, Path(f"{dest}.partial"), Path(f"{dest}.unverified")) for part in _parts(path)]
    problem = owned_message(source, written)
    if problem is not None:
        raise BackupError(problem)
    found = leftovers(dest)
    if found and not force:
        raise BackupError(
            f"{found[0]} exists: not overwritten (--force replaces it"
            + (", with its log and projections" if len(found) > 1 or found[0] != dest else "") + ")"
        )


def _remove(paths: list[Path]) -> None:
    import shutil

    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_store(source: Path, partial: Path) -> None:
    """Copy the store's pages as of one commit into ``partial`` (a new file)."""
    # Read-only, but never ``immutable`` (``connect_read_only`` opens a file without a log so):
    # the service may commit while the copy is taken.
    src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30.0)
    try:
        dst = sqlite3.connect(partial, isolation_level=None)
        try:
            src.backup(dst, pages=0)  # every page in one step: one read transaction, one snapshot
            # The copy stands alone: its pages in the file itself, no log beside it.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def carry_removals(rows: list[tuple], copy: Path | str) -> None:
    """Set the timelines projection of the store ``copy`` (a SQLite file, or a PostgreSQL URL) up
    as never built (version 0, what ``ProjectionEngine.setup`` makes for a store that holds
    events), with ``rows`` in its ``tl_removals``: the rebuild that ``timeline serve`` starts
    carries them over at its swap."""
    from events.backend import is_postgres
    from projections.engine import CHECKPOINT_TABLE, PROJECTION_CACHE_KIB, PROJECTION_PAGE_SIZE, projection_path
    from projections.timelines import REMOVALS, TimelinesProjection

    if not rows:
        return
    if is_postgres(str(copy)):
        _carry_removals_pg(rows, str(copy))
        return
    copy = Path(copy)
    projection, tag = TimelinesProjection(), "_v0"
    conn = connect(projection_path(copy, projection.name), PROJECTION_CACHE_KIB, page_size=PROJECTION_PAGE_SIZE)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(CHECKPOINT_TABLE)
        projection.create(conn, tag)
        conn.execute(
            "INSERT INTO projection_checkpoints (name, version, position, state, tables_tag, updated_at)"
            " VALUES (?, 0, 0, 'live', ?, ?)",
            (projection.name, tag, datetime.now(timezone.utc).isoformat()),
        )
        conn.executemany(
            f"INSERT INTO {projection.table(REMOVALS, tag)} VALUES ({', '.join('?' * len(rows[0]))})", rows
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = DELETE")  # the copy stands alone: no log beside it
    finally:
        conn.close()


def _carry_removals_pg(rows: list[tuple], url: str) -> None:
    """``carry_removals`` into a PostgreSQL store: its engine's own ``setup`` of the timelines
    projection (the store holds events: version 0), then the rows, in one transaction of it."""
    from events.pg.store import PgEventStore
    from projections.pg import PgProjectionEngine, PgTimelinesProjection
    from projections.timelines import REMOVALS

    projection = PgTimelinesProjection()
    with PgEventStore(url) as store, PgProjectionEngine(store, [projection]) as engine:
        engine.setup()

        def work(conn: Any, _store: Any) -> None:
            (tag,) = conn.execute(
                "SELECT tables_tag FROM projection_checkpoints WHERE name = ?", (projection.name,)
            ).fetchone()
            conn.executemany(
                f"INSERT INTO {projection.table(REMOVALS, tag)} VALUES ({', '.join('?' * len(rows[0]))})", rows
            )

        engine._transaction(projection.name, work)


def removals_of(source: Path | str, copy: Path | str) -> list[tuple]:
    """The rows of the store ``source``'s live ``tl_removals`` (a SQLite file's, or a PostgreSQL
    URL's) of the erasures the store ``copy`` holds (none when its timelines projection has none)."""
    from events.backend import is_postgres
    from projections.engine import projection_path
    from projections.timelines import REMOVALS

    (last,) = _one(copy, "SELECT COALESCE(MAX(seq), 0) FROM erasures")
    if last and is_postgres(str(source)):
        from events.pg.connect import connect as pg_connect

        with pg_connect(str(source), application_name="timeline-backup") as pg:
            row = pg.execute("SELECT to_regclass('projection_checkpoints') IS NOT NULL").fetchone()
            tag = row[0] and pg.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = 'timelines'").fetchone()
            if not tag or not pg.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{REMOVALS}{tag[0]}",)).fetchone()[0]:
                return []
            return pg.execute(f"SELECT * FROM {REMOVALS}{tag[0]} WHERE seq <= %s ORDER BY seq", (last,)).fetchall()
    path = projection_path(source, "timelines")
    if not last or not path.is_file():
        return []
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30.0)
    try:
        row = conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = 'timelines'").fetchone()
        table = f"{REMOVALS}{row[0]}" if row else None
        if table is None or not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
            return []
        return conn.execute(f"SELECT * FROM {table} WHERE seq <= ? ORDER BY seq", (last,)).fetchall()
    finally:
        conn.close()


def _one(path: Path | str, sql: str) -> tuple:
    from events.backend import is_postgres

    if is_postgres(str(path)):
        from events.pg.connect import connect as pg_connect

        with pg_connect(str(path), application_name="timeline-backup") as pg:
            return tuple(pg.execute(sql).fetchone() or ())
    conn = connect_read_only(Path(path))
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


def backup(source: Path, dest: Path, *, force: bool = False) -> BackupResult:
    """Copy the store at ``source`` to ``dest`` consistently, verify the copy, then rename it in."""
    source, dest = Path(source), Path(dest)
    _check_dest(source, dest, force)
    partial = Path(f"{dest}.partial")
    _remove(leftovers(partial))
    started = time.perf_counter()
    try:
        copy_store(source, partial)
        conn = connect_read_only(partial)
        try:
            report = verify(conn)
        finally:
            conn.close()
        if report.ok:
            carry_removals(removals_of(source, partial), partial)
    except BaseException:
        _remove(leftovers(partial))
        raise
    if not report.ok:
        unverified = Path(f"{dest}.unverified")
        _remove(leftovers(unverified))
        partial.rename(unverified)
        problems = "; ".join(report.problems[:5])
        raise BackupError(f"the copy does not verify (kept as {unverified}): {problems}")
    _fsync(partial)
    if force:
        _remove(leftovers(dest))  # the old copy's log and projections must not meet the new file
    _rename_projections(partial, dest)
    partial.rename(dest)
    _fsync(dest.parent)
    return BackupResult(
        dest, report.head_position, report.head, dest.stat().st_size, time.perf_counter() - started, report
    )


def _rename_projections(partial: Path, dest: Path) -> None:
    """The copy's projections (``carry_removals``) beside it, before the copy itself is renamed in."""
    from projections.engine import projections_dir

    if projections_dir(partial).is_dir():
        for path in projections_dir(partial).iterdir():
            _fsync(path)
        projections_dir(partial).rename(projections_dir(dest))


def backup_postgres(url: str, dest: Path, *, force: bool = False) -> BackupResult:
    """A PostgreSQL store (``url``) backed up into the SQLite file ``dest``: ``timeline copy-store``
    (events.copy: one snapshot of the source, the chain verified on arrival, the copy checked
    whole), written to ``DEST.partial`` and renamed in once verified, as a SQLite backup is.

    The copy is a store of its own: ``timeline serve`` runs on it, and ``timeline copy-store``
    brings it back to PostgreSQL. PostgreSQL's own tools (pg_dump, base backups with WAL
    archiving) back up the whole database instead: docs/postgresql.md#backups."""
    from events.copy import CopyError, copy_store as copy

    dest = Path(dest)
    if not dest.parent.is_dir():
        raise BackupError(f"the folder {dest.parent} does not exist: create it first")
    if dest.is_dir():
        raise BackupError(f"{dest} is a folder: name the copy's file (say {dest / 'timeline.db'})")
    found = leftovers(dest)
    if found and not force:
        raise BackupError(f"{found[0]} exists: not overwritten (--force replaces it)")
    partial = Path(f"{dest}.partial")
    _remove(leftovers(partial))
    started = time.perf_counter()
    try:
        result = copy(url, partial)
        conn = sqlite3.connect(partial, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = DELETE")  # the copy stands alone: no log beside it
        finally:
            conn.close()
    except CopyError as exc:
        _remove(leftovers(partial))
        raise BackupError(str(exc) if exc.status == 2 else f"the copy does not verify: {exc}") from None
    except BaseException:
        _remove(leftovers(partial))
        raise
    assert result.verified is not None
    try:
        carry_removals(removals_of(url, partial), partial)
    except BaseException:
        _remove(leftovers(partial))
        raise
    _fsync(partial)
    if force:
        _remove(leftovers(dest))
    _rename_projections(partial, dest)
    partial.rename(dest)
    _fsync(dest.parent)
    return BackupResult(dest, result.events, result.head_hash, dest.stat().st_size, time.perf_counter() - started,
                        result.verified)
