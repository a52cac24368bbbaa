"""A dead letter as JSON (``event`` as text, or base64 when the bytes are not UTF-8), and what
a resubmit line publishes: the edited text as it is, a JSON value written compactly, or base64."""

from __future__ import annotations

import base64
import json

import pytest

from timeline.deadletters import BadLine, DeadLetter, event_bytes, parse_cursor


def letter(event: bytes | None, **other: bytes) -> DeadLetter:
    fields = {b"reason": b"bad_json", b"error": b"event: x", b"source_id": b"1-0", **other}
    if event is not None:
        fields[b"event"] = event
    return DeadLetter.from_entry(b"5-1", fields)


def test_utf8_bytes_are_text_and_others_base64() -> None:
    assert letter('{"h":"é"}'.encode()).as_dict()["event"] == '{"h":"é"}'
    raw = b'{"h":"\xe9"}'  # Latin-1, not UTF-8
    out = letter(raw).as_dict()
    assert out["event"] is None and base64.b64decode(out["event_base64"]) == raw


def test_every_field_is_kept_and_a_missing_one_is_null() -> None:
    out = letter(None, note=b"planted").as_dict()
    assert out == {
        "id": "5-1", "reason": "bad_json", "error": "event: x", "source_id": "1-0", "event": None,
        "event_base64": None, "note": "planted",
    }


def test_an_exported_line_round_trips_to_the_same_bytes() -> None:
    for raw in (b'{"a": 1,  "b":[ ]}', b'{"h":"\xe9"}', b"", b"\x00\xff"):
        line = json.loads(json.dumps(letter(raw).as_dict()))
        assert event_bytes(line) == raw


def test_an_edited_value_is_written_compactly() -> None:
    assert event_bytes({"event": {"kind": "report", "headline": "é"}}) == '{"kind":"report","headline":"é"}'.encode()


@pytest.mark.parametrize(
    ("line", "field"),
    [({}, "event"), ({"event": 3}, "event"), ({"event": None, "event_base64": "%%"}, "event_base64"),
     ({"event": "\ud800"}, "event")],
)
def test_an_unreadable_line_names_its_field(line: dict, field: str) -> None:
    with pytest.raises(BadLine, match=f"^{field}:"):
        event_bytes(line)


@pytest.mark.parametrize("text", ["", "1", "1-", "-1", "a-1", "1-1-1", "18446744073709551616-0", "1-" + "9" * 21])
def test_a_cursor_that_is_no_id_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="^cursor:"):
        parse_cursor(text)
