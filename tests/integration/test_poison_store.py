"""The store judges each candidate of a batch on its own (issue 14, point 1), on a real SQLite
file and a real PostgreSQL: a candidate that cannot be checked against the stored events (one
built elsewhere, by a validating process of another version, say) is refused as ``schema``; the
rest of its batch is stored; nothing raises, so the stream batch is settled rather than retried
for ever."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from events.models import ParsedEvent, parse_event_bytes
from events.backend import open_store
from events.store import Candidate, EventStore


@pytest.fixture
def store(backend: str):
    """The store on each backend in turn (tests/conftest.py ``backend``)."""
    with open_store(backend) as s:
        yield s


def candidate(event: dict) -> Candidate:
    raw = json.dumps(event).encode()
    return Candidate(parse_event_bytes(raw), raw)


def news(event_id: str) -> Candidate:
    return candidate({"id": event_id, "kind": "report", "occurred_at": "2025", "headline": event_id,
                      "entities": [{"name": "A"}]})


def correction(event_id: str, target: str) -> Candidate:
    return candidate({"id": event_id, "kind": "correction", "occurred_at": "2025",
                      "details": {"corrects": target, "changes": {"headline": "corrected"}}})


def unvalidated(base: Candidate, **body: object) -> Candidate:
    """The candidate with its parsed event changed as parse_event never would."""
    event: ParsedEvent = base.event
    return Candidate(replace(event, body={**event.body, **body}, id=str(body.get("id", event.id))), base.raw)


def test_a_correction_of_itself_is_refused_by_the_store_too(store: EventStore) -> None:
    own = unvalidated(correction("c-0", "elsewhere"), id="c-self",
                      details={"corrects": "c-self", "changes": {"headline": "x"}})
    results = store.append([news("n-1"), own, news("n-2")])
    assert [r.status for r in results] == ["stored", "rejected", "stored"]
    assert (results[1].reason, results[1].error.split(":")[0]) == ("schema", "details.corrects")
    assert store.get("c-self") is None


def test_a_candidate_that_cannot_be_checked_is_refused_and_its_batch_goes_on(store: EventStore) -> None:
    store.append([news("target")])
    broken = unvalidated(correction("c-1", "target"), details={"corrects": "target"})  # no "changes"
    results = store.append([news("before"), broken, correction("c-2", "target"), news("after")])
    assert [r.status for r in results] == ["stored", "rejected", "stored", "stored"]
    assert results[1].reason == "schema" and "cannot be checked" in (results[1].error or "")
    assert "KeyError" in (results[1].error or "")
    assert [e.event_id for e in store.read(0)] == ["target", "before", "c-2", "after"]
