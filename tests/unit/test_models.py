"""The news event of docs/contract.md §1: parse_event, parse_event_bytes, decode_json, apply_changes."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from events.models import (
    MAX_EVENT_BYTES,
    EventRejected,
    apply_changes,
    decode_json,
    parse_event,
    parse_event_bytes,
)

ID_CHARSET = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# --------------------------------------------------------------------------------------------
# Example events, one per kind (fresh copies: tests mutate them)
# --------------------------------------------------------------------------------------------

# docs/contract.md §1, verbatim
CONTRACT_OUTAGE = """
{
  "id": "x-outage-2025-05-24",
  "kind": "outage",
  "occurred_at": "2025-05-24",
  "headline": "X is down for about two hours worldwide",
  "summary": "Users around the world report failures; failover did not work.",
  "entities": [
    {"id": "x", "name": "X", "type": "organization", "role": "subject"},
    {"name": "Downdetector", "type": "organization", "role": "mentioned"}
  ],
  "sources": [{"url": "https://news.example/x-outage", "publisher": "Example Wire",
               "published_at": "2025-05-25T08:00:00Z"}],
  "details": {"service": "X", "duration_minutes": 120, "cause": "unknown"}
}
"""


def outage() -> dict[str, Any]:
    return json.loads(CONTRACT_OUTAGE)


def statement() -> dict[str, Any]:
    return {
        "kind": "statement",
        "occurred_at": "2025-05-24T14:30Z",
        "headline": "Musk says the outage was a massive cyberattack",
        "entities": [
            {"name": "Elon Musk", "type": "person", "role": "subject"},
            {"id": "x", "name": "X", "type": "organization", "role": "mentioned"},
        ],
        "details": {"speaker": "elon-musk", "quote": "There was (still is) a massive cyberattack.", "medium": "post on X"},
    }


def political_move() -> dict[str, Any]:
    return {
        "kind": "political_move",
        "occurred_at": "2024-10",
        "ended_at": "2024-11-05",
        "headline": "Musk funds a political action committee",
        "entities": [
            {"name": "Elon Musk", "type": "person", "role": "actor", "wikidata": "Q317521"},
            {"name": "America PAC", "type": "group", "role": "target"},
        ],
        "details": {
            "actor": "elon-musk",
            "action": "contribution",
            "counterpart": "america-pac",
            "amount": {"value": 75000000, "currency": "USD"},
        },
    }


def report() -> dict[str, Any]:
    return {
        "kind": "report",
        "occurred_at": "2025-05",
        "headline": "Dark Storm Team claims DDoS attacks on several platforms",
        "entities": [{"name": "Dark Storm Team", "type": "group", "role": "actor"}],
        "details": {"category": "armed_conflict"},
    }


def correction() -> dict[str, Any]:
    return {
        "id": "corr-1",
        "kind": "correction",
        "occurred_at": "2025-05-26",
        "sources": [{"url": "https://news.example/x-outage-update"}],
        "details": {
            "corrects": "x-outage-2025-05-24",
            "changes": {"headline": "X is down for about three hours worldwide", "summary": None},
            "reason": "duration was underestimated",
        },
    }


def retraction() -> dict[str, Any]:
    return {
        "kind": "retraction",
        "occurred_at": "2025-05-27",
        "details": {"retracts": "x-outage-2025-05-24", "reason": "the report was a hoax"},
    }


def entity_alias() -> dict[str, Any]:
    return {
        "kind": "entity_alias",
        "occurred_at": "2023-07-24",
        "details": {"alias": "twitter", "canonical": "x", "name": "X"},
    }


FACTORIES = {
    "outage": outage,
    "statement": statement,
    "political_move": political_move,
    "report": report,
    "correction": correction,
    "retraction": retraction,
    "entity_alias": entity_alias,
}

DELETE = object()


def with_(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``event`` with the value at the dotted ``path`` set (or deleted with ``DELETE``)."""
    parts = path.split(".")
    node: Any = event
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return event


def rejected(raw: Any) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        parse_event(raw)
    return info.value


def names_field(error: str, field: str) -> bool:
    """Whether one clause of ``error`` starts with the dotted path ``field``."""
    return any(re.match(rf"{re.escape(field)}(?:[:.]|$)", clause) for clause in error.split("; "))


