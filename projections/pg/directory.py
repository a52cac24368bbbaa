"""The entity directory on PostgreSQL: ``projections.directory`` (its rows, its rules, its
``apply``), with PostgreSQL's DDL and the statements whose SQL differs.

Two differences of substance:

- an upsert's ``SET`` names the row it updates by the table's name (PostgreSQL finds a bare
  column name ambiguous beside ``excluded``);
- the search key of a name (``events.ids.fold``: accents dropped, transliterated to ASCII by
  ``anyascii``) is Python's: the set-based statements write the rows, and the keys of the rows
  they wrote are computed here and written in the same transaction (``_fold_search``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from events.ids import fold
from events.pg.store import pg_text

from ..directory import (
    COLUMNS, GROUP_MEMBERS, GROUP_SAID, GROUP_SAID_TYPED_INDEX, GROUP_STATS, IN_FORCE, MEMBERS, OPEN, PREFIX, SAID,
    STATS, DirectoryProjection,
)
from . import groups
from .groups import PgGroups
from .members import MEMBERS_SCHEMA, fill_plain, members_insert, packed, packed_position

C = 'COLLATE "C"'


def counts(t: str) -> str:
    """``projections.directory.COUNTS`` with the updated row named by its table."""
    first = (
        f"({t}.first_key IS NULL OR (excluded.first_key IS NOT NULL AND"
        f" (excluded.first_key, excluded.first_position) < ({t}.first_key, {t}.first_position)))"
    )
    last = (
        f"({t}.last_key IS NULL OR (excluded.last_key IS NOT NULL AND"
        f" (excluded.last_key, excluded.last_position) > ({t}.last_key, {t}.last_position)))"
    )
    out = [f"event_count = {t}.event_count + excluded.event_count"]
    for column in ("first_at", "first_position", "first_key"):
        out.append(f"{column} = CASE WHEN {first} THEN excluded.{column} ELSE {t}.{column} END")
    for column in ("last_at", "last_position", "last_key"):
        out.append(f"{column} = CASE WHEN {last} THEN excluded.{column} ELSE {t}.{column} END")
    return ",\n  ".join(out)


def merge(t: str) -> str:
    """``projections.directory.MERGE`` (a batch of plain news events names the entity); the
    search key is written after (``_fold_search``)."""
    return f"""ON CONFLICT (id) DO UPDATE SET
  name = excluded.name,
  name_rank = excluded.name_rank,
  type = CASE WHEN excluded.type_rank IS NOT NULL THEN excluded.type
              WHEN {t}.type_rank >= {IN_FORCE} THEN {t}.type ELSE 'other' END,
  type_rank = CASE WHEN excluded.type_rank IS NOT NULL THEN excluded.type_rank
              WHEN {t}.type_rank >= {IN_FORCE} THEN {t}.type_rank ELSE NULL END,
  {counts(t)}"""


def naming(conn: Any, said_t: str, entity_ids: Sequence[str], upto: int = OPEN - 1) -> tuple[Any, ...] | None:
    """``projections.directory.naming`` on PostgreSQL (same rule, same result)."""
    ids = list(entity_ids)

    def latest(condition: str, *args: Any) -> tuple[Any, ...] | None:
        row = conn.execute(
            f"""SELECT at, value FROM (
                    SELECT j.ord, j.value, (SELECT said_at FROM {said_t} WHERE entity_id = j.value AND said_at <= ?
                                            {condition} ORDER BY said_at DESC LIMIT 1) AS at
                    FROM unnest(?::text[]) WITH ORDINALITY AS j(value, ord)) x
                WHERE at IS NOT NULL ORDER BY at DESC, ord LIMIT 1""",
            (upto, *args, ids),
        ).fetchone()
        if row is None:
            return None
        return (row[0], *conn.execute(
            f"SELECT name, type FROM {said_t} WHERE entity_id = ? AND said_at = ?", (row[1], row[0])
        ).fetchone())

    named = latest("AND died_at > ?", upto)
    if named is not None:
        typed = latest("AND type != 'other' AND died_at > ?", upto)
        bonus = IN_FORCE
    else:
        named = latest("")
        if named is None:
            return None
        typed = latest("AND type != 'other'")
        bonus = 0
    if typed is None:
        return named[1], "other", bonus + named[0], None
    return named[1], typed[2], bonus + named[0], bonus + typed[0]


class PgDirectoryProjection(DirectoryProjection):
    schema = {
        STATS: [
            f"""CREATE TABLE {{t}} (
                id TEXT {C} PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, name_rank BIGINT NOT NULL,
                type_rank BIGINT, event_count BIGINT NOT NULL, first_key TEXT {C}, first_position BIGINT,
                first_at TEXT, last_key TEXT {C}, last_position BIGINT, last_at TEXT, search TEXT NOT NULL,
                grouped INTEGER NOT NULL DEFAULT 0
            )""",
        ],
        MEMBERS: [MEMBERS_SCHEMA],
        SAID: [
            f"""CREATE TABLE {{t}} (
                entity_id TEXT {C} NOT NULL, said_at BIGINT NOT NULL, died_at BIGINT NOT NULL,
                name TEXT NOT NULL, type TEXT NOT NULL, PRIMARY KEY (entity_id, said_at)
            )""",
        ],
        **groups.schema(PREFIX, history=True),
        GROUP_MEMBERS: [groups.GROUP_MEMBERS_SCHEMA],
        GROUP_SAID: [
            f"""CREATE TABLE {{t}} (
                set_id TEXT {C} NOT NULL, set_to BIGINT NOT NULL, said_at BIGINT NOT NULL, entity_id TEXT {C} NOT NULL,
                died_at BIGINT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, set_from BIGINT NOT NULL,
                PRIMARY KEY (set_id, set_to, said_at, entity_id)
            )""",
            GROUP_SAID_TYPED_INDEX,
        ],
        GROUP_STATS: [
            f"""CREATE TABLE {{t}} (
                set_id TEXT {C} PRIMARY KEY, event_count BIGINT NOT NULL, first_key TEXT {C}, first_position BIGINT,
                first_at TEXT, last_key TEXT {C}, last_position BIGINT, last_at TEXT
            )""",
        ],
    }
    # (the same statements as on SQLite: DirectoryProjection.indexes)

    members_insert = staticmethod(members_insert)
    naming = staticmethod(naming)
    counts = staticmethod(counts)
    packed = staticmethod(packed)
    packed_position = staticmethod(packed_position)
    groups_class = PgGroups

    @staticmethod
    def merge_counts(stats_t: str) -> str:
        return f"ON CONFLICT (id) DO UPDATE SET\n  {counts(stats_t)}"

    def bulk(self, conn: Any, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        stats_t, members_t, said_t = self.table(STATS, tag), self.table(MEMBERS, tag), self.table(SAID, tag)
        fill_plain(conn, members_t, low, high)
        if deferred:
            return
        self._plain_statements(conn, said_t, low, high)
        written = conn.execute(
            f"""WITH k AS MATERIALIZED (
                    SELECT position, {packed()} AS sk
                    FROM event_meta WHERE position > ? AND position <= ? AND plain <> 0)
                INSERT INTO {stats_t} ({COLUMNS})
                SELECT a.entity_id, n.name, coalesce(t.type, 'other'), {IN_FORCE} + a.name_position,
                       {IN_FORCE} + a.type_position, a.cnt,
                       f.start_key, f.position, f.occurred_at, l.start_key, l.position, l.occurred_at, ''
                FROM (SELECT m.entity_id, COUNT(*) AS cnt, MAX(k.position) AS name_position,
                             MAX(CASE WHEN m.type != 'other' THEN k.position END) AS type_position,
                             MIN(k.sk) AS fc, MAX(k.sk) AS lc
                      FROM k JOIN event_entities m ON m.position = k.position AND m.position > ? AND m.position <= ?
                      GROUP BY m.entity_id) a
                JOIN event_entities n ON n.position = a.name_position AND n.entity_id = a.entity_id
                                      AND n.position > ? AND n.position <= ?
                LEFT JOIN event_entities t ON t.position = a.type_position AND t.entity_id = a.entity_id
                                           AND t.position > ? AND t.position <= ?
                JOIN event_meta f ON f.position = {packed_position('a.fc')} AND f.position > ? AND f.position <= ?
                JOIN event_meta l ON l.position = {packed_position('a.lc')} AND l.position > ? AND l.position <= ?
                {merge(stats_t)}
                RETURNING id, name, search""",
            (low, high) * 6,
        ).fetchall()
        _fold_search(conn, stats_t, written)
        self._group_bulk(conn, tag, low, high)

    @staticmethod
    def _plain_statements(conn: Any, said_t: str, low: int, high: int) -> None:
        conn.execute(
            f"""INSERT INTO {said_t} (entity_id, said_at, died_at, name, type)
                SELECT m.entity_id, m.position, {OPEN}, m.name, m.type
                FROM event_meta e JOIN event_entities m ON m.position = e.position
                WHERE e.position > ? AND e.position <= ? AND e.plain <> 0 AND m.position > ? AND m.position <= ?
                ON CONFLICT DO NOTHING""",
            (low, high, low, high),
        )

    def finish(self, conn: Any, tag: str, position: int) -> None:
        stats_t, members_t, said_t = self.table(STATS, tag), self.table(MEMBERS, tag), self.table(SAID, tag)
        for sql in self.indexes[MEMBERS]:
            conn.execute(sql.format(t=members_t))
        self._plain_statements(conn, said_t, 0, position)
        for sql in self.indexes[SAID]:
            conn.execute(sql.format(t=said_t))
        rank = f"(said_at + CASE WHEN died_at = {OPEN} THEN {IN_FORCE} ELSE 0 END)"
        written = conn.execute(
            f"""INSERT INTO {stats_t} ({COLUMNS})
                SELECT a.entity_id, n.name,
                       CASE WHEN a.type_rank >= a.name_rank - a.name_rank % {IN_FORCE} THEN t.type ELSE 'other' END,
                       a.name_rank,
                       CASE WHEN a.type_rank >= a.name_rank - a.name_rank % {IN_FORCE} THEN a.type_rank END,
                       0, NULL, NULL, NULL, NULL, NULL, NULL, ''
                FROM (SELECT entity_id, MAX({rank}) AS name_rank,
                             MAX(CASE WHEN type != 'other' THEN {rank} END) AS type_rank
                      FROM {said_t} GROUP BY entity_id) a
                JOIN {said_t} n ON n.entity_id = a.entity_id AND n.said_at = a.name_rank % {IN_FORCE}
                LEFT JOIN {said_t} t ON t.entity_id = a.entity_id AND t.said_at = a.type_rank % {IN_FORCE}
                RETURNING id, name, search"""
        ).fetchall()
        _fold_search(conn, stats_t, written)
        conn.execute(
            f"""UPDATE {stats_t} SET event_count = a.cnt,
                  first_key = f.start_key, first_position = f.position, first_at = f.occurred_at,
                  last_key = l.start_key, last_position = l.position, last_at = l.occurred_at
                FROM (SELECT entity_id, COUNT(*) AS cnt, MIN({packed()}) AS fc, MAX({packed()}) AS lc
                      FROM {members_t} GROUP BY entity_id) a
                JOIN {members_t} f ON f.position = {packed_position('a.fc')} AND f.entity_id = a.entity_id
                JOIN {members_t} l ON l.position = {packed_position('a.lc')} AND l.entity_id = a.entity_id
                WHERE {stats_t}.id = a.entity_id"""
        )
        self._file_all(conn, tag)


def _fold_search(conn: Any, stats_t: str, rows: Sequence[tuple[str, str, str]]) -> None:
    """Write the search key (``fold(name) fold(id)``) of the rows just written, where it changed:
    one statement, each row found by its key (the keys come as arrays, whose length the planner
    knows; a temporary table's it did not, and it hashed the whole entity table into the join
    once a batch)."""
    changed = [(entity_id, key) for entity_id, name, old in rows if (key := f"{fold(name)} {fold(entity_id)}") != old]
    if not changed:
        return
    conn.execute(
        f"""UPDATE {stats_t} s SET search = k.search
            FROM unnest(CAST(? AS TEXT[]), CAST(? AS TEXT[])) AS k(id, search) WHERE s.id = k.id""",
        ([pg_text(entity_id) for entity_id, _ in changed], [pg_text(key) for _, key in changed]),
    )
