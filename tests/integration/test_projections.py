"""Projections and the read side on real SQLite files (docs/contract.md §1 dates, corrections,
aliases; §4 timelines, entities, events, as_of, cursors)."""

from __future__ import annotations

import sys

from datetime import datetime, timedelta, timezone

import pytest

import events.store as store_module
from events.store import EventStore
from helpers import (
    alias,
    append,
    append_and_project,
    append_batches,
    copy_store,
    correction,
    dump_tables,
    ent,
    ids,
    news,
    project,
    retraction,
    timeline_ids,
    walk,
)
from projections import ProjectionEngine, default_projections
from projections.queries import NotFound, Queries, TimelineQuery


def tl(q, entity_id=None, **params):
    return q.timeline(entity_id, TimelineQuery(**params))


# --- order -----------------------------------------------------------------------------------

ORDER_EVENTS = [
    news("e1", "2025-05-24T10:00Z"),
    news("e2", "2025-05-24"),
    news("e3", "2025"),
    news("e4", "2025-05"),
    news("e5", "2025-05-24T00:00Z"),  # same start as e2: store position decides
    news("e6", "2025-05-24T01:00+02:00"),  # 2025-05-23T23:00Z: before the day 2025-05-24
    news("e7", "2025-05-24"),
    news("e8", "2024-12-31T23:30-01:00"),  # 2025-01-01T00:30Z: after the year's start
]
ORDER_EXPECTED = ["e3", "e8", "e4", "e6", "e2", "e5", "e7", "e1"]


@pytest.mark.parametrize("entity_id", ["x", None])
def test_order_is_interval_start_then_store_position(q, db, entity_id):
    append_and_project(db, ORDER_EVENTS)
    assert timeline_ids(q, entity_id) == ORDER_EXPECTED
    assert timeline_ids(q, entity_id, order="desc") == ORDER_EXPECTED[::-1]


def test_order_holds_across_batches(q, db):
    """Events appended in separate batches interleave by date, not by batch."""
    for event in reversed(ORDER_EVENTS):
        append_and_project(db, [event])
    # positions are reversed now, so the ties among e2, e5, e7 reverse too
    assert timeline_ids(q, "x") == ["e3", "e8", "e4", "e6", "e7", "e5", "e2", "e1"]


def test_entries_keep_the_written_forms(q, db):
    append_and_project(db, [news("w", "2025-05-24T01:00+02:00", ended_at="2025-06")])
    (entry,) = tl(q, "x")["entries"]
    assert entry["occurred_at"] == "2025-05-24T01:00+02:00"
    assert entry["ended_at"] == "2025-06"
    assert entry["role"] == "subject"
    assert entry["status"] == "active"
    assert entry["position"] == 1
    assert set(entry) >= {"event_id", "kind", "occurred_at", "ended_at", "headline", "summary", "role", "sources",
                          "details", "position", "recorded_at", "status"}


# --- since / until ---------------------------------------------------------------------------

RANGE_EVENTS = [
    news("month", "2025-05"),
    news("in-instant", "2025-05-20T12:00Z"),
    news("out-after", "2025-05-22T00:00Z"),
    news("out-before", "2025-05-19T23:59:59Z"),
    news("span-in", "2025-04-01", ended_at="2025-05-20"),
    news("span-out", "2025-01", ended_at="2025-04"),
    news("year", "2025"),
    news("day-in", "2025-05-21"),
    news("day-out", "2025-05-22"),
    news("offset-in", "2025-05-22T01:00+02:00"),  # 2025-05-21T23:00Z
    news("old", "2024"),
]


def test_since_until_select_overlapping_spans(q, db):
    append_and_project(db, RANGE_EVENTS)
    got = timeline_ids(q, "x", since="2025-05-20", until="2025-05-21")
    assert got == ["year", "span-in", "month", "in-instant", "day-in", "offset-in"]


def test_since_alone_and_until_alone(q, db):
    append_and_project(db, RANGE_EVENTS)
    assert timeline_ids(q, "x", since="2025-05-22") == ["year", "month", "out-after", "day-out"]
    assert timeline_ids(q, "x", until="2025-04") == ["old", "span-out", "year", "span-in"]  # tie on 2025-01-01: position
    # instants as bounds: since is the start of the instant, until its end
    assert timeline_ids(q, None, since="2025-05-22T00:00Z", until="2025-05-22T00:00Z") == [
        "year", "month", "out-after", "day-out"]


def test_a_month_entry_is_selected_by_days_inside_it(q, db):
    append_and_project(db, [news("month", "2025-05"), news("instant-out", "2025-06-01T00:00Z")])
    assert timeline_ids(q, "x", since="2025-05-20", until="2025-05-21") == ["month"]
    assert timeline_ids(q, None, since="2025-05-31T23:59:59Z", until="2025-05-31T23:59:59Z") == ["month"]
    assert timeline_ids(q, None, since="2025-06", until="2025-06") == ["instant-out"]


# --- kinds and roles -------------------------------------------------------------------------


