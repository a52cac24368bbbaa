"""The projections on PostgreSQL (``TIMELINE_DB=postgresql://...``): the same projections and
engine as on SQLite (``projections``), with their tables in the store's database."""

from __future__ import annotations

from ..engine import Projection
from .directory import PgDirectoryProjection
from .engine import PgProjectionEngine
from .timelines import PgTimelinesProjection


def default_projections() -> list[Projection]:
    return [PgTimelinesProjection(), PgDirectoryProjection()]


__all__ = ["PgDirectoryProjection", "PgProjectionEngine", "PgTimelinesProjection", "default_projections"]
