"""The store's interface, and which implementation a ``TIMELINE_DB`` value opens.

``TIMELINE_DB`` is a SQLite path (``events.store.EventStore``, the default) or a
``postgresql://`` / ``postgres://`` URL (``events.pg.store.PgEventStore``). Both implement
``Store`` and return the same typed records (``events.records``); one set of contract tests
runs on both (the ``backend`` fixture of tests/conftest.py). A third backend is a third class
that passes those tests, and a branch in ``open_store``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .records import AliasDeclaration, AppendObserver, AppendResult, Candidate, EventHash, StoredEvent

if TYPE_CHECKING:
    from .erasure import Erasure
    from .history import EventState

__all__ = [
    "AliasDeclaration", "AppendResult", "Candidate", "EventHash", "Store", "StoredEvent", "is_postgres", "open_store",
]


SCHEMES = ("postgresql://", "postgres://")


def is_postgres(db: str | Path | object) -> bool:
    """Whether a ``TIMELINE_DB`` value names a PostgreSQL database (else it is a SQLite path).
    Imports no driver: a SQLite deployment never loads psycopg."""
    return isinstance(db, str) and db.strip().lower().startswith(SCHEMES)


@runtime_checkable
class Store(Protocol):
    """Append, look up and read events; what every backend's store does (docs/architecture.md)."""

    backend: Literal["sqlite", "postgres"]
    #: called after each committed append (metrics, tracing), whoever appends
    observers: list[AppendObserver]

    # writing: one transaction per batch, serialised with every other writer; idempotent per id
    def append(self, batch: Sequence[Candidate]) -> list[AppendResult]: ...

    # reading
    def head(self) -> int: ...
    def recorded_at(self, position: int) -> str | None: ...
    def get(self, event_id: str, upto: int | None = None) -> StoredEvent | None: ...
    def raw(self, event_id: str) -> bytes | None: ...
    def state(self, event_id: str, upto: int | None = None) -> tuple[StoredEvent, EventState] | None: ...
    def folded(self, event: StoredEvent, upto: int | None = None) -> tuple[int, EventState]: ...
    def history(self, event_id: str, upto: int | None = None) -> list[dict[str, Any]]: ...
    def editorial_for(self, target_id: str, upto: int | None = None) -> list[StoredEvent]: ...
    def read(self, after: int, limit: int = 1000, upto: int | None = None) -> list[StoredEvent]: ...
    def read_not_plain(self, after: int, upto: int) -> list[StoredEvent]: ...
    def hashes(self, ids: list[str]) -> dict[str, EventHash]: ...
    def targeted(self, ids: list[str], upto: int | None = None) -> set[str]: ...
    def position_at(self, instant_key: str) -> int: ...
    def aliases(self, after: int = 0) -> list[AliasDeclaration]: ...
    def forget_aliases(self) -> None: ...

    # erasure (events.erasure, docs/erasure.md)
    def erase(
        self, event_id: str, reason: str, who: str, before: Callable[[Any], None] | None = None
    ) -> Erasure: ...
    def scrub(self) -> None: ...
    def erasure_of(self, event_id: str) -> Erasure | None: ...
    def tombstone(self, event_id: str) -> dict[str, Any] | None: ...
    def erasures(self, after: int = 0, limit: int = 1000) -> list[Erasure]: ...
    def erased_ids(self, ids: list[str]) -> set[str]: ...
    def erasure_count(self) -> int: ...

    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *exc: object) -> None: ...


def open_store(db: str | Path, *, reader: bool = False) -> Store:
    """The store that ``db`` names, opened (and migrated, unless ``reader``)."""
    if is_postgres(db):
        from .pg.store import PgEventStore

        return PgEventStore(str(db), reader=reader)
    from .store import EventStore

    return EventStore(db, reader=reader)
