"""Property: the SQLite store and the PostgreSQL store give the same answers to the same input.

Random sequences of news events, corrections, retractions and aliases (test_rebuild_property's
strategies: duplicates, id conflicts, changes before or after their target, alias cycles),
appended in the same random batches to a SQLite file and to a PostgreSQL schema, with the same
erasures between batches: every append result, every event's state and history, the aliases,
the id lookups and the erasures are the same on both (recording times aside, which are each
store's clock), and both stores verify.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.backend import Store, open_store
from events.erasure import ErasureRefused, erase
from events.integrity import verify
from events.models import EventRejected, parse_event_bytes
from events.pg.integrity import verify as verify_pg
from events.store import Candidate, connect_read_only
from pg_support import drop_schema, fresh_schema
from test_rebuild_property import EVENT_IDS, editorial_event, news_event


def without_times(value: Any) -> Any:
    """The value with every recording or erasure time left out (each store's own clock)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in ("recorded_at", "erased_at")}
    if isinstance(value, (list, tuple)):
        return [without_times(v) for v in value]
    return value


def answers(store: Store, ids: list[str]) -> dict[str, Any]:
    head = store.head()
    return {
        "head": head,
        "read": without_times(store.read(0, 10_000)),
        "states": {i: without_times(store.state(i)) for i in ids},
        "as_of": {i: without_times(store.state(i, head // 2)) for i in ids},
        "hashes": without_times(store.hashes(ids)),
        "aliases": without_times(store.aliases()),
        "erasures": without_times(store.erasures()),
        "targeted": sorted(store.targeted(ids)),
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(st.one_of(news_event(), news_event(), editorial_event()), min_size=1, max_size=30),
    data=st.data(),
)
def test_both_backends_answer_the_same(tmp_path_factory, pg_url, events, data) -> None:
    raws = [json.dumps(e).encode() for e in events]
    candidates = []
    for raw in raws:
        try:
            candidates.append(Candidate(parse_event_bytes(raw), raw))
        except EventRejected:
            continue
    sizes = data.draw(st.lists(st.integers(1, 8), min_size=len(candidates), max_size=len(candidates)), label="batches")
    erasures = data.draw(st.lists(st.sampled_from(EVENT_IDS), max_size=3), label="erased")
    path = str(Path(tmp_path_factory.mktemp("backends")) / "t.db")
    url = fresh_schema(pg_url, "prop")
    try:
        with open_store(path) as sqlite, open_store(url) as postgres:
            offset, step = 0, 0
            while offset < len(candidates):
                batch = candidates[offset : offset + sizes[step]]
                offset, step = offset + len(batch), step + 1
                assert without_times(postgres.append(batch)) == without_times(sqlite.append(batch))
                if step <= len(erasures):
                    outcomes = []
                    for store in (sqlite, postgres):
                        try:
                            outcomes.append(without_times(erase(store, erasures[step - 1], "test", "hypothesis")))
                        except ErasureRefused as exc:
                            outcomes.append((exc.status, exc.error))
                    assert outcomes[0] == outcomes[1]
            ids = sorted({c.event.id for c in candidates})
            assert answers(postgres, ids) == answers(sqlite, ids)
        conn = connect_read_only(path)
        try:
            assert verify(conn).ok
        finally:
            conn.close()
        assert verify_pg(url).ok
    finally:
        drop_schema(url)
