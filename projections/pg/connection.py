"""A PostgreSQL projection's connection: one per projection and node, autocommit (the engine
runs its work in explicit transactions), its text parameters made storable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from events.pg.connect import Qmark, connect
from events.pg.store import pg_text


def store_url(store: Any) -> str:
    """The URL of a PostgreSQL store (a store object with ``url``, or the URL itself)."""
    return store if isinstance(store, str) else str(store.url)


def _storable(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(pg_text(v) if isinstance(v, str) else v for v in params)


class ProjectionConnection(Qmark):
    """A projection's connection: ``Qmark``, with U+0000 in text parameters written as U+FFFD
    (``events.pg.store.pg_text``). A headline, summary or entity name may carry one (validation
    lets it through, and SQLite stores it); PostgreSQL's ``text`` cannot hold it, and a batch that
    failed on it would fail again at every step."""

    __slots__ = ()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        return super().execute(sql, _storable(params) if params else params)

    def executemany(self, sql: str, rows: Any) -> Any:
        return super().executemany(sql, [_storable(row) for row in rows])


def open_projection(url: str, name: str) -> ProjectionConnection:
    """The projection's own connection to the store's database."""
    raw = connect(url, application_name=f"timeline-projection-{name}")
    # The server finds a node whose machine or network died (no FIN: the socket just goes quiet)
    # within ~10 s by TCP keepalives, and ends its session, which frees its leases for another
    # node (PostgreSQL's defaults wait for the system's: hours).
    for setting, value in (("tcp_keepalives_idle", 5), ("tcp_keepalives_interval", 1), ("tcp_keepalives_count", 5)):
        raw.execute(f"SET {setting} = {value}")
    # Projection rows can always be recomputed from the store: their commits do not wait for the
    # write-ahead log to reach the disk (SQLite's projections skip the fsync the same way). A
    # crash may lose the last commits, rows and checkpoint together (never one without the
    # other), and catching up redoes them.
    raw.execute("SET synchronous_commit = off")
    return ProjectionConnection(raw)
