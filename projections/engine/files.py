"""Where a SQLite store's projections live, and how a projection's file is opened.

Each projection has a SQLite file of its own beside the store's (``projection_path``), which
attaches the store read-only: its transactions read the store's events and write only its own
file, so the store's appends and the projections' batches do not wait for one another.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from events.store import attach_read_only, connect

from .checkpoints import CHECKPOINT_TABLE

# Page cache of each projection's connection: rebuilds and batches insert into large B-trees in
# key orders other than arrival (members, pairs, read indexes); a ceiling, not an allocation.
PROJECTION_CACHE_KIB = 8 * 1024
# Page size of a projection file, set when the file is created. A rebuild writes and sorts
# millions of rows; at SQLite's 4 KiB pages it spends a good part of its time in system calls
# moving them one small page at a time; 16 KiB pages cut that, larger ones did not cut more, and
# timeline reads cost the same (docs/performance.md).
# A file made before keeps its page size (delete the projections' directory to have them remade).
PROJECTION_PAGE_SIZE = 16 * 1024


def projections_dir(store_path: str | Path) -> Path:
    """Where a store's projections live: one SQLite file each, beside the store's."""
    return Path(f"{store_path}.projections")


def projection_path(store_path: str | Path, name: str) -> Path:
    return projections_dir(store_path) / f"{name}.db"


def open_projection(store_path: str | Path, name: str) -> sqlite3.Connection:
    """The projection's own connection: its file as ``main`` (with the checkpoints' table), the
    store attached read-only as ``store``."""
    conn = connect(projection_path(store_path, name), PROJECTION_CACHE_KIB, page_size=PROJECTION_PAGE_SIZE)
    # Projection rows can always be recomputed from the store, so their commits skip the fsync
    # that the store's appends pay (WAL: still atomic and consistent; a power cut may lose the
    # last commits, rows and checkpoint together, and catching up redoes them).
    conn.execute("PRAGMA synchronous = NORMAL")
    attach_read_only(conn, store_path, "store")
    conn.execute(CHECKPOINT_TABLE)
    return conn
