"""Member tables: which events count for each entity now (news events not retracted).

The entities and related projections each keep one of their own (each projection owns its
tables and rebuilds alone); this is their one definition. Rows are keyed by the event's own
store position, so plain events append in store order.
"""

from __future__ import annotations

import sqlite3

from events.dates import MAX_KEY

# (start_key, store position) packed into one string that sorts as the pair does, so that one
# MIN or MAX finds a first or last member: start keys are fixed-width (``events.dates.to_key``),
# positions zero-padded to 15 digits.
KEY_WIDTH = len(MAX_KEY)
PACKED_WIDTH = KEY_WIDTH + 15


def packed(alias: str = "") -> str:
    """SQL: the packed (start_key, position) of a row (of table ``alias``, if given)."""
    prefix = f"{alias}." if alias else ""
    return f"{prefix}start_key || printf('%015d', {prefix}position)"


def packed_key(expr: str) -> str:
    """SQL: the start key of a packed value."""
    return f"substr({expr}, 1, {KEY_WIDTH})"


def packed_position(expr: str) -> str:
    """SQL: the store position of a packed value."""
    return f"CAST(substr({expr}, {KEY_WIDTH + 1}) AS INTEGER)"


def unpack(value: str) -> tuple[str, int]:
    """A packed value's (start_key, position)."""
    return value[:KEY_WIDTH], int(value[KEY_WIDTH:])

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
            WHERE e.position > ? AND e.position <= ? AND e.plain AND m.position > ? AND m.position <= ?""",
        (low, high, low, high),
    )


def insert_sql(table: str) -> str:
    """For ``executemany`` with rows ``(position, entity_id, start_key, occurred_at)``."""
    return f"INSERT OR REPLACE INTO {table} (position, entity_id, start_key, occurred_at) VALUES (?, ?, ?, ?)"


def delete_sql(table: str) -> str:
    """For ``executemany`` with rows ``(position, entity_id)``."""
    return f"DELETE FROM {table} WHERE position = ? AND entity_id = ?"
