"""The projections on PostgreSQL (``TIMELINE_DB=postgresql://...``): the same projections and
engine as on SQLite (``projections``), with their tables in the store's database."""

from __future__ import annotations

from ..engine import Projection
from .directory import PgDirectoryProjection
from .engine import PgProjectionEngine
from .related import PgRelatedProjection
from .search import PgSearchProjection
from .timelines import PgTimelinesProjection


def default_projections() -> list[Projection]:
    return [PgTimelinesProjection(), PgDirectoryProjection(), PgRelatedProjection(), PgSearchProjection()]


__all__ = [
    "PgDirectoryProjection",
    "PgProjectionEngine",
    "PgRelatedProjection",
    "PgSearchProjection",
    "PgTimelinesProjection",
    "default_projections",
]
