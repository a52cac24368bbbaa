"""Hostile event texts shared by the unit, integration and end-to-end tiers (issue 14, point 1).

Each used to make validation raise instead of reject (or to be stored when it must not be): an
entry holding one stayed pending forever, and ``POST /events`` answered 500. ``POISON`` names
each with the reason it must now get and a field its error must name; ``BOUNDARY`` holds
events at the very edges of what is valid, which must be stored.

``write`` renders a value as JSON text the way a hostile writer may: an ``Object`` may repeat a
key, a ``Raw`` is written as its text verbatim (``1e999``), and keys or strings may hold
lone surrogates (escaped, so the text itself is UTF-8).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Object:
    """A JSON object as written: its pairs in order, a key possibly more than once."""

    pairs: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Raw:
    """JSON text written verbatim (``1e999``, deep nesting)."""

    text: str


def write(value: Any, *, space: str = "") -> str:
    """JSON text of a value with ``Object`` and ``Raw`` parts (``space`` around ':' and ',')."""
    if isinstance(value, Object):
        inner = f"{space},{space}".join(f"{write(str(k))}{space}:{space}{write(v, space=space)}" for k, v in value.pairs)
        return "{" + inner + "}"
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return write(Object(tuple(value.items())), space=space)
    if isinstance(value, list):
        return "[" + f"{space},{space}".join(write(v, space=space) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: a lone surrogate is written as its \\uXXXX escape


def report(**over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"kind": "report", "occurred_at": "2025-05-24", "headline": "h",
                             "entities": [{"name": "A"}]}
    event.update(over)
    return event


def correction(changes: Any, corrects: str = "some-event", **over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"kind": "correction", "occurred_at": "2025-05-25",
                             "details": {"corrects": corrects, "changes": changes}}
    event.update(over)
    return event


def nested(depth: int, *, lists: bool = True) -> Raw:
    """Arrays (or objects) ``depth`` deep around a 1, as text (no recursion to write it)."""
    opening, closing = ("[", "]") if lists else ('{"a":', "}")
    return Raw(opening * depth + "1" + closing * depth)


#: (name, event text, reason, a field the error names)
POISON: list[tuple[str, str, str, str]] = [
    ("occurred_at before year 1", write(report(occurred_at="0001-01-01T00:00+00:01")), "schema", "occurred_at"),
    ("occurred_at after 9999", write(report(occurred_at="9999-12-31T23:59-00:01")), "schema", "occurred_at"),
    ("ended_at after 9999", write(report(ended_at="9999-12-31T23:30:00-01:00")), "schema", "ended_at"),
    ("published_at before year 1",
     write(report(sources=[{"url": "https://a.example/", "published_at": "0001-01-01T05:00+14:00"}])),
     "schema", "sources.0.published_at"),
    ("changes.occurred_at before year 1", write(correction({"occurred_at": "0001-01-01T00:00:00+00:01"})),
     "schema", "details.changes.occurred_at"),
    ("changes.ended_at after 9999", write(correction({"ended_at": "9999-12-31T23:59:59.5-00:30"})),
     "schema", "details.changes.ended_at"),
    ("changes.sources published_at",
     write(correction({"sources": [{"url": "https://a.example/", "published_at": "9999-12-31T20:00-12:00"}]})),
     "schema", "details.changes.sources.0.published_at"),
    ("1e999 in changes.details", write(correction({"details": {"value": Raw("1e999")}})), "bad_json", "1e999"),
    ("-1e400 in changes.details", write(correction({"details": {"v": [Raw("-1e400")]}})), "bad_json", "1e400"),
    ("lists 300 deep in changes.details", write(correction({"details": {"deep": nested(300)}})),
     "schema", "details.changes.details"),
    ("objects 300 deep in changes.details", write(correction({"details": nested(300, lists=False)})),
     "schema", "details.changes.details"),
    ("lists 1000 deep in changes.details", write(correction({"details": {"deep": nested(1000)}})),
     "bad_json", "event"),
    ("a lone-surrogate key in changes.details", write(correction({"details": {"\ud800": 1}})),
     "schema", "details.changes.details"),
    ("a lone-surrogate unknown field", write(report(**{"\udfff\ud800": "x"})), "schema", "\\udfff\\ud800"),
    ("a lone-surrogate kind", write(report(kind="\ud800")), "schema", "kind"),
    ("a correction of itself",
     write(correction({"headline": "x"}, corrects="self-1", id="self-1")), "schema", "details.corrects"),
    ("a retraction of itself",
     write({"id": "self-2", "kind": "retraction", "occurred_at": "2025",
            "details": {"retracts": "self-2", "reason": "oops"}}), "schema", "details.retracts"),
    ("a duplicate top-level key",
     write(Object(tuple(report().items()) + (("headline", "another headline"),))), "schema", "headline"),
    ("a duplicate key, spaced",
     write(Object((("kind", "report"), *report().items())), space=" "), "schema", "kind"),
    ("a duplicate key in an entity",
     write(report(entities=[Object((("name", "A"), ("id", "a"), ("name", "B")))])), "schema", "entities.0.name"),
    ("a duplicate key written once escaped",
     write(report()).replace('"headline"', '"headline":"x","h\\u0065adline"', 1), "schema", "headline"),
    ("a duplicate key in changes.details",
     write(correction({"details": Object((("service", "X"), ("service", "Y")))})),
     "schema", "details.changes.details.service"),
    ("an integer of 5,000 digits", write(report(details={"category": Raw("9" * 5000)})), "bad_json", "event"),
]

#: (name, event) at the edges of what is valid: stored, not refused
BOUNDARY: list[tuple[str, dict[str, Any]]] = [
    ("the last day", report(occurred_at="9999-12-31")),
    ("the first instant", report(occurred_at="0001-01-01T00:00Z")),
    ("the last instant", report(occurred_at="9999-12-31T23:59:59.999999999Z")),
    ("an offset that stays in range", report(occurred_at="0001-01-01T23:59-23:59", ended_at="9999-12-31T00:00+23:59")),
    ("an integer over 64 bits",
     report(kind="outage", details={"service": "X", "duration_minutes": 2**70})),
    ("a correction 60 deep", correction({"details": {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},
                                       corrects="some-other")),
]