def _mixed(db):
    append_and_project(
        db,
        [
            news("o1", "2025-05-01", (ent("x", "subject"), ent("musk", "mentioned")), kind="outage"),
            news("s1", "2025-05-02", (ent("musk", "subject"), ent("x", "mentioned")), kind="statement"),
            news("p1", "2025-05-03", (ent("musk", "actor"), ent("x", "target")), kind="political_move"),
            news("r1", "2025-05-04", (ent("x", "subject"),), kind="report"),
            news("o2", "2025-05-05", (ent("y", "subject"),), kind="outage"),
        ],
    )


def test_kinds_filter(q, db):
    _mixed(db)
    assert timeline_ids(q, None, kinds=("outage",)) == ["o1", "o2"]
    assert timeline_ids(q, None, kinds=("outage", "statement")) == ["o1", "s1", "o2"]
    assert timeline_ids(q, "x", kinds=("outage", "report")) == ["o1", "r1"]
    assert timeline_ids(q, "x", kinds=("political_move",)) == ["p1"]


def test_role_filter_and_role_in_entries(q, db):
    _mixed(db)
    assert timeline_ids(q, "x", role="subject") == ["o1", "r1"]
    assert timeline_ids(q, "x", role="mentioned") == ["s1"]
    assert timeline_ids(q, "x", role="target") == ["p1"]
    assert timeline_ids(q, "musk", role="actor") == ["p1"]
    roles = {e["event_id"]: e["role"] for e in tl(q, "x")["entries"]}
    assert roles == {"o1": "subject", "s1": "mentioned", "p1": "target", "r1": "subject"}
    assert timeline_ids(q, "x", role="subject", kinds=("report",)) == ["r1"]


# --- pagination ------------------------------------------------------------------------------

PAGE_DATES = ["2025", "2025-05", "2025-05-24", "2025-05-24T10:00Z", "2024-12", "2025-05-24", "2025-05-23T22:00-02:00"]


def _many(n: int, prefix: str = "p", entities=("x",)):
    return [news(f"{prefix}{i:02d}", PAGE_DATES[i % len(PAGE_DATES)], entities) for i in range(n)]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("entity_id", ["x", None])
@pytest.mark.parametrize("n,limit", [(23, 5), (20, 5), (7, 1), (3, 50)])
def test_pages_walk_every_entry_once_in_order(q, db, order, entity_id, n, limit):
    append_and_project(db, _many(n))
    everything = timeline_ids(q, entity_id, order=order, limit=500)
    assert len(everything) == n
    pages = walk(q, entity_id, order=order, limit=limit)
    flat = [i for page in pages for i in page]
    assert flat == everything
    assert all(len(p) == limit for p in pages[:-1])
    assert pages[-1], "a trailing empty page: next_cursor should have been null"


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("entity_id", ["x", None])
def test_a_cursor_is_stable_while_events_arrive(q, db, order, entity_id):
    append_and_project(db, _many(20))
    before = timeline_ids(q, entity_id, order=order, limit=500)
    first = tl(q, entity_id, order=order, limit=6)
    seen = ids(first)
    cursor = first["next_cursor"]
    arrivals = 0
    while cursor is not None:
        # new events: some before the cursor's entry, some after, some tied on the date
        arrivals += 1
        append_and_project(db, [news(f"new{arrivals}-a", "2020"), news(f"new{arrivals}-b", "2025-05-24"),
                                news(f"new{arrivals}-c", "2030"), news(f"new{arrivals}-d", "2025-05")])
        page = tl(q, entity_id, order=order, limit=6, cursor=cursor)
        seen += ids(page)
        cursor = page["next_cursor"]
    assert arrivals >= 3
    assert seen == before
    # a fresh read sees the new events
    assert len(timeline_ids(q, entity_id, limit=500)) == 20 + 4 * arrivals


def test_a_cursor_for_one_order_is_refused_for_the_other(q, db):
    append_and_project(db, _many(5))
    cursor = tl(q, "x", limit=2)["next_cursor"]
    with pytest.raises(ValueError, match="cursor"):
        tl(q, "x", limit=2, cursor=cursor, order="desc")


# --- the entity directory --------------------------------------------------------------------


def test_directory_counts_and_dates_keep_written_forms(q, db):
    append_and_project(
        db,
        [
            news("a", "2025-05", ("x", "y")),
            news("b", "2024", ("x",)),
            news("c", "2025-05-24T14:30Z", ("x",)),
            news("d", "2025-05-24", (ent("societe-generale", name="Société Générale"),)),
        ],
    )
    x = q.entity("x")
    assert (x["id"], x["event_count"], x["first_at"], x["last_at"]) == ("x", 3, "2024", "2025-05-24T14:30Z")
    assert x["aliases"] == []
    assert set(x) >= {"id", "name", "type", "aliases", "event_count", "first_at", "last_at"}
    y = q.entity("y")
    assert (y["event_count"], y["first_at"], y["last_at"]) == (1, "2025-05", "2025-05")
    listed = q.entities()
    assert [e["id"] for e in listed] == ["x", "societe-generale", "y"]
    assert [e["id"] for e in q.entities(q="GÉNÉ")] == ["societe-generale"]
    assert [e["id"] for e in q.entities(q="societe")] == ["societe-generale"]
    with pytest.raises(NotFound):
        q.entity("nobody")


