"""Corrections and retractions of events of busy entities (over a thousand events each): an
entity's count and dates, and a pair's count and latest shared event, change by what was taken
away, and are recomputed from the members only when the first or latest one went. Either way
the rows equal those of a projection built from scratch."""

from __future__ import annotations

import shutil

from events.store import EventStore
from helpers import append, correction, dump_tables, news, project, retraction
from projections.engine import projections_dir
from projections.queries import Queries

BUSY = 1100  # events of "a" and "b": past related.RECOMPUTE_SMALL, where a recompute counts further


def _read(db) -> tuple[dict, dict]:
    queries = Queries(db)
    try:
        return queries.entity("a"), queries.related("a")
    finally:
        queries.close()


def _day(i: int) -> str:
    return f"2020-{1 + i % 12:02d}-{1 + i % 28:02d}"  # many events share a date: ties go by position


def test_busy_entities_and_pairs_after_corrections_equal_a_projection_from_scratch(tmp_path):
    db = tmp_path / "timeline.db"
    events = [news(f"ab-{i}", _day(i), ("a", "b") if i % 3 else ("a", "b", "c")) for i in range(BUSY)]
    events += [news(f"a-{i}", _day(i), ("a", "d")) for i in range(300)]
    with EventStore(db) as store:
        append(store, *events)
    project(db)
    entity_before, related_before = _read(db)
    # the latest event the pair (a, b) shares (the last of its date's ties), the earliest one
    # (moved to a later date), one in between, and one that "b" leaves
    latest = max(range(BUSY), key=lambda i: (_day(i), i))
    earliest = min(range(BUSY), key=lambda i: (_day(i), i))
    with EventStore(db) as store:
        results = append(
            store,
            retraction("r-latest", f"ab-{latest}"),
            correction("c-earliest", f"ab-{earliest}", occurred_at="2020-06-15"),
            retraction("r-middle", "ab-500"),
            correction("c-leaves-b", "ab-501", entities=[{"id": "a", "name": "A", "type": "organization", "role": "subject"}]),
        )
    assert [r.status for r in results] == ["stored"] * 4
    project(db)
    incremental = dump_tables(db)
    entity_after, related_after = _read(db)
    shutil.rmtree(projections_dir(db))
    project(db)
    assert dump_tables(db) == incremental
    # and the counts moved as expected: "a" lost the two retracted events, the pair those and
    # the one "b" left
    assert entity_after["event_count"] == entity_before["event_count"] - 2 == 1400 - 2
    b_before = next(r for r in related_before["entities"] if r["id"] == "b")
    b_after = next(r for r in related_after["entities"] if r["id"] == "b")
    assert b_after["count"] == b_before["count"] - 3 == BUSY - 3
