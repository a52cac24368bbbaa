"""The entity directory projection: names, types, event counts, first and last dates.

``ent_stats`` has one row per entity id as filed (aliases are merged when reading);
``ent_members`` lists the events that count for each entity now (retracted ones do not), keyed
by the event's store position (new events append at its end), so that a correction or
retraction that takes an event away leaves the counts and dates exact: the count falls by one,
and the first or last date, if that event was it, is recomputed from the members. Every
comparison is by (key, store position), so the result does not depend on the order in which a
batch's rows are applied: the set-based path and the per-change path agree.

A rebuild fills ``ent_members`` and leaves the counts and dates out; once caught up
(``finish``), it derives every entity's name (from the latest version that filed it) and its
counts and dates (from the members, through their entity index) in one pass each.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from events.ids import fold

from .changes import Change
from . import members
from .engine import Projection

STATS = "ent_stats"
MEMBERS = "ent_members"
# An entity's members in store order, with what its counts and dates take (a covering index):
# new events append at the end of each entity's range, where an index in date order took them
# at random places (projecting 200,000 events live: 5.0-5.5 s -> 3.5-4.0 s for this projection,
# README, Performance); a recompute scans the entity's range.
MEMBERS_INDEX = "CREATE INDEX IF NOT EXISTS {t}_entity ON {t}(entity_id, position, start_key, occurred_at)"

COLUMNS = (
    "id, name, type, name_position, event_count, first_key, first_position, first_at,"
    " last_key, last_position, last_at, search"
)

# Merging a batch's figures into an entity's row: the latest name wins, counts add up, and the
# first and last dates are the least and greatest (start key, position).
MERGE = """
ON CONFLICT(id) DO UPDATE SET
  name = CASE WHEN excluded.name_position >= name_position THEN excluded.name ELSE name END,
  type = CASE WHEN excluded.name_position >= name_position THEN excluded.type ELSE type END,
  search = CASE WHEN excluded.name_position >= name_position THEN excluded.search ELSE search END,
  name_position = MAX(name_position, excluded.name_position),
  event_count = event_count + excluded.event_count,
  first_at = CASE WHEN first_key IS NULL OR (excluded.first_key IS NOT NULL AND
             (excluded.first_key, excluded.first_position) < (first_key, first_position))
             THEN excluded.first_at ELSE first_at END,
  first_position = CASE WHEN first_key IS NULL OR (excluded.first_key IS NOT NULL AND
             (excluded.first_key, excluded.first_position) < (first_key, first_position))
             THEN excluded.first_position ELSE first_position END,
  first_key = CASE WHEN first_key IS NULL OR (excluded.first_key IS NOT NULL AND
             (excluded.first_key, excluded.first_position) < (first_key, first_position))
             THEN excluded.first_key ELSE first_key END,
  last_at = CASE WHEN last_key IS NULL OR (excluded.last_key IS NOT NULL AND
            (excluded.last_key, excluded.last_position) > (last_key, last_position))
            THEN excluded.last_at ELSE last_at END,
  last_position = CASE WHEN last_key IS NULL OR (excluded.last_key IS NOT NULL AND
            (excluded.last_key, excluded.last_position) > (last_key, last_position))
            THEN excluded.last_position ELSE last_position END,
  last_key = CASE WHEN last_key IS NULL OR (excluded.last_key IS NOT NULL AND
            (excluded.last_key, excluded.last_position) > (last_key, last_position))
            THEN excluded.last_key ELSE last_key END
