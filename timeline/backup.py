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
are derived and rebuild by themselves when ``timeline serve`` starts on the copy.

The copy is written to ``DEST.partial`` beside DEST, verified, flushed to disk and renamed to
DEST: a DEST that exists is a whole, verified copy. One that fails verification is kept as
``DEST.unverified`` for inspection (the live store then needs ``timeline verify`` too).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from events.integrity import Report, verify
from events.store import connect_read_only


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


def leftovers(dest: Path) -> list[Path]:
    """What belongs to a store at ``dest``: the file, its log and index, its projections."""
    candidates = [dest, Path(f"{dest}-wal"), Path(f"{dest}-shm"), Path(f"{dest}.projections")]
    return [path for path in candidates if path.exists()]


def _check_dest(source: Path, dest: Path, force: bool) -> None:
    if not source.is_file():
        raise BackupError(f"no store at {source}")
    if not dest.parent.is_dir():
        raise BackupError(f"the folder {dest.parent} does not exist: create it first")
    if dest.is_dir():
        raise BackupError(f"{dest} is a folder: name the copy's file (say {dest / source.name})")
    if dest.resolve() == source.resolve():
        raise BackupError(f"{dest} is the store itself")
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
    partial.rename(dest)
    _fsync(dest.parent)
    return BackupResult(
        dest, report.head_position, report.head, dest.stat().st_size, time.perf_counter() - started, report
    )


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
    _fsync(partial)
    if force:
        _remove(leftovers(dest))
    partial.rename(dest)
    _fsync(dest.parent)
    return BackupResult(dest, result.events, result.head_hash, dest.stat().st_size, time.perf_counter() - started,
                        result.verified)
