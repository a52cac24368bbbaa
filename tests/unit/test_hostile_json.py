"""Poison that used to break the validator (issue 14, point 1): every input is accepted or
rejected with a reason of docs/contract.md §3 and a message, never an exception of another kind.

The hostile JSON of ``tests/hostile.py`` by name, then generated (hypothesis): extreme numbers,
deep nesting, lone surrogates in keys and values, extreme date offsets and repeated keys in the
raw text, in every place of an event. The same through ``classify`` (a dead letter whose fields
Redis can take), the stream batch path of a validating process, and the publisher's ``prepare``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events.models import EventRejected, ParsedEvent, decode_json, parse_event, parse_event_bytes, repeated_keys
from events.store import Candidate
from hostile import BOUNDARY, POISON, Object, Raw, correction, report, write
from timeline.publisher import encode, prepare
from timeline.service import DeadLetter, classify, classify_flat, prepare_here, restore_flat


def judged(data: bytes | str) -> ParsedEvent | EventRejected:
    """The event, or its rejection; any other exception fails the test."""
    try:
        return parse_event_bytes(data)
    except EventRejected as exc:
        return exc


def assert_fit_for_redis(letter: DeadLetter) -> None:
    """A dead letter's fields are bytes Redis takes, its error a UTF-8 message."""
    fields = letter.fields()
    assert set(fields) == {"event", "reason", "error", "source_id"}
    assert all(isinstance(v, bytes) for v in fields.values())
    assert fields["reason"] in (b"no_event", b"too_large", b"bad_json", b"schema")
    assert fields["error"].decode("utf-8")


# --------------------------------------------------------------------------------------------
# the named cases
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "text", "reason", "field"), POISON, ids=[p[0] for p in POISON])
def test_poison_is_rejected_with_its_reason_naming_the_field(name: str, text: str, reason: str, field: str) -> None:
    data = text.encode("utf-8")
    outcome = judged(data)
    assert isinstance(outcome, EventRejected), f"{name}: accepted as {outcome}"
    assert (outcome.reason, field in outcome.error) == (reason, True), outcome.error
    outcome.error.encode("utf-8")  # a message any writer can write: no lone surrogate
    assert len(outcome.error) <= 2_000
    letter = classify(b"1-0", {b"event": data})
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.error, letter.event) == (reason, outcome.error, data)
    assert_fit_for_redis(letter)


@pytest.mark.parametrize(("name", "text", "reason", "field"), POISON, ids=[p[0] for p in POISON])
def test_poison_is_rejected_by_the_publisher_and_the_api_path(name: str, text: str, reason: str, field: str) -> None:
    """``prepare`` takes what a scraper passes (text, bytes) and what ``POST /events`` decoded."""
    valid, rejected = prepare([text, text.encode()])
    assert valid == [] and [(r.index, r.reason) for r in rejected] == [(0, reason), (1, reason)]
    try:
        value = decode_json(text.encode())
    except EventRejected as exc:
        assert exc.reason == "bad_json"
        return
    if "more than once" in judged(text).error:  # type: ignore[union-attr]
        # a decoded value keeps one value per key: POST /events looks for them in the body
        ((path, key),) = repeated_keys(text, value)
        assert ".".join(map(str, (*path, key))).endswith(field)
        return
    valid, rejected = prepare([value])
    assert valid == [] and len(rejected) == 1 and rejected[0].reason in ("bad_json", "schema")
    rejected[0].error.encode("utf-8")


@pytest.mark.parametrize(("name", "event"), BOUNDARY, ids=[b[0] for b in BOUNDARY])
def test_values_at_the_edges_are_accepted(name: str, event: dict[str, Any]) -> None:
    parsed = parse_event_bytes(write(event).encode())
    Candidate(parsed, write(event).encode())  # the store's row parts can be computed
    if parsed.kind == "report":
        assert parsed.occurred.start_key <= parsed.occurred.end_key


def test_a_stream_batch_with_poison_settles_every_entry() -> None:
    """The entries around poison are candidates; each poison entry is one dead letter, in the
    service's thread and through a validating process's flat answer alike."""
    entries: list[tuple[bytes, dict[bytes, bytes] | None]] = []
    for i, (_, text, _, _) in enumerate(POISON):
        entries.append((f"1-{2 * i}".encode(), {b"event": write(report(id=f"ok-{i}")).encode()}))
        entries.append((f"1-{2 * i + 1}".encode(), {b"event": text.encode()}))
    ids = [entry_id for entry_id, _ in entries]
    for prepared in (prepare_here(entries), restore_flat(ids, classify_flat(entries), [fields[b"event"] for _, fields in entries])):
        assert [c.event.id for c in prepared.candidates] == [f"ok-{i}" for i in range(len(POISON))]
        # each candidate with its own entry's bytes (a flat answer carries none: restored from the entries)
        assert [c.raw for c in prepared.candidates] == [fields[b"event"] for _, fields in entries[0::2]]
        assert [d.source_id for d in prepared.dead] == ids[1::2]
        assert [d.reason for d in prepared.dead] == [p[2] for p in POISON]


