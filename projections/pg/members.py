"""``projections.members`` on PostgreSQL: the member tables' DDL, upsert and packed keys."""

from __future__ import annotations

from typing import Any

from ..members import KEY_WIDTH

MEMBERS_SCHEMA = """CREATE TABLE {t} (
    position BIGINT NOT NULL, entity_id TEXT COLLATE "C" NOT NULL, start_key TEXT COLLATE "C" NOT NULL,
    occurred_at TEXT NOT NULL, PRIMARY KEY (position, entity_id)
)"""


def members_insert(table: str) -> str:
    """``projections.members.insert_sql`` (SQLite's INSERT OR REPLACE)."""
    return (
        f"INSERT INTO {table} (position, entity_id, start_key, occurred_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (position, entity_id) DO UPDATE SET start_key = excluded.start_key,"
        " occurred_at = excluded.occurred_at"
    )


def packed(alias: str = "") -> str:
    """``projections.members.packed``: (start_key, position) as one string that sorts as the pair
    does, byte by byte."""
    prefix = f"{alias}." if alias else ""
    return f"({prefix}start_key || lpad({prefix}position::text, 15, '0')) COLLATE \"C\""


def packed_key(expr: str) -> str:
    return f"substr({expr}, 1, {KEY_WIDTH})"


def packed_position(expr: str) -> str:
    return f"CAST(substr({expr}, {KEY_WIDTH + 1}) AS BIGINT)"


def fill_plain(conn: Any, table: str, low: int, high: int) -> None:
    """``projections.members.fill_plain`` (plain: a SMALLINT flag on PostgreSQL)."""
    conn.execute(
        f"""INSERT INTO {table} (position, entity_id, start_key, occurred_at)
            SELECT e.position, m.entity_id, e.start_key, e.occurred_at
            FROM event_meta e JOIN event_entities m ON m.position = e.position
            WHERE e.position > ? AND e.position <= ? AND e.plain <> 0 AND m.position > ? AND m.position <= ?""",
        (low, high, low, high),
    )
