"""The timelines projection: every version of every news event, and who it is filed under.

Rows are versioned by store position: a row is true for ``valid_from <= P < valid_to``.
A correction or retraction closes the event's open rows at its position and opens new ones,
so the timeline as the store knew it at any position (``as_of``) is one indexed query, and an
event that a correction moves to other entities leaves one timeline and joins another.
Aliases are resolved when reading (``projections.aliases``), so they merge retroactively.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from .changes import RANK, Change, Version
from .engine import Projection

OPEN = 2**62  # valid_to of a row that is still true
RANK_SQL = "CASE m.role " + " ".join(f"WHEN '{role}' THEN {rank}" for role, rank in RANK.items()) + " END"

EVENTS = "tl_events"
ENTRIES = "tl_entries"
SEARCH = "tl_search"


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class TimelinesProjection(Projection):
    name = "timelines"
    version = 2
    schema = {
        EVENTS: [
            # A version's id is the store position of the change that made it (one per position).
            """CREATE TABLE {t} (
                valid_from INTEGER PRIMARY KEY, event_id TEXT NOT NULL, valid_to INTEGER NOT NULL,
                position INTEGER NOT NULL, recorded_at TEXT NOT NULL, kind TEXT NOT NULL,
                status TEXT NOT NULL, start_key TEXT NOT NULL, end_key TEXT NOT NULL,
                occurred_at TEXT NOT NULL, ended_at TEXT, headline TEXT NOT NULL, summary TEXT,
                sources TEXT NOT NULL, details TEXT NOT NULL
            )""",
            "CREATE INDEX {t}_event ON {t}(event_id, valid_to)",
            "CREATE INDEX {t}_order ON {t}(start_key, position)",
        ],
        ENTRIES: [
            """CREATE TABLE {t} (
                entity_id TEXT NOT NULL, event_id TEXT NOT NULL, role TEXT NOT NULL, rank INTEGER NOT NULL,
                kind TEXT NOT NULL, status TEXT NOT NULL, start_key TEXT NOT NULL, end_key TEXT NOT NULL,
                position INTEGER NOT NULL, valid_from INTEGER NOT NULL, valid_to INTEGER NOT NULL
            )""",
            "CREATE INDEX {t}_entity ON {t}(entity_id, start_key, position)",
            "CREATE INDEX {t}_event ON {t}(event_id) WHERE valid_to = 4611686018427387904",
        ],
        SEARCH: [
            # Full-text index of each version's headline and summary; rowid = the version's valid_from.
            "CREATE VIRTUAL TABLE {t} USING fts5(headline, summary, content='',"
            " tokenize='unicode61 remove_diacritics 2')",
        ],
    }

    def bulk(self, conn: sqlite3.Connection, tag: str) -> None:
        events_t, entries_t = self.table(EVENTS, tag), self.table(ENTRIES, tag)
        conn.execute(
            f"""INSERT INTO {events_t}
                SELECT position, event_id, {OPEN}, position, recorded_at, kind, 'active', start_key, end_key,
                       occurred_at, body ->> 'ended_at', body ->> 'headline', body ->> 'summary',
                       json(coalesce(body -> 'sources', '[]')), json(coalesce(body -> 'details', '{{}}'))
                FROM temp.stage_events"""
        )
        conn.execute(
            f"INSERT INTO {self.table(SEARCH, tag)} (rowid, headline, summary)"
            " SELECT position, body ->> 'headline', coalesce(body ->> 'summary', '') FROM temp.stage_events"
        )
        conn.execute(
            f"""INSERT INTO {entries_t}
                SELECT m.entity_id, m.event_id, m.role, {RANK_SQL}, e.kind, 'active', e.start_key, e.end_key,
                       e.position, e.position, {OPEN}
                FROM temp.stage_members m JOIN temp.stage_events e ON e.position = m.position"""
        )

    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str) -> None:
        events_t, entries_t = self.table(EVENTS, tag), self.table(ENTRIES, tag)
        search_t = self.table(SEARCH, tag)
        event_rows = []
        entry_rows = []
        for change in changes:
            if change.old is not None:
                self._flush(conn, events_t, entries_t, search_t, event_rows, entry_rows)
                conn.execute(
                    f"UPDATE {events_t} SET valid_to = ? WHERE event_id = ? AND valid_to = ?",
                    (change.position, change.old.event_id, OPEN),
                )
                conn.execute(
                    f"UPDATE {entries_t} SET valid_to = ? WHERE event_id = ? AND valid_to = ?",
                    (change.position, change.old.event_id, OPEN),
                )
            new = change.new
            if new is None:
                continue
            body = new.body
            event_rows.append(
                (
                    change.position, new.event_id, OPEN, new.position, new.recorded_at, new.kind, new.status,
                    new.start_key, new.end_key, body["occurred_at"], body.get("ended_at"), body["headline"],
                    body.get("summary"), _dumps(body.get("sources", [])), _dumps(body.get("details", {})),
                )
            )
            entry_rows.extend(self._entries(new, change.position))
        self._flush(conn, events_t, entries_t, search_t, event_rows, entry_rows)

    @staticmethod
    def _entries(new: Version, valid_from: int) -> list[tuple[object, ...]]:
        return [
            (
                entity["id"], new.event_id, entity["role"], RANK[entity["role"]], new.kind, new.status,
                new.start_key, new.end_key, new.position, valid_from, OPEN,
            )
            for entity in new.entities
        ]

    @staticmethod
    def _flush(
        conn: sqlite3.Connection, events_t: str, entries_t: str, search_t: str, event_rows: list, entry_rows: list
    ) -> None:
        if event_rows:
            # json(?): the same JSON text as the set-based path, which copies it out of the store
            conn.executemany(f"INSERT INTO {events_t} VALUES ({','.join('?' * 13)}, json(?), json(?))", event_rows)
            conn.executemany(
                f"INSERT INTO {search_t} (rowid, headline, summary) VALUES (?, ?, ?)",
                [(row[0], row[11], row[12] or "") for row in event_rows],
            )
            event_rows.clear()
        if entry_rows:
            conn.executemany(f"INSERT INTO {entries_t} VALUES ({','.join('?' * 11)})", entry_rows)
            entry_rows.clear()
