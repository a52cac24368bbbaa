"""Stream batches validated in a process of their own (``TIMELINE_VALIDATORS``): the same
candidates and dead letters as validating in the service's thread, the same store after
appending them, and a killed validating process costs nothing but a batch validated in process."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from events.store import Candidate
from helpers import alias, correction, dump_tables, news, retraction
from timeline.service import DeadLetter, Prepared, TimelineService, Validators, prepare_here
from timeline.settings import Settings


def _entries() -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    events: list[Any] = [
        news("n1", "2025-05-24", ("x", "elon-musk"), headline="X is down — for ever?"),
        news("n2", "2025", ("x",)),
        correction("c1", "n1", headline="X is down for two hours"),
        retraction("r1", "n2"),
        alias("a1", "twitter", "x", name="Twitter"),
        correction("c2", "not-yet", headline="waits for its target"),
        {"kind": "political_move", "occurred_at": "2024-03", "headline": "A budget",
         "entities": [{"id": "gov", "name": "Gov", "type": "organization"}],
         "details": {"actor": "gov", "action": "contribution", "amount": {"value": 1.25e-05, "currency": "EUR"}}},
    ]
    raws = [json.dumps(e, ensure_ascii=False).encode() for e in events]
    raws += [b"{not json", b'{"kind": "outage"}', b"[1, 2]", json.dumps(events[0]).encode()]
    entries: list[tuple[bytes, dict[bytes, bytes] | None]] = [
        (f"1700000000000-{i}".encode(), {b"event": raw}) for i, raw in enumerate(raws)
    ]
    entries += [(b"1700000000001-0", {b"other": b"field"}), (b"1700000000001-1", None)]
    entries.append((b"1700000000001-2", {b"event": b"x" * (256 * 1024 + 1)}))
    return entries


def _same(a: Prepared, b: Prepared) -> None:
    assert a.ids == b.ids
    assert a.sources == b.sources
    assert a.dead == b.dead
    assert len(a.candidates) == len(b.candidates)
    for x, y in zip(a.candidates, b.candidates):
        assert (x.event.id, x.event.kind, x.event.content_hash, x.event.plain) == (
            y.event.id, y.event.kind, y.event.content_hash, y.event.plain)
        assert (x.raw, x.body_json, x.digests, x.facts) == (y.raw, y.body_json, y.digests, y.facts)
        assert x.body == y.body
        assert x.event.target == y.event.target


@pytest.fixture
def validators():
    v = Validators(1)
    yield v
    v.close()


def test_a_validating_process_gives_the_same_candidates_and_dead_letters(validators):
    entries = _entries()
    here, there = prepare_here(entries), validators.prepare(entries)
    assert len(here.dead) == 6 and {d.reason for d in here.dead} == {"bad_json", "schema", "no_event", "too_large"}
    assert len(here.candidates) == 8
    _same(here, there)
    # news events come back without their body: what the store needs is in facts and body_json
    news_candidate = there.candidates[0]
    assert news_candidate.event.body is None
    assert news_candidate.facts[:2] == ("2025-05-24", None)
    assert [entity[0] for entity in news_candidate.facts[2]] == ["x", "elon-musk"]
    assert news_candidate.body["headline"] == "X is down — for ever?"  # read back from body_json


@pytest.mark.parametrize("processes", [0, 1])
def test_the_store_is_the_same_whoever_validates(tmp_path, processes, monkeypatch):
    monkeypatch.setattr("events.store.utc_now_key", lambda: "2026-01-01T00:00:00.000000Z")
    reference = tmp_path / "reference.db"
    settings = Settings(db=reference, validators=0)
    service = TimelineService(settings)
    try:
        service.append(prepare_here(_entries()))
        service.project()
    finally:
        service.close()
    path = tmp_path / f"validators-{processes}.db"
    service = TimelineService(Settings(db=path, validators=processes))
    try:
        outcome = service.append(service.prepare(_entries()))
        assert outcome.stored == 7 and outcome.duplicates == 1 and len(outcome.dead) == 6
        service.project()
        rows = service.store.conn.execute("SELECT * FROM events ORDER BY position").fetchall()
    finally:
        service.close()
    service = TimelineService(Settings(db=reference, validators=0))
    try:
        assert rows == service.store.conn.execute("SELECT * FROM events ORDER BY position").fetchall()
    finally:
        service.close()
    assert dump_tables(path) == dump_tables(reference)


def test_a_killed_validating_process_costs_a_batch_validated_in_process(validators, caplog):
    entries = _entries()
    expected = prepare_here(entries)
    _same(expected, validators.prepare(entries))
    pool = validators._pool
    assert pool is not None
    for pid in list(pool._processes):  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    _same(expected, validators.prepare(entries))  # validated here instead
    assert "validating process failed" in caplog.text
    _same(expected, validators.prepare(entries))  # and a new process for the next batch
    assert validators._pool is not None and validators._pool is not pool
    assert all(p.is_alive() for p in validators._pool._processes.values())  # type: ignore[attr-defined]


def test_no_validating_process_validates_in_the_thread():
    v = Validators(0)
    _same(prepare_here(_entries()), v.prepare(_entries()))
    assert v._pool is None
    v.close()


def test_candidates_built_here_carry_their_body():
    (entry_id, fields), *_ = _entries()
    prepared = prepare_here([(entry_id, fields)])
    (candidate,) = prepared.candidates
    assert isinstance(candidate, Candidate) and candidate.event.body is not None
    assert candidate.body is candidate.event.body
    assert not isinstance(candidate, DeadLetter)
