"""Projections: disposable read models built from the event store."""

from typing import Any

from .directory import DirectoryProjection
from .engine import Projection, ProjectionEngine
from .related import RelatedProjection
from .search import SearchProjection
from .timelines import TimelinesProjection


def default_projections() -> list[Projection]:
    return [TimelinesProjection(), DirectoryProjection(), RelatedProjection(), SearchProjection()]


def open_engine(store: Any, **options: Any) -> ProjectionEngine:
    """The projection engine for a store of either backend (``events.backend.open_store``), with
    the four projections: on SQLite in files beside the store's, on PostgreSQL in its schema
    (``projections.pg``). ``options``: ``ProjectionEngine``'s."""
    if getattr(store, "backend", "sqlite") == "postgres":
        from .pg import PgProjectionEngine
        from .pg import default_projections as pg_projections

        return PgProjectionEngine(store, pg_projections(), **options)
    return ProjectionEngine(store, default_projections(), **options)


__all__ = [
    "DirectoryProjection",
    "Projection",
    "ProjectionEngine",
    "RelatedProjection",
    "SearchProjection",
    "TimelinesProjection",
    "default_projections",
    "open_engine",
]
