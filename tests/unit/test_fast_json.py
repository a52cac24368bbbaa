"""orjson on the hot path: the same events, texts and hashes as the standard library.

Stored content hashes must not change with the JSON library: an event sent again must still be a
duplicate. orjson differs from ``json`` on floats (notation) and on integers over 64 bits (read
as floats); events that may hold either are read and written the standard way. These tests
compare the two paths, with types compared exactly (``1 == 1.0 == True`` in Python).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.ids import canonical_bytes, canonical_json, compact_json
from events.models import (
    MODELS,
    EventRejected,
    ParsedEvent,
    decode_json,
    parse_event,
    parse_event_bytes,
)

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
integers = st.integers(min_value=-(2**70), max_value=2**70) | st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e-05, 1e16, 1.5e300, 0.1, 100.0, -0.0])


def json_values(numbers: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | numbers | any_text
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
        max_leaves=20,
    )


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(json_values(integers))
def test_values_without_floats_are_written_byte_for_byte_as_json_writes_them(value: Any) -> None:
    try:
        expected = canonical_json(value).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8 either way
        return
    assert canonical_bytes(value, plain=True) == expected
    assert compact_json(value, plain=True) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@settings(max_examples=200, deadline=None)
@given(json_values(floats | integers))
def test_values_with_floats_are_written_as_json_writes_them_when_not_plain(value: Any) -> None:
    try:
        expected = canonical_json(value).encode("utf-8")
    except UnicodeEncodeError:
        return
    assert canonical_bytes(value, plain=False) == expected


def test_orjson_would_write_floats_otherwise() -> None:
    """Why ``plain`` matters: the fast writer is not used for floats."""
    assert canonical_json({"v": 1e-05}) == '{"v":1e-05}'
    assert canonical_bytes({"v": 1e-05}, plain=True) != b'{"v":1e-05}'


# --- whole events ---------------------------------------------------------------------------

BASE: dict[str, dict[str, Any]] = {
    "outage": {
        "kind": "outage",
        "occurred_at": "2024-03-05",
        "headline": "Cloud region down",
        "entities": [{"name": "Ëxample Cloud", "type": "organization", "role": "subject"}],
        "details": {"service": "compute", "duration_minutes": 5},
    },
    "political_move": {
        "kind": "political_move",
        "occurred_at": "2024-03",
        "headline": "Minister pledges aid",
        "entities": [{"name": "Ministry of Finance", "type": "organization", "role": "actor"}],
        "details": {"actor": "ministry-of-finance", "action": "contribution", "amount": {"value": 1, "currency": "EUR"}},
    },
    "correction": {
        "kind": "correction",
        "occurred_at": "2024-03-06",
        "details": {"corrects": "outage-1", "changes": {"headline": "Storage down", "details": {"service": "storage"}}},
    },
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(BASE)))
    event = json.loads(json.dumps(BASE[kind]))
    number = draw(floats | integers | st.booleans() | st.none())
    if kind == "outage":
        event["details"]["duration_minutes"] = number
    elif kind == "political_move":
        event["details"]["amount"]["value"] = number
    else:
        event["details"]["changes"]["details"] = draw(json_values(floats | integers))
    headline = draw(st.sampled_from(["Cloud region down", "ß “quoted” \u2028 \U0001f600", "a\\b\"c\x1f"]))
    if kind == "correction":
        event["details"]["changes"]["headline"] = headline
    else:
        event["headline"] = headline
    if draw(st.booleans()):
        event["id"] = draw(st.sampled_from(["e-1", "outage:2024:1"]))
    return event


def outcome(parse: Any, arg: Any) -> tuple[Any, ...]:
    try:
        parsed: ParsedEvent = parse(arg)
    except EventRejected as exc:
        return ("rejected", exc.reason, exc.error)
    return ("stored", parsed.id, parsed.kind, parsed.content_hash, json.dumps(parsed.body))


@settings(max_examples=400, deadline=None)
@given(events(), st.booleans())
def test_events_parse_the_same_on_both_paths(event: dict[str, Any], ascii_only: bool) -> None:
    try:
        text = json.dumps(event, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only escaped is it in a UTF-8 text
        text = json.dumps(event).encode("utf-8")
    # the standard path: json.loads, then the model (how every event was parsed before orjson)
    assert outcome(parse_event_bytes, text) == outcome(lambda t: parse_event(json.loads(t)), text)


def test_the_fast_path_is_taken_for_plain_events_only() -> None:
    outage = json.dumps(BASE["outage"]).encode()
    assert parse_event_bytes(outage).plain
    move = dict(BASE["political_move"])
    move["details"] = {**move["details"], "amount": {"value": 1e-05, "currency": "EUR"}}
    parsed = parse_event_bytes(json.dumps(move).encode())
    assert not parsed.plain
    assert json.loads(compact_json(parsed.body, plain=parsed.plain))["details"]["amount"]["value"] == 1e-05
    big = dict(BASE["outage"], details={"service": "compute", "duration_minutes": 2**70})
    parsed = parse_event_bytes(json.dumps(big).encode())  # orjson reads 2**70 as a float
    assert parsed.body["details"]["duration_minutes"] == 2**70


def _loose_places(schema: dict[str, Any], path: str, defs: dict[str, Any], out: set[str], seen: tuple[str, ...]) -> None:
    """Paths where a schema admits a JSON number that is not an integer, or any value at all."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            _loose_places(defs[name], path, defs, out, (*seen, name))
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            _loose_places(sub, path, defs, out, seen)
    if schema.get("type") == "number" or not ({"type", "anyOf", "oneOf", "allOf", "const", "enum"} & set(schema)):
        out.add(path)
    if schema.get("type") == "object" and schema.get("additionalProperties", False) not in (False, None):
        extra = schema["additionalProperties"]
        out.add(f"{path}.*") if extra is True else _loose_places(extra, f"{path}.*", defs, out, seen)
    for key, sub in schema.get("properties", {}).items():
        _loose_places(sub, f"{path}.{key}", defs, out, seen)
    if isinstance(schema.get("items"), dict):
        _loose_places(schema["items"], f"{path}[]", defs, out, seen)