def test_a_correction_or_retraction_of_itself_is_refused() -> None:
    for event, field in [
        (correction({"headline": "x"}, corrects="same", id="same"), "details.corrects"),
        ({"id": "same", "kind": "retraction", "occurred_at": "2025", "details": {"retracts": "same", "reason": "r"}},
         "details.retracts"),
    ]:
        with pytest.raises(EventRejected) as caught:
            parse_event(event)
        assert caught.value.reason == "schema" and caught.value.error.startswith(field), caught.value.error
    assert parse_event(correction({"headline": "x"}, corrects="other", id="same")).target == "other"


def test_a_repeated_key_is_refused_however_it_is_written() -> None:
    plain = write(report(id="dup"))
    assert parse_event_bytes(plain.encode()).id == "dup"
    for text in [
        plain[:-1] + ',"id":"dup"}',  # the same value again
        plain[:-1] + ', "id" :"other"}',  # white space before the colon
        plain[:-1] + ',"\\u0069d":"other"}',  # the key escaped
        plain.replace('"name":"A"', '"name":"A","name":"A:B"'),  # colons inside the strings
        plain.replace('"headline":"h"', '"headline":"h\\u003a","headline":"h:"'),
    ]:
        outcome = judged(text.encode())
        assert isinstance(outcome, EventRejected) and outcome.reason == "schema", (text, outcome)
        assert "more than once" in outcome.error, outcome.error
    # escaped colons alone are no repeated key
    assert parse_event_bytes(plain.replace('"headline":"h"', '"headline":"a\\u003ab"').encode()).body["headline"] == "a:b"


def test_bad_json_still_comes_before_a_repeated_key() -> None:
    assert judged(b'{"kind":"report","kind":"report",').reason == "bad_json"  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# generated hostile JSON
# --------------------------------------------------------------------------------------------

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
hostile_text = st.one_of(
    st.text(max_size=8),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=8),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=3), surrogates, st.text(max_size=3)),
    st.sampled_from(["kind", "id", "details", "changes", "data", "occurred_at", "name", ""]),
)
offsets = st.sampled_from(["Z", "+00:01", "-00:01", "+23:59", "-23:59", "+14:00", "-12:00", "+2400", "-0000"])
hostile_dates = st.one_of(
    st.builds(
        lambda y, m, d, time, offset: f"{y:04d}-{m:02d}-{d:02d}T{time}{offset}",
        st.sampled_from([0, 1, 2, 1970, 2025, 9998, 9999]),
        st.sampled_from([1, 2, 12, 13]),
        st.sampled_from([1, 28, 29, 31, 32]),
        st.sampled_from(["00:00", "23:59", "23:59:59", "23:59:59.999999999", "00:00:00.000001", "24:00"]),
        offsets,
    ),
    st.sampled_from(["0000", "0001", "9999", "9999-12", "9999-12-31", "0001-01-01", "0000-01-01"]),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.integers(min_value=-(2**64), max_value=-(2**63) + 2),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([Raw("1e999"), Raw("-1e999"), Raw("1e-999"), Raw("1E+308"), Raw("-0"), Raw("0.0e0"),
                     Raw("9" * 400), Raw("-" + "9" * 4301), Raw("1" + "0" * 30 + ".5e-30")]),
)


def deep(depth: int, lists: bool) -> Raw:
    opening, closing = ("[", "]") if lists else ('{"k":', "}")
    return Raw(opening * depth + "0" + closing * depth)


leaves = st.one_of(st.none(), st.booleans(), numbers, hostile_text, hostile_dates,
                   st.sampled_from(["2025-05-24T10:00+02:00", "a", "https://a.example/", "outage", "x-1"]),
                   st.builds(deep, st.sampled_from([50, 63, 64, 65, 254, 255, 256, 300, 1100]), st.booleans()))


def objects(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Object]:
    """Objects whose text may repeat a key."""
    pairs = st.lists(st.tuples(hostile_text, inner), max_size=4)
    return st.builds(lambda p, again: Object(tuple(p) + (tuple(p[:1]) if again else ())), pairs, st.booleans())


values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | objects(inner), max_leaves=12)


