"""The entity directory projection: names, types, event counts, first and last dates.

``ent_stats`` has one row per entity id as filed (aliases are merged when reading);
``ent_members`` lists the events that count for each entity now (retracted ones do not), so
that a correction or retraction that takes an event away recomputes the counts and dates
exactly. Plain appends, the common case, only add.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from events.ids import fold

from .changes import Change
from .engine import Projection

STATS = "ent_stats"
MEMBERS = "ent_members"


class DirectoryProjection(Projection):
    name = "entities"
    version = 1
    schema = {
        STATS: [
            """CREATE TABLE {t} (
                id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, name_position INTEGER NOT NULL,
                event_count INTEGER NOT NULL, first_key TEXT, first_at TEXT, last_key TEXT, last_at TEXT,
                search TEXT NOT NULL
            )""",
            "CREATE INDEX {t}_count ON {t}(event_count DESC, id)",
        ],
        MEMBERS: [
            """CREATE TABLE {t} (
                entity_id TEXT NOT NULL, event_id TEXT NOT NULL, start_key TEXT NOT NULL, position INTEGER NOT NULL,
                occurred_at TEXT NOT NULL, PRIMARY KEY (entity_id, event_id)
            ) WITHOUT ROWID""",
        ],
    }

    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str) -> None:
        stats_t, members_t = self.table(STATS, tag), self.table(MEMBERS, tag)
        adds: dict[str, list[Any]] = {}
        dirty: set[str] = set()
        member_rows: list[tuple[Any, ...]] = []
        for change in changes:
            old, new = change.old, change.new
            if old is not None and old.counted:
                if member_rows:
                    conn.executemany(f"INSERT OR REPLACE INTO {members_t} VALUES (?, ?, ?, ?, ?)", member_rows)
                    member_rows.clear()
                conn.executemany(
                    f"DELETE FROM {members_t} WHERE entity_id = ? AND event_id = ?",
                    [(e["id"], old.event_id) for e in old.entities],
                )
                dirty.update(e["id"] for e in old.entities)
            if new is None:
                continue
            occurred_at = new.body["occurred_at"]
            for entity in new.entities:
                eid = entity["id"]
                acc = adds.get(eid)
                counted = 1 if new.counted else 0
                if acc is None:
                    adds[eid] = [eid, entity["name"], entity["type"], change.position, counted,
                                 new.start_key, occurred_at, new.start_key, occurred_at]
                else:
                    acc[1], acc[2], acc[3] = entity["name"], entity["type"], change.position
                    acc[4] += counted
                    if counted and new.start_key < acc[5]:
                        acc[5], acc[6] = new.start_key, occurred_at
                    if counted and new.start_key >= acc[7]:
                        acc[7], acc[8] = new.start_key, occurred_at
                if new.counted:
                    member_rows.append((eid, new.event_id, new.start_key, new.position, occurred_at))
                if old is not None or not new.counted:
                    dirty.add(eid)
        if member_rows:
            conn.executemany(f"INSERT OR REPLACE INTO {members_t} VALUES (?, ?, ?, ?, ?)", member_rows)
        conn.executemany(
            f"""INSERT INTO {stats_t} (id, name, type, name_position, event_count, first_key, first_at,
                                       last_key, last_at, search)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET
                  name = excluded.name, type = excluded.type, name_position = excluded.name_position,
                  search = excluded.search,
                  event_count = event_count + excluded.event_count,
                  first_at = CASE WHEN first_key IS NULL OR excluded.first_key < first_key
                                  THEN excluded.first_at ELSE first_at END,
                  first_key = CASE WHEN first_key IS NULL OR excluded.first_key < first_key
                                   THEN excluded.first_key ELSE first_key END,
                  last_at = CASE WHEN last_key IS NULL OR excluded.last_key >= last_key
                                 THEN excluded.last_at ELSE last_at END,
                  last_key = CASE WHEN last_key IS NULL OR excluded.last_key >= last_key
                                  THEN excluded.last_key ELSE last_key END""",
            [(*acc, f"{fold(acc[1])} {acc[0]}") for acc in adds.values()],
        )
        for eid in dirty:
            self._recompute(conn, stats_t, members_t, eid)

    @staticmethod
    def _recompute(conn: sqlite3.Connection, stats_t: str, members_t: str, entity_id: str) -> None:
        count = conn.execute(f"SELECT COUNT(*) FROM {members_t} WHERE entity_id = ?", (entity_id,)).fetchone()[0]
        first = conn.execute(
            f"SELECT start_key, occurred_at FROM {members_t} WHERE entity_id = ? ORDER BY start_key, position LIMIT 1",
            (entity_id,),
        ).fetchone() or (None, None)
        last = conn.execute(
            f"SELECT start_key, occurred_at FROM {members_t} WHERE entity_id = ?"
            " ORDER BY start_key DESC, position DESC LIMIT 1",
            (entity_id,),
        ).fetchone() or (None, None)
        conn.execute(
            f"UPDATE {stats_t} SET event_count = ?, first_key = ?, first_at = ?, last_key = ?, last_at = ? WHERE id = ?",
            (count, first[0], first[1], last[0], last[1], entity_id),
        )
