"""The projections' interfaces: what each backend's projection engine and read side do.

A backend is three classes, one per role, each checked against its Protocol
(tests/unit/test_backend_protocols.py):

- the store, ``events.backend.Store`` (``events.store.EventStore``, ``events.pg.store.PgEventStore``);
- the projection engine, ``Engine`` (``projections.engine.ProjectionEngine``,
  ``projections.pg.engine.PgProjectionEngine``): it keeps each projection's tables and
  ``Checkpoint`` up to the store's head, rebuilds them beside the live ones and swaps them in;
- the read side, ``Reads`` (``projections.queries.Queries``, ``projections.pg.queries.PgQueries``):
  the API's reads, each in one snapshot of the store and the projections.

``projections.open_engine`` and ``projections.open_queries`` pick the class for a ``TIMELINE_DB``
(``events.backend.open_store`` for the store); adding a backend is a branch in each and three
classes that pass the contract tests (the ``backend`` fixture of tests/conftest.py). The records
that cross these interfaces are typed: ``events.records`` for the store's, and
``projections.engine.checkpoints`` (``Checkpoint``, ``ProjectionStatus``, ``Tables``) and
``RebuildStep`` for the projections'. docs/architecture.md draws the whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from events.backend import Store

    from .engine import Checkpoint, Projection, ProjectionStatus, RebuildStep
    from .erasure import Erased
    from .queries import TimelineQuery

__all__ = ["Engine", "Reads"]


@runtime_checkable
class Engine(Protocol):
    """Keeps every projection's tables up to the store (projections.engine, docs/architecture.md).

    Every write of a projection commits its rows and its checkpoint together, and a checkpoint
    only moves forward. Where several processes may run an engine over one store (PostgreSQL),
    each projection is written by the one holding its *lease*; a single-writer backend (SQLite)
    holds every lease."""

    #: name -> the projection (its tables, its version)
    projections: dict[str, Projection]
    batch_size: int

    # setup and checkpoints
    def setup(self) -> list[str]: ...
    def checkpoint(self, name: str) -> Checkpoint | None: ...
    def checkpoints(self) -> dict[str, Checkpoint]: ...
    def is_current(self, cp: Checkpoint) -> bool: ...
    def head(self) -> int: ...

    # live: a batch at a time, rows and checkpoint in one transaction
    def catch_up(self, upto: int | None = None) -> int: ...
    def step(self, upto: int | None = None, *, only: Sequence[str] | None = None,
             errors: dict[str, Exception] | None = None) -> int | None: ...
    def lowest(self) -> int: ...

    # rebuilds: new tables beside the live ones, swapped in once caught up
    def start_rebuild(self, names: Sequence[str] | None = None, *, force: bool = False) -> list[str]: ...
    def rebuild_step(self, names: Sequence[str]) -> RebuildStep: ...
    def rebuild(
        self, names: Sequence[str] | None = None, progress: Callable[[int, int], None] | None = None, *,
        force: bool = False,
    ) -> int: ...
    def abandoned_rebuilds(self) -> list[str]: ...

    # the planner's statistics after a bulk catch-up (PostgreSQL)
    def analyze(self) -> None: ...

    # erasure (projections.erasure)
    def remove(self, gone: Erased | None) -> None: ...

    # who writes each projection
    def lease(self, name: str) -> bool: ...
    def leases(self) -> list[str]: ...
    def release(self, name: str) -> None: ...

    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Reads(Protocol):
    """The API's reads over a store and its projections (projections.queries): each in one
    snapshot, so that a projection's rows and its checkpoint agree. Answers are the API's JSON
    objects (``render``: entries as JSON text)."""

    path: str  # the ``TIMELINE_DB`` it reads
    names: tuple[str, ...]  # the projections it reads
    read_only: bool

    @property
    def store(self) -> Store: ...  # this thread's reader of the store
    def snapshot(self) -> AbstractContextManager[Any]: ...
    def time_limit(self, deadline: float) -> AbstractContextManager[Callable[[], None]]: ...
    @staticmethod
    def reread(read: Callable[..., Any], *args: Any) -> Any: ...
    def close(self) -> None: ...

    # the projections' state
    def projections(self) -> list[ProjectionStatus]: ...
    def projected(self, conn: Any) -> int: ...

    # the reads
    def event(self, event_id: str, as_of: str | None = None) -> dict[str, Any]: ...
    def entity(self, entity_id: str, as_of: str | None = None) -> dict[str, Any]: ...
    def entities(self, q: str | None = None, type: str | None = None, limit: int = 50) -> list[dict[str, Any]]: ...
    def directory(
        self, q: str | None = None, type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]: ...
    def related(self, entity_id: str, limit: int = 20, cursor: str | None = None) -> dict[str, Any]: ...
    def timeline(
        self, entity_id: str | None, query: TimelineQuery, *, render: bool = False, total: bool = False,
        keep_cards: bool = True, updated: bool = False,
    ) -> dict[str, Any]: ...
    def render_rows(
        self, conn: Any, rows: Sequence[Sequence[Any]], p: int, *, by_entity: bool, as_of: bool = False,
        keep: bool = True,
    ) -> list[str]: ...
