"""Projections: disposable read models built from the event store."""

from .directory import DirectoryProjection
from .engine import Projection, ProjectionEngine
from .related import RelatedProjection
from .search import SearchProjection
from .timelines import TimelinesProjection


def default_projections() -> list[Projection]:
    return [TimelinesProjection(), DirectoryProjection(), RelatedProjection(), SearchProjection()]


__all__ = [
    "DirectoryProjection",
    "Projection",
    "ProjectionEngine",
    "RelatedProjection",
    "SearchProjection",
    "TimelinesProjection",
    "default_projections",
]