def test_directory_follows_later_batches(q, db):
    append_and_project(db, [news("a", "2025-05", ("x",))])
    append_and_project(db, [news("b", "2023", ("x",)), news("c", "2026-01-02", ("x",))])
    x = q.entity("x")
    assert (x["event_count"], x["first_at"], x["last_at"]) == (3, "2023", "2026-01-02")


# --- corrections -----------------------------------------------------------------------------


def test_a_correction_of_entities_moves_the_event(q, db):
    append_and_project(db, [news("n1", "2025-05-10", ("a",)), news("n2", "2025-05-01", ("a",)),
                            news("n3", "2025-06-01", ("b",))])
    assert q.entity("a")["event_count"] == 2 and q.entity("b")["event_count"] == 1
    append_and_project(db, [correction("c1", "n1", entities=[ent("b", "actor")])])
    assert timeline_ids(q, "a") == ["n2"]
    assert timeline_ids(q, "b") == ["n1", "n3"]
    assert tl(q, "b")["entries"][0]["role"] == "actor"
    a, b = q.entity("a"), q.entity("b")
    assert (a["event_count"], a["first_at"], a["last_at"]) == (1, "2025-05-01", "2025-05-01")
    assert (b["event_count"], b["first_at"], b["last_at"]) == (2, "2025-05-10", "2025-06-01")
    assert tl(q, "b")["entries"][0]["status"] == "corrected"


def test_a_correction_that_empties_an_entity(q, db):
    append_and_project(db, [news("n1", "2025-05-10", ("a",))])
    append_and_project(db, [correction("c1", "n1", entities=[ent("b")])])
    assert timeline_ids(q, "b") == ["n1"]
    assert q.entity("b")["event_count"] == 1
    # "a" is known but holds nothing now
    try:
        a = q.entity("a")
    except NotFound:
        return
    assert a["event_count"] == 0
    assert timeline_ids(q, "a") == []


def test_a_correction_of_occurred_at_moves_the_event_in_order(q, db):
    append_and_project(db, [news("n1", "2025-05-01"), news("n2", "2025-05-10"), news("n3", "2025-05-20")])
    append_and_project(db, [correction("c1", "n1", occurred_at="2025-05-15")])
    assert timeline_ids(q, "x") == ["n2", "n1", "n3"]
    assert timeline_ids(q, None, order="desc") == ["n3", "n1", "n2"]
    (entry,) = [e for e in tl(q, "x")["entries"] if e["event_id"] == "n1"]
    assert entry["occurred_at"] == "2025-05-15"
    assert entry["position"] == 1  # the event keeps its own position
    x = q.entity("x")
    assert (x["first_at"], x["last_at"]) == ("2025-05-10", "2025-05-20")
    # the range filter follows the corrected date
    assert timeline_ids(q, "x", since="2025-05-01", until="2025-05-01") == []
    assert timeline_ids(q, "x", since="2025-05-15", until="2025-05-15") == ["n1"]


@pytest.mark.parametrize("batched", [False, True])
def test_several_corrections_apply_in_store_order(q, db, batched):
    events = [
        news("n1", "2025-05-01", summary="first summary"),
        correction("c1", "n1", headline="headline A"),
        correction("c2", "n1", headline="headline B", summary="second summary"),
        correction("c3", "n1", summary=None),  # null removes the optional field
        correction("c4", "n1", occurred_at="2025-05-02"),
    ]
    if batched:
        append_and_project(db, events)
    else:
        for e in events:
            append_and_project(db, [e])
    (entry,) = tl(q, "x")["entries"]
    assert entry["headline"] == "headline B"
    assert entry["summary"] is None
    assert entry["occurred_at"] == "2025-05-02"
    assert entry["status"] == "corrected"
    event = q.event("n1")
    assert event["headline"] == "headline B"
    assert "summary" not in event or event["summary"] is None
    assert event["status"] == "corrected"
    assert [h["event_id"] for h in event["history"]] == ["c1", "c2", "c3", "c4"]
    assert [h["position"] for h in event["history"]] == [2, 3, 4, 5]


@pytest.mark.parametrize("same_batch", [False, True])
def test_a_correction_stored_before_its_target_applies_when_it_arrives(q, db, same_batch):
    early = [correction("c1", "n1", headline="corrected early", entities=[ent("y")]),
             correction("c2", "n1", occurred_at="2024")]
    target = [news("n1", "2025-05-01", ("x",)), news("n2", "2025-05-02", ("y",))]
    if same_batch:
        append_and_project(db, early + target)
    else:
        append_and_project(db, early)
        assert timeline_ids(q, None) == []
        append_and_project(db, target)
    assert timeline_ids(q, "y") == ["n1", "n2"]
    (entry,) = [e for e in tl(q, "y")["entries"] if e["event_id"] == "n1"]
    assert (entry["headline"], entry["occurred_at"], entry["status"]) == ("corrected early", "2024", "corrected")
    with pytest.raises(NotFound):
        q.entity("x")  # n1 was never filed under x as it now stands
    assert q.entity("y")["event_count"] == 2
    assert q.entity("y")["first_at"] == "2024"
    event = q.event("n1")
    assert [h["event_id"] for h in event["history"]] == ["c1", "c2"]
    assert event["position"] == 3


