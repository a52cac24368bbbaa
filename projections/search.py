"""The search projection: a full-text index of every timeline version's headline and summary.

FTS5, contentless, accents ignored. A row's rowid is the version's id in the timelines
projection (``tl_events.valid_from``: the position of the change that made the version), so
a search joins the versions valid at the position a read answers for. Rows are never
removed: a version that stops being true is filtered out by that join.

A rebuild lets FTS5 merge its index segments sixteen at a time instead of four (``automerge``):
the index is rewritten fewer times while it is filled; once caught up it goes back to four, so
that live writes keep merging as they always do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .changes import Change
from .engine import Projection

SEARCH = "tl_search"
AUTOMERGE = 4  # FTS5's default
REBUILD_AUTOMERGE = 16


class SearchProjection(Projection):
    name = "search"
    version = 1
    schema = {
        SEARCH: [
            "CREATE VIRTUAL TABLE {t} USING fts5(headline, summary, content='',"
            " tokenize='unicode61 remove_diacritics 2')",
        ],
    }

    def create(self, conn: sqlite3.Connection, tag: str, *, indexes: bool = True) -> None:
        super().create(conn, tag, indexes=indexes)
        if not indexes:  # a rebuild's table: read once caught up, when create_indexes runs
            self._automerge(conn, tag, REBUILD_AUTOMERGE)

    def create_indexes(self, conn: sqlite3.Connection, tag: str) -> None:
        self._automerge(conn, tag, AUTOMERGE)

    def _automerge(self, conn: sqlite3.Connection, tag: str, segments: int) -> None:
        t = self.table(SEARCH, tag)
        conn.execute(f"INSERT INTO {t} ({t}, rank) VALUES ('automerge', ?)", (segments,))

    def bulk(self, conn: sqlite3.Connection, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        conn.execute(
            f"""INSERT INTO {self.table(SEARCH, tag)} (rowid, headline, summary)
                SELECT e.position, e.body ->> 'headline', coalesce(e.body ->> 'summary', '')
                FROM event_meta m JOIN events e ON e.position = m.position
                WHERE m.position > ? AND m.position <= ? AND m.plain""",
            (low, high),
        )

    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str, *, deferred: bool = False) -> None:
        rows = [
            (change.position, change.new.body["headline"], change.new.body.get("summary") or "")
            for change in changes
            if change.new is not None
        ]
        conn.executemany(f"INSERT INTO {self.table(SEARCH, tag)} (rowid, headline, summary) VALUES (?, ?, ?)", rows)
