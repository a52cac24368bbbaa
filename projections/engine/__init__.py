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

The modules, each building on the one before (docs/architecture.md):

- ``projection``: ``Projection``, what a projection implements;
- ``checkpoints``: the typed records (``Checkpoint``, ``Rebuild``, ``ProjectionStatus``,
  ``Tables``) and the checkpoints' table;
- ``files``: where a SQLite store's projection files are, and how one is opened;
- ``base``: connections, transactions, threads, ``setup`` and reading checkpoints;
- ``live``: catching up, a batch at a time; ``erasing``: an erased event taken out;
- ``rebuilds``: fill, finish and swap.

What the engine of every backend does is ``projections.backend.Engine``.
"""

from __future__ import annotations

from .base import EngineBase, RebuildError
from .checkpoints import (
    CHECKPOINT_COLUMNS,
    CHECKPOINT_TABLE,
    STALE_AFTER,
    Checkpoint,
    ProjectionStatus,
    Rebuild,
    Tables,
    read_checkpoints,
)
from .erasing import ErasingEngine
from .files import PROJECTION_CACHE_KIB, PROJECTION_PAGE_SIZE, projection_path, projections_dir
from .projection import Projection
from .rebuilds import FINISH_CACHE_KIB, RebuildingEngine, RebuildStep


class ProjectionEngine(RebuildingEngine, ErasingEngine):
    """The SQLite engine: ``EngineBase``'s connections and checkpoints, live catch-up
    (``live``), rebuilds (``rebuilds``) and erasure (``erasing``); implements ``Engine``."""


__all__ = [
    "CHECKPOINT_COLUMNS",
    "CHECKPOINT_TABLE",
    "FINISH_CACHE_KIB",
    "PROJECTION_CACHE_KIB",
    "PROJECTION_PAGE_SIZE",
    "STALE_AFTER",
    "Checkpoint",
    "EngineBase",
    "Projection",
    "ProjectionEngine",
    "ProjectionStatus",
    "Rebuild",
    "RebuildError",
    "RebuildStep",
    "Tables",
    "projection_path",
    "projections_dir",
    "read_checkpoints",
]
