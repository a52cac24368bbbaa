"""The related-entities projection on PostgreSQL: ``projections.related`` (its rows, its rules, its
``apply``), with PostgreSQL's DDL and the statements whose SQL differs (SQLite takes a bare
column from the row that gives a MAX; PostgreSQL joins that row)."""

from __future__ import annotations

from typing import Any

from ..related import (
    GROUP_MEMBERS, GROUP_PAIRS, MEMBERS, PAIRS, PREFIX, RECOMPUTE_PROBE, RECOMPUTE_SMALL, RelatedProjection,
)
from . import groups
from .groups import PgGroups
from .members import MEMBERS_SCHEMA, fill_plain, members_insert, packed, packed_key, packed_position
from ..members import unpack

C = 'COLLATE "C"'


def merge(t: str, key: str = "entity_id, other_id") -> str:
    """``projections.related.MERGE`` (``GROUP_MERGE``: ``key`` ``set_id, other_id``) with the
    updated row named by its table."""
    later = f"(excluded.last_key, excluded.last_position) > ({t}.last_key, {t}.last_position)"
    sets = [f"count = {t}.count + excluded.count"]
    for column in ("last_at", "last_position", "last_key"):
        sets.append(f"{column} = CASE WHEN {later} THEN excluded.{column} ELSE {t}.{column} END")
    return f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(sets)


def group_merge(t: str) -> str:
    return merge(t, "set_id, other_id")


