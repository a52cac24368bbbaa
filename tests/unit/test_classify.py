"""Stream entries → Candidate or DeadLetter (docs/contract.md §3), and publisher.prepare/encode."""

from __future__ import annotations

import json
from typing import Any

import pytest

from events.store import Candidate
from timeline.publisher import encode, prepare
from timeline.entries import RepeatedFields
from timeline.service import DeadLetter, classify

ENTRY_ID = b"1716540000000-0"

OUTAGE: dict[str, Any] = {
    "id": "x-outage-2025-05-24",
    "kind": "outage",
    "occurred_at": "2025-05-24",
    "headline": "X is down for about two hours worldwide",
    "entities": [{"id": "x", "name": "X", "type": "organization", "role": "subject"}],
    "details": {"service": "X", "duration_minutes": 120, "cause": "unknown"},
}

# the same event as a scraper might write it: odd key order and white space, non-ASCII as is
RAW_OUTAGE = (
    '{ "details" : {"cause":"unknown","duration_minutes":120,"service":"X"},\n'
    '  "kind":"outage", "id":"x-outage-2025-05-24", "occurred_at":"2025-05-24",\n'
    '  "headline":"X is down for about two hours worldwide",\n'
    '  "entities":[{"role":"subject","type":"organization","name":"X","id":"x"}],\n'
    '  "summary": "Ça ne marche pas"  }\n'
).encode()


def dead(item: Candidate | DeadLetter) -> DeadLetter:
    assert isinstance(item, DeadLetter), item
    return item


# --------------------------------------------------------------------------------------------
# no_event
# --------------------------------------------------------------------------------------------


def test_entry_without_event_field_is_no_event_with_its_fields_as_json() -> None:
    fields = {b"payload": json.dumps(OUTAGE).encode(), b"source": b"scraper-7"}
    letter = dead(classify(ENTRY_ID, fields))
    assert letter.reason == "no_event"
    assert letter.source_id == ENTRY_ID
    assert json.loads(letter.event) == {"payload": json.dumps(OUTAGE), "source": "scraper-7"}
    assert "event" in letter.error


@pytest.mark.parametrize("fields", [{}, None])
def test_entry_without_fields_is_no_event(fields: dict[bytes, bytes] | None) -> None:
    letter = dead(classify(ENTRY_ID, fields))
    assert letter.reason == "no_event"
    assert json.loads(letter.event) == {}


def test_no_event_comes_before_every_other_check() -> None:
    fields = {b"data": b"{" * (300 * 1024), b"Event": b"not json"}
    letter = dead(classify(ENTRY_ID, fields))
    assert letter.reason == "no_event"
    assert set(json.loads(letter.event)) == {"data", "Event"}


def test_no_event_with_non_utf8_field_values_is_still_a_json_object() -> None:
    letter = dead(classify(ENTRY_ID, {b"blob": b"\xff\xfeabc", b"name": "Société".encode()}))
    assert letter.reason == "no_event"
    decoded = json.loads(letter.event)
    assert decoded["name"] == "Société"
    assert isinstance(decoded["blob"], str)


def repeated(*pairs: tuple[bytes, bytes]) -> RepeatedFields:
    """Fields as ``timeline.entries`` reads an entry that names one twice."""
    flat = [part for pair in pairs for part in pair]
    it = iter(flat)
    return RepeatedFields(dict(zip(it, it)), flat)


def test_two_event_fields_are_schema_with_every_field_kept() -> None:
    valid = json.dumps(OUTAGE).encode()
    letter = dead(classify(ENTRY_ID, repeated((b"event", valid), (b"note", b"n"), (b"event", b"garbage"))))
    assert (letter.reason, letter.error) == ("schema", "event: the entry has 2 'event' fields; publish one event per entry")
    assert json.loads(letter.event, object_pairs_hook=list) == [
        ("event", valid.decode()), ("note", "n"), ("event", "garbage")
    ]


def test_one_event_field_and_another_named_twice_is_judged_as_usual() -> None:
    item = classify(ENTRY_ID, repeated((b"note", b"1"), (b"event", RAW_OUTAGE), (b"note", b"2")))
    assert isinstance(item, Candidate) and item.raw == RAW_OUTAGE


def test_no_event_keeps_each_value_of_a_repeated_field() -> None:
    letter = dead(classify(ENTRY_ID, repeated((b"evnt", b"a"), (b"evnt", "b\u00e9".encode()))))
    assert letter.reason == "no_event"
    assert json.loads(letter.event, object_pairs_hook=list) == [("evnt", "a"), ("evnt", "b\u00e9")]


def test_the_fields_json_of_distinct_names_is_what_json_dumps_writes() -> None:
    fields = {b"payload": b'{"a": "\\"}', b"n": "é\t\x00".encode(), b"\xff": b"\xfe"}
    text = {k.decode(errors="backslashreplace"): v.decode(errors="backslashreplace") for k, v in fields.items()}
    assert dead(classify(ENTRY_ID, fields)).event == json.dumps(text, ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------------
# too_large, bad_json, schema: the original bytes untouched
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"{" * (256 * 1024 + 1), "too_large", id="too-large-bad-json"),
        pytest.param(json.dumps({**OUTAGE, "summary": "s" * (300 * 1024)}).encode(), "too_large", id="too-large-event"),
        pytest.param(b"{not json", "bad_json", id="bad-json"),
        pytest.param(b"", "bad_json", id="empty"),
        pytest.param(b'{"kind": "report", "value": NaN}', "bad_json", id="nan"),
        pytest.param(b"\xff\xfe\x00", "bad_json", id="not-utf8"),
        pytest.param(b'{"kind": "rumour"}', "schema", id="bad-kind"),
        pytest.param(b"[" + json.dumps(OUTAGE).encode() + b"]", "schema", id="array"),
        pytest.param(json.dumps({**OUTAGE, "data": {}}).encode(), "schema", id="data-field"),
    ],
)
def test_rejected_event_keeps_its_original_bytes(raw: bytes, reason: str) -> None:
    letter = dead(classify(ENTRY_ID, {b"event": raw, b"other": b"x"}))
    assert letter.reason == reason
    assert letter.event == raw
    assert letter.source_id == ENTRY_ID
    assert letter.error


