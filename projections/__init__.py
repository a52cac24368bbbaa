"""Projections: disposable read models built from the event store."""

from .directory import DirectoryProjection
from .engine import Projection, ProjectionEngine
from .timelines import TimelinesProjection


def default_projections() -> list[Projection]:
    return [TimelinesProjection(), DirectoryProjection()]


__all__ = ["DirectoryProjection", "Projection", "ProjectionEngine", "TimelinesProjection", "default_projections"]
