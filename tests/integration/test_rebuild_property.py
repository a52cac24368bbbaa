"""Property: projecting incrementally, in any batch sizes, equals a rebuild from scratch, row for row.

The set-based path of plain news events gives the same rows as the per-change path.
Random event sequences mix all seven kinds, duplicates, id conflicts, corrections and
retractions that arrive before or after their target, aliases (some closing cycles, which the
store rejects), and arrive shuffled, in random batches; between batches, a stored event may be
erased (before or after the projections caught up with it), and events published later under an
erased id are refused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.dates import parse_partial
from events.history import fold
from events.models import NEWS_KINDS, EventRejected, parse_event
from events.erasure import ErasureRefused, erase
from events.store import Candidate, EventStore, StoredEvent
from projections.erasure import Erased, capture
from projections import ProjectionEngine, default_projections, groups
from projections.queries import NotFound, Queries, TimelineQuery

PEOPLE = ["elon-musk", "donald-trump", "cyril-ramaphosa"]
ORGS = ["x", "twitter", "tesla", "spacex"]
POOL = PEOPLE + ORGS
DATES = ["2024", "2025", "2025-05", "2025-05-21", "2025-05-24", "2025-05-24T14:30Z", "2025-05-24T16:30:00+02:00"]
ROLES = ["subject", "actor", "target", "mentioned"]
EVENT_IDS = [f"ev-{i}" for i in range(8)]


def mention(entity_id: str, role: str, spelling: int, typed: int) -> dict:
    """A mention: one of three spellings; typed as it is, wrongly, or without a type."""
    name = [entity_id.replace("-", " ").title(), entity_id.upper() + " (typo)", entity_id.replace("-", " ")][spelling]
    out = {"id": entity_id, "name": name, "role": role}
    if typed < 2:
        right = "person" if entity_id in PEOPLE else "organization"
        out["type"] = right if typed == 0 else "place"
    return out


def entities_strategy() -> st.SearchStrategy[list[dict]]:
    return st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True).flatmap(
        lambda ids: st.tuples(
            *[st.tuples(st.sampled_from(ROLES), st.integers(0, 2), st.integers(0, 2)) for _ in ids]
        ).map(lambda drawn: [mention(i, *d) for i, d in zip(ids, drawn)])
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
        if draw(st.booleans()):
            details["name"] = draw(st.sampled_from(["Renamed", "X Corp"]))
    return {"kind": kind, "occurred_at": draw(st.sampled_from(DATES)), "details": details}


def erase_one(store: EventStore, engine: ProjectionEngine, event: StoredEvent | None) -> None:
    """Erase an event as the service does (projections.erasure), when it may be erased alone."""
    if event is None:
        return
    gone: list[Erased | None] = []
    try:
        erase(store, event.event_id, "test", "hypothesis", before=lambda s: gone.append(capture(s, event.event_id)))
    except ErasureRefused:
        return
    if gone[0] is not None:
        engine.remove(gone[0])


def tables(engine: ProjectionEngine) -> dict[str, list[tuple]]:
    """Every projection table's rows, keyed by projection and base table name, sorted."""
    bases = {p.name: list(p.schema) for p in default_projections()}
    out = {}
    for name, cp in engine.checkpoints().items():
        conn, tag = engine.connection(name), cp.tag
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
    # a set refiled as it grows (``groups.REFILE_GROWTH``), or at every merge into a set (1: its
    # runs of rows as many as its merges, which the few ids here would seldom make otherwise)
    growth = data.draw(st.sampled_from([groups.REFILE_GROWTH, 1]), label="refile growth")
    kept, groups.REFILE_GROWTH = groups.REFILE_GROWTH, growth
    try:
        check_incremental_equals_rebuild(tmp_path_factory, events, repeats, data)
    finally:
        groups.REFILE_GROWTH = kept


def check_incremental_equals_rebuild(tmp_path_factory, events, repeats, data) -> None:
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
        if data.draw(st.booleans(), label="catch up before erasing"):
            engine.catch_up()
        if data.draw(st.integers(0, 3), label="erase") == 0:
            erase_one(store, engine, data.draw(st.sampled_from(store.read(0, 10**6) or [None]), label="erased"))
        engine.catch_up()
        i += size
    # The state the store kept as it appended (``event_states``) is a fold from scratch, as of any position.
    head = store.head()
    for stored in store.read(0, head):
        for upto in range(stored.position, head + 1):
            kept = store.state(stored.event_id, upto)
            assert kept is not None
            event = store.get(stored.event_id, upto)
            assert event is not None
            folded = fold(event, store.editorial_for(stored.event_id, upto))
            assert (kept[1].body, kept[1].status, kept[1].history) == (folded.body, folded.status, folded.history)
            assert (kept[1].corrected, kept[1].entities_at) == (folded.corrected, folded.entities_at)
    incremental = tables(engine)
    assert set_pairs(engine) == expected_set_pairs(store, engine)
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
    # Names and types follow the rule (docs/entities.md), now and as of every position.
    queries = Queries(str(path))
    try:
        queries.aliases.refresh(queries.store)
        head = store.head()
        for upto in range(0, head + 1):
            with queries.snapshot() as conn:
                for entity_id in POOL:
                    canonical = queries.aliases.resolve(entity_id, upto)
                    found = queries._entity(conn, canonical, upto, as_of=True)
                    expected = expected_naming(store, canonical, upto)
                    got = None if found is None else (found["name"], found["type"])
                    if expected is None:  # no statement by then: none now either, or a later one
                        assert found is None or upto < head, (entity_id, upto)
                    else:
                        assert got == expected, (entity_id, canonical, upto)
        # Reads of an entity with aliases from the rows filed under its group (projections.groups)
        # answer what asking each of its members answers.
        fan_out = Queries(str(path))
        fan_out._set = lambda *args, **kwargs: None  # type: ignore[method-assign]
        fan_out._held = lambda *args, **kwargs: None  # type: ignore[method-assign]
        fan_out._related_ready = lambda *args, **kwargs: False  # type: ignore[method-assign]
        try:
            for reader in (queries, fan_out):
                reader._refresh()
            # as of every instant too: the sets that held the groups then (the sets' history,
            # the runs of their rows as they were refiled)
            instants = [None, *sorted({e.recorded_at for e in store.read(0, head)})]
            for entity_id in POOL:
                for when in instants:
                    for query in (TimelineQuery(), TimelineQuery(role="actor", order="desc"), TimelineQuery(include_retracted=True)):
                        query = dataclasses.replace(query, as_of=when)
                        assert answer(queries.timeline, entity_id, query, total=True) == answer(
                            fan_out.timeline, entity_id, query, total=True
                        ), (entity_id, when, query)
                    assert answer(queries.entity, entity_id, when) == answer(fan_out.entity, entity_id, when), (entity_id, when)
                assert answer(queries.related, entity_id) == answer(fan_out.related, entity_id), entity_id
            assert queries.directory(limit=500) == fan_out.directory(limit=500)
        finally:
            fan_out.close()
    finally:
        queries.close()
    store.close()


