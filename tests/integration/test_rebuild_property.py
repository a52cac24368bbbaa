"""Property: projecting incrementally, in any batch sizes, equals a rebuild from scratch, row for row.

The set-based path of plain news events gives the same rows as the per-change path.
Random event sequences mix all seven kinds, duplicates, id conflicts, corrections and
retractions that arrive before or after their target, aliases (some closing cycles, which the
store rejects), and arrive shuffled, in random batches.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import EventRejected, parse_event
from events.store import Candidate, EventStore
from projections import ProjectionEngine, default_projections

PEOPLE = ["elon-musk", "donald-trump", "cyril-ramaphosa"]
ORGS = ["x", "twitter", "tesla", "spacex"]
POOL = PEOPLE + ORGS
DATES = ["2024", "2025", "2025-05", "2025-05-21", "2025-05-24", "2025-05-24T14:30Z", "2025-05-24T16:30:00+02:00"]
ROLES = ["subject", "actor", "target", "mentioned"]
EVENT_IDS = [f"ev-{i}" for i in range(8)]


def entities_strategy() -> st.SearchStrategy[list[dict]]:
    return st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True).flatmap(
        lambda ids: st.tuples(*[st.sampled_from(ROLES) for _ in ids]).map(
            lambda roles: [
                {"id": i, "name": i.replace("-", " ").title(), "type": "person" if i in PEOPLE else "organization",
                 "role": r}
                for i, r in zip(ids, roles)
            ]
        )
    )


@st.composite
def news_event(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["outage", "statement", "political_move", "report"]))
    entities = draw(entities_strategy())
    first = entities[0]["id"]
    details = {
        "outage": {"service": "X", "duration_minutes": draw(st.integers(0, 300))},
        "statement": {"speaker": first, "quote": draw(st.sampled_from(["a", "b", "should have worked"]))},
        "political_move": {"actor": first, "action": draw(st.sampled_from(["meeting", "scale_back", "contribution"]))},
        "report": {"category": "business"},
    }[kind]
    event = {
        "kind": kind,
        "occurred_at": draw(st.sampled_from(DATES)),
        "headline": draw(st.sampled_from(["Outage", "Statement", "Move", "Report", "Other"])),
        "entities": entities,
        "details": details,
    }
    if draw(st.booleans()):
        event["id"] = draw(st.sampled_from(EVENT_IDS))
    if draw(st.booleans()):
        event["summary"] = draw(st.sampled_from(["short", "longer summary"]))
    return event


@st.composite
def editorial_event(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["correction", "retraction", "entity_alias"]))
    if kind == "correction":
        changes = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "headline": st.sampled_from(["Corrected", "Fixed"]),
                    "occurred_at": st.sampled_from(DATES),
                    "entities": entities_strategy(),
                    "summary": st.none() | st.just("corrected summary"),
                },
            ).filter(bool)
        )
        details = {"corrects": draw(st.sampled_from(EVENT_IDS)), "changes": changes, "reason": "fix"}
    elif kind == "retraction":
        details = {"retracts": draw(st.sampled_from(EVENT_IDS)), "reason": "wrong"}
    else:
        alias, canonical = draw(st.lists(st.sampled_from(ORGS + PEOPLE[:1]), min_size=2, max_size=2, unique=True))
        details = {"alias": alias, "canonical": canonical}
    return {"kind": kind, "occurred_at": draw(st.sampled_from(DATES)), "details": details}


def tables(engine: ProjectionEngine) -> dict[str, list[tuple]]:
    """Every projection table's rows, keyed by projection and base table name, sorted."""
    bases = {p.name: list(p.schema) for p in default_projections()}
    out = {}
    for name, cp in engine.checkpoints().items():
        conn, tag = engine.connection(name), cp["tag"]
        for base in bases[name]:
            columns = "rowid, *" if base == "tl_search" else "*"  # a contentless index: compare its rowids
            out[f"{name}.{base}"] = sorted(conn.execute(f"SELECT {columns} FROM {base}{tag}").fetchall(), key=repr)
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    events=st.lists(st.one_of(news_event(), news_event(), editorial_event()), min_size=1, max_size=40),
    repeats=st.lists(st.integers(0, 39), max_size=6),
    data=st.data(),
)
def test_incremental_equals_rebuild(tmp_path_factory, events, repeats, data) -> None:
    raws = [json.dumps(e).encode() for e in events]
    raws += [raws[i] for i in repeats if i < len(raws)]  # duplicates, published again later
    raws = data.draw(st.permutations(raws), label="arrival order")
    path = Path(tmp_path_factory.mktemp("prop")) / "t.db"
    store = EventStore(path)
    batch = data.draw(st.integers(1, 7), label="engine batch")
    engine = ProjectionEngine(store, default_projections(), batch_size=batch, rebuild_batch_size=batch)
    engine.setup()
    i = 0
    while i < len(raws):
        size = data.draw(st.integers(1, 6), label="append batch")
        batch = []
        for raw in raws[i : i + size]:
            try:
                batch.append(Candidate(parse_event(json.loads(raw)), raw))
            except EventRejected:
                pass
        store.append(batch)
        engine.catch_up()
        i += size
    incremental = tables(engine)
    engine.rebuild()
    rebuilt = tables(engine)
    assert set(incremental) == set(rebuilt)
    for name in incremental:
        assert incremental[name] == rebuilt[name], name
    # The set-based path (``bulk``) gives the same rows as the per-change path (``apply``).
    per_change = ProjectionEngine(
        store, default_projections(), rebuild_batch_size=data.draw(st.integers(1, 50), label="per-change batch"),
        set_based=False,
    )
    per_change.rebuild()
    one_by_one = tables(per_change)
    for name in incremental:
        assert incremental[name] == one_by_one[name], name
    per_change.close()
    engine.close()
    store.close()
