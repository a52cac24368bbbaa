"""Reads of an entity with a long alias chain do the work of an entity without aliases: the
timelines and entities projections file a group's rows under its set (projections.groups), so a
timeline page, a search within it (``q``), a card and the directory's page read one range of
rows, not one per member.

What is counted is the work SQLite does (virtual machine steps, ``set_progress_handler``) and
the plans of the statements a read runs, not wall time; the figures are in docs/performance.md
(``python -m bench.aliases``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from events.store import EventStore
from helpers import alias, append, correction, ent, news, project, retraction
from projections.erasure import capture
from events.erasure import erase
from projections import ProjectionEngine, default_projections
from projections.queries import Queries, TimelineQuery

CHAIN = 2_000  # aliases: c0 → c1 → … → c2000, each declaration making the chain so far an alias
ROOT = f"c{CHAIN}"
#: points deep in the chain's history (``as_of`` their instant): the group then of half and of a
#: quarter of the chain's ids (its ids then, c0 … c{ids - 1})
DEEP = {"midpoint": CHAIN // 2, "quarter": CHAIN // 4}


def _day(i: int) -> str:
    return f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"


def chain_store(db: Path, chain: int) -> Path:
    """One event under every member of a chain, and ``solo`` (no aliases) in as many."""
    events: list[dict[str, Any]] = []
    for i in range(chain + 1):
        events.append(news(f"g-{i}", _day(i), [ent(f"c{i}", name="Chained", type="person"), ent(f"o{i % 5}", "mentioned")]))
        events.append(news(f"s-{i}", _day(i), [ent("solo", name="Solo", type="person"), ent(f"o{i % 5}", "mentioned")]))
    declared = len(events)
    events += [alias(f"a-{i}", f"c{i}", f"c{i + 1}") for i in range(chain)]
    # batches of 1,000, and one ending where the group held each of ``DEEP``'s sizes (an
    # ``as_of`` instant there: one ``recorded_at`` a batch)
    deep = (declared + ids - 1 for ids in DEEP.values())
    cuts = sorted({*range(0, len(events), 1000), *(c for c in deep if c < len(events)), len(events)})
    with EventStore(db) as store, ProjectionEngine(store, default_projections(), batch_size=1000) as engine:
        engine.setup()  # live tables from the start: the declarations applied as live batches are
        for start, end in zip(cuts, cuts[1:]):
            append(store, *events[start:end])
            engine.catch_up()
    return db


@pytest.fixture(scope="module")
def chained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chain_store(tmp_path_factory.mktemp("chain") / "timeline.db", CHAIN)


@pytest.fixture()
def queries(chained: Path) -> Iterator[Queries]:
    q = Queries(str(chained))
    try:
        yield q
    finally:
        q.close()


def steps(queries: Queries, read: Callable[[], Any]) -> int:
    """SQLite virtual-machine steps (in hundreds) a read takes, once warm."""
    read()
    conn = queries.store.conn
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        read()
    finally:
        conn.set_progress_handler(None, 0)
    return count[0]


READS: dict[str, Callable[[Queries, str], Any]] = {
    "timeline head page": lambda q, e: q.timeline(e, TimelineQuery(limit=50), render=True),
    "timeline page by role": lambda q, e: q.timeline(e, TimelineQuery(limit=50, role="subject", order="desc")),
    # the entries' entities rendered anew (as after the projections moved): the group's name
    "timeline page, entries named anew": lambda q, e: (
        setattr(q, "_kept_entities", (None, {})), q.timeline(e, TimelineQuery(limit=50), render=True)
    ),
    "entity card": lambda q, e: q.entity(e),
    # the related projection's pairs kept per set (before: every event of the group joined with
    # the other entities of those events)
    "related": lambda q, e: q.related(e),
    "related, second page": lambda q, e: q.related(e, limit=2, cursor=q.related(e, limit=2)["next_cursor"]),
    # a search within the timeline: the index's matches among the set's rows (before: each hit
    # looked up under every member)
    "search, time order": lambda q, e: q.timeline(e, TimelineQuery(q="headline", limit=50), render=True),
    "search, by relevance": lambda q, e: q.timeline(e, TimelineQuery(q="headline", order="relevance", limit=50)),
    "search, newest first, with its total": lambda q, e: q.timeline(
        e, TimelineQuery(q="headline", order="desc", limit=50), total=True
    ),
}


@pytest.mark.parametrize("read", list(READS))
def test_a_read_of_a_long_alias_chain_does_the_work_of_an_entity_without_aliases(queries: Queries, read: str) -> None:
    fn = READS[read]
    solo = steps(queries, lambda: fn(queries, "solo"))
    group = steps(queries, lambda: fn(queries, "c0"))
    # The members asked one by one cost ~100x more at this size (and grow with the chain).
    assert group <= 3 * solo + 20, (read, group, solo)


def test_the_directory_page_does_not_grow_with_the_chain(queries: Queries, tmp_path: Path) -> None:
    """The directory's first page lists the group and the entities without aliases: it does the
    same work with a chain ten times longer (before: a pass over every id of the chain)."""
    short = Queries(str(chain_store(tmp_path / "short.db", CHAIN // 10)))
    try:
        few = steps(short, lambda: short.directory(limit=50))
        many = steps(queries, lambda: queries.directory(limit=50))
        assert [e["id"] for e in queries.directory(limit=50)["entities"]][:2] == [ROOT, "solo"]
    finally:
        short.close()
    assert many <= 2 * few + 10, (many, few)


def test_a_group_page_is_one_range_of_its_set_in_timeline_order(queries: Queries) -> None:
    """The page's statement searches the group's rows by set and key, in the index's order: no
    list of members, no sort or grouping of all the group's rows."""
    statements: list[str] = []
    conn = queries.store.conn
    queries.timeline("c7", TimelineQuery(limit=50))  # warm: the trace sees only the page's reads
    conn.set_trace_callback(statements.append)
    try:
        page = queries.timeline("c7", TimelineQuery(limit=50))
    finally:
        conn.set_trace_callback(None)
    assert page["entity"]["id"] == ROOT and page["entity"]["event_count"] == CHAIN + 1
    assert len(page["entity"]["aliases"]) == CHAIN
    reading = [s for s in statements if "tl_group_entries" in s and s.lstrip().upper().startswith("SELECT")]
    assert len(reading) == 1, statements
    plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + reading[0]))
    assert "SEARCH en USING PRIMARY KEY (set_id=?" in plan, plan
    assert "TEMP B-TREE" not in plan and "json_each" not in plan, plan
    assert not any("json_each" in s and "ent_stats" in s for s in statements), "members checked against the directory"