def entities(n: int) -> list[dict[str, Any]]:
    return [{"name": f"Entity {i}"} for i in range(n)]


def sources(n: int) -> list[dict[str, Any]]:
    return [{"url": f"https://news.example/{i}"} for i in range(n)]


# --------------------------------------------------------------------------------------------
# Valid events
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_valid_event_of_every_kind(kind: str) -> None:
    raw = FACTORIES[kind]()
    parsed = parse_event(copy.deepcopy(raw))
    assert parsed.kind == kind
    assert parsed.body["kind"] == kind
    assert parsed.body["occurred_at"] == raw["occurred_at"]
    assert parsed.body["id"] == parsed.id
    assert ID_CHARSET.fullmatch(parsed.id)
    if "id" in raw:
        assert parsed.id == raw["id"]
    else:
        assert parsed.id.startswith(f"{kind}-")
    assert json.loads(json.dumps(parsed.body)) == parsed.body  # a plain JSON value


def test_contract_outage_example() -> None:
    parsed = parse_event(outage())
    body = parsed.body
    assert parsed.id == "x-outage-2025-05-24"
    assert body["headline"] == "X is down for about two hours worldwide"
    assert body["summary"] == "Users around the world report failures; failover did not work."
    assert body["entities"] == [
        {"id": "x", "name": "X", "type": "organization", "role": "subject"},
        {"id": "downdetector", "name": "Downdetector", "type": "organization", "role": "mentioned"},
    ]
    assert body["sources"] == [
        {"url": "https://news.example/x-outage", "publisher": "Example Wire", "published_at": "2025-05-25T08:00:00Z"}
    ]
    assert body["details"] == {"service": "X", "duration_minutes": 120, "cause": "unknown"}
    assert parsed.target is None
    assert parsed.occurred.precision == "day"


def test_contract_outage_example_from_bytes() -> None:
    parsed = parse_event_bytes(CONTRACT_OUTAGE.encode())
    assert parsed.id == "x-outage-2025-05-24"
    assert parsed.content_hash == parse_event(outage()).content_hash


def test_political_move_body() -> None:
    body = parse_event(political_move()).body
    assert body["ended_at"] == "2024-11-05"
    assert body["details"]["amount"] == {"value": 75000000, "currency": "USD"}
    assert body["entities"][0]["wikidata"] == "Q317521"
    assert [e["id"] for e in body["entities"]] == ["elon-musk", "america-pac"]


def test_report_without_details_is_valid() -> None:
    raw = report()
    del raw["details"]
    parsed = parse_event(raw)
    assert parsed.kind == "report"
    assert parsed.body.get("details", {}) == {}


def test_correction_target_and_changes() -> None:
    parsed = parse_event(correction())
    assert parsed.target == "x-outage-2025-05-24"
    # a field named with null stays in the changes: it removes the field
    assert parsed.body["details"]["changes"] == {
        "headline": "X is down for about three hours worldwide",
        "summary": None,
    }
    assert parsed.body["details"]["reason"] == "duration was underestimated"


def test_retraction_target() -> None:
    assert parse_event(retraction()).target == "x-outage-2025-05-24"


def test_entity_alias_body() -> None:
    assert parse_event(entity_alias()).body["details"] == {"alias": "twitter", "canonical": "x", "name": "X"}


def test_entity_defaults() -> None:
    raw = report()
    raw["entities"] = [{"name": "Elon Musk"}, {"name": "Société Générale"}, {"name": "Владимир Путин"}]
    body = parse_event(raw).body
    assert body["entities"] == [
        {"id": "elon-musk", "name": "Elon Musk", "type": "other", "role": "mentioned"},
        {"id": "societe-generale", "name": "Société Générale", "type": "other", "role": "mentioned"},
        {"id": "владимир-путин", "name": "Владимир Путин", "type": "other", "role": "mentioned"},
    ]


def test_given_entity_id_is_kept() -> None:
    raw = report()
    raw["entities"] = [{"id": "musk", "name": "Elon Musk"}]
    assert parse_event(raw).body["entities"][0]["id"] == "musk"


def test_speaker_may_refer_to_a_derived_entity_id() -> None:
    # "Elon Musk" has no id: its derived id elon-musk is what the speaker names
    assert parse_event(statement()).body["details"]["speaker"] == "elon-musk"