# --- retractions -----------------------------------------------------------------------------


def test_a_retraction_removes_the_event_from_timelines(q, db):
    append_and_project(db, [news("n1", "2025-05-01", ("x", "y")), news("n2", "2025-05-02", ("x",))])
    append_and_project(db, [correction("c1", "n1", headline="fixed")])
    append_and_project(db, [retraction("r1", "n1", reason="fabricated")])
    assert timeline_ids(q, "x") == ["n2"]
    assert timeline_ids(q, None) == ["n2"]
    with_retracted = tl(q, "x", include_retracted=True)["entries"]
    assert [(e["event_id"], e["status"]) for e in with_retracted] == [("n1", "retracted"), ("n2", "active")]
    assert with_retracted[0]["headline"] == "fixed"
    assert [e["event_id"] for e in tl(q, None, include_retracted=True)["entries"]] == ["n1", "n2"]
    event = q.event("n1")
    assert event["status"] == "retracted"
    assert [(h["event_id"], h["kind"]) for h in event["history"]] == [("c1", "correction"), ("r1", "retraction")]
    assert event["history"][1]["reason"] == "fabricated"
    x = q.entity("x")
    assert (x["event_count"], x["first_at"], x["last_at"]) == (1, "2025-05-02", "2025-05-02")


def test_a_retraction_stored_before_its_target(q, db):
    append_and_project(db, [retraction("r1", "n1")])
    append_and_project(db, [news("n1", "2025-05-01"), news("n2", "2025-05-02")])
    assert timeline_ids(q, "x") == ["n2"]
    assert [(e["event_id"], e["status"]) for e in tl(q, "x", include_retracted=True)["entries"]] == [
        ("n1", "retracted"), ("n2", "active")]
    assert q.entity("x")["event_count"] == 1
    assert q.event("n1")["status"] == "retracted"


# --- aliases ---------------------------------------------------------------------------------


def _twitter(db):
    append_and_project(
        db,
        [
            news("t1", "2023-01-01", ("twitter",)),
            news("x1", "2024-01-01", ("x",)),
            news("both", "2023-06-01", (ent("twitter", "mentioned"), ent("x", "subject"))),
            news("ti1", "2010-01-01", ("twitter-inc",)),
            news("other", "2024-02-01", ("musk",)),
        ],
    )
    append_and_project(db, [alias("al1", "twitter", "x", name="X")])
    append_and_project(db, [alias("al2", "twitter-inc", "twitter")])


def test_an_alias_merges_timelines_retroactively(q, db):
    _twitter(db)
    expected = ["ti1", "t1", "both", "x1"]
    for asked in ("x", "twitter", "twitter-inc"):
        result = tl(q, asked)
        assert result["entity"]["id"] == "x", asked
        assert ids(result) == expected, asked
        assert ids(tl(q, asked, order="desc")) == expected[::-1]
        assert [i for p in walk(q, asked, limit=1) for i in p] == expected
    roles = {e["event_id"]: e["role"] for e in tl(q, "x")["entries"]}
    assert roles["both"] == "subject"  # the event appears once, with its strongest role


def test_asking_for_an_alias_answers_the_canonical_entity(q, db):
    _twitter(db)
    for asked in ("twitter", "twitter-inc", "x"):
        entity = q.entity(asked)
        assert entity["id"] == "x"
        assert entity["name"] == "X"
        assert sorted(entity["aliases"]) == ["twitter", "twitter-inc"]
        assert entity["event_count"] == 4  # "both" counts once
        assert (entity["first_at"], entity["last_at"]) == ("2010-01-01", "2024-01-01")
    listed = [e["id"] for e in q.entities()]
    assert "twitter" not in listed and "twitter-inc" not in listed
    assert listed.count("x") == 1
    assert [e["id"] for e in q.entities(q="twitter")] == ["x"]


def test_events_filed_under_an_alias_after_it_was_declared(q, db):
    _twitter(db)
    append_and_project(db, [news("t2", "2025-01-01", ("twitter-inc",))])
    assert timeline_ids(q, "x") == ["ti1", "t1", "both", "x1", "t2"]
    assert q.entity("twitter")["event_count"] == 5


def test_role_filter_on_a_merged_timeline(q, db):
    _twitter(db)
    assert timeline_ids(q, "x", role="mentioned") == ["both"]
    assert timeline_ids(q, "x", role="subject") == ["ti1", "t1", "both", "x1"]


# --- as_of -----------------------------------------------------------------------------------