def test_group_reads_answer_what_the_members_one_by_one_answer(queries: Queries, chained: Path) -> None:
    fan_out = Queries(str(chained))
    fan_out._set = lambda *args, **kwargs: None  # type: ignore[method-assign]  # the members, one by one
    fan_out._held = lambda *args, **kwargs: None  # type: ignore[method-assign]
    fan_out._related_ready = lambda *args, **kwargs: False  # type: ignore[method-assign]
    try:
        for query in (
            TimelineQuery(limit=50), TimelineQuery(limit=20, order="desc"), TimelineQuery(limit=10, role="mentioned"),
            TimelineQuery(limit=30, since="2024-03", until="2024-05"),
        ):
            assert queries.timeline("c3", query, total=True) == fan_out.timeline("c3", query, total=True)
        assert queries.entity("c11") == fan_out.entity("c11")
        assert queries.related("c11") == fan_out.related("c11")
        assert queries.related("o1") == fan_out.related("o1")  # an id in no group: the group's row against it
        assert queries.related("o1", limit=1)["entities"][0] == {
            "id": ROOT, "name": "Chained", "type": "person", "count": len(range(1, CHAIN + 1, 5)),
            "last_at": max(_day(i) for i in range(1, CHAIN + 1, 5)),
        }
        assert {e["id"]: e["count"] for e in queries.related("c11")["entities"]} == {
            f"o{k}": len(range(k, CHAIN + 1, 5)) for k in range(5)
        }
        assert queries.directory(limit=10) == fan_out.directory(limit=10)
    finally:
        fan_out.close()


def _both(db: Path, entity_id: str, **params: Any) -> tuple[Any, Any]:
    fast, fan_out = Queries(str(db)), Queries(str(db))
    fan_out._set = lambda *args, **kwargs: None  # type: ignore[method-assign]
    fan_out._held = lambda *args, **kwargs: None  # type: ignore[method-assign]
    fan_out._related_ready = lambda *args, **kwargs: False  # type: ignore[method-assign]
    try:
        query = TimelineQuery(**params)
        return (
            (fast.entity(entity_id), fast.timeline(entity_id, query), fast.directory(limit=50)),
            (fan_out.entity(entity_id), fan_out.timeline(entity_id, query), fan_out.directory(limit=50)),
        )
    finally:
        fast.close()
        fan_out.close()