def test_derived_event_id_when_absent() -> None:
    raw = outage()
    del raw["id"]
    parsed = parse_event(raw)
    assert parsed.id.startswith("outage-")
    assert ID_CHARSET.fullmatch(parsed.id)
    assert parse_event(json.loads(json.dumps(raw, indent=2, sort_keys=True))).id == parsed.id


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        pytest.param("outage", "headline", "h" * 300, id="headline-300"),
        pytest.param("outage", "headline", "h", id="headline-1"),
        pytest.param("outage", "summary", "s" * 5000, id="summary-5000"),
        pytest.param("outage", "summary", "", id="summary-empty"),
        pytest.param("outage", "entities", entities(50), id="entities-50"),
        pytest.param("outage", "entities", [{"name": "X"}], id="entities-1"),
        pytest.param("outage", "entities.0.name", "n" * 200, id="entity-name-200"),
        pytest.param("outage", "entities.0.wikidata", "Q42", id="wikidata-Q42"),
        pytest.param("outage", "sources", sources(20), id="sources-20"),
        pytest.param("outage", "sources", [], id="sources-0"),
        pytest.param("outage", "sources.0.url", "http://news.example/a?b=c#d", id="source-http"),
        pytest.param("outage", "sources.0.published_at", "2025-05-25T10:00:00.123+02:00", id="published-offset"),
        pytest.param("outage", "id", "a" * 128, id="id-128"),
        pytest.param("outage", "id", "A-z_0.9:x", id="id-charset"),
        pytest.param("outage", "details.duration_minutes", 0, id="duration-0"),
        pytest.param("outage", "details.claimed_by", "downdetector", id="claimed-by-derived-entity"),
        pytest.param("statement", "details.quote", "q" * 2000, id="quote-2000"),
        pytest.param("political_move", "details.amount", {"value": 0, "currency": "EUR"}, id="amount-0"),
        pytest.param("political_move", "details.amount", {"value": 1.5, "currency": "EUR"}, id="amount-float"),
        pytest.param("outage", "occurred_at", "2025", id="occurred-year"),
        pytest.param("outage", "occurred_at", "2025-05-24T14:30:00+0200", id="occurred-instant"),
    ],
)
def test_values_at_the_limits_are_accepted(kind: str, path: str, value: Any) -> None:
    raw = with_(FACTORIES[kind](), path, value)
    if path == "entities" and kind == "outage":
        raw["details"].pop("claimed_by", None)
    parse_event(raw)


@pytest.mark.parametrize(
    ("occurred_at", "ended_at"),
    [
        ("2025-05-24", "2025-05"),  # the end of May is after the 24th's start
        ("2025-05-24", "2025-05-24"),
        ("2025-05-24", "2025"),
        ("2025-05-24", "2025-05-24T00:00Z"),  # ends exactly when occurred_at starts
        ("2025-05-24", "2025-05-24T02:00+02:00"),  # = 00:00Z
        ("2025-05", "2025-05-01"),
        ("2025-05-24T14:30Z", "2025-05-24T14:30Z"),
        ("2025-05-24T14:30Z", "2025-05-24T16:30+02:00"),  # the same instant
        ("2025-05-24T14:30Z", "2025-05-24"),  # the day ends after
    ],
)
def test_ended_at_not_before_start_is_accepted(occurred_at: str, ended_at: str) -> None:
    raw = outage()
    raw["occurred_at"], raw["ended_at"] = occurred_at, ended_at
    body = parse_event(raw).body
    assert (body["occurred_at"], body["ended_at"]) == (occurred_at, ended_at)


# --------------------------------------------------------------------------------------------
# Rejected events: reason schema, error naming the field
# --------------------------------------------------------------------------------------------