def set_pairs(engine: ProjectionEngine) -> dict[tuple[str, str], tuple[int, int]]:
    """The related projection's pairs kept per alias set: (set, side) -> (count, latest position)."""
    conn, tag = engine.connection("related"), engine.checkpoints()["related"].tag
    return {
        (s, o): (c, p) for s, o, c, p in conn.execute(f"SELECT set_id, other_id, count, last_position FROM rel_group_pairs{tag}")
    }


def expected_set_pairs(store: EventStore, engine: ProjectionEngine) -> dict[tuple[str, str], tuple[int, int]]:
    """The same, straight from the stored events now and the projection's sets: for each set and
    each side (another set, or an id in no set), the distinct events not retracted whose entities
    name a member of both, and the latest of them in (start key, position) order."""
    conn, tag = engine.connection("related"), engine.checkpoints()["related"].tag
    sets = dict(conn.execute(f"SELECT entity_id, set_id FROM rel_groups{tag}").fetchall())
    shared: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for stored in store.read(0, 10**6):
        if stored.kind not in NEWS_KINDS:
            continue
        found = store.state(stored.event_id)
        if found is None or found[1].status == "retracted":
            continue
        start_key = parse_partial(found[1].body["occurred_at"]).start_key  # as corrected
        sides = {sets.get(e["id"], e["id"]) for e in found[1].body["entities"]}
        for set_id in sides & set(sets.values()):
            for other in sides - {set_id}:
                shared.setdefault((set_id, other), []).append((start_key, stored.position))
    return {pair: (len(events), max(events)[1]) for pair, events in shared.items()}


def answer(read: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return read(*args, **kwargs)
    except NotFound:
        return "not found"


def expected_naming(store: EventStore, canonical: str, upto: int) -> tuple[str, str] | None:
    """The rule, straight from the stored events up to a position: the statements of the
    entity's ids (an event's entities, or a correction's that set them, at the later of the two
    positions); those in force decide (all when none is); the latest names, the latest with a type
    other than ``other`` types; an alias declaration with a name names its canonical id."""
    events = store.read(0, 10**6, upto)
    graph: dict[str, str] = {}
    names: dict[str, str] = {}
    for e in events:
        if e.kind == "entity_alias":
            d = e.body["details"]
            graph[d["alias"]] = d["canonical"]
            if d.get("name"):
                names[d["canonical"]] = d["name"]

    def resolve(i: str) -> str:
        while i in graph:
            i = graph[i]
        return i

    order = {canonical: 0}  # the canonical's own mention first on a tie (one event, both ids)
    for i in sorted(POOL + list(graph)):
        if i != canonical and resolve(i) == canonical:
            order[i] = len(order)
    statements = []  # (said_at, member order, in force, name, type)
    for e in events:
        if e.kind not in NEWS_KINDS:
            continue
        editorial = store.editorial_for(e.event_id, upto)
        waited = [x for x in editorial if x.position < e.position]
        later = [x for x in editorial if x.position > e.position]
        said: dict[int, list[dict]] = {}
        final = None
        for k in range(len(later) + 1):
            state = fold(e, waited + later[:k])
            said_at = e.position
            for h in state.history:
                if h["kind"] == "correction" and h["applied"] and "entities" in h["changes"]:
                    said_at = max(said_at, h["position"])
            said.setdefault(said_at, state.body["entities"])
            final = (said_at, state.status != "retracted")
        for said_at, entities in said.items():
            for m in entities:
                if m["id"] in order:
                    in_force = final == (said_at, True)
                    statements.append((said_at, -order[m["id"]], in_force, m["name"], m["type"]))
    if not statements:
        return None
    deciding = [s for s in statements if s[2]] or statements
    name = max(deciding)[3]
    typed = [s for s in deciding if s[4] != "other"]
    kind = max(typed)[4] if typed else "other"
    return names.get(canonical, name), kind
