"""The store's events as a projection's transaction reads them on PostgreSQL.

A projection's tables live in the store's database (and schema), so its batch reads the store's
tables through its own connection, in its own transaction: rows and checkpoint commit together
with what they were computed from. These are the reads ``projections.changes`` and the engine
make (``events.store.EventStore``'s of the same names, same results).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from events.history import EventState
from events.store import StoredEvent

from .conn import Qmark

_EVENT = "SELECT position, event_id, kind, target_id, recorded_at, body FROM events"
_CHUNK = 900
END = 2**62


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes, bytearray, memoryview)) else value


def _stored(row: Iterable[Any]) -> StoredEvent:
    position, event_id, kind, target_id, recorded_at, body = row
    return StoredEvent(position, event_id, kind, target_id, recorded_at, _json(body))


class PgStoreView:
    """Read-only access to a PostgreSQL store through one (projection's) connection."""

    def __init__(self, conn: Qmark) -> None:
        self.conn = conn

    def head(self) -> int:
        (head,) = self.conn.execute("SELECT coalesce(MAX(position), 0) FROM events").fetchone()
        return int(head)

    def get(self, event_id: str, upto: int | None = None) -> StoredEvent | None:
        row = self.conn.execute(f"{_EVENT} WHERE event_id = ? AND body <> ''", (event_id,)).fetchone()
        if row is None or (upto is not None and row[0] > upto):
            return None
        return _stored(row)

    def targeted(self, ids: list[str], upto: int | None = None) -> set[str]:
        unique = list(dict.fromkeys(ids))
        out: set[str] = set()
        for i in range(0, len(unique), _CHUNK):
            out.update(
                row[0] for row in self.conn.execute(
                    "SELECT DISTINCT target_id FROM events WHERE target_id = ANY(?) AND position <= ? AND body <> ''",
                    (unique[i : i + _CHUNK], upto if upto is not None else END),
                )
            )
        return out

    def editorial_for(self, target_id: str, upto: int | None = None) -> list[StoredEvent]:
        rows = self.conn.execute(
            f"{_EVENT} WHERE target_id = ? AND position <= ? AND body <> '' ORDER BY position",
            (target_id, upto if upto is not None else END),
        )
        return [_stored(r) for r in rows]

    def folded(self, event: StoredEvent, upto: int | None = None) -> tuple[int, EventState]:
        row = self.conn.execute(
            "SELECT position, status, corrected, entities_at, body FROM event_states"
            " WHERE target_id = ? AND position <= ? ORDER BY position DESC LIMIT 1",
            (event.event_id, upto if upto is not None else END),
        ).fetchone()
        if row is None:
            return event.position, EventState(event.body, "active")
        return max(row[0], event.position), EventState(_json(row[4]), row[1], [], bool(row[2]), row[3])

    def read(self, after: int, limit: int = 1000, upto: int | None = None) -> list[StoredEvent]:
        rows = self.conn.execute(
            f"{_EVENT} WHERE position > ? AND position <= ? AND body <> '' ORDER BY position LIMIT ?",
            (after, upto if upto is not None else END, limit),
        )
        return [_stored(r) for r in rows]

    def read_not_plain(self, low: int, high: int) -> list[StoredEvent]:
        """The events of ``low < position <= high`` that are not plain news events (those the
        set-based path leaves to ``apply``)."""
        rows = self.conn.execute(
            f"{_EVENT} WHERE position IN (SELECT position FROM event_meta WHERE position > ? AND position <= ?"
            " AND plain = 0) AND body <> '' ORDER BY position",
            (low, high),
        )
        return [_stored(r) for r in rows]
