"""A correction storm: the n-th correction of an event costs what the first did, and the state the
store keeps as it goes is the state a fold from scratch gives (real SQLite files, real projections;
the store's part on PostgreSQL too)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


import events.history
from events.backend import open_store
from events.history import fold
from events.store import EventStore
from projections import ProjectionEngine, default_projections

from helpers import append, correction, news, retraction
from test_rebuild_property import tables

TARGET = "storm-target"


def storm(count: int, seed: int = 3) -> list[dict[str, Any]]:
    """``count`` corrections and retractions of TARGET: headlines, dates, entities, summaries
    removed and put back, now and then a retraction, and corrections that would break the event
    (a statement's speaker dropped: the store rejects those of a known target)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.02:
            out.append(retraction(f"storm-r-{i}", TARGET, reason=f"retracted {i}"))
        elif roll < 0.05:
            out.append(correction(f"storm-bad-{i}", TARGET, entities=[{"name": "Nobody"}]))
        elif roll < 0.4:
            out.append(correction(f"storm-c-{i}", TARGET, reason=f"fix {i}", occurred_at=f"2025-05-{rng.randint(1, 28):02d}"))
        elif roll < 0.5:
            out.append(correction(f"storm-c-{i}", TARGET, summary=None if i % 2 else f"summary {i}"))
        elif roll < 0.6:
            out.append(correction(f"storm-c-{i}", TARGET, entities=[
                {"id": "elon-musk", "name": "Elon Musk", "type": "person", "role": "subject"},
                {"id": f"org-{i % 7}", "name": f"Org {i % 7}", "type": "organization"}]))
        else:
            out.append(correction(f"storm-c-{i}", TARGET, headline=f"headline {i}"))
    return out


def target() -> dict[str, Any]:
    return news(TARGET, "2025-05-24", [{"id": "elon-musk", "name": "Elon Musk", "type": "person", "role": "subject"}],
                kind="statement", details={"speaker": "elon-musk", "quote": "q"})


def from_scratch(store: EventStore, upto: int | None = None) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    event = store.get(TARGET, upto)
    assert event is not None
    state = fold(event, store.editorial_for(TARGET, upto))
    return state.body, state.status, state.history


def kept(store: EventStore, upto: int | None = None) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    found = store.state(TARGET, upto)
    assert found is not None
    return found[1].body, found[1].status, found[1].history


def test_a_thousand_corrections_of_one_event_equal_a_fold_from_scratch(tmp_path: Path) -> None:
    path = tmp_path / "storm.db"
    rng = random.Random(11)
    changes = storm(1000)
    # 40 arrive before the event they change (they wait, and are folded in when it comes),
    # the rest after it, in batches of any size; the projections catch up after each batch.
    batches: list[list[dict[str, Any]]] = [changes[:25], changes[25:40] + [target()]]
    rest = changes[40:]
    while rest:
        size = rng.choice([1, 1, 2, 5, 17, 60])
        batches.append(rest[:size])
        rest = rest[size:]
    with EventStore(path) as store, ProjectionEngine(store, default_projections(), batch_size=7) as engine:
        engine.setup()
        statuses: dict[str, int] = {}
        for batch in batches:
            for result in append(store, *batch):
                statuses[result.status] = statuses.get(result.status, 0) + 1
            engine.catch_up()
        assert statuses["rejected"] > 10 and statuses["stored"] > 950  # the breaking ones, once the event is known
        body, status, history = kept(store)
        assert (body, status, history) == from_scratch(store)
        assert len(history) == statuses["stored"] - 1
        assert status == "retracted" and not all(h["applied"] for h in history)  # some waited and did not fit
        # As of any position, the state is the one folded from what was stored by then.
        for upto in sorted({41, 42, 100, 517, 999, *rng.sample(range(41, store.head() + 1), 20)}):
            assert kept(store, upto) == from_scratch(store, upto), upto
        incremental = tables(engine)
        engine.rebuild()
        assert tables(engine) == incremental


def test_the_state_kept_equals_a_fold_from_scratch_on_each_backend(backend: str) -> None:
    """The store's part of the storm, on SQLite and on PostgreSQL (the projections' part runs in
    the test above): 300 changes, some before their event, in batches of any size; as of any
    position the state kept is the fold of what was stored by then."""
    rng = random.Random(5)
    changes = storm(300, seed=7)
    batches: list[list[dict[str, Any]]] = [changes[:12], changes[12:20] + [target()]]
    rest = changes[20:]
    while rest:
        size = rng.choice([1, 2, 5, 17, 60])
        batches.append(rest[:size])
        rest = rest[size:]
    with open_store(backend) as store:
        statuses: dict[str, int] = {}
        for batch in batches:
            for result in append(store, *batch):
                statuses[result.status] = statuses.get(result.status, 0) + 1
        assert statuses["rejected"] > 3 and statuses["stored"] > 280
        body, status, history = kept(store)
        assert (body, status, history) == from_scratch(store)
        assert len(history) == statuses["stored"] - 1
        for upto in sorted({21, 22, 50, 150, *rng.sample(range(21, store.head() + 1), 10)}):
            assert kept(store, upto) == from_scratch(store, upto), upto


@contextmanager
def costs(connections: list[sqlite3.Connection]) -> Iterator[dict[str, int]]:
    """Count what the block costs: corrections validated (``apply_changes``) and SQLite VM steps."""
    counted = {"validations": 0, "steps": 0}
    original: Callable[..., Any] = events.history.apply_changes

    def counting(*args: Any) -> Any:
        counted["validations"] += 1
        return original(*args)

    def step() -> int:
        counted["steps"] += 100
        return 0

    events.history.apply_changes = counting  # type: ignore[assignment]
    for conn in connections:
        conn.set_progress_handler(step, 100)
    try:
        yield counted
    finally:
        events.history.apply_changes = original  # type: ignore[assignment]
        for conn in connections:
            conn.set_progress_handler(None, 0)


def test_the_thousandth_correction_costs_what_the_tenth_did(tmp_path: Path) -> None:
    """Appending the n-th correction, projecting it and reading the event do not re-read or re-fold
    the earlier ones (history aside, which is listed)."""
    path = tmp_path / "storm.db"
    changes = [c for c in storm(1100) if not c["id"].startswith("storm-bad")]
    with EventStore(path) as store, ProjectionEngine(store, default_projections(), parallel=False) as engine:
        engine.setup()
        append(store, target())
        engine.catch_up()

        def one(event: dict[str, Any]) -> dict[str, int]:
            conns = [store.conn, *(engine.connection(name) for name in engine.projections)]
            with costs(conns) as appended:
                [result] = append(store, event)
                assert result.status == "stored"
            with costs(conns) as projected:
                engine.catch_up()
            with costs(conns) as read:  # GET /events/{id}: its history is listed, not folded again
                found = store.state(TARGET)
            assert found is not None and found[1].history[-1]["position"] == result.position
            return {"append": appended["validations"], "project": projected["validations"],
                    "read": read["validations"], "append_steps": appended["steps"],
                    "project_steps": projected["steps"]}

        for event in changes[:9]:
            append(store, event)
        tenth = one(changes[9])
        for start in range(10, 999, 100):
            append(store, *changes[start : min(start + 100, 999)])
        engine.catch_up()
        thousandth = one(changes[999])
        assert changes[999]["kind"] == changes[9]["kind"] == "correction"
        # One validation to append it (the change applied to the state kept), none to project or read it.
        assert tenth["append"] == thousandth["append"] == 1, (tenth, thousandth)
        assert tenth["project"] == thousandth["project"] == 0, (tenth, thousandth)
        assert tenth["read"] == thousandth["read"] == 0, (tenth, thousandth)
        for key in ("append_steps", "project_steps"):
            assert thousandth[key] <= 1.5 * tenth[key] + 2000, (key, tenth, thousandth)
        body, status, history = kept(store)
        assert (body, status, history) == from_scratch(store)


def test_a_store_from_before_event_states_is_filled_in_on_open(tmp_path: Path) -> None:
    """A file written before ``event_states`` existed (migration 0008) gets the rows the append
    path would have written: the same states, the same outcomes, the waiting ones folded in."""
    path = tmp_path / "old.db"
    changes = storm(120)
    with EventStore(path) as store:
        append(store, *changes[:10])
        append(store, *changes[10:20], target())
        for start in range(20, 120, 9):
            append(store, *changes[start : start + 9])
        append(store, correction("waits-forever", "never-arrives", headline="x"))
        written = store.conn.execute("SELECT * FROM event_states ORDER BY position").fetchall()
        before = kept(store)
    assert len(written) > 100
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE event_states; DELETE FROM _migrations WHERE name = '0008_event_states';")
    conn.close()
    with EventStore(path) as store:
        assert store.conn.execute("SELECT * FROM event_states ORDER BY position").fetchall() == written
        assert kept(store) == before == from_scratch(store)