"""


class DirectoryProjection(Projection):
    name = "entities"
    version = 4
    schema = {
        STATS: [
            """CREATE TABLE {t} (
                id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, name_position INTEGER NOT NULL,
                event_count INTEGER NOT NULL, first_key TEXT, first_position INTEGER, first_at TEXT,
                last_key TEXT, last_position INTEGER, last_at TEXT, search TEXT NOT NULL
            )""",
        ],
        MEMBERS: [members.SCHEMA],
    }
    indexes = {
        STATS: ["CREATE INDEX IF NOT EXISTS {t}_count ON {t}(event_count DESC, id)"],
        MEMBERS: [MEMBERS_INDEX],
    }

    def bulk(self, conn: sqlite3.Connection, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        stats_t, members_t = self.table(STATS, tag), self.table(MEMBERS, tag)
        members.fill_plain(conn, members_t, low, high)
        if deferred:
            return  # ``finish`` derives the entities' rows
        # (start_key, position) packed into one sortable string, once per event
        conn.execute(
            f"""WITH k AS MATERIALIZED (
                    SELECT position, {members.packed()} AS sk
                    FROM event_meta WHERE position > ? AND position <= ? AND plain)
                INSERT INTO {stats_t} ({COLUMNS})
                SELECT a.entity_id, n.name, n.type, a.name_position, a.cnt,
                       f.start_key, f.position, f.occurred_at, l.start_key, l.position, l.occurred_at,
                       fold(n.name) || ' ' || a.entity_id
                FROM (SELECT m.entity_id, COUNT(*) AS cnt, MAX(k.position) AS name_position,
                             MIN(k.sk) AS fc, MAX(k.sk) AS lc
                      FROM k JOIN event_entities m ON m.position = k.position
                      GROUP BY m.entity_id) a
                JOIN event_entities n ON n.position = a.name_position AND n.entity_id = a.entity_id
                JOIN event_meta f ON f.position = {members.packed_position('a.fc')}
                JOIN event_meta l ON l.position = {members.packed_position('a.lc')}
                WHERE true {MERGE}""",
            (low, high),
        )

    def finish(self, conn: sqlite3.Connection, tag: str, position: int) -> None:
        stats_t, members_t = self.table(STATS, tag), self.table(MEMBERS, tag)
        conn.execute(MEMBERS_INDEX.format(t=members_t))
        # Names: the latest plain news event up to the position that files the entity, merged
        # with the versions that ``apply`` wrote (names only, while deferred).
        conn.execute(
            f"""INSERT INTO {stats_t} ({COLUMNS})
                SELECT entity_id, name, type, name_position, 0, NULL, NULL, NULL, NULL, NULL, NULL,
                       fold(name) || ' ' || entity_id
                FROM (SELECT entity_id, MAX(position) AS name_position, name, type FROM event_entities
                      WHERE position <= ?
                        AND position NOT IN (SELECT position FROM event_meta WHERE position <= ? AND NOT plain)
                      GROUP BY entity_id)
                WHERE true {MERGE}""",
            (position, position),
        )
        # Counts and dates: every entity's, from its members now (one pass over the members'
        # entity index, in its order); an entity with none keeps the 0 and NULLs written above.
        conn.execute(
            f"""UPDATE {stats_t} SET event_count = a.cnt,
                  first_key = f.start_key, first_position = f.position, first_at = f.occurred_at,
                  last_key = l.start_key, last_position = l.position, last_at = l.occurred_at
                FROM (SELECT entity_id, COUNT(*) AS cnt, MIN({members.packed()}) AS fc, MAX({members.packed()}) AS lc
                      FROM {members_t} GROUP BY entity_id) a
                JOIN {members_t} f ON f.position = {members.packed_position('a.fc')} AND f.entity_id = a.entity_id
                JOIN {members_t} l ON l.position = {members.packed_position('a.lc')} AND l.entity_id = a.entity_id
                WHERE {stats_t}.id = a.entity_id"""
        )

    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str, *, deferred: bool = False) -> None:
        stats_t, members_t = self.table(STATS, tag), self.table(MEMBERS, tag)
        adds: dict[str, list[Any]] = {}
        # entity -> the (start key, position) of each member a change took away
        removed: dict[str, list[tuple[str, int]]] = {}
        member_rows: list[tuple[Any, ...]] = []
        insert = members.insert_sql(members_t)
        for change in changes:
            old, new = change.old, change.new
            if old is not None and old.counted:
                if member_rows:
                    conn.executemany(insert, member_rows)
                    member_rows.clear()
                conn.executemany(
                    members.delete_sql(members_t),
                    [(old.position, e["id"]) for e in old.entities],
                )
                for e in old.entities:
                    removed.setdefault(e["id"], []).append((old.start_key, old.position))
            if new is None:
                continue
            occurred_at = new.body["occurred_at"]
            counted = new.counted
            for entity in new.entities:
                eid = entity["id"]
                first = (new.start_key, new.position, occurred_at) if counted else (None, None, None)
                acc = adds.get(eid)
                if acc is None:
                    adds[eid] = [eid, entity["name"], entity["type"], change.position, int(counted), *first, *first]
                else:
                    acc[1], acc[2], acc[3] = entity["name"], entity["type"], change.position
                    acc[4] += int(counted)
                    if counted and (acc[5] is None or (new.start_key, new.position) < (acc[5], acc[6])):
                        acc[5:8] = first
                    if counted and (acc[8] is None or (new.start_key, new.position) > (acc[8], acc[9])):
                        acc[8:11] = first
                if counted:
                    member_rows.append((new.position, eid, new.start_key, occurred_at))
        if member_rows:
            conn.executemany(insert, member_rows)
        if deferred:  # names only: ``finish`` counts the members
            rows = [(*acc[:4], 0, *(None,) * 6, f"{fold(acc[1])} {acc[0]}") for acc in adds.values()]
        else:
            rows = [(*acc, f"{fold(acc[1])} {acc[0]}") for acc in adds.values()]
        conn.executemany(f"INSERT INTO {stats_t} ({COLUMNS}) VALUES ({','.join('?' * 12)}) {MERGE}", rows)
        if deferred:
            return
        for eid, gone in removed.items():
            self._take_away(conn, stats_t, members_t, eid, gone)

    @classmethod
    def _take_away(
        cls, conn: sqlite3.Connection, stats_t: str, members_t: str, entity_id: str, gone: list[tuple[str, int]]
    ) -> None:
        """Members taken away from an entity whose row already counts this batch's additions: its
        count falls by as many; its first and last dates only change if one of them went (the
        least and greatest of what is left are those of before, or of what was added), in which
        case they are recomputed from its members."""
        row = conn.execute(
            f"SELECT event_count, first_key, first_position, last_key, last_position FROM {stats_t} WHERE id = ?",
            (entity_id,),
        ).fetchone()
        count = row[0] - len(gone) if row else 0
        if count <= 0 or any(g == (row[1], row[2]) or g == (row[3], row[4]) for g in gone):
            cls._recompute(conn, stats_t, members_t, entity_id)
        else:
            conn.execute(f"UPDATE {stats_t} SET event_count = ? WHERE id = ?", (count, entity_id))

    @staticmethod
    def _recompute(conn: sqlite3.Connection, stats_t: str, members_t: str, entity_id: str) -> None:
        """An entity's count and dates from its members, by its range of the index (in store
        order): one scan for the count and the least and greatest start keys, then the first and
        the last member with those keys (from each end of the range). No per-row formatting: a
        recompute of an entity in 370,000 events takes tens of milliseconds."""
        count, first_key, last_key = conn.execute(
            f"SELECT COUNT(*), MIN(start_key), MAX(start_key) FROM {members_t} WHERE entity_id = ?", (entity_id,)
        ).fetchone()
        first = last = (None, None, None)
        if count:
            pick = (
                f"SELECT start_key, position, occurred_at FROM {members_t} WHERE entity_id = ? AND start_key = ?"
                " ORDER BY position {} LIMIT 1"
            )
            first = conn.execute(pick.format("ASC"), (entity_id, first_key)).fetchone()
            last = conn.execute(pick.format("DESC"), (entity_id, last_key)).fetchone()
        conn.execute(
            f"UPDATE {stats_t} SET event_count = ?, first_key = ?, first_position = ?, first_at = ?,"
            " last_key = ?, last_position = ?, last_at = ? WHERE id = ?",
            (count, *first, *last, entity_id),
        )
