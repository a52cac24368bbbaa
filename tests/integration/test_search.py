"""Search on real SQLite files: entity search keys (names and aliases, transliterated) and the
full-text query language of ``q`` (stems, prefixes, OR, NOT, phrases, malformed input), by
entity and across all, in time order and by relevance."""

from __future__ import annotations

import random

import pytest

from events.store import EventStore
from helpers import alias, append, append_and_project, ent, news, timeline_ids, walk
from projections import ProjectionEngine, default_projections
from projections.queries import Queries, QueryError, TimelineQuery


# --- entity search ------------------------------------------------------------------------------

NAMES = {
    "brende": "Børge Brende",
    "lodz": "Łódź",
    "balasevic": "Đorđe Balašević",
    "aeroskobing": "Ærøskøbing",
    "strasse": "Hauptstraße",
    "oeuvre": "Œuvre Foundation",
    "thorn": "Þórunn Egilsdóttir",
    "putin": "Владимир Путин",
}


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("borge", "brende"),
        ("BØRGE", "brende"),
        ("lodz", "lodz"),
        ("Łódź", "lodz"),
        ("dorde", "balasevic"),
        ("balasevic", "balasevic"),
        ("aeroskobing", "aeroskobing"),
        ("ærø", "aeroskobing"),
        ("strasse", "strasse"),
        ("straße", "strasse"),
        ("oeuvre", "oeuvre"),
        ("thorunn", "thorn"),
        ("путин", "putin"),
        ("putin", "putin"),
    ],
)
def test_entity_search_finds_names_as_people_type_them(q, db, typed, expected):
    append_and_project(db, [news("n1", "2025", [ent(i, name=n) for i, n in NAMES.items()])])
    assert [e["id"] for e in q.entities(q=typed)] == [expected]


def test_entity_search_matches_ids_and_aliases_transliterated_too(q, db):
    append_and_project(
        db,
        [
            news("a1", "2025", [ent("børge-brende", name="B. Brende")]),
            news("a2", "2025", [ent("x", name="X")]),
            alias("al", "twitter-ærø", "x", name="X"),
        ],
    )
    assert [e["id"] for e in q.entities(q="borge-brende")] == ["børge-brende"]
    assert [e["id"] for e in q.entities(q="twitter-aero")] == ["x"]  # by the alias's id
    assert [e["id"] for e in q.entities(q="twitter")] == ["x"]


def test_entity_ids_are_still_derived_by_the_contract_rule(q, db):
    append_and_project(db, [news("d1", "2025", [{"name": "Børge Brende", "role": "subject"}])])
    assert [e["id"] for e in q.entities(q="borge")] == ["børge-brende"]  # NFKD keeps ø


def test_entity_search_keys_agree_between_live_batches_and_a_rebuild(q, db):
    """The set-based path (SQL ``fold``) and the per-change path (Python) write the same keys."""
    events = [news(f"r{i}", "2025", [ent(f"e{i}", name=name)]) for i, name in enumerate(NAMES.values())]
    with EventStore(db) as store:
        append(store, *events)
        with ProjectionEngine(store, default_projections(), batch_size=1) as engine:
            engine.catch_up()  # one event a batch: the per-change path for some
    before = {name: [e["id"] for e in q.entities(q=name)] for name in ("borge", "lodz", "dorde", "putin")}
    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        engine.rebuild(["entities"], force=True)
    after = {name: [e["id"] for e in q.entities(q=name)] for name in before}
    assert before == after == {"borge": ["e0"], "lodz": ["e1"], "dorde": ["e2"], "putin": ["e7"]}


# --- full-text query language ---------------------------------------------------------------------

HEADLINES = {
    "boat": ("Refugee boat capsizes off Lesbos", "Dozens rescued by the coast guard."),
    "fence": ("Hungary builds a border fence", "The fence runs along the Serbian border."),
    "camp": ("Refugees crowd the camp on Lesbos", None),
    "march": ("Refugees march towards Hungary", "Police stop the march at the border."),
    "vote": ("Parliament votes on asylum rules", "A fence was not discussed."),
}


@pytest.fixture
def corpus(q, db):
    append_and_project(
        db,
        [
            news(eid, f"2025-0{i + 1}", ("europe",), headline=h, **({"summary": s} if s else {}))
            for i, (eid, (h, s)) in enumerate(HEADLINES.items())
        ],
    )
    return q


@pytest.mark.parametrize("entity_id", ["europe", None])
@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("refugees", ["boat", "camp", "march"]),  # stemmed: refugee, refugees
        ("refugee", ["boat", "camp", "march"]),
        ("Hungar*", ["fence", "march"]),
        ("hungar *", ["fence", "march"]),  # a detached * is dropped: "hungar" as a word
        ("lesbos OR hungary", ["boat", "fence", "camp", "march"]),
        ("refugees NOT lesbos", ["march"]),
        ("refugees -lesbos", ["march"]),
        ('"border fence"', ["fence"]),
        ('"fence border"', []),
        ("border fence", ["fence"]),  # both words, anywhere
        ("NEAR(border fence)", ["fence"]),
        ("NEAR(refugees hungary, 2)", ["march"]),
        ("(lesbos OR hungary) NOT fence", ["boat", "camp", "march"]),
        ("refugees AND hungary", ["march"]),
        ("headline:fence", ["fence"]),
        ("summary:fence", ["fence", "vote"]),
        ("rescue", ["boat"]),  # "rescued" in the summary, stemmed
        ("REFUGEES or", []),  # lower-case "or" is a word to look for
    ],
)
def test_query_language(corpus, entity_id, typed, expected):
    assert timeline_ids(corpus, entity_id, q=typed) == expected


