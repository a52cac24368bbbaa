"""history.fold: an event as it stands, its corrections and retraction applied in store order."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from events.history import fold
from events.models import parse_event
from events.store import StoredEvent

TARGET = "x-outage-2025-05-24"


def outage_raw() -> dict[str, Any]:
    return {
        "id": TARGET,
        "kind": "outage",
        "occurred_at": "2025-05-24",
        "headline": "X is down for about two hours worldwide",
        "summary": "Users around the world report failures; failover did not work.",
        "entities": [
            {"id": "x", "name": "X", "type": "organization", "role": "subject"},
            {"name": "Downdetector", "type": "organization", "role": "mentioned"},
        ],
        "details": {"service": "X", "duration_minutes": 120, "cause": "unknown"},
    }


def stored(position: int, raw: dict[str, Any]) -> StoredEvent:
    parsed = parse_event(raw)
    return StoredEvent(
        position=position,
        event_id=parsed.id,
        kind=parsed.kind,
        target_id=parsed.target,
        recorded_at=f"2025-05-{24 + position // 10:02d}T00:00:{position % 60:02d}.000000Z",
        body=parsed.body,
    )


def correction(position: int, changes: dict[str, Any], reason: str | None = None) -> StoredEvent:
    details: dict[str, Any] = {"corrects": TARGET, "changes": changes}
    if reason is not None:
        details["reason"] = reason
    return stored(
        position, {"id": f"corr-{position}", "kind": "correction", "occurred_at": "2025-05-25", "details": details}
    )


def retraction(position: int, reason: str = "the report was a hoax") -> StoredEvent:
    return stored(
        position,
        {
            "id": f"retr-{position}",
            "kind": "retraction",
            "occurred_at": "2025-05-26",
            "details": {"retracts": TARGET, "reason": reason},
        },
    )


@pytest.fixture
def event() -> StoredEvent:
    return stored(1, outage_raw())


def test_no_editorial_events(event: StoredEvent) -> None:
    state = fold(event, [])
    assert state.status == "active"
    assert state.history == []
    assert state.body == event.body


def test_one_correction(event: StoredEvent) -> None:
    fix = correction(5, {"headline": "X is down for three hours"}, reason="longer than reported")
    state = fold(event, [fix])
    assert state.status == "corrected"
    assert state.body["headline"] == "X is down for three hours"
    assert state.body["summary"] == event.body["summary"]
    assert state.body["id"] == TARGET
    assert state.history == [
        {
            "event_id": "corr-5",
            "kind": "correction",
            "occurred_at": "2025-05-25",
            "position": 5,
            "recorded_at": fix.recorded_at,
            "reason": "longer than reported",
            "changes": {"headline": "X is down for three hours"},
            "applied": True,
        }
    ]


def test_corrections_apply_in_store_order_and_the_later_wins(event: StoredEvent) -> None:
    first = correction(5, {"headline": "First fix", "details": {"service": "X", "duration_minutes": 180}})
    second = correction(9, {"headline": "Second fix"})
    state = fold(event, [first, second])
    assert state.body["headline"] == "Second fix"
    # what the later one does not name stays as the earlier one left it
    assert state.body["details"] == {"service": "X", "duration_minutes": 180}
    assert [h["event_id"] for h in state.history] == ["corr-5", "corr-9"]
    assert [h["position"] for h in state.history] == [5, 9]
    assert all(h["applied"] for h in state.history)
    assert state.status == "corrected"


def test_order_given_is_the_order_applied(event: StoredEvent) -> None:
    a = correction(5, {"headline": "A"})
    b = correction(9, {"headline": "B"})
    assert fold(event, [a, b]).body["headline"] == "B"
    assert fold(event, [b, a]).body["headline"] == "A"


def test_correction_can_remove_an_optional_field(event: StoredEvent) -> None:
    state = fold(event, [correction(5, {"summary": None})])
    assert "summary" not in state.body
    assert state.history[0]["changes"] == {"summary": None}


def test_retraction_sets_status_and_keeps_history(event: StoredEvent) -> None:
    fix = correction(5, {"headline": "X is down for three hours"})
    retract = retraction(7, reason="the report was a hoax")
    state = fold(event, [fix, retract])
    assert state.status == "retracted"
    assert state.body["headline"] == "X is down for three hours"  # the body as last corrected
    assert [h["kind"] for h in state.history] == ["correction", "retraction"]
    last = state.history[-1]
    assert last["event_id"] == "retr-7"
    assert last["position"] == 7
    assert last["reason"] == "the report was a hoax"
    assert last["applied"] is True
    assert last["occurred_at"] == "2025-05-26"
    assert "changes" not in last


def test_retraction_alone(event: StoredEvent) -> None:
    state = fold(event, [retraction(3)])
    assert state.status == "retracted"
    assert state.body == event.body
    assert len(state.history) == 1


def test_correction_after_retraction_keeps_it_retracted(event: StoredEvent) -> None:
    state = fold(event, [retraction(3), correction(5, {"headline": "Later fix"})])
    assert state.status == "retracted"
    assert state.body["headline"] == "Later fix"
    assert [h["event_id"] for h in state.history] == ["retr-3", "corr-5"]


def test_invalid_correction_is_recorded_not_applied(event: StoredEvent) -> None:
    bad = correction(5, {"details": {"cause": "ddos"}}, reason="cause found")  # no service: breaks a rule
    state = fold(event, [bad])
    assert state.body == event.body
    assert state.status == "active"
    [entry] = state.history
    assert entry["applied"] is False
    assert entry["event_id"] == "corr-5"
    assert entry["changes"] == {"details": {"cause": "ddos"}}
    assert entry["reason"] == "cause found"
    assert "details.service" in entry["error"]


def test_invalid_correction_between_valid_ones(event: StoredEvent) -> None:
    first = correction(5, {"headline": "First fix"})
    bad = correction(6, {"entities": [{"name": "Someone"}], "details": {"service": "X", "claimed_by": "x"}})
    last = correction(8, {"summary": "Better summary"})
    state = fold(event, [first, bad, last])
    assert [h["applied"] for h in state.history] == [True, False, True]
    assert "details.claimed_by" in state.history[1]["error"]
    assert state.body["headline"] == "First fix"
    assert state.body["summary"] == "Better summary"
    assert state.body["entities"] == event.body["entities"]  # the invalid one changed nothing
    assert state.status == "corrected"


def test_statement_correction_dropping_the_speaker_is_not_applied() -> None:
    statement = stored(
        1,
        {
            "id": TARGET,
            "kind": "statement",
            "occurred_at": "2025-05-24T14:30Z",
            "headline": "Musk blames a cyberattack",
            "entities": [{"name": "Elon Musk", "type": "person", "role": "subject"}],
            "details": {"speaker": "elon-musk", "quote": "There was a massive cyberattack."},
        },
    )
    state = fold(statement, [correction(2, {"entities": [{"name": "X"}]})])
    assert state.history[0]["applied"] is False
    assert "details.speaker" in state.history[0]["error"]
    assert state.body == statement.body


def test_fold_does_not_modify_its_inputs(event: StoredEvent) -> None:
    fix = correction(5, {"headline": "Fixed", "entities": [{"id": "x", "name": "X", "role": "subject"}]})
    body_before = copy.deepcopy(event.body)
    fix_before = copy.deepcopy(fix.body)
    fold(event, [fix, retraction(6)])
    assert event.body == body_before
    assert fix.body == fix_before


def test_fold_is_repeatable(event: StoredEvent) -> None:
    editorial = [correction(5, {"headline": "A"}), correction(6, {"details": {}}), retraction(7)]
    first = fold(event, editorial)
    second = fold(event, editorial)
    assert (first.body, first.status, first.history) == (second.body, second.status, second.history)
