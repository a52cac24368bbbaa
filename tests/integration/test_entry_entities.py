"""Each timeline entry carries ``entities``: the event's entities as in force (corrections
applied), aliases resolved, named as the directory names them; read per page, not per entry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from projections.queries import Queries, TimelineQuery

from helpers import alias, append_and_project, append_batches, correction, ent, news, retraction


def _entities(queries: Queries, entity_id: str | None, **params: object) -> dict[str, list[dict[str, str]]]:
    page = queries.timeline(entity_id, TimelineQuery(limit=500, **params))  # type: ignore[arg-type]
    return {e["event_id"]: e["entities"] for e in page["entries"]}


def test_entries_list_their_entities_with_role_and_name(db: Path, q: Queries) -> None:
    append_and_project(db, [
        news("a", "2025-05-01", [ent("x", "subject", "X"), ent("elon-musk", "actor", "Elon Musk", "person")]),
        news("b", "2025-05-02", [ent("x", "mentioned", "X")]),
    ])
    expected = {
        "a": [{"id": "x", "name": "X", "role": "subject"}, {"id": "elon-musk", "name": "Elon Musk", "role": "actor"}],
        "b": [{"id": "x", "name": "X", "role": "mentioned"}],
    }
    assert _entities(q, "x") == expected
    assert _entities(q, None) == expected
    # the raw (API) rendering carries the same field, after the role and before the sources
    raw = q.timeline("x", TimelineQuery(), render=True)["entries"][0]
    assert '"role":"subject","entities":[{"id":"x","name":"X","role":"subject"},' in raw


def test_a_correction_of_entities_is_what_entries_show(db: Path, q: Queries) -> None:
    append_and_project(db, [
        news("a", "2025-05-01", [ent("x", "subject", "X"), ent("meta", "mentioned", "Meta")]),
        correction("c1", "a", entities=[ent("x", "subject", "X"), ent("openai", "target", "OpenAI")]),
        correction("c2", "a", headline="a new headline"),  # leaves the entities as c1 set them
    ])
    want = [{"id": "x", "name": "X", "role": "subject"}, {"id": "openai", "name": "OpenAI", "role": "target"}]
    assert _entities(q, "x") == {"a": want}
    assert _entities(q, "openai") == {"a": want}
    assert _entities(q, "meta") == {}
    assert _entities(q, None) == {"a": want}


def test_aliases_resolve_to_the_canonical_entity_once_with_its_best_role(db: Path, q: Queries) -> None:
    append_and_project(db, [
        news("a", "2025-05-01", [ent("twitter", "mentioned", "Twitter"), ent("x", "subject", "X")]),
        news("b", "2025-05-02", [ent("twitter", "target", "Twitter")]),
        alias("al", "twitter", "x", name="X Corp"),
    ])
    assert _entities(q, "x") == {
        "a": [{"id": "x", "name": "X Corp", "role": "subject"}],
        "b": [{"id": "x", "name": "X Corp", "role": "target"}],
    }


def test_as_of_shows_the_entities_and_names_of_then(db: Path, q: Queries) -> None:
    append_batches(db, [news("a", "2025-05-01", [ent("twitter", "subject", "Twitter")])])
    with sqlite3.connect(db) as conn:
        (then,) = conn.execute("SELECT recorded_at FROM events ORDER BY position DESC LIMIT 1").fetchone()
    append_batches(db, [
        alias("al", "twitter", "x", name="X Corp"),
        correction("c1", "a", entities=[ent("twitter", "subject", "Twitter"), ent("meta", "actor", "Meta")]),
    ])
    assert _entities(q, "x") == {
        "a": [{"id": "x", "name": "X Corp", "role": "subject"}, {"id": "meta", "name": "Meta", "role": "actor"}],
    }
    assert _entities(q, "twitter", as_of=then) == {"a": [{"id": "twitter", "name": "Twitter", "role": "subject"}]}
    assert _entities(q, None, as_of=then) == {"a": [{"id": "twitter", "name": "Twitter", "role": "subject"}]}


def test_a_retracted_entry_keeps_its_entities(db: Path, q: Queries) -> None:
    append_and_project(db, [news("a", "2025-05-01", [ent("x", "subject", "X")]), retraction("r", "a")])
    assert _entities(q, "x") == {}
    assert _entities(q, "x", include_retracted=True) == {"a": [{"id": "x", "name": "X", "role": "subject"}]}


def test_a_page_reads_entities_in_a_fixed_number_of_statements(db: Path, q: Queries) -> None:
    """The cost of ``entities`` does not grow with the page: counted statements, not time."""
    events = [news(f"e{i:03}", f"2025-05-{1 + i % 28:02}", [ent("x"), ent(f"o{i}", "mentioned")]) for i in range(200)]
    events += [correction(f"c{i:03}", f"e{i:03}", entities=[ent("x"), ent("z", "target")]) for i in range(0, 200, 10)]
    append_and_project(db, events)

    def statements(limit: int) -> int:
        q.timeline("x", TimelineQuery(limit=limit))  # warm: connections, attachments, caches
        count = 0

        def trace(_: str) -> None:
            nonlocal count
            count += 1

        q.store.conn.set_trace_callback(trace)
        try:
            q.timeline("x", TimelineQuery(limit=limit))
        finally:
            q.store.conn.set_trace_callback(None)
        return count

    assert statements(200) == statements(20)


def test_what_a_page_keeps_rendered_never_outlives_a_change(db: Path, q: Queries) -> None:
    """Entities rendered for a page are kept between reads: a later correction, rename or alias
    shows at once."""
    append_batches(db, [news("a", "2025-05-01", [ent("x", "subject", "X"), ent("meta", "mentioned", "Meta")])])
    assert _entities(q, "x")["a"][1] == {"id": "meta", "name": "Meta", "role": "mentioned"}
    append_batches(db, [news("b", "2025-05-02", [ent("meta", "subject", "Meta Platforms")])])  # a rename
    assert _entities(q, "x")["a"][1] == {"id": "meta", "name": "Meta Platforms", "role": "mentioned"}
    append_batches(db, [correction("c1", "a", entities=[ent("x", "subject", "X"), ent("fb", "target", "Facebook")])])
    assert _entities(q, "x")["a"][1] == {"id": "fb", "name": "Facebook", "role": "target"}
    append_batches(db, [alias("al", "fb", "meta")])
    # the latest statement in force among meta's ids names it (docs/entities.md): the correction's
    assert _entities(q, "x")["a"][1] == {"id": "meta", "name": "Facebook", "role": "target"}
    assert q.entity("meta")["name"] == "Facebook"