def put(event: Any, path: tuple[Any, ...], value: Any) -> Any:
    """The event with the value at a path (made as it goes), or with the key repeated."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(event, dict):
        return {**event, head: put(event.get(head, {}), rest, value)}
    if isinstance(event, list) and isinstance(head, int) and event:
        return [put(event[0], rest, value)]
    return {str(head): put({}, rest, value)}


EVENTS = [
    report(id="r-1", sources=[{"url": "https://a.example/x", "published_at": "2025-05-24T10:00Z"}],
           entities=[{"name": "A", "id": "a"}], ended_at="2025-06"),
    {"kind": "statement", "occurred_at": "2025", "headline": "h", "entities": [{"name": "A", "id": "a"}],
     "details": {"speaker": "a", "quote": "q"}},
    {"kind": "political_move", "occurred_at": "2025", "headline": "h", "entities": [{"name": "A", "id": "a"}],
     "details": {"actor": "a", "action": "contribution", "amount": {"value": 1.5, "currency": "EUR"}}},
    correction({"details": {"service": "X"}, "occurred_at": "2025", "sources": [{"url": "https://a.example/"}]},
               id="c-1"),
    {"id": "rt-1", "kind": "retraction", "occurred_at": "2025", "details": {"retracts": "r-1", "reason": "r"}},
    {"kind": "entity_alias", "occurred_at": "2025", "details": {"alias": "a", "canonical": "b"}},
]
PLACES = [
    (), ("id",), ("kind",), ("occurred_at",), ("ended_at",), ("headline",), ("summary",), ("extra",), ("data",),
    ("entities",), ("entities", 0), ("entities", 0, "name"), ("entities", 0, "id"), ("entities", 0, "type"),
    ("sources", 0, "published_at"), ("sources", 0, "url"), ("details",), ("details", "amount", "value"),
    ("details", "speaker"), ("details", "corrects"), ("details", "retracts"), ("details", "changes"),
    ("details", "changes", "details"), ("details", "changes", "details", "x"), ("details", "changes", "occurred_at"),
    ("details", "changes", "ended_at"), ("details", "changes", "sources", 0, "published_at"),
    ("details", "changes", "entities"), ("details", "alias"),
]


@st.composite
def hostile_events(draw: st.DrawFn) -> str:
    event: Any = draw(st.sampled_from(EVENTS))
    for _ in range(draw(st.integers(0, 2))):
        event = put(event, draw(st.sampled_from(PLACES)), draw(values))
    if draw(st.integers(0, 3)) == 0 and isinstance(event, dict) and event:  # a key written twice
        key = draw(st.sampled_from(sorted(event)))
        again = event[key] if draw(st.booleans()) else draw(values)
        event = Object((*event.items(), (key, again)))
    return write(event, space=draw(st.sampled_from(["", " ", "\n"])))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(hostile_events())
@example(write(report(occurred_at="0001-01-01T00:00+00:01")))
@example(write(correction({"details": {"\ud800": Raw("1e999")}})))
@example(write(correction({"details": {"deep": deep(256, True)}})))
@example(write(Object((("kind", "report"), *report().items()))))
def test_hostile_json_is_accepted_or_rejected_never_raises(text: str) -> None:
    data = text.encode("utf-8")
    outcome = judged(data)
    if isinstance(outcome, EventRejected):
        assert outcome.reason in ("bad_json", "schema"), outcome
        outcome.error.encode("utf-8")
    else:
        Candidate(outcome, data)  # the store's row parts can be computed for what is accepted
        json.dumps(outcome.body, allow_nan=False).encode("utf-8")
    # the judging of a stream entry, here and in a validating process's form
    item = classify(b"1-0", {b"event": data})
    assert isinstance(item, DeadLetter) == isinstance(outcome, EventRejected)
    if isinstance(item, DeadLetter):
        assert_fit_for_redis(item)
    (flat,) = classify_flat([(b"1-0", {b"event": data})])
    assert flat[0] == isinstance(item, Candidate)
    # what a Python scraper or POST /events passes: the text itself, or its decoded value
    valid, rejected = prepare([text])
    assert len(valid) + len(rejected) == 1
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return
    try:
        encode(value)
    except EventRejected as exc:
        exc.error.encode("utf-8")


# --------------------------------------------------------------------------------------------
# repeated keys: found however the text is written
# --------------------------------------------------------------------------------------------

key_text = st.text(st.sampled_from("ab:\\\"é\u2028"), max_size=3)
trees = st.recursive(
    st.one_of(st.integers(-5, 5), key_text, st.none()),
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(key_text, inner), max_size=4).map(
        lambda pairs: Object(tuple(pairs))
    ),
    max_leaves=10,
)


def repeats(value: Any) -> bool:
    if isinstance(value, Object):
        keys = [k for k, _ in value.pairs]
        return len(set(keys)) < len(keys) or any(repeats(v) for _, v in value.pairs)
    return isinstance(value, list) and any(repeats(v) for v in value)


def spelled(value: Any, rnd: Any, space: str) -> str:
    """JSON text of the tree, each character of a string escaped as \\uXXXX or not, at random."""
    if isinstance(value, Object):
        inner = f",{space}".join(f"{spelled(k, rnd, space)}{space}:{space}{spelled(v, rnd, space)}" for k, v in value.pairs)
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(spelled(v, rnd, space) for v in value) + "]"
    if isinstance(value, str):
        return '"' + "".join(
            f"\\u{ord(c):04x}" if c in '"\\' or rnd.random() < 0.3 else c for c in value
        ) + '"'
    return json.dumps(value)


@settings(max_examples=500, deadline=None)
@given(trees, st.randoms(use_true_random=False), st.sampled_from(["", " ", "\n\t"]))
def test_repeated_keys_are_found_however_the_text_is_written(tree: Any, rnd: Any, space: str) -> None:
    text = spelled(Object((("v", tree),)), rnd, space)
    for data in (text, text.encode()):
        found = repeated_keys(data, json.loads(text))
        assert bool(found) == repeats(tree), (text, found)
