"""The query language of ``q`` (projections.search.match_expression): what it writes for FTS5,
and that FTS5 accepts whatever it writes, for any input."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.search import MAX_WORDS, SEARCH, SearchProjection, SearchSyntaxError, match_expression


@pytest.fixture(scope="module")
def fts():
    conn = sqlite3.connect(":memory:")
    SearchProjection().create(conn, "")
    conn.executemany(
        f"INSERT INTO {SEARCH} (rowid, headline, summary) VALUES (?, ?, ?)",
        [(1, "Refugee boat capsizes", "off Lesbos"), (2, "Hungary builds a border fence", ""),
         (3, "Running late", "the border again")],
    )
    yield conn
    conn.close()


@pytest.mark.parametrize(
    ("typed", "expression"),
    [
        ("refugees", '"refugees"'),
        ("Hungar*", '"Hungar" *'),
        ("lesbos OR hungary", '"lesbos" OR "hungary"'),
        ("refugees NOT lesbos", '("refugees") NOT ("lesbos")'),
        ("refugees -lesbos -boat", '("refugees") NOT ("lesbos" OR "boat")'),
        ('"border fence"', '"border fence"'),
        ('"border fen"*', '"border fen" *'),
        ("(a OR b) c", '("a" OR "b") AND "c"'),
        ("NEAR(a b, 3)", '(NEAR("a" "b", 3))'),
        ("headline:fence", '(headline : "fence")'),
        ('"unbalanced', '"unbalanced"'),
        ("a) b", '"a" AND "b"'),
        ("OR a OR", '"a"'),
    ],
)
def test_expressions(typed, expression):
    assert match_expression(typed) == expression


@pytest.mark.parametrize(
    ("typed", "rows"),
    [("refugees", [1]), ("Hungar*", [2]), ("border OR lesbos", [1, 2, 3]), ("border NOT fence", [3]),
     ('"border fence"', [2]), ("run*", [3]), ("summary:border", [3]), ("NEAR(builds fence)", [2])],
)
def test_what_fts5_finds(fts, typed, rows):
    found = [r[0] for r in fts.execute(f"SELECT rowid FROM {SEARCH} WHERE {SEARCH} MATCH ? ORDER BY rowid",
                                       (match_expression(typed),))]
    assert found == rows


SYNTAX = st.sampled_from(['"', "(", ")", "NEAR(", "NEAR", "*", "^", "-", ":", "headline:", "summary:", "OR", "AND",
                          "NOT", ",", "+", "'", "\\", "\x00", "border", "fen*", " ", "é", "北京", "🙂", "\ud800"])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(SYNTAX, st.text(max_size=5)), max_size=16).map("".join))
def test_any_input_is_refused_by_name_or_read_by_fts5(fts, typed):
    try:
        expression = match_expression(typed)
    except SearchSyntaxError as exc:
        assert str(exc)
        return
    fts.execute(f"SELECT count(*) FROM {SEARCH} WHERE {SEARCH} MATCH ?", (expression,)).fetchone()


def test_deep_nesting_is_read_without_recursion_errors(fts):
    expression = match_expression("(" * 5000 + "border" + ")" * 5000)
    assert fts.execute(f"SELECT count(*) FROM {SEARCH} WHERE {SEARCH} MATCH ?", (expression,)).fetchone() == (2,)


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        (" ".join(["w"] * 32), None),
        (" ".join(["w"] * 33), 33),
        ('"' + "a-b " * 17 + '"', 34),  # a phrase's words count; "-" separates words
        ("x " * 30 + "NOT y z w", 33),  # so do excluded ones
        ("NEAR(" + "n " * 33 + ", 5)", 33),
        ("(" * 40 + "a" + ")" * 40, None),  # operators and brackets are no words
    ],
)
def test_at_most_32_words(typed, words):
    if words is None:
        assert match_expression(typed)
        return
    with pytest.raises(SearchSyntaxError, match=f"at most {MAX_WORDS} words .*this query has {words}"):
        match_expression(typed)
