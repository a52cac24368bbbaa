"""Member tables: which events count for each entity now (news events not retracted).

The entities and related projections each keep one of their own (each projection owns its
tables and rebuilds alone); this is their one definition. Rows are keyed by the event's own
store position, so plain events append in store order.
"""

from __future__ import annotations

import sqlite3

# position: the event's own store position (one event, one position)
SCHEMA = """CREATE TABLE {t} (
    position INTEGER NOT NULL, entity_id TEXT NOT NULL, start_key TEXT NOT NULL,
    occurred_at TEXT NOT NULL, PRIMARY KEY (position, entity_id)
) WITHOUT ROWID"""


def fill_plain(conn: sqlite3.Connection, table: str, low: int, high: int) -> None:
    """The members of the plain news events of ``low < position <= high``, from the store's rows."""
    conn.execute(
        f"""INSERT INTO {table} (position, entity_id, start_key, occurred_at)
            SELECT e.position, m.entity_id, e.start_key, e.occurred_at
            FROM event_meta e JOIN event_entities m ON m.position = e.position
            WHERE e.position > ? AND e.position <= ? AND e.plain""",
        (low, high),
    )


def insert_sql(table: str) -> str:
    """For ``executemany`` with rows ``(position, entity_id, start_key, occurred_at)``."""
    return f"INSERT OR REPLACE INTO {table} (position, entity_id, start_key, occurred_at) VALUES (?, ?, ?, ?)"


def delete_sql(table: str) -> str:
    """For ``executemany`` with rows ``(position, entity_id)``."""
    return f"DELETE FROM {table} WHERE position = ? AND entity_id = ?"