def test_groups_follow_redeclarations_corrections_retractions_and_erased_aliases(tmp_path: Path) -> None:
    """A re-declaration moves a subtree to another group; corrections and retractions change the
    groups' counts and names; an erased declaration splits a group again: the reads from the
    groups' rows answer as the members asked one by one do, and the rows are those of a rebuild."""
    from helpers import dump_tables
    import shutil
    from projections.engine import projections_dir

    db = tmp_path / "timeline.db"
    with EventStore(db) as store:
        append(store, *[news(f"e-{i}", _day(i), [ent(f"m{i % 6}", name=f"M{i % 6}"), ent("x", "mentioned")]) for i in range(30)])
        append(store, alias("a1", "m1", "m0"), alias("a2", "m2", "m1"), alias("a3", "m3", "m4"), alias("a4", "m5", "m3"))
    project(db)
    fast, slow = _both(db, "m2")
    assert fast == slow and fast[0]["id"] == "m0" and fast[0]["event_count"] == 15
    with EventStore(db) as store:
        results = append(
            store,
            alias("a5", "m1", "m4", name="Moved"),  # m1 and m2 leave m0 for m4's group
            retraction("r1", "e-4"),
            correction("c1", "e-10", entities=[ent("m2", name="Renamed"), ent("x", "mentioned")]),
        )
        assert all(r.status == "stored" for r in results), results
    project(db)
    fast, slow = _both(db, "m2", include_retracted=True)
    assert fast == slow and fast[0]["id"] == "m4" and fast[0]["name"] == "Moved"
    assert _both(db, "m0")[0] == _both(db, "m0")[1]
    with EventStore(db) as store:
        gone: list[Any] = []
        erase(store, "a3", "test", "test", before=lambda s: gone.append(capture(s, "a3")))
        with ProjectionEngine(store, default_projections()) as engine:
            engine.remove(gone[0])
    fast, slow = _both(db, "m5")
    assert fast == slow and fast[0]["id"] == "m3"
    fast, slow = _both(db, "m2")
    assert fast == slow and fast[0]["id"] == "m4" and fast[0]["aliases"] == ["m1", "m2"]
    # (tl_removals is carried over by a rebuild, not derived: files made afresh have none; the
    # erased declaration's rows there tell live streams of the entries that left them)
    incremental = {k: v for k, v in dump_tables(db).items() if k != "tl_removals"}
    shutil.rmtree(projections_dir(db))
    project(db)
    assert {k: v for k, v in dump_tables(db).items() if k != "tl_removals"} == incremental


def test_related_of_a_canonical_id_no_event_names_lists_its_aliases_partners(tmp_path: Path) -> None:
    """``x`` is named by no event; its one alias ``twitter`` shares an event with ``tesla``: the
    related entities of ``x`` (and of ``twitter``) list ``tesla`` (they listed none)."""
    db = tmp_path / "timeline.db"
    with EventStore(db) as store:
        append(store, news("e-1", "2024", [ent("twitter"), ent("tesla", "mentioned")]), alias("a-1", "twitter", "x"))
    project(db)
    queries = Queries(str(db))
    try:
        for asked in ("x", "twitter"):
            assert [(e["id"], e["count"]) for e in queries.related(asked)["entities"]] == [("tesla", 1)], asked
        assert [(e["id"], e["count"]) for e in queries.related("tesla")["entities"]] == [("x", 1)]
    finally:
        queries.close()


