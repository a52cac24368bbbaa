"""Projections: disposable read models built from the event store."""

from typing import TYPE_CHECKING, Any

from .backend import Engine, Reads
from .directory import DirectoryProjection
from .engine import Projection, ProjectionEngine
from .related import RelatedProjection
from .search import SearchProjection
from .timelines import TimelinesProjection

if TYPE_CHECKING:
    from .queries import Queries


def default_projections() -> list[Projection]:
    return [TimelinesProjection(), DirectoryProjection(), RelatedProjection(), SearchProjection()]


def open_engine(store: Any, **options: Any) -> Engine:
    """The projection engine for a store of either backend (``events.backend.open_store``), with
    the four projections: on SQLite in files beside the store's, on PostgreSQL in its schema
    (``projections.pg``). ``options``: ``ProjectionEngine``'s."""
    if getattr(store, "backend", "sqlite") == "postgres":
        from .pg import PgProjectionEngine
        from .pg import default_projections as pg_projections

        return PgProjectionEngine(store, pg_projections(), **options)
    return ProjectionEngine(store, default_projections(), **options)


def open_queries(db: str, names: Any = None, *, read_only: bool = False) -> "Queries":
    """The read side over the store that ``db`` (``TIMELINE_DB``) names: ``projections.queries``'
    ``Queries`` on SQLite, ``projections.pg.queries.PgQueries`` (a ``Queries``) on PostgreSQL; both
    implement ``Reads``."""
    from events.backend import is_postgres

    from .queries import PROJECTIONS, Queries

    if is_postgres(str(db)):
        from .pg.queries import PgQueries

        return PgQueries(str(db), names or PROJECTIONS, read_only=read_only)
    return Queries(str(db), names or PROJECTIONS, read_only=read_only)


__all__ = [
    "DirectoryProjection",
    "Engine",
    "Projection",
    "ProjectionEngine",
    "Reads",
    "RelatedProjection",
    "SearchProjection",
    "TimelinesProjection",
    "default_projections",
    "open_engine",
    "open_queries",
]