REJECTIONS = [
    # unknown fields
    pytest.param("outage", "colour", "red", "colour", id="unknown-top-level"),
    pytest.param("outage", "data", {"x": 1}, "data", id="top-level-data"),
    pytest.param("outage", "entities.0.nickname", "twttr", "entities.0.nickname", id="unknown-in-entity"),
    pytest.param("outage", "details.severity", "high", "details.severity", id="unknown-in-details"),
    pytest.param("outage", "sources.0.author", "me", "sources.0.author", id="unknown-in-source"),
    pytest.param("report", "details.colour", "red", "details.colour", id="unknown-in-report-details"),
    pytest.param("political_move", "details.amount.note", "x", "details.amount.note", id="unknown-in-amount"),
    # wrong types
    pytest.param("outage", "details.duration_minutes", "120", "details.duration_minutes", id="duration-string"),
    pytest.param("outage", "details.duration_minutes", 120.5, "details.duration_minutes", id="duration-float"),
    pytest.param("outage", "details.duration_minutes", True, "details.duration_minutes", id="duration-bool"),
    pytest.param("outage", "headline", 42, "headline", id="headline-int"),
    pytest.param("outage", "summary", ["a"], "summary", id="summary-list"),
    pytest.param("outage", "entities", {"name": "X"}, "entities", id="entities-object"),
    pytest.param("outage", "entities.0", "X", "entities.0", id="entity-string"),
    pytest.param("outage", "entities.0.name", 7, "entities.0.name", id="entity-name-int"),
    pytest.param("outage", "sources", "https://news.example", "sources", id="sources-string"),
    pytest.param("outage", "details", "X", "details", id="details-string"),
    pytest.param("outage", "occurred_at", 2025, "occurred_at", id="occurred-int"),
    pytest.param("outage", "id", 42, "id", id="id-int"),
    pytest.param("outage", "details.service", 1, "details.service", id="service-int"),
    pytest.param("political_move", "details.amount.value", True, "details.amount.value", id="amount-bool"),
    pytest.param("political_move", "details.amount.value", "1", "details.amount.value", id="amount-string"),
    # out of range
    pytest.param("outage", "headline", "h" * 301, "headline", id="headline-301"),
    pytest.param("outage", "headline", "", "headline", id="headline-empty"),
    pytest.param("outage", "summary", "s" * 5001, "summary", id="summary-5001"),
    pytest.param("outage", "entities", entities(51), "entities", id="entities-51"),
    pytest.param("outage", "entities", [], "entities", id="entities-0"),
    pytest.param("outage", "entities.0.name", "", "entities.0.name", id="entity-name-empty"),
    pytest.param("outage", "entities.0.name", "n" * 201, "entities.0.name", id="entity-name-201"),
    pytest.param("outage", "entities.0.type", "company", "entities.0.type", id="entity-type"),
    pytest.param("outage", "entities.0.role", "victim", "entities.0.role", id="entity-role"),
    pytest.param("outage", "entities.0.wikidata", "42", "entities.0.wikidata", id="wikidata-42"),
    pytest.param("outage", "entities.0.wikidata", "Q", "entities.0.wikidata", id="wikidata-Q"),
    pytest.param("outage", "entities.0.wikidata", "q42", "entities.0.wikidata", id="wikidata-lower"),
    pytest.param("outage", "entities.0.id", "Elon Musk", "entities.0.id", id="entity-id-not-slug"),
    pytest.param("outage", "sources", sources(21), "sources", id="sources-21"),
    pytest.param("statement", "details.quote", "q" * 2001, "details.quote", id="quote-2001"),
    pytest.param("outage", "details.duration_minutes", -1, "details.duration_minutes", id="duration-negative"),
    pytest.param("political_move", "details.amount.value", -1, "details.amount.value", id="amount-negative"),
    pytest.param("political_move", "details.amount.currency", "usd", "details.amount.currency", id="currency-lower"),
    pytest.param("political_move", "details.amount.currency", "US", "details.amount.currency", id="currency-2"),
    pytest.param("political_move", "details.amount.currency", DELETE, "details.amount.currency", id="no-currency"),
    pytest.param("political_move", "details.action", "bribe", "details.action", id="action-unknown"),
    # sources
    pytest.param("outage", "sources.0.url", "ftp://news.example/x", "sources.0.url", id="url-ftp"),
    pytest.param("outage", "sources.0.url", "news.example/x", "sources.0.url", id="url-no-scheme"),
    pytest.param("outage", "sources.0.url", DELETE, "sources.0.url", id="url-missing"),
    pytest.param("outage", "sources.0.published_at", "2025-05-25", "sources.0.published_at", id="published-day"),
    pytest.param(
        "outage", "sources.0.published_at", "2025-05-25T08:00:00", "sources.0.published_at", id="published-no-offset"
    ),
    # id
    pytest.param("outage", "id", "x outage", "id", id="id-space"),
    pytest.param("outage", "id", "x/outage", "id", id="id-slash"),
    pytest.param("outage", "id", "é", "id", id="id-non-ascii"),
    pytest.param("outage", "id", "a" * 129, "id", id="id-129"),
    pytest.param("outage", "id", "", "id", id="id-empty"),
    pytest.param("outage", "id", "abc\n", "id", id="id-trailing-newline"),
    # kind
    pytest.param("outage", "kind", "rumour", "kind", id="kind-unknown"),
    pytest.param("outage", "kind", "Outage", "kind", id="kind-case"),
    pytest.param("outage", "kind", 5, "kind", id="kind-int"),
    pytest.param("outage", "kind", DELETE, "kind", id="kind-missing"),
    # dates
    pytest.param("outage", "occurred_at", DELETE, "occurred_at", id="occurred-missing"),
    pytest.param("outage", "occurred_at", "2025-05-24T14:30", "occurred_at", id="occurred-no-offset"),
    pytest.param("outage", "occurred_at", "2025-02-30", "occurred_at", id="occurred-feb-30"),
    pytest.param("outage", "occurred_at", "May 2025", "occurred_at", id="occurred-words"),
    pytest.param("outage", "ended_at", "2025-05-23", "ended_at", id="ended-day-before"),
    pytest.param("outage", "ended_at", "2025-04", "ended_at", id="ended-month-before"),
    pytest.param("outage", "ended_at", "2025-05-24T01:00+02:00", "ended_at", id="ended-instant-before-in-utc"),
    pytest.param("outage", "ended_at", "2025/05/25", "ended_at", id="ended-bad-form"),
    # required fields of news kinds
    pytest.param("outage", "headline", DELETE, "headline", id="headline-missing"),
    pytest.param("outage", "entities", DELETE, "entities", id="entities-missing"),
    pytest.param("outage", "entities.0.name", DELETE, "entities.0.name", id="entity-name-missing"),
    # details by kind
    pytest.param("outage", "details", DELETE, "details", id="outage-details-missing"),
    pytest.param("outage", "details.service", DELETE, "details.service", id="outage-service-missing"),
    pytest.param("statement", "details.speaker", DELETE, "details.speaker", id="statement-speaker-missing"),
    pytest.param("statement", "details.quote", DELETE, "details.quote", id="statement-quote-missing"),
    pytest.param("political_move", "details.actor", DELETE, "details.actor", id="move-actor-missing"),
    pytest.param("political_move", "details.action", DELETE, "details.action", id="move-action-missing"),
    pytest.param("correction", "details.corrects", DELETE, "details.corrects", id="correction-corrects-missing"),
    pytest.param("correction", "details.changes", DELETE, "details.changes", id="correction-changes-missing"),
    pytest.param("retraction", "details.retracts", DELETE, "details.retracts", id="retraction-retracts-missing"),
    pytest.param("retraction", "details.reason", DELETE, "details.reason", id="retraction-reason-missing"),
    pytest.param("entity_alias", "details.alias", DELETE, "details.alias", id="alias-alias-missing"),
    pytest.param("entity_alias", "details.canonical", DELETE, "details.canonical", id="alias-canonical-missing"),
    # references to entities
    pytest.param("statement", "details.speaker", "donald-trump", "details.speaker", id="speaker-not-in-entities"),
    pytest.param("political_move", "details.actor", "someone", "details.actor", id="actor-not-in-entities"),
    pytest.param(
        "political_move", "details.counterpart", "someone", "details.counterpart", id="counterpart-not-in-entities"
    ),
    pytest.param("outage", "details.claimed_by", "dark-storm", "details.claimed_by", id="claimed-by-not-in-entities"),
    pytest.param("statement", "details.speaker", "Elon Musk", "details.speaker", id="speaker-name-not-id"),
    # editorial kinds carry only id, kind, occurred_at, details and sources
    pytest.param("correction", "headline", "h", "headline", id="correction-headline"),
    pytest.param("correction", "entities", [{"name": "X"}], "entities", id="correction-entities"),
    pytest.param("retraction", "headline", "h", "headline", id="retraction-headline"),
    pytest.param("retraction", "summary", "s", "summary", id="retraction-summary"),
    pytest.param("entity_alias", "entities", [{"name": "X"}], "entities", id="alias-entities"),
    pytest.param("entity_alias", "ended_at", "2025", "ended_at", id="alias-ended-at"),
    # correction changes
    pytest.param("correction", "details.changes", {}, "details.changes", id="changes-empty"),
    pytest.param("correction", "details.changes", {"mood": "sad"}, "details.changes.mood", id="changes-unknown-key"),
    pytest.param("correction", "details.changes", {"kind": "report"}, "details.changes.kind", id="changes-kind"),
    pytest.param("correction", "details.changes", {"id": "other"}, "details.changes.id", id="changes-id"),
    pytest.param("correction", "details.changes", {"headline": None}, "details.changes.headline", id="changes-null-headline"),
    pytest.param("correction", "details.changes", {"headline": "h" * 301}, "details.changes.headline", id="changes-headline-301"),
    pytest.param("correction", "details.changes", {"occurred_at": "2025/05"}, "details.changes.occurred_at", id="changes-bad-date"),
    pytest.param("correction", "details.changes", {"entities": []}, "details.changes.entities", id="changes-no-entities"),
    pytest.param("correction", "details.changes", [], "details.changes", id="changes-list"),
    pytest.param("correction", "details.corrects", "not an id", "details.corrects", id="corrects-bad-id"),
    # entity_alias
    pytest.param("entity_alias", "details.canonical", "twitter", "details.alias", id="alias-of-itself"),
    pytest.param("entity_alias", "details.alias", "Twitter Inc", "details.alias", id="alias-not-slug"),
]


