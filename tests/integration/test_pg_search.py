"""Full-text search on PostgreSQL reads the same query language as on SQLite and finds the same
documents: the documents indexed by FTS5 (projections.search) and by the tsvector index
(projections.pg.search), each query run on both."""

from __future__ import annotations

import sqlite3

import pytest

from events.pg.connect import Qmark, connect
from projections.pg.search import CONFIG_SQL, tsquery_expression, write_docs
from projections.search import SearchProjection, SearchSyntaxError, match_expression

DOCS = [
    ("Refugees reach Lesbos by boat", "Hundreds of refugees arrived overnight"),
    ("Hungary closes its border fence", "The fence along the border with Serbia is closed"),
    ("Border talks in Brussels", "Ministers discuss the fence and the refugee quota"),
    ("Société Générale fined", "The bank pays a fine in Paris"),
    ("Running for election", "The candidate is running again, the fourth time running"),
    ("Fence built", "A border to the south"),
    ("Élections en Hongrie", "Orbán gagne"),
    ("Boat capsizes near Lesbos", "Survivors were taken to hospital; no refugees among them"),
    ("Quiet day", "Nothing to report about the border"),
]

QUERIES = [
    "refugees", "refugee boat", "lesbos OR hungary", "refugees NOT lesbos", "refugees -lesbos", '"border fence"',
    '"fence border"', "Hungar*", "run*", "running", "(lesbos OR brussels) refugees", "headline:fence", "summary:fence",
    "headline:border fence", "NEAR(border fence)", "NEAR(border fence, 0)", "NEAR(fence serbia, 3)",
    "NEAR(fence serbia, 5)", "societe generale", "Société", "ORBAN", "elections", "hongrie", '"border" OR "boat"',
    "fence AND border", "the", '"talks in brussels"', '"brussels ministers"', "NEAR(brussels ministers, 1)",
    "summary:NEAR(fence quota)", "headline:NEAR(fence quota)", "NEAR(refugee quota border, 8)", "border NOT (fence OR talks)", '"lesbos by boat"',
]


@pytest.fixture
def both(pg_db):
    lite = sqlite3.connect(":memory:")
    SearchProjection().create(lite, "")
    lite.executemany("INSERT INTO tl_search (rowid, headline, summary) VALUES (?, ?, ?)",
                     [(i, h, s) for i, (h, s) in enumerate(DOCS, 1)])
    pg = connect(pg_db)
    pg.execute(CONFIG_SQL)
    pg.execute("CREATE TABLE docs (version BIGINT PRIMARY KEY, doc tsvector NOT NULL)")
    write_docs(Qmark(pg), "docs", [(i, h, s) for i, (h, s) in enumerate(DOCS, 1)])
    yield lite, pg
    lite.close()
    pg.close()


@pytest.mark.parametrize("q", QUERIES)
def test_the_same_query_finds_the_same_documents(both, q):
    lite, pg = both
    found_lite = {r[0] for r in lite.execute("SELECT rowid FROM tl_search WHERE tl_search MATCH ?", (match_expression(q),))}
    found_pg = {r[0] for r in pg.execute(
        "SELECT version FROM docs WHERE doc @@ to_tsquery('timeline_english', %s)", (tsquery_expression(q),))}
    assert found_pg == found_lite, (q, match_expression(q), tsquery_expression(q))
    nothing = ('"brussels ministers"', "NEAR(brussels ministers, 1)", "headline:NEAR(fence quota)", '"fence border"', "NEAR(fence serbia, 3)", "NEAR(refugee quota border, 8)",
               "summary:NEAR(fence quota)")  # (a column before NEAR is read as a word)
    assert bool(found_lite) == (q not in nothing)


def test_many_documents_use_the_index(both):
    """The copy path (a batch of many documents) writes what the row-by-row one does."""
    _, pg = both
    many = [(1000 + i, h, s) for i, (h, s) in enumerate(DOCS * 30)]
    pg.execute("CREATE TABLE docs2 (version BIGINT PRIMARY KEY, doc tsvector NOT NULL)")
    write_docs(Qmark(pg), "docs2", many)
    one_by_one = {r[0]: r[1] for r in pg.execute("SELECT version, doc::text FROM docs")}
    for version, doc in pg.execute("SELECT version, doc::text FROM docs2"):
        assert doc == one_by_one[(version - 1000) % len(DOCS) + 1]


@pytest.mark.parametrize("q", ["", "   ", "NOT x", "-x", "()", "*"])
def test_nothing_to_look_for_is_refused_alike(q):
    with pytest.raises(SearchSyntaxError):
        match_expression(q)
    with pytest.raises(SearchSyntaxError):
        tsquery_expression(q)