def test_floats_fit_only_where_may_hold_floats_looks() -> None:
    """A new float or free-form field must be added to ``events.models.may_hold_floats``."""
    places: set[str] = set()
    for kind, model in MODELS.items():
        schema = model.model_json_schema()
        _loose_places(schema, kind, schema.get("$defs", {}), places, ())
    assert places == {"political_move.details.amount.value", "correction.details.changes.details.*"}


def test_bad_json_reads_as_it_always_has() -> None:
    for text in [b'{"a":1,}', b'{"a":"x\ny"}', b"\xff{}", b'{"a":NaN}', b'{"kind":"outage"', b"[" * 5000]:
        standard = outcome(lambda t: parse_event(decode_json(t)), text)
        assert standard[:2] == ("rejected", "bad_json")
        assert outcome(parse_event_bytes, text) == standard


def test_a_lone_surrogate_in_free_form_details_is_refused_naming_the_field() -> None:
    """json reads "\\ud800" alone into a str that cannot be stored as UTF-8. Typed text fields
    refuse it (test_models); a correction's free-form ``changes.details`` used to fail the hash
    with UnicodeEncodeError instead of a rejection."""
    from timeline.service import DeadLetter, classify

    event = json.loads(json.dumps(BASE["correction"]))
    event["details"]["changes"]["details"] = {"service": "\ud800"}
    text = json.dumps(event).encode()
    item = classify(b"1-0", {b"event": text})
    assert isinstance(item, DeadLetter) and item.reason == "schema", item
    assert item.error.startswith("details.changes.details.service: ") and "surrogate" in item.error
    event["details"]["changes"]["details"] = {"service": "\U0001f600", "note": "\\ud800 is just text"}
    text = json.dumps(event).encode()  # the emoji as an escaped pair \ud83d\ude00
    assert b"\\ud83d\\ude00" in text
    parsed = parse_event_bytes(text)
    assert parsed.body["details"]["changes"]["details"]["service"] == "\U0001f600"
    with pytest.raises(EventRejected) as caught:
        parse_event_bytes('{"kind": "outage", "headline": "\ud800"}')  # str with a raw surrogate
    assert caught.value.reason == "bad_json"