@pytest.mark.parametrize(("kind", "path", "value", "field"), REJECTIONS)
def test_rule_violation_is_rejected_naming_the_field(kind: str, path: str, value: Any, field: str) -> None:
    raw = with_(FACTORIES[kind](), path, value)
    exc = rejected(raw)
    assert exc.reason == "schema"
    assert str(exc) == exc.error
    assert names_field(exc.error, field), exc.error


def test_same_entity_id_twice_is_rejected() -> None:
    raw = report()
    raw["entities"] = [{"name": "X"}, {"id": "x", "name": "X Corp"}]
    exc = rejected(raw)
    assert exc.reason == "schema"
    assert names_field(exc.error, "entities.1.id"), exc.error
    assert "'x'" in exc.error


def test_same_derived_entity_id_twice_is_rejected() -> None:
    raw = report()
    raw["entities"] = [{"name": "Elon Musk"}, {"name": "ELON  MUSK", "role": "subject"}]
    exc = rejected(raw)
    assert names_field(exc.error, "entities.1.id"), exc.error


def test_same_entity_id_twice_in_changes_is_rejected() -> None:
    raw = correction()
    raw["details"]["changes"] = {"entities": [{"name": "X"}, {"name": "x"}]}
    exc = rejected(raw)
    assert exc.reason == "schema"
    assert names_field(exc.error, "details.changes.entities.1.id"), exc.error