@pytest.mark.parametrize(
    "typed",
    ['"border fence', "NEAR(border", "NEAR(border fence)", "border)", "((border", "border OR", "OR border",
     "NOT NOT border", "border AND", "border*fence", "^border", "border:", "headline:border", "border\x00",
     "border \ud800", '"border" "', "border ☃", "{border}", "border + fence", "border - fence"],
)
def test_malformed_queries_answer_a_best_effort(corpus, typed):
    for entity_id in ("europe", None):
        for order in ("asc", "relevance"):
            found = timeline_ids(corpus, entity_id, q=typed, order=order)
            assert "fence" in found, (typed, found)


@pytest.mark.parametrize(
    ("typed", "says"),
    [("*", "letter or digit"), ('"', "letter or digit"), ("NOT lesbos", "NOT"), ("-lesbos", "NOT"),
     ("()", "letter or digit"), ("OR", "letter or digit")],
)
def test_queries_with_nothing_to_look_for_are_refused_by_name(corpus, typed, says):
    for entity_id in ("europe", None):
        with pytest.raises(QueryError) as raised:
            corpus.timeline(entity_id, TimelineQuery(q=typed))
        assert raised.value.field == "q" and says in str(raised.value)


def test_relevance_ranks_and_pages_by_entity_and_across_all(corpus):
    for entity_id in ("europe", None):
        ranked = timeline_ids(corpus, entity_id, q="fence OR border", order="relevance")
        assert ranked[0] == "fence" and set(ranked) == {"fence", "march", "vote"}
        assert sum(walk(corpus, entity_id, q="fence OR border", order="relevance", limit=1), []) == ranked


def test_search_follows_corrections_retractions_and_aliases(q, db):
    from helpers import correction, retraction

    append_and_project(
        db,
        [
            news("s1", "2025-01", ("twitter",), headline="Storm hits the coast"),
            news("s2", "2025-02", ("x",), headline="Storm over the hills"),
            news("s3", "2025-03", ("x",), headline="Calm seas"),
        ],
    )
    append_and_project(
        db,
        [
            correction("c1", "s3", headline="Storms return"),
            retraction("r1", "s2"),
            alias("al", "twitter", "x"),
        ],
    )
    assert timeline_ids(q, "x", q="storm") == ["s1", "s3"]
    assert timeline_ids(q, "x", q="storm", order="relevance")[0] in {"s1", "s3"}
    assert set(timeline_ids(q, "x", q="storm", order="relevance")) == {"s1", "s3"}
    assert timeline_ids(q, "x", q="calm") == []
    assert timeline_ids(q, "x", q="storm", include_retracted=True) == ["s1", "s2", "s3"]


# --- one entity's search, planned from the smaller side -------------------------------------------

WORDS = "storm flood court ruling summit market election outage refugee border".split()


def _busy_events(n: int, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        entities = ["busy"] + (["small"] if i % 50 == 0 else []) + [f"other-{rng.randrange(40)}"]
        words = rng.sample(WORDS, 3) + (["zebra"] if i % 97 == 0 else [])
        out.append(
            news(
                f"b{i}",
                f"20{10 + i % 15}-{1 + i % 12:02d}",
                entities,
                kind=("report", "outage")[i % 2],
                headline=" ".join(words),
                summary=" ".join(rng.sample(WORDS, 5)),
            )
        )
    return out


def _expected(events: list[dict], entity: str, words: set[str], order: str) -> list[str]:
    """A straightforward method: every event of the entity whose text has one of the words, in time
    order (the store's order breaks ties)."""
    hits = [
        (e["occurred_at"], i, e["id"])
        for i, e in enumerate(events)
        if any(t["id"] == entity for t in e["entities"])
        and words & set((e["headline"] + " " + e.get("summary", "")).split())
    ]
    return [eid for *_, eid in sorted(hits, reverse=order == "desc")]


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """1,200 events of entity ``busy``, every 50th also of ``small``, and a store of them."""
    path = tmp_path_factory.mktemp("busy") / "timeline.db"
    events = _busy_events(1200)
    append_and_project(path, events)
    queries = Queries(str(path))
    yield queries, events
    queries.close()


@pytest.mark.parametrize("walk_first", [0, 10_000], ids=["by-matches", "by-entity-rows"])
@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize(("entity", "typed", "words", "limit"), [
    ("busy", "zebra", {"zebra"}, 5),
    ("busy", "storm", {"storm"}, 150),
    ("small", "zebra OR court", {"zebra", "court"}, 5),
    ("small", "storm", {"storm"}, 5),
])
def test_one_entity_search_gives_what_a_straightforward_method_gives(
    busy, monkeypatch, walk_first, order, entity, typed, words, limit
):
    """Both plans (walking the entity's rows, or the matches first) answer the same."""
    q, events = busy
    monkeypatch.setattr("projections.queries.search.WALK_FIRST", walk_first)
    expected = _expected(events, entity, words, order)
    assert sum(walk(q, entity, q=typed, order=order, limit=limit), []) == expected
    ranked = sum(walk(q, entity, q=typed, order="relevance", limit=limit), [])
    assert sorted(ranked) == sorted(expected)
