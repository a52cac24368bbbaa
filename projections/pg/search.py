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

import orjson

from events.ids import _unaccent
from events.pg.store import pg_text

from ..changes import Change
from ..engine import Projection
from ..erasure import Erased
from ..search import _WORD, SEARCH, SearchProjection, SearchSyntaxError, _All, _Any, _Near, _Node, _Term, parse_query

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
    """What FTS5's ``remove_diacritics 2`` tokenizer does to text before it stems it. ASCII text
    (most headlines and summaries) has nothing to decompose or drop, and its case folding is
    ``lower``: that, without ``_unaccent``'s walk character by character (70 µs a document)."""
    if text.isascii():
        return text.lower()
    return _unaccent(text)


def write_docs(conn: Any, table: str, rows: Iterable[tuple[int, str, str]]) -> None:
    """Insert ``(version, headline, summary)`` rows as documents."""
    folded = [(version, pg_text(fold(headline or "")), pg_text(fold(summary or ""))) for version, headline, summary in rows]
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
        # the body's text, parsed here: PostgreSQL's JSON types refuse a \u0000 that a headline may hold
        rows = conn.execute(
            """SELECT e.position, e.body FROM event_meta m JOIN events e ON e.position = m.position
               WHERE m.position > ? AND m.position <= ? AND m.plain <> 0""",
            (low, high),
        ).fetchall()
        bodies = ((position, orjson.loads(body)) for position, body in rows)
        write_docs(conn, self.table(SEARCH, tag), [(p, b["headline"], b.get("summary") or "") for p, b in bodies])

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
        if gone.kind == "entity_alias":
            return  # aliases are merged when reading: no rows of this projection
        conn.execute(
            f"DELETE FROM {self.table(SEARCH, tag)} WHERE version = ANY(?)",
            ([version for version, _, _ in gone.versions if version <= reached],),
        )


# --- the query language (projections.search), as a tsquery --------------------------------------
#
# The same parser reads ``q`` on both databases (``parse_query``); this writes its tree in
# ``to_tsquery``'s syntax, with every word quoted (words are runs of letters and digits, folded as
# the documents were, so none is an operator): ``to_tsquery('timeline_english', ...)`` then
# stems each word as the documents' words were stemmed. No user text reaches it otherwise.
#
#   refugees boat          'refugees' & 'boat'
#   lesbos OR hungary      'lesbos' | 'hungary'
#   refugees NOT lesbos    ( 'refugees' ) & !( 'lesbos' )
#   "border fence"         ( ( 'border':A <-> 'fence':A ) | ( 'border':B <-> 'fence':B ) ): a
#                          phrase in one column, as in FTS5
#   Hungar*                'hungar':*
#   headline:fence         'fence':A        (summary: ':B')
#   NEAR(a b, 5)           ( 'a' <1> 'b' | ... | 'a' <6> 'b' | 'b' <1> 'a' | ... ): each pair of its
#                          terms at most 5 words apart, in either order, in one column; a NEAR
#                          wider than NEAR_EXPANDED words finds the terms anywhere (AND)

WEIGHTS = {"headline": "A", "summary": "B"}
NEAR_DEFAULT = 10  # FTS5's
NEAR_EXPANDED = 12


def _phrase(term: _Term, column: str | None = None) -> str | None:
    """A term's words next to each other, in one column (FTS5 matches a phrase within a column;
    PostgreSQL's document runs the headline into the summary, so a phrase without a column is
    looked for in each: its lexemes all weighted ``A``, or all ``B``)."""
    words = _WORD.findall(fold(term.text))
    if not words:
        return None
    column = column or term.column
    if len(words) > 1 and column is None:
        return "( " + " | ".join(_words(words, term.prefix, w) for w in WEIGHTS.values()) + " )"
    return _words(words, term.prefix, WEIGHTS.get(column or "", ""))


def _words(words: list[str], prefix: bool, weight: str) -> str:
    lexemes = [f"'{w}'" + (":" + weight if weight else "") for w in words]
    if prefix:
        lexemes[-1] = f"'{words[-1]}':*{weight}"
    return lexemes[0] if len(lexemes) == 1 else "( " + " <-> ".join(lexemes) + " )"


def _near(node: _Near) -> str:
    """Each pair of the terms at most ``distance`` words apart, in either order, in one column."""
    if node.column is None:
        return "( " + " | ".join(_near(_Near(node.terms, node.distance, c)) for c in WEIGHTS) + " )"
    phrases = [p for p in (_phrase(t, node.column) for t in node.terms) if p]
    distance = NEAR_DEFAULT if node.distance is None else node.distance
    if len(phrases) < 2 or distance + 1 > NEAR_EXPANDED:
        return "( " + " & ".join(phrases) + " )"
    pairs = []
    for i, a in enumerate(phrases):
        for b in phrases[i + 1 :]:
            pairs.append(
                "( " + " | ".join(f"{x} <{k}> {y}" for x, y in ((a, b), (b, a)) for k in range(1, distance + 2)) + " )"
            )
    return pairs[0] if len(pairs) == 1 else "( " + " & ".join(pairs) + " )"


def _tsquery(node: _Node) -> str | None:
    if isinstance(node, _Term):
        return _phrase(node)
    if isinstance(node, _Near):
        return _near(node)
    if isinstance(node, (_All, _Any)):
        parts = [p for p in (_tsquery(i) for i in node.items) if p]
        if not parts:
            return None
        glue = " & " if isinstance(node, _All) else " | "
        return parts[0] if len(parts) == 1 else "( " + glue.join(parts) + " )"
    wanted, unwanted = _tsquery(node.wanted), _tsquery(node.unwanted)
    if wanted is None:
        return None
    return wanted if unwanted is None else f"( {wanted} & !{unwanted} )"


def tsquery_expression(q: str) -> str:
    """The ``to_tsquery('timeline_english', ...)`` text for what a user typed in ``q``
    (``projections.search``'s language; raises ``SearchSyntaxError`` as ``match_expression`` does)."""
    expr = _tsquery(parse_query(q))
    if expr is None:
        raise SearchSyntaxError("needs at least one word (a letter or digit) to look for")
    return expr