def test_as_of_shows_the_store_as_it_was(q, db):
    r1, r2, r3, r4, r5 = append_batches(
        db,
        [news("n1", "2025-05-01", ("x",), headline="old headline")],
        [correction("c1", "n1", headline="new headline")],
        [news("n2", "2025-05-02", ("x",))],
        [news("t1", "2025-05-03", ("twitter",))],
        [alias("al1", "twitter", "x")],
    )
    with EventStore(db) as store:
        t1, t2, t3, t4, t5 = (store.get(r[0].event_id).recorded_at for r in (r1, r2, r3, r4, r5))
    assert t1 < t2 < t3 < t4 < t5, "batches need distinct recorded_at values"

    def heads(as_of, entity="x"):
        return [(e["event_id"], e["headline"]) for e in tl(q, entity, as_of=as_of)["entries"]]

    assert heads("2000-01-01T00:00Z") == []
    assert heads(t1) == [("n1", "old headline")]
    assert heads(t2) == [("n1", "new headline")]
    assert heads(t3) == [("n1", "new headline"), ("n2", "headline of n2")]
    assert heads(t4) == [("n1", "new headline"), ("n2", "headline of n2")]  # alias not yet
    assert heads(t5) == [("n1", "new headline"), ("n2", "headline of n2"), ("t1", "headline of t1")]
    assert heads(None) == heads(t5)
    # the status at the time, too
    assert [e["status"] for e in tl(q, "x", as_of=t1)["entries"]] == ["active"]
    # the same instant written with an offset
    t1_dt = datetime.strptime(t1, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert heads(t1_dt.astimezone(timezone(timedelta(hours=2))).isoformat()) == heads(t1)
    # the global timeline as of then
    assert timeline_ids(q, None, as_of=t1) == ["n1"]
    assert timeline_ids(q, None, as_of=t3) == ["n1", "n2"]


def test_as_of_before_an_alias_does_not_merge_when_asking_for_the_alias(q, db):
    """docs/contract.md §4: as_of is the timeline as the store knew it then — later aliases absent."""
    r1, r2 = append_batches(
        db,
        [news("x1", "2025-05-01", ("x",)), news("t1", "2025-05-03", ("twitter",))],
        [alias("al1", "twitter", "x")],
    )
    with EventStore(db) as store:
        before = store.get("x1").recorded_at
    assert timeline_ids(q, "x", as_of=before) == ["x1"]
    assert timeline_ids(q, "twitter", as_of=before) == ["t1"]
    assert timeline_ids(q, "twitter") == ["x1", "t1"]


def test_event_as_of(q, db):
    append_batches(
        db,
        [news("n1", "2025-05-01", headline="old headline")],
        [correction("c1", "n1", headline="new headline")],
        [retraction("r1", "n1")],
        [news("n2", "2025-05-02")],
    )
    with EventStore(db) as store:
        t1, t2, t3, _ = (store.get(i).recorded_at for i in ("n1", "c1", "r1", "n2"))
    e = q.event("n1", as_of=t1)
    assert (e["headline"], e["status"], e["history"]) == ("old headline", "active", [])
    e = q.event("n1", as_of=t2)
    assert (e["headline"], e["status"], [h["event_id"] for h in e["history"]]) == ("new headline", "corrected", ["c1"])
    e = q.event("n1", as_of=t3)
    assert (e["status"], [h["event_id"] for h in e["history"]]) == ("retracted", ["c1", "r1"])
    with pytest.raises(NotFound):
        q.event("n2", as_of=t3)
    with pytest.raises(NotFound):
        q.event("n1", as_of="2000-01-01T00:00:00.5Z")
    assert q.event("n2")["recorded_at"] > t3
    # an as_of between t1 and t2 written with fractional seconds
    assert q.event("n1", as_of=t1.replace("Z", "") + "0Z")["headline"] == "old headline"


def test_as_of_with_a_cursor_keeps_its_snapshot(q, db):
    append_batches(db, _many(6), [news("late", "2020")])
    with EventStore(db) as store:
        t1 = store.get("p00").recorded_at
    pages = walk(q, "x", as_of=t1, limit=2)
    assert "late" not in [i for p in pages for i in p]
    assert sum(len(p) for p in pages) == 6


# --- projections' status ---------------------------------------------------------------------


def test_projections_report_their_checkpoints(q, db):
    append_and_project(db, _many(4))
    with EventStore(db) as store:
        append(store, news("unprojected", "2025"))
    status = [s.as_json() for s in q.projections()]
    assert {s["name"] for s in status} >= {"timelines", "entities"}
    for s in status:
        assert (s["position"], s["head"], s["lag"], s["state"]) == (4, 5, 1, "live")
    project(db)
    assert all(s.lag == 0 for s in q.projections())


# --- incremental equals from scratch ---------------------------------------------------------

STORY = [
    news("n1", "2025-05-24", ("x", ent("twitter", "mentioned"))),
    correction("c-early", "n5", headline="n5 corrected before it arrived"),
    news("n2", "2025", (ent("x", "subject"), ent("musk", "mentioned"))),
    alias("al1", "twitter", "x"),
    news("n3", "2025-05", ("musk",)),
    correction("c1", "n1", entities=[ent("y", "target")]),
    news("n5", "2025-05-24T10:00Z", ("x",), kind="outage"),
    correction("c2", "n2", occurred_at="2024-12"),
    retraction("r1", "n3"),
    correction("c3", "n3", headline="corrected after retraction"),
    news("n4", "2025-05-24", ("x", "y"), ended_at="2025-06"),
    correction("c4", "n1", entities=[ent("x"), ent("musk", "actor")], occurred_at="2025-05-25"),
    alias("al2", "twitter-inc", "twitter", name="Twitter Inc"),
    news("n6", "2022", ("twitter-inc",), kind="statement"),
    retraction("r-early", "n7"),
    news("n7", "2025-05-01T08:00+02:00", ("musk", "x")),
    correction("c5", "n4", ended_at=None),
    news("n1", "2025-05-24", ("x", ent("twitter", "mentioned"))),  # duplicate: stores nothing
    correction("c6", "n5", summary="late summary", entities=[ent("x"), ent("z")]),
    news("n8", "2025-05-24", (ent("z", "mentioned"), ent("musk", "subject"), ent("y", "actor"))),
    correction("c7", "n8", entities=[ent("z")]),
    retraction("r2", "n8"),
    news("n9", "2025-05-24", ("z",), headline="same day"),
]


def _fake_clock(monkeypatch):
    base = datetime(2030, 1, 1, tzinfo=timezone.utc)
    ticks = iter(range(1_000_000))
    monkeypatch.setattr(
        store_module, "utc_now_key",
        lambda: (base + timedelta(milliseconds=next(ticks))).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )


def test_incremental_equals_from_scratch(tmp_path, monkeypatch):
    incremental, scratch = tmp_path / "incremental.db", tmp_path / "scratch.db"
    small, rebuilt = tmp_path / "small.db", tmp_path / "rebuilt.db"

    _fake_clock(monkeypatch)
    with EventStore(incremental) as store:
        engine = ProjectionEngine(store, default_projections())
        assert engine.setup() == []
        for event in STORY:
            append(store, event)
            engine.catch_up()

    _fake_clock(monkeypatch)  # the same recorded_at values, event for event
    with EventStore(scratch) as store:
        assert ProjectionEngine(store, default_projections()).setup() == []  # set up while empty
        for event in STORY:
            append(store, event)
    per_change = tmp_path / "per_change.db"
    for copy in (small, rebuilt, per_change):
        copy_store(scratch, copy)  # closing checkpointed the WAL into the main file
    with EventStore(scratch) as store:
        ProjectionEngine(store, default_projections()).catch_up()  # one batch
    with EventStore(small) as store:
        ProjectionEngine(store, default_projections(), batch_size=3).catch_up()
    with EventStore(rebuilt) as store:
        ProjectionEngine(store, default_projections(), batch_size=4, rebuild_batch_size=4).rebuild()
    with EventStore(per_change) as store:  # no set-based path: every event through apply()
        ProjectionEngine(store, default_projections(), batch_size=5, set_based=False).catch_up()

    a = dump_tables(incremental)
    assert len(a) >= 5
    assert sum(len(rows) for rows in a.values()) > 50
    for other in (scratch, small, rebuilt, per_change):
        b = dump_tables(other)
        assert set(a) == set(b)
        for table in a:
            assert a[table] == b[table], f"{table}: incremental != {other.name}"
    # and the store itself is the same
    with EventStore(incremental) as s1, EventStore(scratch) as s2:
        assert [(e.position, e.event_id, e.recorded_at) for e in s1.read(0)] == [
            (e.position, e.event_id, e.recorded_at) for e in s2.read(0)]

    # the story reads as expected, too
    queries = Queries(str(scratch))
    try:
        assert timeline_ids(queries, "x") == ["n6", "n2", "n4", "n5", "n1"]
        assert timeline_ids(queries, "twitter-inc") == ["n6", "n2", "n4", "n5", "n1"]
        assert timeline_ids(queries, "musk") == ["n2", "n1"]
        assert timeline_ids(queries, "z") == ["n9", "n5"]
        assert timeline_ids(queries, "y") == ["n4"]
        assert queries.event("n5")["headline"] == "n5 corrected before it arrived"
        assert queries.event("n7")["status"] == "retracted"
    finally:
        queries.close()


# --- rebuilds ----------------------------------------------------------------------------------


def _index_names(conn, projection, tag) -> set[str]:
    tables = [projection.table(base, tag) for base in projection.schema]
    marks = ",".join("?" * len(tables))
    return {
        row[0]
        for row in conn.execute(
            f"SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks})", tables
        )
    }


def _read_side(projection, tag) -> set[str]:
    return {
        sql.replace(" IF NOT EXISTS", "").split()[2].format(t=projection.table(base, tag))
        for base, statements in projection.indexes.items()
        for sql in statements
    }


def test_a_rebuild_fills_its_tables_without_read_side_indexes_and_builds_them_before_the_swap(db):
    append_and_project(db, [*_many(30), correction("c1", "p03", headline="fixed"), retraction("r1", "p04")])
    before = dump_tables(db)
    projections = default_projections()
    assert any(p.indexes for p in projections)
    with EventStore(db) as store:
        engine = ProjectionEngine(store, projections, rebuild_batch_size=8)
        names = engine.start_rebuild()
        tags = {name: cp.rebuild.tag for name, cp in engine.checkpoints().items()}
        steps = []
        while True:
            position, head, done = engine.rebuild_step(names)
            steps.append(
                (position, {p.name: _index_names(engine.connection(p.name), p, tags[p.name]) for p in projections if not done})
            )
            if done:
                break
        filling = [found for position, found in steps if position < head]
        assert filling and all(not (found[p.name] & _read_side(p, tags[p.name])) for found in filling for p in projections)
        # once caught up, the indexes come in a step of their own, then the swap
        assert all(_read_side(p, tags[p.name]) <= steps[-2][1][p.name] for p in projections)
        live = engine.checkpoints()
        for p in projections:
            assert live[p.name].tag == tags[p.name]
            assert _read_side(p, tags[p.name]) <= _index_names(engine.connection(p.name), p, tags[p.name])
    assert dump_tables(db) == before


def test_a_rebuild_drops_the_tables_an_older_version_had(db):
    append_and_project(db, _many(3))
    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        conn = engine.connection("timelines")
        tag = conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = 'timelines'").fetchone()[0]
        conn.execute(f"CREATE VIRTUAL TABLE tl_search{tag} USING fts5(headline, summary, content='')")
        engine.rebuild(["timelines"])
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any(name.startswith(f"tl_search{tag}") for name in names)


def test_a_search_answers_for_the_position_both_timelines_and_search_have_reached(q, db):
    append_and_project(db, [news("s1", "2025", ("x",), headline="storm floods the valley")])
    with EventStore(db) as store:
        append(store, news("s2", "2025", ("x",), headline="storm again"))
        engine = ProjectionEngine(store, [p for p in default_projections() if p.name != "search"])
        engine.catch_up()  # timelines has s2, search not yet
    assert ids(tl(q, "x")) == ["s1", "s2"]
    assert timeline_ids(q, "x", q="storm") == ["s1"]
    assert timeline_ids(q, None, q="storm") == ["s1"]
    project(db)
    assert timeline_ids(q, "x", q="storm") == ["s1", "s2"]


def test_an_event_stored_without_its_facts_stops_projection_rather_than_being_skipped(db):
    append_and_project(db, _many(2))
    with EventStore(db) as store:  # as a writer that does not know event_meta would store it
        store.conn.execute(
            "INSERT INTO events (position, event_id, kind, content_hash, recorded_at, raw, body)"
            " SELECT 3, 'stray', kind, 'h', recorded_at, raw, body FROM events WHERE position = 1"
        )
        with pytest.raises(RuntimeError, match="event_meta"):
            ProjectionEngine(store, default_projections()).catch_up()


def test_events_that_arrive_during_a_rebuild_and_between_its_finishing_steps_are_applied_exactly_once(tmp_path, monkeypatch):
    """A set-based rebuild defers rows to ``finish``; corrections, retractions and news that arrive
    while it fills its tables, and between the steps that finish one projection each, end up
    counted once: the same tables as the per-change path (which defers nothing)."""
    _fake_clock(monkeypatch)
    path = tmp_path / "live.db"
    head, rest = STORY[:9], STORY[9:]
    with EventStore(path) as store:
        ProjectionEngine(store, default_projections()).setup()
        for event in head:
            append(store, event)
        engine = ProjectionEngine(store, default_projections(), batch_size=3, rebuild_batch_size=3)
        engine.catch_up()
        names = engine.start_rebuild()
        while True:
            position, at_head, done = engine.rebuild_step(names)
            if done:
                break
            if rest:
                append(store, rest.pop(0))  # while filling, and between finishing steps
        assert not rest
    reference = tmp_path / "reference.db"
    copy_store(path, reference)
    with EventStore(reference) as store:
        ProjectionEngine(store, default_projections(), rebuild_batch_size=2, set_based=False).rebuild()
    rebuilt, expected = dump_tables(path), dump_tables(reference)
    assert set(rebuilt) == set(expected)
    for table in expected:
        assert rebuilt[table] == expected[table], table


def test_projections_rebuilt_together_share_a_tag_and_each_is_finished(db, monkeypatch):
    append_and_project(db, [*_many(12), correction("c1", "p03", headline="fixed"), retraction("r1", "p04")])
    before = dump_tables(db)
    monkeypatch.setattr("projections.engine.rebuilds.time.time", lambda: 1_900_000_000.0)  # one tag for all
    projections = default_projections()
    with EventStore(db) as store, ProjectionEngine(store, projections, rebuild_batch_size=5) as engine:
        engine.rebuild()
        tags = {name: cp.tag for name, cp in engine.checkpoints().items()}
        assert len({tags[p.name].rsplit("_r", 1)[1] for p in projections}) == 1
        for p in projections:
            assert _read_side(p, tags[p.name]) <= _index_names(engine.connection(p.name), p, tags[p.name]), p.name
    assert dump_tables(db) == before


# --- rendering ---------------------------------------------------------------------------------

TRICKY = 'Quote " backslash \\ slash / tab \t newline \n nul-ish \x01 \x1f del \x7f é 中文 😀 \u2028 \u2029 </script>'


@pytest.mark.parametrize("corrected", [False, True])
def test_entries_rendered_by_sqlite_carry_every_character_exactly(q, db, corrected):
    """The API sends entries as SQLite renders them (``render=True``); what a client decodes must be
    the event exactly as stored, whatever its strings hold, and the same as ``render=False``."""
    import json

    from projections.queries import render_json

    sources = [{"url": "https://news.example/a?q=1&b=\"2\"", "title": TRICKY}]
    details = {"service": TRICKY, "duration_minutes": 7, "cause": "a" * 500}
    event = news("tricky", "2025-05-24T10:00:00.5+02:00", kind="outage", headline=TRICKY, summary=TRICKY,
                 sources=sources, details=details, ended_at="2025-05-25")
    events = [event]
    if corrected:
        events.append(correction("fix", "tricky", headline=TRICKY + " (corrected)", summary=None))
    append_and_project(db, events)
    for entity_id in ("x", None):
        plain = tl(q, entity_id)
        sent = json.loads(render_json(q.timeline(entity_id, TimelineQuery(), render=True)))
        assert sent == plain
        [entry] = sent["entries"]
        assert entry["headline"] == (TRICKY + " (corrected)" if corrected else TRICKY)
        assert entry["summary"] == (None if corrected else TRICKY)
        assert entry["sources"] == sources and entry["details"] == details
        assert (entry["occurred_at"], entry["ended_at"]) == ("2025-05-24T10:00:00.5+02:00", "2025-05-25")
        assert list(entry) == ["event_id", "kind", "occurred_at", "ended_at", "headline", "summary",
                               *(["role"] if entity_id else []), "entities", "sources", "details", "position",
                               "recorded_at", "status"]


def test_kept_stored_events_never_serve_a_stale_entry(q, db):
    """Timeline entries take what they need of stored events from a cache (``Queries.cards``):
    a correction, a retraction or an alias after the first read shows at once, and every answer
    equals a fresh reader's, with a cache so small it is replaced several times over."""
    from projections.queries import CARD_OVERHEAD, StoredCards

    q.cards = StoredCards(budget=2 * 3 * CARD_OVERHEAD)  # a generation holds at most three cards
    append_and_project(db, [news(f"n{i}", f"2025-05-{i + 1:02d}", entities=[ent("x"), ent(f"y{i % 3}")])
                            for i in range(12)])
    first = tl(q, "x")
    assert len(q.cards) > 0
    append_and_project(db, [correction("fix", "n4", headline="Corrected headline"), retraction("gone", "n7"),
                            alias("merge", "y1", "y0")])
    again = tl(q, "x")
    assert [e["event_id"] for e in again["entries"]] == [e["event_id"] for e in first["entries"] if e["event_id"] != "n7"]
    assert next(e for e in again["entries"] if e["event_id"] == "n4")["headline"] == "Corrected headline"
    fresh = Queries(str(db))
    try:
        for entity_id in ("x", "y0", "y1", "y2", None):
            for order in ("asc", "desc"):
                assert tl(q, entity_id, order=order) == tl(fresh, entity_id, order=order)
                assert tl(q, entity_id, order=order, include_retracted=True) == tl(
                    fresh, entity_id, order=order, include_retracted=True)
    finally:
        fresh.close()


def test_stored_cards_keep_the_most_recently_used():
    from projections.queries import CARD_OVERHEAD, StoredCards

    one = CARD_OVERHEAD + sys.getsizeof("a")  # what a card of one character weighs
    cards = StoredCards(budget=2 * (2 * one - 1))  # a generation: two such cards
    cards.put(1, ("a",))
    cards.put(2, ("b",))  # the young generation fills: it becomes the old one
    assert cards.get(1) == ("a",)  # found in the old generation: moved to the young one
    cards.put(3, ("c",))  # young fills again ({1, 3}): 2, used least recently, is dropped
    assert cards.get(2) is None and cards.get(1) == ("a",) and cards.get(3) == ("c",)
    assert len(cards) <= 4


def test_stored_cards_are_bounded_by_their_bytes_not_their_number():
    """The budget is memory: few big cards fill it, many small ones fit in it, and text that
    Python keeps in two bytes a character (Cyrillic, say) weighs twice its ASCII length."""
    from projections.queries import CARD_OVERHEAD, StoredCards

    def kept(text: str, budget: int = 100_000) -> StoredCards:
        cards = StoredCards(budget=budget)
        for position in range(1000):
            cards.put(position, (text,))
        assert cards.get(999) == (text,)
        return cards

    ascii_big, cyrillic_big, small = kept("x" * 10_000), kept("я" * 10_000), kept("x")
    assert len(ascii_big) <= 2 * 5 and ascii_big.get(0) is None  # ~10 KB a card: 5 a generation
    assert len(cyrillic_big) <= 2 * 3  # ~20 KB a card: 3 a generation
    assert len(small) >= 50_000 // (CARD_OVERHEAD + sys.getsizeof("x"))  # a full generation at least


def test_a_type_from_statements_no_longer_in_force_gives_way_to_one_in_force(q, db):
    """Once its only typed event is retracted, an entity keeps that type (no statement in force);
    a later mention without a type is in force and gives none: the entity is ``other``, live as
    after a rebuild (docs/entities.md)."""
    untyped = {"id": "acme", "name": "Acme", "role": "subject"}
    append_and_project(db, [news("typed", "2024", (ent("acme", name="ACME", type="person"),))])
    append_and_project(db, [retraction("r", "typed")])
    assert (q.entity("acme")["name"], q.entity("acme")["type"]) == ("ACME", "person")
    append_and_project(db, [news("plain", "2025", (untyped,))])
    live = q.entity("acme")
    assert (live["name"], live["type"]) == ("Acme", "other")
    with EventStore(db) as store, ProjectionEngine(store, default_projections()) as engine:
        engine.rebuild()
    q.close()
    assert q.entity("acme") == live
