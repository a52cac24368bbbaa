"""The timelines projection on PostgreSQL: ``projections.timelines`` (its rows, its rules, its
``apply``), with PostgreSQL's DDL and the few statements whose SQL differs.

Text keys are compared byte by byte as on SQLite (``COLLATE "C"``), whatever the database's
collation: timeline order is (start key, position), and a locale's collation would order the
keys' punctuation differently.
"""

from __future__ import annotations

from typing import Any

from ..erasure import Erased
from ..timelines import (
    CHANGES, ENTRIES, EVENTS, GLOBAL, GROUP_ENTRIES, OPEN, PREFIX, RANK_SQL, REMOVALS, VANISHED, TimelinesProjection,
    _forget_regroupings, _named,
)
from . import groups
from .groups import PgGroups

C = 'COLLATE "C"'


class PgTimelinesProjection(TimelinesProjection):
    groups_class = PgGroups
    schema = {
        **groups.schema(PREFIX, history=True),
        GROUP_ENTRIES: [
            f"""CREATE TABLE {{t}} (
                set_id TEXT {C} NOT NULL, set_to BIGINT NOT NULL, start_key TEXT {C} NOT NULL, position BIGINT NOT NULL,
                valid_from BIGINT NOT NULL, rank INTEGER NOT NULL, set_from BIGINT NOT NULL,
                PRIMARY KEY (set_id, set_to, start_key, position, valid_from, rank)
            )""",
        ],
        EVENTS: [
            f"""CREATE TABLE {{t}} (
                valid_from BIGINT PRIMARY KEY, valid_to BIGINT NOT NULL, position BIGINT NOT NULL,
                kind TEXT NOT NULL, status TEXT NOT NULL, start_key TEXT {C} NOT NULL, end_key TEXT {C} NOT NULL,
                occurred_at TEXT, ended_at TEXT, headline TEXT, summary TEXT, sources TEXT, details TEXT
            )""",
        ],
        ENTRIES: [
            f"""CREATE TABLE {{t}} (
                entity_id TEXT {C} NOT NULL, start_key TEXT {C} NOT NULL, position BIGINT NOT NULL,
                valid_from BIGINT NOT NULL, rank INTEGER NOT NULL,
                PRIMARY KEY (entity_id, start_key, position, valid_from)
            )""",
            # an erasure finds a version's entries by it
            "CREATE INDEX {t}_version ON {t}(valid_from)",
        ],
        CHANGES: [
            f"""CREATE TABLE {{t}} (
                entity_id TEXT {C} NOT NULL, position BIGINT NOT NULL,
                old_rank INTEGER, rank INTEGER, old_status TEXT,
                PRIMARY KEY (entity_id, position)
            )""",
        ],
        REMOVALS: [
            f"""CREATE TABLE {{t}} (
                seq BIGINT NOT NULL, entity_id TEXT {C} NOT NULL, valid_from BIGINT NOT NULL,
                valid_to BIGINT NOT NULL, rank INTEGER, status TEXT NOT NULL, reached BIGINT NOT NULL,
                event_position BIGINT NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL,
                PRIMARY KEY (seq, entity_id, valid_from)
            )""",
        ],
    }
    retired = ()
    indexes = {
        EVENTS: [
            "CREATE INDEX IF NOT EXISTS {t}_order ON {t}(start_key, position)",
            "CREATE INDEX IF NOT EXISTS {t}_position ON {t}(position)",
        ],
        GROUP_ENTRIES: [
            "CREATE INDEX IF NOT EXISTS {t}_joined ON {t}(set_id, set_to, set_from)",
            "CREATE INDEX IF NOT EXISTS {t}_event ON {t}(set_id, set_to, position, set_from)",
        ],
    }

    def bulk(self, conn: Any, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        conn.execute(
            f"""INSERT INTO {self.table(EVENTS, tag)} (valid_from, valid_to, position, kind, status, start_key, end_key)
                SELECT position, {OPEN}, position, kind, 'active', start_key, end_key
                FROM event_meta WHERE position > ? AND position <= ? AND plain <> 0""",
            (low, high),
        )
        if not deferred:
            self._entries(conn, tag, low, high)
            self._group_bulk(conn, tag, low, high)

    def _entries(self, conn: Any, tag: str, low: int, high: int) -> None:
        conn.execute(
            f"""INSERT INTO {self.table(CHANGES, tag)} (entity_id, position, rank)
                SELECT m.entity_id, e.position, {RANK_SQL}
                FROM event_meta e JOIN event_entities m ON m.position = e.position
                WHERE e.position > ? AND e.position <= ? AND e.plain <> 0 AND m.position > ? AND m.position <= ?
                UNION ALL
                SELECT '{GLOBAL}', e.position, NULL FROM event_meta e
                WHERE e.position > ? AND e.position <= ? AND e.plain <> 0""",
            (low, high) * 3,
        )
        conn.execute(
            f"""INSERT INTO {self.table(ENTRIES, tag)} (entity_id, start_key, position, valid_from, rank)
                SELECT m.entity_id, e.start_key, e.position, e.position, {RANK_SQL}
                FROM event_meta e JOIN event_entities m ON m.position = e.position
                WHERE e.position > ? AND e.position <= ? AND e.plain <> 0 AND m.position > ? AND m.position <= ?""",
            (low, high, low, high),
        )

    @staticmethod
    def _exists(conn: Any, table: str) -> bool:
        (found,) = conn.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()
        return bool(found)

    @staticmethod
    def _forget_vanished(conn: Any, removals: str, entries: str, grouped: str, entities: frozenset[str]) -> None:
        for entity_id in sorted(entities):
            if _named(conn, entries, grouped, entity_id):
                continue
            _forget_regroupings(conn, removals, entity_id)
            # (SQLite's UPDATE OR IGNORE: a row that VANISHED already has is left to the DELETE)
            conn.execute(
                f"""UPDATE {removals} r SET entity_id = '{VANISHED}', rank = NULL WHERE r.entity_id = ?
                    AND NOT EXISTS (SELECT 1 FROM {removals} o
                                    WHERE o.seq = r.seq AND o.entity_id = '{VANISHED}' AND o.valid_from = r.valid_from)""",
                (entity_id,),
            )
            conn.execute(f"DELETE FROM {removals} WHERE entity_id = ?", (entity_id,))

    def _tell_removal(self, conn: Any, tag: str, gone: Erased, live: tuple[str, int]) -> None:
        removals = self.table(REMOVALS, tag)
        live_tag, reached = live
        if tag != live_tag:
            live_removals = self.table(REMOVALS, live_tag)
            if self._exists(conn, live_removals):
                conn.execute(
                    f"INSERT INTO {removals} SELECT * FROM {live_removals} WHERE seq = ? ON CONFLICT DO NOTHING",
                    (gone.seq,),
                )
            return
        tail = (reached, gone.position, gone.event_id, gone.kind)
        events, entries = self.table(EVENTS, tag), self.table(ENTRIES, tag)
        conn.execute(
            f"""INSERT INTO {removals}
                SELECT ?::bigint, en.entity_id, v.valid_from, v.valid_to, MIN(en.rank), v.status, ?::bigint,
                       ?::bigint, ?::text, ?::text
                FROM {events} v JOIN {entries} en ON en.valid_from = v.valid_from
                WHERE v.position = ? AND en.entity_id = ANY(?)
                GROUP BY en.entity_id, v.valid_from
                UNION ALL SELECT ?::bigint, '{GLOBAL}', v.valid_from, v.valid_to, NULL, v.status, ?::bigint,
                       ?::bigint, ?::text, ?::text
                FROM {events} v WHERE v.position = ?""",
            (gone.seq, *tail, gone.position, sorted(gone.entities), gone.seq, *tail, gone.position),
        )

    def carry(self, conn: Any, old: str, new: str) -> None:
        old_t, new_t = self.table(REMOVALS, old), self.table(REMOVALS, new)
        if self._exists(conn, old_t):
            conn.execute(f"INSERT INTO {new_t} SELECT * FROM {old_t} ON CONFLICT DO NOTHING")