def test_schema_error_names_the_field() -> None:
    raw = json.dumps({**OUTAGE, "details": {"service": "X", "duration_minutes": "120"}}).encode()
    letter = dead(classify(ENTRY_ID, {b"event": raw}))
    assert letter.reason == "schema"
    assert "details.duration_minutes" in letter.error


def test_too_large_is_over_256_kib_not_at() -> None:
    at_limit = json.dumps(OUTAGE).encode()
    at_limit += b" " * (256 * 1024 - len(at_limit))
    assert isinstance(classify(ENTRY_ID, {b"event": at_limit}), Candidate)
    assert dead(classify(ENTRY_ID, {b"event": at_limit + b" "})).reason == "too_large"


def test_deeply_nested_event_is_dead_lettered_not_raised() -> None:
    """An entry that can never be stored must become a dead letter (§3), not an exception
    that leaves it pending to be retried forever."""
    raw = b"[" * 100_000 + b"]" * 100_000
    letter = dead(classify(ENTRY_ID, {b"event": raw}))
    assert letter.reason in ("bad_json", "schema")
    assert letter.event == raw


def test_dead_letter_fields_are_those_of_the_contract() -> None:
    letter = dead(classify(ENTRY_ID, {b"event": b"{oops"}))
    fields = letter.fields()
    assert set(fields) == {"event", "reason", "error", "source_id"}
    assert fields["event"] == b"{oops"
    assert fields["reason"] == b"bad_json"
    assert fields["source_id"] == ENTRY_ID
    assert fields["error"] == letter.error.encode()
    assert all(isinstance(v, bytes) for v in fields.values())


# --------------------------------------------------------------------------------------------
# valid
# --------------------------------------------------------------------------------------------


def test_valid_event_is_a_candidate_with_the_exact_raw_bytes() -> None:
    item = classify(ENTRY_ID, {b"event": RAW_OUTAGE, b"trace": b"abc"})
    assert isinstance(item, Candidate)
    assert item.raw == RAW_OUTAGE
    assert item.event.id == "x-outage-2025-05-24"
    assert item.event.kind == "outage"
    assert item.event.body["summary"] == "Ça ne marche pas"


def test_candidate_without_id_gets_the_derived_id() -> None:
    without_id = {k: v for k, v in OUTAGE.items() if k != "id"}
    a = classify(b"1-0", {b"event": json.dumps(without_id).encode()})
    b = classify(b"2-0", {b"event": json.dumps(without_id, sort_keys=True, indent=2).encode()})
    assert isinstance(a, Candidate) and isinstance(b, Candidate)
    assert a.event.id == b.event.id
    assert a.event.id.startswith("outage-")


# --------------------------------------------------------------------------------------------
# publisher.prepare and encode
# --------------------------------------------------------------------------------------------


def test_prepare_reports_rejected_indexes_and_accepted_ids() -> None:
    raw_bytes = RAW_OUTAGE
    raw_text = json.dumps({**OUTAGE, "id": "from-text"}, indent=1, ensure_ascii=False)
    events: list[Any] = [
        {**OUTAGE, "id": "first"},  # 0 valid dict
        {**OUTAGE, "headline": ""},  # 1 schema
        raw_bytes,  # 2 valid bytes
        "{not json",  # 3 bad_json
        b"{" * (256 * 1024 + 1),  # 4 too_large
        raw_text,  # 5 valid text
        [OUTAGE],  # 6 schema: a list is not an event
    ]
    valid, rejected = prepare(events)
    assert [(r.index, r.reason) for r in rejected] == [(1, "schema"), (3, "bad_json"), (4, "too_large"), (6, "schema")]
    assert "headline" in rejected[0].error
    assert [(index, event_id) for index, event_id, _ in valid] == [
        (0, "first"),
        (2, "x-outage-2025-05-24"),
        (5, "from-text"),
    ]
    by_index = {index: data for index, _, data in valid}
    assert by_index[2] == raw_bytes  # given bytes are kept exactly
    assert by_index[5] == raw_text.encode("utf-8")  # given text, exactly, as UTF-8
    assert json.loads(by_index[0]) == {**OUTAGE, "id": "first"}


def test_prepare_numbers_from_start() -> None:
    valid, rejected = prepare([OUTAGE, {"kind": "nope"}], start=1000)
    assert [index for index, _, _ in valid] == [1000]
    assert [r.index for r in rejected] == [1001]
    assert rejected[0].as_dict() == {"index": 1001, "reason": "schema", "error": rejected[0].error}


def test_prepare_of_nothing() -> None:
    assert prepare([]) == ([], [])


def test_encode_dict_derives_the_same_id_as_the_consumer() -> None:
    without_id = {k: v for k, v in OUTAGE.items() if k != "id"}
    event_id, data = encode(without_id)
    item = classify(ENTRY_ID, {b"event": data})
    assert isinstance(item, Candidate)
    assert item.event.id == event_id
    assert item.raw == data


def test_encode_large_dict_is_too_large() -> None:
    valid, rejected = prepare([{**OUTAGE, "summary": "s" * (300 * 1024)}])
    assert valid == []
    assert [(r.index, r.reason) for r in rejected] == [(0, "too_large")]