def _related(queries: Queries, entity_id: str) -> list[tuple[str, int, str | None]]:
    """Every related entity of an entity, page after page (two a page), as (id, count, last_at)."""
    out: list[tuple[str, int, str | None]] = []
    cursor = None
    while True:
        page = queries.related(entity_id, limit=2, cursor=cursor)
        out += [(e["id"], e["count"], e["last_at"]) for e in page["entities"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def _related_both(db: Path, entity_id: str) -> tuple[Any, Any, bool]:
    """The related entities from the pairs kept per set, and from the members asked one by one;
    and whether the first read used the pairs kept per set."""
    fast, fan_out = Queries(str(db)), Queries(str(db))
    fan_out._set = lambda *args, **kwargs: None  # type: ignore[method-assign]
    fan_out._held = lambda *args, **kwargs: None  # type: ignore[method-assign]
    fan_out._related_ready = lambda *args, **kwargs: False  # type: ignore[method-assign]
    try:
        got = _related(fast, entity_id)
        with fast.snapshot() as conn:
            aliases = fast._refresh()
            upto = aliases.seen
            used = fast._related_set(conn, aliases.resolve(entity_id, upto), upto) is not None
        return got, _related(fan_out, entity_id), used
    finally:
        fast.close()
        fan_out.close()


def test_related_pairs_per_set_count_each_shared_event_once(tmp_path: Path) -> None:
    """Pairs kept per set (projections/related.py): an event naming two members of a group counts
    once for it, an event shared by members of groups A and B once for (A, B), also after A and B
    merge; they follow retractions, corrections, erasures of events and of declarations and
    re-declarations, page by page, as the members asked one by one do, and are a rebuild's rows."""
    from helpers import dump_tables
    import shutil
    from projections.engine import projections_dir

    db = tmp_path / "timeline.db"
    with EventStore(db) as store:
        append(
            store,
            news("e1", "2024-01-01", ["a1", "a2", "b1"]),
            news("e2", "2024-02-01", ["a1", ent("b1", "mentioned"), ent("b2", "mentioned")]),
            news("e3", "2024-03-01", ["a", ent("x", "mentioned")]),
            news("e4", "2024-04-01", ["a2", ent("x", "mentioned"), ent("b", "mentioned")]),
            news("e5", "2024-05-01", ["b2", ent("x", "mentioned")]),
        )
    project(db)
    for declared in (alias("d1", "a1", "a"), alias("d2", "a2", "a"), alias("d3", "b1", "b"), alias("d4", "b2", "b")):
        with EventStore(db) as store:
            append(store, declared)
        project(db)  # each declaration merges sets as a live batch does
    got, fan_out, used = _related_both(db, "a2")
    assert used and got == fan_out
    assert [(i, c) for i, c, _ in got] == [("b", 3), ("x", 2)]  # e1, e2, e4 with b; e3, e4 with x
    assert [(i, c) for i, c, _ in _related_both(db, "b")[0]] == [("a", 3), ("x", 2)]
    with EventStore(db) as store:
        append(store, alias("d5", "b", "a"))  # the two groups merge: an event is theirs once
    project(db)
    got, fan_out, used = _related_both(db, "b1")
    assert used and got == fan_out == [("x", 3, "2024-05-01")]  # e3, e4 (named a2 and b), e5
    with EventStore(db) as store:
        append(
            store,
            retraction("r1", "e5"),  # the pair's latest shared event goes
            correction("c1", "e2", entities=[ent("a1"), ent("y", "mentioned")]),
            news("e6", "2024-06-01", ["y", ent("b2", "mentioned"), ent("a", "mentioned")]),
        )
    project(db)
    got, fan_out, used = _related_both(db, "a")
    assert used and got == fan_out == [("y", 2, "2024-06-01"), ("x", 2, "2024-04-01")]
    with EventStore(db) as store:
        append(store, alias("d6", "b", "y"))  # re-declared: b's subtree leaves a for y
    project(db)
    for asked in ("a", "b1", "y", "x"):
        got, fan_out, used = _related_both(db, asked)
        assert got == fan_out, asked
    assert _related_both(db, "a")[2]
    with EventStore(db) as store:
        gone: list[Any] = []
        erase(store, "e4", "test", "test", before=lambda s: gone.append(capture(s, "e4")))
        erase(store, "d2", "test", "test", before=lambda s: gone.append(capture(s, "d2")))  # a2 leaves a
        with ProjectionEngine(store, default_projections()) as engine:
            for erased in gone:
                engine.remove(erased)
    for asked in ("a", "a2", "b1", "y", "x"):
        got, fan_out, _ = _related_both(db, asked)
        assert got == fan_out, asked
    # a is {a, a1}: e1 (a2, b1 of y), e2 as corrected (y), e6 (y); e3 (x)
    assert [(i, c) for i, c, _ in _related_both(db, "a")[0]] == [("y", 3), ("x", 1), ("a2", 1)]
    # (tl_removals is carried over by a rebuild, not derived: files made afresh have none)
    incremental = {k: v for k, v in dump_tables(db).items() if k != "tl_removals"}
    shutil.rmtree(projections_dir(db))
    project(db)
    assert {k: v for k, v in dump_tables(db).items() if k != "tl_removals"} == incremental


def test_related_of_a_group_waits_for_the_declarations_the_projection_has_not_applied(tmp_path: Path) -> None:
    """``q → p`` is stored but not projected yet: the group's pairs name ``p`` and ``q`` apart,
    so its related entities come from the members asked one by one, ``p`` and ``q`` as one
    entity; once projected, from the set's pairs, the same."""
    db = tmp_path / "timeline.db"
    with EventStore(db) as store:
        append(
            store,
            news("e1", "2024-01-01", ["a1", ent("p", "mentioned")]),
            news("e2", "2024-02-01", ["a", ent("q", "mentioned")]),
            news("e3", "2024-03-01", ["a1", ent("p", "mentioned"), ent("q", "mentioned")]),
            alias("d1", "a1", "a"),
        )
    project(db)
    got, fan_out, used = _related_both(db, "a")
    assert used and got == fan_out and [(i, c) for i, c, _ in got] == [("p", 2), ("q", 2)]
    with EventStore(db) as store:
        append(store, alias("d2", "q", "p"))  # stored; the projections have not applied it
    got, fan_out, used = _related_both(db, "a")
    assert got == fan_out == [("p", 3, "2024-03-01")]  # the set's pairs would say p 2, q 2
    assert not used
    project(db)
    got, fan_out, used = _related_both(db, "a")
    assert used and got == fan_out == [("p", 3, "2024-03-01")]


def test_related_latest_of_one_instant_is_the_later_stored_however_read(backend: str) -> None:
    """Two events shared at one instant written two ways (``16:30+02:00`` stored first, ``14:30Z``
    after: the later text sorts first): the latest shared event is the one stored later, as the
    pairs kept per set (and per id) say, also when the members are asked one by one (a declaration
    stored that the projections have not applied yet). The members were asked for the greatest
    date text, so a group's related entities showed the other date while the projection was behind."""
    from events.backend import open_store
    from projections import open_engine, open_queries

    with open_store(backend) as store:
        append(
            store,
            news("e1", "2025-05-24T16:30:00+02:00", ["twitter", ent("elon-musk", "mentioned")]),
            news("e2", "2025-05-24T14:30Z", ["x", ent("elon-musk", "mentioned")]),
            alias("d1", "twitter", "x", name="X Corp"),
        )
        with open_engine(store) as engine:
            engine.rebuild(engine.setup())  # (new projections of a store with events are rebuilt)
            engine.catch_up()
        queries = open_queries(backend)
        try:
            kept = {asked: _related(queries, asked) for asked in ("twitter", "x", "elon-musk")}
            with queries.snapshot() as conn:
                aliases = queries._refresh()
                assert queries._related_set(conn, "x", aliases.seen) is not None  # the set's pairs
            assert kept["twitter"] == kept["x"] == [("elon-musk", 2, "2025-05-24T14:30Z")]
            assert kept["elon-musk"] == [("x", 2, "2025-05-24T14:30Z")]
            append(store, alias("d2", "tesla", "spacex"))  # stored, not projected
            with queries.snapshot() as conn:
                aliases = queries._refresh()
                assert queries._related_set(conn, "x", aliases.seen) is None  # the members one by one
            assert {asked: _related(queries, asked) for asked in kept} == kept
        finally:
            queries.close()


def test_related_of_an_id_in_no_group_reads_the_groups_rows_against_it(queries: Queries, chained: Path) -> None:
    """``o1`` (no aliases) shares 400 events with the chain's members: its related entities take
    the group's row against it, not a pass over its events joined with every id they name."""
    fan_out = Queries(str(chained))
    fan_out._set = lambda *args, **kwargs: None  # type: ignore[method-assign]
    fan_out._held = lambda *args, **kwargs: None  # type: ignore[method-assign]
    fan_out._related_ready = lambda *args, **kwargs: False  # type: ignore[method-assign]
    try:
        fast, slow = steps(queries, lambda: queries.related("o1")), steps(fan_out, lambda: fan_out.related("o1"))
        assert queries.related("o1") == fan_out.related("o1")
    finally:
        fan_out.close()
    # (what is left: reading its 400-odd pairs by member id, to leave them out)
    assert 20 * fast < slow, (fast, slow)


def _pages(queries: Any, entity_id: str, query: TimelineQuery, most: int = 100) -> list[dict[str, Any]]:
    """The pages of an entity's timeline (every one, or the first ``most``), through its
    cursors, each with its total."""
    out = []
    while True:
        page = queries.timeline(entity_id, query, total=True)
        out.append(page)
        if page["next_cursor"] is None or len(out) == most:
            return out
        query = dataclasses.replace(query, cursor=page["next_cursor"])


def _grouped_searches(queries: Any) -> list[bool]:
    """Records, for each search within an entity from now on, whether it read the group's set."""
    used: list[bool] = []
    search = queries._search_entity

    def spy(*args: Any, **kwargs: Any) -> Any:
        used.append(kwargs.get("grouped", False))
        return search(*args, **kwargs)

    queries._search_entity = spy
    return used


def test_a_search_within_a_long_chain_answers_what_its_members_one_by_one_answer(
    queries: Queries, chained: Path
) -> None:
    fan_out = Queries(str(chained))
    fan_out._set = lambda *args, **kwargs: None  # type: ignore[method-assign]  # the members, one by one
    fan_out._held = lambda *args, **kwargs: None  # type: ignore[method-assign]
    used = _grouped_searches(queries)
    try:
        # (the members one by one take seconds a read when every entry matches: two pages of those)
        for query in (
            TimelineQuery(q="headline", limit=50), TimelineQuery(q="headline", order="desc", limit=30),
            TimelineQuery(q="headline", order="relevance", limit=70),
            TimelineQuery(q="g NOT 1*", role="subject", since="2024-03", until="2024-09", limit=100, order="desc"),
        ):
            got = _pages(queries, "c5", query, most=2)
            assert got == _pages(fan_out, "c5", query, most=2), query
            assert len(got) == 2 and got[0]["total"] > 200, query
        for query in (
            TimelineQuery(q="17 OR 1999 OR 170*", limit=3), TimelineQuery(q="17 OR 1999 OR 170*", order="relevance", limit=2),
            TimelineQuery(q="1999 OR 17", role="subject", limit=1),
        ):
            got = _pages(queries, ROOT, query)
            assert got == _pages(fan_out, ROOT, query), query
            assert sum(len(p["entries"]) for p in got) == got[0]["total"] > 0, query
        assert used and all(used)
    finally:
        fan_out.close()


# A group whose members share events (in two roles), ranked searches with ties, corrections and
# retractions, declarations over time: on each backend.
WORDS = ("flood", "river", "rescue", "storm", "bridge")


def _story(i: int) -> dict[str, Any]:
    mentioned = [ent(f"m{i * 3 % 10}", "mentioned")] if i * 3 % 10 != i % 10 else []
    return news(
        f"e-{i}", f"2024-0{1 + i % 3}-0{1 + i % 5}", [ent(f"m{i % 10}", name="Member"), *mentioned, ent("x", "mentioned")],
        headline=f"{WORDS[i % 5]} {WORDS[i * 7 % 5]} report {i}",
        summary=" ".join([WORDS[i * 3 % 5]] * (1 + i % 4)) + f" near the {WORDS[(i + 2) % 5]}",
    )


def test_a_search_within_a_group_answers_what_its_members_one_by_one_answer_on_each_backend(backend: str) -> None:
    """Searches (several queries, in time order either way and by relevance, by role, dated,
    retracted ones, every page through its cursors, with totals) of an entity with aliases read
    from the group's set answer as its members asked one by one do; ``as_of`` an instant before
    the group's latest declaration reads the set that held it then (the sets' history), one
    after it the set at that position."""
    from events.backend import open_store
    from projections import open_engine, open_queries

    instants = []
    with open_store(backend) as store:
        engine = open_engine(store)
        try:
            engine.setup()
            for batch in (
                [*map(_story, range(40)), *(alias(f"a{k}", f"m{k}", f"m{k - 1}") for k in range(1, 6))],
                [
                    *map(_story, range(40, 60)), *(alias(f"a{k}", f"m{k}", f"m{k - 1}") for k in range(6, 10)),
                    correction("c1", "e-3", headline="flood bridge rescue corrected", entities=[ent("m4"), ent("m8", "mentioned")]),
                    correction("c2", "e-11", entities=[ent("x")]),  # leaves the group
                    retraction("r1", "e-20"),
                ],
                [*map(_story, range(60, 75)), retraction("r2", "e-41")],
            ):
                results = append(store, *batch)
                assert all(r.status == "stored" for r in results), results
                engine.catch_up()
                instants.append(store.get(batch[-1]["id"]).recorded_at)
        finally:
            engine.close()
    fast, fan_out = open_queries(backend), open_queries(backend)
    fan_out._set = lambda *args, **kwargs: None
    fan_out._held = lambda *args, **kwargs: None  # type: ignore[method-assign]
    used = _grouped_searches(fast)
    try:
        searches = [
            TimelineQuery(q=q, order=order, limit=4)
            for q in ("flood", "river OR rescue", "storm NOT bridge", '"storm river"', "resc*", "report")
            for order in ("asc", "desc", "relevance")
        ]
        searches += [
            TimelineQuery(q="flood OR storm", role="mentioned", limit=3),
            TimelineQuery(q="flood OR storm", role="subject", order="relevance", limit=3),
            TimelineQuery(q="report", include_retracted=True, order="desc", limit=7),
            TimelineQuery(q="river", since="2024-02", until="2024-03-03", order="relevance", limit=2),
            TimelineQuery(q="corrected OR bridge", limit=50),
        ]
        for query in searches:
            for asked in ("m0", "m7"):
                got = _pages(fast, asked, query)
                assert got == _pages(fan_out, asked, query), (asked, query)
                assert got[0]["total"] > 0 and got[0]["entity"]["id"] == "m0", (asked, query)
        assert used and all(used)
        del used[:]
        # before the latest declaration (batch 2) from the set that held the group then (m7, in
        # no group then, from its own rows)
        for when, asked, grouped in (
            (instants[0], "m0", True), (instants[0], "m7", False), (instants[1], "m0", True), (instants[1], "m7", True)
        ):
            for query in searches[::4]:
                query = dataclasses.replace(query, as_of=when)
                assert _pages(fast, asked, query) == _pages(fan_out, asked, query), (asked, when, query)
            assert used and all(u == grouped for u in used), (when, asked)
            del used[:]
    finally:
        fast.close()
        fan_out.close()


# ``as_of`` an instant before the group's latest declarations: the set that held the group then
# (the timelines projection's history of the sets), read as it stood then.
AS_OF_READS: dict[str, Callable[[Queries, str, str], Any]] = {
    "timeline head page, as of": lambda q, e, when: q.timeline(e, TimelineQuery(limit=50, as_of=when), render=True),
    "timeline page by role, newest first, as of": lambda q, e, when: q.timeline(
        e, TimelineQuery(limit=50, role="subject", order="desc", as_of=when)
    ),
    "timeline page with its total, as of": lambda q, e, when: q.timeline(
        e, TimelineQuery(limit=50, order="desc", as_of=when), total=True
    ),
    "entity card, as of": lambda q, e, when: q.entity(e, as_of=when),
}


@pytest.mark.parametrize("read", list(AS_OF_READS))
def test_an_as_of_read_before_the_latest_declaration_does_the_work_of_an_entity_without_aliases(
    queries: Queries, read: str
) -> None:
    """As of the end of the store's second-to-last batch (two declarations later: the group then
    of 1,999 ids, in the set that holds the 2,001 of now): the work of an entity without aliases
    with as many events (before: each member asked, ~100x more at this size)."""
    fn = AS_OF_READS[read]
    head = queries.store.head()
    when = queries.store.read(head - 3, 1)[0].recorded_at  # the batch before the last two declarations
    assert queries.entity("c0", as_of=when)["id"] == f"c{CHAIN - 2}"
    solo = steps(queries, lambda: fn(queries, "solo", when))
    group = steps(queries, lambda: fn(queries, "c0", when))
    assert group <= 3 * solo + 20, (read, group, solo)


def _deep(store: EventStore, ids: int) -> str:
    """The instant at which the chain's group held ``ids`` ids (``DEEP``: a batch ends there)."""
    return store.read(2 * (CHAIN + 1) + ids - 2, 1)[0].recorded_at


def rows_steps(queries: Queries, read: Callable[[], Any]) -> int:
    """``steps`` of a timeline read without its ``entity`` card (its rows, rendered): what a page
    reads, apart from the card, which the card's own read measures."""
    queries._entity = lambda conn, canonical, *args, **kwargs: {"id": canonical}  # type: ignore[method-assign]
    try:
        return steps(queries, read)
    finally:
        del queries._entity


@pytest.mark.parametrize("read", list(AS_OF_READS))
@pytest.mark.parametrize("point", list(DEEP))
def test_an_as_of_read_anywhere_in_the_chain_does_the_work_of_an_entity_without_aliases(
    queries: Queries, point: str, read: str
) -> None:
    """As of the chain's midpoint (the group then of 1,000 ids, 2,001 now) and a quarter (500
    ids): the set that held the group then is read from its run of rows then, which holds at most
    twice the group's ids (``groups.REFILE_GROWTH``), not from a set that has grown 2-4 times
    since (before: the members asked one by one, as soon as the set had more than doubled).
    The answers are the members' one by one. A page's rows cost what an entity without aliases'
    cost; its card (``entity``, and the card's own read) counts the group's rows then in its run,
    one range (bounded by the group then, not by the set now), as a ``total`` counts its rows: a
    quarter of the members one by one, or less, at this size."""
    fn = AS_OF_READS[read]
    ids = DEEP[point]
    when = _deep(queries.store, ids)
    card = queries.entity("c0", as_of=when)
    assert card["id"] == f"c{ids - 1}" and len(card["aliases"]) == ids - 1
    fan_out = Queries(str(queries.path))
    fan_out._set = lambda *args, **kwargs: None  # type: ignore[method-assign]
    fan_out._held = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        assert fn(queries, "c0", when) == fn(fan_out, "c0", when), read
        group = steps(queries, lambda: fn(queries, "c0", when))
        asked = steps(fan_out, lambda: fn(fan_out, "c0", when))
        assert group * 4 <= asked, (read, group, asked)
        if not read.startswith("entity card"):
            solo = rows_steps(queries, lambda: fn(queries, "solo", when))
            rows = rows_steps(queries, lambda: fn(queries, "c0", when))
            assert rows <= 3 * solo + 20, (read, rows, solo)
    finally:
        fan_out.close()


def pg_statements(read: Callable[[], Any]) -> tuple[int, int]:
    """``(statements, values)`` a read sends PostgreSQL, once warm: how many statements, and how
    many values their parameters hold (a list counted by its length)."""
    from events.pg.connect import Qmark

    read()
    ran: list[Any] = []
    execute = Qmark.execute

    def spy(self: Any, sql: str, params: Any = None) -> Any:
        ran.append(params or ())
        return execute(self, sql, params)

    Qmark.execute = spy  # type: ignore[method-assign]
    try:
        read()
    finally:
        Qmark.execute = execute  # type: ignore[method-assign]
    return len(ran), sum(len(v) if isinstance(v, (list, tuple)) else 1 for params in ran for v in params)


PG_CHAIN = 400


def test_an_as_of_read_before_the_latest_declaration_on_postgresql(pg_db: str) -> None:
    """On PostgreSQL, as of an instant two declarations before the head (the group then of
    PG_CHAIN - 1 ids), and as of the chain's midpoint and a quarter (the group then of half and
    a quarter of its ids, in a set that has grown 2-4 times since): the read sends as many
    statements, with as many values, as for an entity without aliases with as many events,
    whatever the group's size (before: the members' ids in lists, or a statement a member; deep
    in the chain, as soon as the set had more than doubled since). The plans are PostgreSQL's to
    choose (on tables this small, without statistics, it scans them whole, for an entity without
    aliases too): what the test holds is that the read never names the group's members."""
    from events.backend import open_store
    from projections import open_engine, open_queries

    events: list[dict[str, Any]] = []
    for i in range(PG_CHAIN + 1):
        events.append(news(f"g-{i}", _day(i), [ent(f"c{i}", name="Chained", type="person"), ent(f"o{i % 5}", "mentioned")]))
        events.append(news(f"s-{i}", _day(i), [ent("solo", name="Solo", type="person"), ent(f"o{i % 5}", "mentioned")]))
    declarations = [alias(f"a-{i}", f"c{i}", f"c{i + 1}") for i in range(PG_CHAIN)]
    # the group then of ``ids`` ids: ids - 1 declarations applied, a batch ending there
    points = {"two declarations back": PG_CHAIN - 1, "midpoint": PG_CHAIN // 2, "quarter": PG_CHAIN // 4}
    cuts = sorted({0, *(ids - 1 for ids in points.values()), PG_CHAIN})
    with open_store(pg_db) as store:
        engine = open_engine(store)
        try:
            engine.setup()
            for batch in (events, *(declarations[a:b] for a, b in zip(cuts, cuts[1:]))):
                append(store, *batch)
                engine.catch_up()
            instants = {point: store.get(declarations[ids - 2]["id"]).recorded_at for point, ids in points.items()}
        finally:
            engine.close()
    queries, fan_out = open_queries(pg_db), open_queries(pg_db)
    fan_out._set = lambda *args, **kwargs: None
    fan_out._held = lambda *args, **kwargs: None
    try:
        for point, when in instants.items():
            assert queries.entity("c0", as_of=when)["id"] == f"c{points[point] - 1}", point
            for read, fn in AS_OF_READS.items():
                assert fn(queries, "c0", when) == fn(fan_out, "c0", when), (point, read)
                solo = pg_statements(lambda: fn(queries, "solo", when))
                group = pg_statements(lambda: fn(queries, "c0", when))
                # (before: the members' ids passed as a list, or a statement a member)
                assert group[0] <= solo[0] + 25 and group[1] <= 2 * solo[1] + 40, (point, read, group, solo)
    finally:
        queries.close()
        fan_out.close()