def test_entity_name_without_alphanumerics_and_no_id_is_rejected() -> None:
    raw = report()
    raw["entities"] = [{"name": "!!!"}]
    exc = rejected(raw)
    assert exc.reason == "schema"
    assert "entities.0" in exc.error


@pytest.mark.parametrize("raw", [[], [{"kind": "report"}], "event", 42, None, True])
def test_not_an_object_is_rejected(raw: Any) -> None:
    exc = rejected(raw)
    assert exc.reason == "schema"


def test_every_broken_rule_is_reported() -> None:
    raw = outage()
    raw["headline"] = ""
    raw["details"]["duration_minutes"] = -5
    exc = rejected(raw)
    assert names_field(exc.error, "headline")
    assert names_field(exc.error, "details.duration_minutes")


def test_nan_in_a_decoded_value_is_rejected() -> None:
    raw = political_move()
    raw["details"]["amount"]["value"] = float("nan")
    exc = rejected(raw)
    assert exc.reason == "schema"
    assert names_field(exc.error, "details.amount.value"), exc.error


# --------------------------------------------------------------------------------------------
# decode_json and parse_event_bytes: too_large, then bad_json, then schema
# --------------------------------------------------------------------------------------------


def reason_of(data: bytes | str) -> str:
    with pytest.raises(EventRejected) as info:
        parse_event_bytes(data)
    return info.value.reason


def test_max_is_256_kib() -> None:
    assert MAX_EVENT_BYTES == 256 * 1024


