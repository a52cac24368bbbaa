"""End to end: events in through every door (plain XADD, redis-cli, POST /events, the Python
publishers), timelines out over HTTP; bad entries into the dead-letter stream (docs/contract.md §1–§4).

Each test runs its own ``timeline serve`` process with its own SQLite file and stream.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import datetime
from typing import Any

import pytest
import redis

from e2e_support import (
    dead_letters,
    pending,
    redis_cli,
    settle,
    store_counts,
    undelivered,
)
from timeline.publisher import AsyncPublisher, Publisher

pytestmark = pytest.mark.e2e


# --------------------------------------------------------------------------------------------
# the scenario: the same events through each door give the same timelines
# --------------------------------------------------------------------------------------------

DERIVED_HEADLINE = "Acme Cloud's year in review: growth and growing pains"


def scenario() -> list[dict[str, Any]]:
    """News of all four kinds, a derived id, non-ASCII names, a correction, a retraction and
    an alias, in the order a scraper would send them."""
    return [
        {
            "id": "acme-inc-founded-2024",
            "kind": "report",
            "occurred_at": "2024",
            "headline": "Acme Inc. founded",
            "entities": [{"id": "acme-inc", "name": "Acme Inc.", "type": "organization", "role": "subject"}],
            "details": {"category": "business"},
        },
        {
            "id": "acme-outage-2025-05-24",
            "kind": "outage",
            "occurred_at": "2025-05-24T14:30Z",
            "ended_at": "2025-05-24T16:30Z",
            "headline": "Acme Cloud is down for two hours",
            "summary": "Customers of Société Générale among those affected — «panne» for two hours.",
            "entities": [
                {"name": "Acme Cloud", "type": "organization", "role": "subject"},
                {"name": "Société Générale", "type": "organization"},
                {"name": "DieNet", "type": "group", "role": "mentioned"},
            ],
            "sources": [
                {"url": "https://news.example/acme", "publisher": "Example Wire", "published_at": "2025-05-25T08:00:00Z"}
            ],
            "details": {"service": "Acme Cloud", "duration_minutes": 120, "cause": "ddos", "claimed_by": "dienet"},
        },
        {
            "id": "doe-statement-2025-05-25",
            "kind": "statement",
            "occurred_at": "2025-05-25",
            "headline": "Doe says the outage was an attack",
            "entities": [
                {"name": "Jane Doe", "type": "person", "role": "subject"},
                {"id": "acme-cloud", "name": "Acme Cloud", "type": "organization", "role": "mentioned"},
            ],
            "details": {"speaker": "jane-doe", "quote": "It was an attack.", "medium": "post on X"},
        },
        {
            "id": "doe-donation-2025-05",
            "kind": "political_move",
            "occurred_at": "2025-05",
            "headline": "Doe gives to the Example Party",
            "entities": [
                {"id": "jane-doe", "name": "Jane Doe", "type": "person", "role": "actor"},
                {"name": "Example Party", "type": "group", "role": "target"},
            ],
            "details": {
                "actor": "jane-doe",
                "action": "contribution",
                "counterpart": "example-party",
                "amount": {"value": 1000000, "currency": "USD"},
            },
        },
        {  # no id: derived from the content
            "kind": "report",
            "occurred_at": "2025",
            "headline": DERIVED_HEADLINE,
            "entities": [{"id": "acme-cloud", "name": "Acme Cloud", "type": "organization", "role": "actor"}],
        },
        {
            "id": "putin-visit-2025-03",
            "kind": "report",
            "occurred_at": "2025-03",
            "headline": "Путин visits Acme's data centre",
            "entities": [{"name": "Владимир Путин", "type": "person", "role": "subject"}],
        },
        {
            "id": "fix-doe-statement",
            "kind": "correction",
            "occurred_at": "2025-05-26T09:00:00+02:00",
            "details": {
                "corrects": "doe-statement-2025-05-25",
                "changes": {"headline": "Doe says the outage may have been an attack"},
                "reason": "misquoted",
            },
        },
        {
            "id": "retract-doe-donation",
            "kind": "retraction",
            "occurred_at": "2025-05-27",
            "details": {"retracts": "doe-donation-2025-05", "reason": "the donation never happened"},
        },
        {
            "id": "alias-acme-inc",
            "kind": "entity_alias",
            "occurred_at": "2025-01-01",
            "details": {"alias": "acme-inc", "canonical": "acme-cloud"},
        },
    ]


def scenario_bytes() -> list[bytes]:
    """The scenario as a scraper might write it: odd white space, non-ASCII unescaped."""
    out = []
    for i, event in enumerate(scenario()):
        if i % 2:
            out.append(json.dumps(event, ensure_ascii=False, indent="\t").encode())
        else:
            out.append(json.dumps(event, ensure_ascii=False, separators=(" ,", ":  ")).encode())
    return out


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_scenario(server, client: redis.Redis) -> None:
    """What every door must lead to, once settled."""
    settle(server, client)
    assert dead_letters(client, server.stream) == []
    assert pending(client, server.stream) == 0
    count, distinct, low, high = store_counts(server.db)
    assert (count, distinct, low, high) == (9, 9, 1, 9)

    with server.client() as http:
        # the global timeline: news only, retracted hidden, by start of interval then position
        timeline = http.get("/timeline", params={"limit": 500}).json()
        assert [e["headline"] for e in timeline["entries"]] == [
            "Acme Inc. founded",
            DERIVED_HEADLINE,
            "Путин visits Acme's data centre",
            "Acme Cloud is down for two hours",
            "Doe says the outage may have been an attack",
        ]
        assert timeline["next_cursor"] is None
        derived_id = timeline["entries"][1]["event_id"]
        assert derived_id and derived_id not in {e["id"] for e in scenario() if "id" in e}

        # the entity: an alias answers with its canonical entity
        entity = http.get("/entities/acme-cloud").json()
        assert entity["id"] == "acme-cloud"
        assert entity["name"] == "Acme Cloud"
        assert entity["type"] == "organization"
        assert entity["aliases"] == ["acme-inc"]
        assert entity["event_count"] == 4
        assert entity["first_at"] == "2024"
        assert entity["last_at"] == "2025-05-25"
        assert http.get("/entities/acme-inc").json() == entity

        # its timeline holds the events filed under either id, in order, with roles
        result = http.get("/entities/acme-inc/timeline").json()
        assert result["entity"] == entity
        entries = result["entries"]
        assert [(e["event_id"], e["role"]) for e in entries] == [
            ("acme-inc-founded-2024", "subject"),
            (derived_id, "actor"),
            ("acme-outage-2025-05-24", "subject"),
            ("doe-statement-2025-05-25", "mentioned"),
        ]
        outage = entries[2]
        assert outage["kind"] == "outage"
        assert outage["occurred_at"] == "2025-05-24T14:30Z"  # in the form it was written
        assert outage["ended_at"] == "2025-05-24T16:30Z"
        assert outage["summary"].startswith("Customers of Société Générale")
        assert outage["details"] == {"service": "Acme Cloud", "duration_minutes": 120, "cause": "ddos", "claimed_by": "dienet"}
        assert outage["sources"][0]["url"] == "https://news.example/acme"
        assert outage["status"] == "active"
        assert entries[3]["status"] == "corrected"
        assert entries[3]["headline"] == "Doe says the outage may have been an attack"
        for entry in entries:
            assert isinstance(entry["position"], int) and 1 <= entry["position"] <= 9
            _instant(entry["recorded_at"])
        desc = http.get("/entities/acme-cloud/timeline", params={"order": "desc"}).json()["entries"]
        assert [e["event_id"] for e in desc] == [e["event_id"] for e in reversed(entries)]
        subject = http.get("/entities/acme-cloud/timeline", params={"role": "subject"}).json()["entries"]
        assert [e["event_id"] for e in subject] == ["acme-inc-founded-2024", "acme-outage-2025-05-24"]

        # a retracted event leaves the timeline unless asked for
        doe = http.get("/entities/jane-doe/timeline").json()
        assert [e["event_id"] for e in doe["entries"]] == ["doe-statement-2025-05-25"]
        doe_all = http.get("/entities/jane-doe/timeline", params={"include_retracted": "true"}).json()
        assert [(e["event_id"], e["role"], e["status"]) for e in doe_all["entries"]] == [
            ("doe-donation-2025-05", "actor", "retracted"),
            ("doe-statement-2025-05-25", "subject", "corrected"),
        ]
        assert [e["event_id"] for e in http.get("/entities/example-party/timeline", params={"include_retracted": "true"}).json()["entries"]] == ["doe-donation-2025-05"]

        # derived entity ids, search ignoring case and accents
        putin = http.get("/entities/владимир-путин")
        assert putin.status_code == 200, putin.text
        assert putin.json()["name"] == "Владимир Путин"
        for q, wanted in [
            ("societe", "societe-generale"),
            ("SOCIÉTÉ gén", "societe-generale"),
            ("путин", "владимир-путин"),
            ("acme-inc", "acme-cloud"),  # an alias finds its entity
            ("acme inc", "acme-cloud"),
        ]:
            found = http.get("/entities", params={"q": q}).json()["entities"]
            assert wanted in [e["id"] for e in found], (q, found)
        societe = next(e for e in http.get("/entities", params={"q": "societe"}).json()["entities"] if e["id"] == "societe-generale")
        assert set(societe) >= {"id", "name", "type", "aliases", "event_count", "first_at", "last_at"}
        assert (societe["name"], societe["type"], societe["event_count"]) == ("Société Générale", "organization", 1)
        people = http.get("/entities", params={"type": "person"}).json()["entities"]
        assert {e["id"] for e in people} == {"jane-doe", "владимир-путин"}

        # one event as it now stands
        statement = http.get("/events/doe-statement-2025-05-25").json()
        assert statement["headline"] == "Doe says the outage may have been an attack"
        assert statement["status"] == "corrected"
        assert statement["kind"] == "statement"
        assert [h["event_id"] for h in statement["history"]] == ["fix-doe-statement"]
        assert statement["history"][0]["kind"] == "correction"
        assert isinstance(statement["position"], int)
        _instant(statement["recorded_at"])
        outage_event = http.get("/events/acme-outage-2025-05-24").json()
        assert outage_event["status"] == "active" and outage_event["history"] == []
        assert [e["id"] for e in outage_event["entities"]] == ["acme-cloud", "societe-generale", "dienet"]
        donation = http.get("/events/doe-donation-2025-05").json()
        assert donation["status"] == "retracted"
        assert [h["event_id"] for h in donation["history"]] == ["retract-doe-donation"]
        derived = http.get(f"/events/{derived_id}").json()
        assert derived["headline"] == DERIVED_HEADLINE and derived["status"] == "active"

        # store order is publish order
        positions = [http.get(f"/events/{eid}").json()["position"] for eid in (
            "acme-inc-founded-2024", "acme-outage-2025-05-24", "doe-statement-2025-05-25",
            "doe-donation-2025-05", derived_id, "putin-visit-2025-03", "fix-doe-statement",
            "retract-doe-donation", "alias-acme-inc",
        )]
        assert positions == list(range(1, 10))


def test_plain_xadd_as_any_scraper_sends_it(serve, redis_client: redis.Redis, stream_name: str) -> None:
    server = serve()
    for data in scenario_bytes():
        redis_client.xadd(stream_name, {"event": data.decode()})
    # the same content again, keys reordered and re-spaced: a no-op
    for event in scenario()[:5]:
        redis_client.xadd(stream_name, {"event": json.dumps(dict(reversed(list(event.items()))), indent=1)})
    check_scenario(server, redis_client)


@pytest.mark.skipif(redis_cli() is None, reason="redis-cli is not installed")
def test_redis_cli_xadd(serve, redis_client: redis.Redis, redis_url: str, stream_name: str) -> None:
    server = serve()
    for data in scenario_bytes():
        done = subprocess.run(
            [redis_cli(), "-u", redis_url, "XADD", stream_name, "*", "event", data.decode()],
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0 and b"ERR" not in done.stdout, done
    check_scenario(server, redis_client)


def test_post_single_objects(serve, redis_client: redis.Redis) -> None:
    server = serve()
    with server.client() as http:
        for i, data in enumerate(scenario_bytes()):
            response = http.post("/events", content=data, headers={"content-type": "application/json"})
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["rejected"] == [] and len(body["accepted"]) == 1
            if "id" in scenario()[i]:
                assert body["accepted"] == [scenario()[i]["id"]]
    check_scenario(server, redis_client)


def test_post_array(serve, redis_client: redis.Redis) -> None:
    server = serve()
    events = scenario()
    with server.client() as http:
        response = http.post("/events", json=events)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["rejected"] == []
    assert len(body["accepted"]) == len(events)
    assert [a for a, e in zip(body["accepted"], events) if "id" in e] == [e["id"] for e in events if "id" in e]
    check_scenario(server, redis_client)
    # the derived id the API answered is the one stored
    with server.client() as http:
        assert http.get(f"/events/{body['accepted'][4]}").json()["headline"] == DERIVED_HEADLINE


def test_python_publisher(serve, redis_client: redis.Redis, redis_url: str, stream_name: str) -> None:
    server = serve()
    with Publisher(redis_url, stream_name) as publisher:
        report = publisher.publish(scenario()[:4])
        rest = publisher.publish(scenario_bytes()[4:])
    assert report.rejected == [] and rest.rejected == []
    assert len(report.accepted) + len(rest.accepted) == 9
    assert len(report.entry_ids) == 4
    check_scenario(server, redis_client)
    with server.client() as http:
        assert http.get(f"/events/{rest.accepted[0]}").json()["headline"] == DERIVED_HEADLINE


def test_async_publisher(serve, redis_client: redis.Redis, redis_url: str, stream_name: str) -> None:
    server = serve()

    async def publish() -> list[str]:
        async with AsyncPublisher(redis_url, stream_name) as publisher:
            report = await publisher.publish(scenario())
            assert report.rejected == []
            again = await publisher.publish_one(scenario()[0])  # idempotent
            assert again == "acme-inc-founded-2024"
            return report.accepted

    accepted = asyncio.run(publish())
    assert len(accepted) == 9
    check_scenario(server, redis_client)


# --------------------------------------------------------------------------------------------
# dead letters (docs/contract.md §3)
# --------------------------------------------------------------------------------------------


def valid(i: int, **over: Any) -> dict[str, Any]:
    event = {
        "id": f"ok-{i}",
        "kind": "report",
        "occurred_at": "2025-05-24",
        "headline": f"Valid event {i}",
        "entities": [{"id": "valid-entity", "name": "Valid Entity", "role": "subject"}],
    }
    event.update(over)
    return event


def _dumps(event: Any) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


def bad_entries() -> list[tuple[str, dict[str, bytes] | None, str | None, str]]:
    """``(label, fields, expected reason or None for a valid entry, field named in the error)``,
    in publish order: valid entries interleaved with bad ones of each reason."""
    odd = " \t\r\n\u00a0"  # odd white space inside strings; raw tabs/newlines between tokens
    big = valid(100, summary="é" * 140_000)  # > 256 KiB of UTF-8 (and > 5,000 chars)
    big_bytes = b"{\r\n\t" + _dumps(big)[1:]
    assert len(big_bytes) > 256 * 1024
    speaker_missing = valid(0, kind="statement", id="bad-speaker", headline="Speech",
                            details={"speaker": "nobody", "quote": "hi"})
    return [
        ("valid 1", {"event": _dumps(valid(1))}, None, ""),
        ("no event field", {"evnt": _dumps(valid(2)), "note": "héllo\tthere".encode()}, "no_event", "event"),
        ("too large", {"event": big_bytes}, "too_large", "event"),
        ("valid 3", {"event": b"\t\r\n " + _dumps(valid(3, headline=f"Café{odd}Zürich — ok")) + b" \n"}, None, ""),
        ("truncated json", {"event": '{\t"kind": "report",\r\n "headline": "Café — Zürich\u00a0'.encode()}, "bad_json", "event"),
        ("not utf-8 (latin-1)", {"event": '{"kind": "report", "headline": "Caf\u00e9"}'.encode("latin-1")}, "bad_json", "event"),
        ("NaN", {"event": b'{"kind": "report", "headline": NaN}'}, "bad_json", "event"),
        ("empty", {"event": b""}, "bad_json", "event"),
        ("valid 4", {"event": _dumps(valid(4))}, None, ""),
        ("unknown kind", {"event": _dumps(valid(5, kind="rumour"))}, "schema", "kind"),
        ("no headline", {"event": _dumps({k: v for k, v in valid(6).items() if k != "headline"})}, "schema", "headline"),
        ("unknown field", {"event": "{ \"colour\":\t\"grün\" ,".encode() + _dumps(valid(7))[1:]}, "schema", "colour"),
        ("data envelope", {"event": _dumps(valid(8, data={"x": 1}))}, "schema", "data"),
        ("speaker not an entity", {"event": _dumps(speaker_missing)}, "schema", "details.speaker"),
        ("bad date", {"event": _dumps(valid(9, occurred_at="24/05/2025"))}, "schema", "occurred_at"),
        ("time without offset", {"event": _dumps(valid(10, occurred_at="2025-05-24T14:30"))}, "schema", "occurred_at"),
        ("not an object", {"event": b"[1, 2]"}, "schema", "event"),
        ("bad wikidata", {"event": _dumps(valid(11, entities=[{"name": "W", "wikidata": "X1"}]))}, "schema", "wikidata"),
        ("ends before start", {"event": _dumps(valid(12, ended_at="2025-05-23"))}, "schema", "ended_at"),
        ("wrong type", {"event": _dumps(valid(13, headline=42))}, "schema", "headline"),
        ("alias of itself", {"event": _dumps({"id": "alias-self", "kind": "entity_alias", "occurred_at": "2025",
                                              "details": {"alias": "a", "canonical": "a"}})}, "schema", "details.alias"),
        ("alias a→b", {"event": _dumps({"id": "alias-ab", "kind": "entity_alias", "occurred_at": "2025",
                                        "details": {"alias": "alpha", "canonical": "beta"}})}, None, ""),
        ("alias b→c", {"event": _dumps({"id": "alias-bc", "kind": "entity_alias", "occurred_at": "2025",
                                        "details": {"alias": "beta", "canonical": "gamma"}})}, None, ""),
        ("alias c→a closes a cycle", {"event": _dumps({"id": "alias-ca", "kind": "entity_alias", "occurred_at": "2025",
                                                       "details": {"alias": "gamma", "canonical": "alpha"}})}, "schema", "details.canonical"),
        ("id conflict", {"event": _dumps(valid(1, headline="Other content, same id — «conflit»"))}, "id_conflict", "id"),
        ("same content again", {"event": json.dumps(dict(reversed(list(valid(1).items()))), indent="\t").encode()}, None, ""),
        ("valid 14", {"event": _dumps(valid(14, entities=[{"name": "Société Générale", "role": "subject"}]))}, None, ""),
    ]


def test_bad_entries_are_dead_lettered_exactly_once(serve, backend: str, redis_client: redis.Redis, stream_name: str) -> None:
    server = serve()
    cases = bad_entries()
    sent: dict[str, tuple[str, dict[str, bytes], str | None, str]] = {}
    with redis_client.pipeline(transaction=False) as pipe:
        for label, fields, reason, field in cases:
            pipe.xadd(stream_name, fields)
        ids = [i.decode() for i in pipe.execute()]
    for entry_id, (label, fields, reason, field) in zip(ids, cases):
        sent[entry_id] = (label, fields, reason, field)

    settle(server, redis_client)
    time.sleep(1.5)  # longer than TIMELINE_CLAIM_IDLE_SECONDS: nothing is claimed and dead-lettered again
    settle(server, redis_client)

    letters = dead_letters(redis_client, stream_name)
    expected = {eid: case for eid, case in sent.items() if case[2] is not None}
    by_source: dict[str, list[dict[str, bytes]]] = {}
    for letter in letters:
        assert set(letter) == {"event", "reason", "error", "source_id", "_id"}, letter
        by_source.setdefault(letter["source_id"].decode(), []).append(letter)
    problems = []
    for entry_id, (label, fields, reason, field) in expected.items():
        found = by_source.get(entry_id, [])
        if len(found) != 1:
            problems.append(f"{label}: {len(found)} dead letters")
            continue
        letter = found[0]
        if letter["reason"].decode() != reason:
            problems.append(f"{label}: reason {letter['reason']!r}, expected {reason!r} ({letter['error']!r})")
        if field not in letter["error"].decode():
            problems.append(f"{label}: error {letter['error'].decode()!r} does not name {field!r}")
        if reason == "no_event":
            as_json = json.loads(letter["event"])
            want = {k: v.decode() for k, v in fields.items()}
            if as_json != want:
                problems.append(f"{label}: event field {letter['event']!r}, expected the fields {want!r}")
        elif letter["event"] != fields["event"]:
            problems.append(f"{label}: event bytes changed ({letter['event'][:80]!r} vs {fields['event'][:80]!r})")
    unexpected = sorted(set(by_source) - set(expected))
    if unexpected:
        problems.append(f"dead letters for entries that are valid: {[sent[u][0] for u in unexpected if u in sent]}")
    assert not problems, "\n".join(problems) + "\nserver stderr:\n" + server.stderr()
    assert len(letters) == len(expected)

    # the valid ones are all stored, once; the first of a conflicting pair stays
    assert pending(redis_client, stream_name) == 0
    assert undelivered(redis_client, stream_name) == 0
    count, distinct, low, high = store_counts(server.db)
    assert (count, distinct, low, high) == (6, 6, 1, 6)  # ok-1, ok-3, ok-4, alias-ab, alias-bc, ok-14
    with server.client() as http:
        first = http.get("/events/ok-1").json()
        assert first["headline"] == "Valid event 1"
        assert http.get("/events/ok-3").json()["headline"] == "Café \t\r\n\u00a0Zürich — ok"
        for missing in ("alias-ca", "alias-self", "bad-speaker", "ok-5", "ok-100"):
            assert http.get(f"/events/{missing}").status_code == 404
        # the aliases that were stored resolve; the cycle was not closed
        assert http.get("/entities/societe-generale").status_code == 200
        timeline = http.get("/timeline").json()["entries"]
        assert sorted(e["event_id"] for e in timeline) == ["ok-1", "ok-14", "ok-3", "ok-4"]


def test_event_not_in_utf8_is_bad_json(serve, redis_client: redis.Redis, stream_name: str) -> None:
    """§1: an event is JSON in UTF-8. A UTF-16 or UTF-32 entry (even of an otherwise valid event,
    which Python's ``json.loads`` on bytes would silently accept) is ``bad_json``."""
    server = serve()
    sent = {}
    for encoding in ("utf-16", "utf-32"):
        data = json.dumps(valid(1, id=f"enc-{encoding}"), ensure_ascii=False).encode(encoding)
        sent[redis_client.xadd(stream_name, {"event": data}).decode()] = (encoding, data)
    redis_client.xadd(stream_name, {"event": _dumps(valid(2))})
    settle(server, redis_client)
    letters = {l["source_id"].decode(): l for l in dead_letters(redis_client, stream_name)}
    stored = store_counts(server.db)[0]
    problems = []
    for entry_id, (encoding, data) in sent.items():
        letter = letters.get(entry_id)
        if letter is None:
            problems.append(f"{encoding}: not dead-lettered (stored events: {stored})")
        elif (letter["reason"], letter["event"]) != (b"bad_json", data):
            problems.append(f"{encoding}: {letter['reason']!r} {letter['error']!r}")
    assert not problems, "\n".join(problems) + "\nserver stderr:\n" + server.stderr()
    assert store_counts(server.db)[:2] == (1, 1)