class PgRelatedProjection(RelatedProjection):
    schema = {
        **groups.schema(PREFIX),
        GROUP_MEMBERS: [groups.GROUP_MEMBERS_SCHEMA],
        GROUP_PAIRS: [
            f"""CREATE TABLE {{t}} (
                set_id TEXT {C} NOT NULL, other_id TEXT {C} NOT NULL, count BIGINT NOT NULL,
                last_key TEXT {C} NOT NULL, last_position BIGINT NOT NULL, last_at TEXT NOT NULL,
                PRIMARY KEY (set_id, other_id)
            )""",
            "CREATE INDEX IF NOT EXISTS {t}_other ON {t}(other_id)",
        ],
        PAIRS: [
            f"""CREATE TABLE {{t}} (
                entity_id TEXT {C} NOT NULL, other_id TEXT {C} NOT NULL, count BIGINT NOT NULL,
                last_key TEXT {C}, last_position BIGINT, last_at TEXT, PRIMARY KEY (entity_id, other_id)
            )""",
        ],
        MEMBERS: [MEMBERS_SCHEMA],
    }
    members_insert = staticmethod(members_insert)
    merge = staticmethod(merge)
    group_merge = staticmethod(group_merge)
    packed = staticmethod(packed)
    packed_key = staticmethod(packed_key)
    packed_position = staticmethod(packed_position)
    groups_class = PgGroups

    def _absorb(self, conn: Any, tag: str, keep: str, source: str, arg: str, *, mirror: bool) -> None:
        """``RelatedProjection._absorb`` in three index lookups, whatever the planner knows of the
        tables: the source's events (by the members' entity index or the set's key), those of
        them set ``keep`` has (by its key, set and positions), and every member of the new ones
        (by position) with its set (a lookup a member). The counts are made here, not by one
        join: without statistics on tables a catch-up has just filled, PostgreSQL hashed
        whole tables (the members, the groups) into that join, once a declaration, so a chain
        of n declarations read n times a table that grew with it (docs/performance.md)."""
        group_members, group_pairs, sets = self._group_tables(tag)
        members_t = self.table(MEMBERS, tag)
        src = {
            position: (start_key, occurred_at)
            for position, start_key, occurred_at in conn.execute(
                f"SELECT src.position, src.start_key, src.occurred_at FROM ({source}) src", (arg,)
            )
        }
        if not src:
            return
        had = {
            position
            for (position,) in conn.execute(
                f"SELECT position FROM {group_members} WHERE set_id = ? AND position = ANY(?)", (keep, sorted(src))
            )
        }
        fresh = sorted(p for p in src if p not in had)
        if not fresh:
            return
        # (side, grouped) -> the positions of the events that name it; position -> its date
        sides: dict[tuple[str, bool], set[int]] = {}
        dates: dict[int, str] = {}
        for position, entity_id, occurred_at, set_id in conn.execute(
            f"""SELECT m.position, m.entity_id, m.occurred_at,
                       (SELECT g.set_id FROM {sets} g WHERE g.entity_id = m.entity_id)
                FROM {members_t} m WHERE m.position = ANY(?)""",
            (fresh,),
        ):
            dates.setdefault(position, occurred_at)
            side = (entity_id, False) if set_id is None else (set_id, True)
            if side[0] != keep:
                sides.setdefault(side, set()).add(position)
        rows = []
        for (other, grouped), positions in sorted(sides.items()):
            last_key, position = max((src[p][0], p) for p in positions)
            last = (last_key, position, dates[position])
            rows.append((keep, other, len(positions), *last))
            if mirror and grouped:
                rows.append((other, keep, len(positions), *last))
        conn.executemany(
            f"INSERT INTO {group_pairs} (set_id, other_id, count, last_key, last_position, last_at)"
            f" VALUES (?, ?, ?, ?, ?, ?) {self.group_merge(group_pairs)}",
            rows,
        )
        conn.executemany(
            f"INSERT INTO {group_members} (set_id, position, start_key, occurred_at) VALUES (?, ?, ?, ?)",
            [(keep, p, *src[p]) for p in fresh],
        )

    def bulk(self, conn: Any, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        pairs_t, members_t = self.table(PAIRS, tag), self.table(MEMBERS, tag)
        fill_plain(conn, members_t, low, high)
        if deferred:
            return
        conn.execute(
            f"""WITH k AS MATERIALIZED (
                    SELECT position, {packed()} AS sk
                    FROM event_meta WHERE position > ? AND position <= ? AND plain <> 0)
                INSERT INTO {pairs_t} (entity_id, other_id, count, last_key, last_position, last_at)
                SELECT p.entity_id, p.other_id, p.cnt, {packed_key('p.lc')}, l.position, l.occurred_at
                FROM (SELECT a.entity_id, b.entity_id AS other_id, COUNT(*) AS cnt, MAX(k.sk) AS lc
                      FROM k
                      JOIN event_entities a ON a.position = k.position AND a.position > ? AND a.position <= ?
                      JOIN event_entities b ON b.position = k.position AND b.entity_id != a.entity_id
                                            AND b.position > ? AND b.position <= ?
                      GROUP BY a.entity_id, b.entity_id) p
                JOIN event_meta l ON l.position = {packed_position('p.lc')} AND l.position > ? AND l.position <= ?
                {merge(pairs_t)}""",
            (low, high) * 4,
        )
        self._bulk_groups(conn, tag, low, high)

    def finish(self, conn: Any, tag: str, position: int) -> None:
        pairs_t, members_t = self.table(PAIRS, tag), self.table(MEMBERS, tag)
        conn.execute(
            f"""INSERT INTO {pairs_t} (entity_id, other_id, count, last_key, last_position, last_at)
                SELECT p.entity_id, p.other_id, p.cnt, {packed_key('p.lc')}, l.position, l.occurred_at
                FROM (SELECT a.entity_id, b.entity_id AS other_id, COUNT(*) AS cnt, MAX({packed('a')}) AS lc
                      FROM {members_t} a JOIN {members_t} b ON b.position = a.position AND b.entity_id > a.entity_id
                      GROUP BY a.entity_id, b.entity_id) p
                JOIN {members_t} l ON l.position = {packed_position('p.lc')} AND l.entity_id = p.entity_id"""
        )
        conn.execute(
            f"""INSERT INTO {pairs_t} (entity_id, other_id, count, last_key, last_position, last_at)
                SELECT other_id, entity_id, count, last_key, last_position, last_at FROM {pairs_t}
                WHERE entity_id < other_id"""
        )
        self._file_all(conn, tag)

    @staticmethod
    def _recompute(conn: Any, pairs_t: str, members_t: str, a: str, b: str) -> None:
        capped = f"SELECT COUNT(*) FROM (SELECT 1 FROM {members_t} WHERE entity_id = ? LIMIT ?) x"

        def size(entity: str, cap: int) -> int:
            return int(conn.execute(capped, (entity, cap)).fetchone()[0])

        size_a, size_b = size(a, RECOMPUTE_SMALL), size(b, RECOMPUTE_SMALL)
        if size_a == size_b == RECOMPUTE_SMALL:
            size_a = size(a, RECOMPUTE_PROBE)
            size_b = size(b, size_a + 1)
        outer, inner = (a, b) if size_a <= size_b else (b, a)
        count, lc = conn.execute(
            f"SELECT COUNT(*), MAX({packed('m1')})"
            f" FROM {members_t} m1 JOIN {members_t} m2 ON m2.position = m1.position AND m2.entity_id = ?"
            " WHERE m1.entity_id = ?",
            (inner, outer),
        ).fetchone()
        if count == 0:
            conn.execute(f"DELETE FROM {pairs_t} WHERE entity_id = ? AND other_id = ?", (a, b))
            return
        last_key, position = unpack(lc)
        (occurred_at,) = conn.execute(
            f"SELECT occurred_at FROM {members_t} WHERE position = ? AND entity_id = ?", (position, outer)
        ).fetchone()
        conn.execute(
            f"INSERT INTO {pairs_t} (entity_id, other_id, count, last_key, last_position, last_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (entity_id, other_id) DO UPDATE SET count = excluded.count,"
            " last_key = excluded.last_key, last_position = excluded.last_position, last_at = excluded.last_at",
            (a, b, count, last_key, position, occurred_at),
        )