def padded(event: dict[str, Any], size: int) -> bytes:
    """The event as JSON, padded with trailing white space to exactly ``size`` bytes."""
    data = json.dumps(event).encode()
    assert len(data) <= size
    return data + b" " * (size - len(data))


def test_exactly_256_kib_is_accepted() -> None:
    data = padded(outage(), 256 * 1024)
    assert parse_event_bytes(data).id == "x-outage-2025-05-24"


def test_one_byte_over_256_kib_is_too_large() -> None:
    assert reason_of(padded(outage(), 256 * 1024 + 1)) == "too_large"


def test_too_large_comes_before_bad_json() -> None:
    assert reason_of(b"{" * (256 * 1024 + 1)) == "too_large"


def test_too_large_comes_before_schema() -> None:
    raw = outage()
    raw["summary"] = "s" * (300 * 1024)  # also breaks the 5,000 chars rule
    assert reason_of(json.dumps(raw).encode()) == "too_large"


def test_size_of_text_is_counted_in_utf8_bytes() -> None:
    raw = outage()
    del raw["summary"]
    base = json.dumps(raw, ensure_ascii=False)
    # 140,000 characters of 'é' are 280,000 bytes: over the limit, although under 256 Ki characters
    text = base + " " + ("\u00e9" * 140_000)
    assert len(text) < 256 * 1024
    assert reason_of(text) == "too_large"


def test_too_large_error_names_the_event() -> None:
    with pytest.raises(EventRejected) as info:
        parse_event_bytes(b" " * (256 * 1024 + 1))
    assert "event" in info.value.error
    assert "256" in info.value.error


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b'{"kind": "nope"', id="truncated-schema-breaker"),
        pytest.param(b"not json", id="text"),
        pytest.param(b"{'kind': 'outage'}", id="single-quotes"),
        pytest.param(b'{"kind": "outage",}', id="trailing-comma"),
        pytest.param(b'{"kind": "report", "x": NaN}', id="NaN"),
        pytest.param(b'{"kind": "report", "x": Infinity}', id="Infinity"),
        pytest.param(b'{"kind": "report", "x": -Infinity}', id="-Infinity"),
        pytest.param(b"NaN", id="bare-NaN"),
        pytest.param(b'{"kind": "report", "headline": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b'{"a": 1} {"b": 2}', id="two-values"),
    ],
)
def test_bad_json(data: bytes) -> None:
    assert reason_of(data) == "bad_json"


def test_bad_json_error_names_the_event() -> None:
    with pytest.raises(EventRejected) as info:
        decode_json(b"{")
    assert info.value.reason == "bad_json"
    assert info.value.error.startswith("event")


@pytest.mark.parametrize(
    "encoding",
    ["utf-16", "utf-16-le", "utf-32"],
)
def test_json_not_in_utf8_is_bad_json(encoding: str) -> None:
    """docs/contract.md §1: an event is JSON, UTF-8. The same event in UTF-16/32 is not it."""
    data = CONTRACT_OUTAGE.encode(encoding)
    assert reason_of(data) == "bad_json"


def test_deeply_nested_json_is_rejected_not_crashing() -> None:
    """Any input under the size limit is either an event or a rejection with a §3 reason;
    a parser's recursion limit must not escape as an exception (the entry would be retried
    forever instead of dead-lettered)."""
    depth = 100_000
    data = b"[" * depth + b"]" * depth
    assert len(data) <= 256 * 1024
    with pytest.raises(EventRejected) as info:
        parse_event_bytes(data)
    assert info.value.reason in ("bad_json", "schema")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"[" + CONTRACT_OUTAGE.encode() + b"]", id="array-of-an-event"),
        pytest.param(b"[]", id="empty-array"),
        pytest.param(b'"an event"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b'{"kind": "rumour"}', id="bad-kind"),
    ],
)
def test_valid_json_that_is_not_an_event_is_schema(data: bytes) -> None:
    assert reason_of(data) == "schema"


def test_lone_surrogate_is_rejected_as_schema_naming_the_field() -> None:
    raw = outage()
    data = json.dumps(raw).replace("X is down", "X is \\ud800 down").encode()
    with pytest.raises(EventRejected) as info:
        parse_event_bytes(data)
    assert info.value.reason == "schema"
    assert names_field(info.value.error, "headline"), info.value.error


