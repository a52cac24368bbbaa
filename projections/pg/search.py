"""The search projection on PostgreSQL: a ``tsvector`` per timeline version, GIN-indexed.

What FTS5 does on SQLite (``projections.search``), done with PostgreSQL's full-text search:

- **Rows.** One per timeline version, keyed by its id (``version`` = ``tl_events.valid_from``,
  FTS5's rowid), holding only the document's lexemes (no text: FTS5's index is contentless too).
  Rows are never removed but by an erasure (a version that stops being true is filtered out by
  the join with the timelines' versions, as on SQLite).
- **Words.** Headline and summary are folded first, as FTS5's ``remove_diacritics 2`` folds:
  Unicode NFKD, combining marks dropped, case-folded (``events.ids`` ``_unaccent``: in Python,
  because the ``unaccent`` extension is not in every PostgreSQL, the embedded one included),
  then parsed by the text search configuration ``timeline_english``: PostgreSQL's ``english``
  parser with the English Snowball stemmer and no stop words (FTS5 drops none: "the" is a word
  to look for). The headline's lexemes are weighted ``A`` and the summary's ``B``, so
  ``headline:`` and ``summary:`` restrict a word to one (``:A``, ``:B`` in a ``tsquery``).
- **Index.** ``GIN (doc)``; a rebuild fills its table without it and builds it once caught up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from events.ids import _unaccent

from ..changes import Change
from ..engine import Projection
from ..erasure import Erased
from ..search import SEARCH, SearchProjection

CONFIG = "timeline_english"
DOC = f"setweight(to_tsvector('{CONFIG}', {{h}}), 'A') || setweight(to_tsvector('{CONFIG}', {{s}}), 'B')"

# The configuration, created once per schema (a store's schema: the projection's tables' own).
CONFIG_SQL = f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = '{CONFIG}' AND cfgnamespace = current_schema()::regnamespace)
  THEN
    CREATE TEXT SEARCH DICTIONARY timeline_english_stem (TEMPLATE = snowball, Language = english);
    CREATE TEXT SEARCH CONFIGURATION {CONFIG} (COPY = pg_catalog.english);
    ALTER TEXT SEARCH CONFIGURATION {CONFIG}
      ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
      WITH timeline_english_stem;
  END IF;
END $$"""


def fold(text: str) -> str:
    """What FTS5's ``remove_diacritics 2`` tokenizer does to text before it stems it."""
    return _unaccent(text)


def write_docs(conn: Any, table: str, rows: Iterable[tuple[int, str, str]]) -> None:
    """Insert ``(version, headline, summary)`` rows as documents."""
    folded = [(version, fold(headline or ""), fold(summary or "")) for version, headline, summary in rows]
    if not folded:
        return
    if len(folded) < 200:
        conn.executemany(f"INSERT INTO {table} (version, doc) VALUES (?, {DOC.format(h='?', s='?')})", folded)
        return
    raw = conn.raw
    raw.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS _search_text (version BIGINT, headline TEXT, summary TEXT)"
        " ON COMMIT DELETE ROWS"
    )
    with raw.cursor().copy("COPY _search_text (version, headline, summary) FROM STDIN") as copy:
        for row in folded:
            copy.write_row(row)
    raw.execute(f"INSERT INTO {table} (version, doc) SELECT version, {DOC.format(h='headline', s='summary')} FROM _search_text")
    raw.execute("DELETE FROM _search_text")


class PgSearchProjection(SearchProjection):
    schema = {SEARCH: ["CREATE TABLE {t} (version BIGINT PRIMARY KEY, doc tsvector NOT NULL)"]}
    indexes = {SEARCH: ["CREATE INDEX IF NOT EXISTS {t}_doc ON {t} USING GIN (doc)"]}

    def create(self, conn: Any, tag: str, *, indexes: bool = True) -> None:
        conn.execute(CONFIG_SQL)
        Projection.create(self, conn, tag, indexes=indexes)

    def create_indexes(self, conn: Any, tag: str) -> None:
        Projection.create_indexes(self, conn, tag)

    def bulk(self, conn: Any, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        rows = conn.execute(
            """SELECT e.position, e.body::jsonb ->> 'headline', coalesce(e.body::jsonb ->> 'summary', '')
               FROM event_meta m JOIN events e ON e.position = m.position
               WHERE m.position > ? AND m.position <= ? AND m.plain <> 0""",
            (low, high),
        ).fetchall()
        write_docs(conn, self.table(SEARCH, tag), rows)

    def apply(self, conn: Any, changes: Sequence[Change], tag: str, *, deferred: bool = False) -> None:
        write_docs(
            conn,
            self.table(SEARCH, tag),
            [
                (change.position, change.new.body["headline"], change.new.body.get("summary") or "")
                for change in changes
                if change.new is not None
            ],
        )

    def remove(self, conn: Any, tag: str, gone: Erased, reached: int) -> None:
        """The documents of its versions go at once; the space they took is reused, and the bytes
        overwritten, as PostgreSQL vacuums the table (docs/erasure.md)."""
        conn.execute(
            f"DELETE FROM {self.table(SEARCH, tag)} WHERE version = ANY(?)",
            ([version for version, _, _ in gone.versions if version <= reached],),
        )