def test_text_input_is_accepted() -> None:
    assert parse_event_bytes(CONTRACT_OUTAGE).id == "x-outage-2025-05-24"


def test_same_content_other_form_same_hash() -> None:
    a = parse_event_bytes(CONTRACT_OUTAGE.encode())
    b = parse_event_bytes(json.dumps(json.loads(CONTRACT_OUTAGE), sort_keys=True, separators=(",", ":")).encode())
    c = parse_event_bytes(json.dumps(json.loads(CONTRACT_OUTAGE), ensure_ascii=True, indent=8).encode())
    assert a.content_hash == b.content_hash == c.content_hash
    assert a.body == b.body == c.body


# --------------------------------------------------------------------------------------------
# apply_changes
# --------------------------------------------------------------------------------------------


def body_of(raw: dict[str, Any]) -> dict[str, Any]:
    return parse_event(raw).body


def test_apply_changes_replaces_named_fields_only() -> None:
    body = body_of(outage())
    before = copy.deepcopy(body)
    result = apply_changes("outage", body, {"headline": "X is down for three hours"})
    assert result["headline"] == "X is down for three hours"
    assert {k: v for k, v in result.items() if k != "headline"} == {k: v for k, v in before.items() if k != "headline"}
    assert result["id"] == "x-outage-2025-05-24"
    assert body == before  # the input is not modified


def test_apply_changes_replaces_lists_whole() -> None:
    body = body_of(outage())
    result = apply_changes("outage", body, {"entities": [{"id": "x", "name": "X Corp", "role": "subject"}]})
    assert result["entities"] == [{"id": "x", "name": "X Corp", "type": "other", "role": "subject"}]


def test_apply_changes_replaces_details_whole() -> None:
    body = body_of(outage())
    result = apply_changes("outage", body, {"details": {"service": "X", "cause": "ddos"}})
    assert result["details"] == {"service": "X", "cause": "ddos"}


def test_apply_changes_derives_entity_ids() -> None:
    body = body_of(outage())
    result = apply_changes("outage", body, {"entities": [{"name": "Société Générale"}]})
    assert result["entities"][0]["id"] == "societe-generale"


@pytest.mark.parametrize("field", ["summary", "ended_at"])
def test_apply_changes_none_removes_an_optional_field(field: str) -> None:
    raw = outage()
    raw["ended_at"] = "2025-05-25"
    body = body_of(raw)
    assert field in body
    result = apply_changes("outage", body, {field: None})
    assert field not in result
    assert result["headline"] == body["headline"]


def test_apply_changes_sources_none_leaves_no_sources() -> None:
    result = apply_changes("outage", body_of(outage()), {"sources": None})
    assert result.get("sources", []) == []


def test_apply_changes_several_fields_at_once() -> None:
    result = apply_changes(
        "outage", body_of(outage()), {"occurred_at": "2025-05-24T14:00Z", "ended_at": "2025-05-24T16:00Z"}
    )
    assert (result["occurred_at"], result["ended_at"]) == ("2025-05-24T14:00Z", "2025-05-24T16:00Z")


@pytest.mark.parametrize(
    ("kind", "changes", "field"),
    [
        pytest.param("statement", {"entities": [{"name": "Someone Else"}]}, "details.speaker", id="entities-without-speaker"),
        pytest.param("statement", {"details": {"speaker": "nobody", "quote": "q"}}, "details.speaker", id="speaker-unknown"),
        pytest.param("outage", {"headline": "h" * 301}, "headline", id="headline-301"),
        pytest.param("outage", {"details": {"cause": "ddos"}}, "details.service", id="details-without-service"),
        pytest.param("outage", {"details": None}, "details", id="details-removed"),
        pytest.param("outage", {"ended_at": "2025-05-01"}, "ended_at", id="ended-before-start"),
        pytest.param("political_move", {"entities": [{"name": "Elon Musk"}]}, "details.counterpart", id="no-counterpart"),
    ],
)
def test_apply_changes_that_break_a_rule_are_rejected(kind: str, changes: dict[str, Any], field: str) -> None:
    body = body_of(FACTORIES[kind]())
    before = copy.deepcopy(body)
    with pytest.raises(EventRejected) as info:
        apply_changes(kind, body, changes)
    assert info.value.reason == "schema"
    assert field in info.value.error, info.value.error
    assert body == before
