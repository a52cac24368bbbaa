"""Entities through the real ``timeline serve``: how names and types are decided (docs/entities.md),
and aliases in long chains (reads merge them without walking the chain; a cycle closed over a
chain of any length is refused)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import redis

from e2e_support import Server, dead_letters, settle
from events.models import parse_event
from events.store import Candidate, EventStore


def news(event_id: str, occurred_at: str, entities: list[dict[str, Any]], headline: str = "News") -> dict[str, Any]:
    return {"id": event_id, "kind": "report", "occurred_at": occurred_at, "headline": headline, "entities": entities}


def post(http: httpx.Client, *events: dict[str, Any]) -> None:
    response = http.post("/events", params={"wait": "true"}, json=list(events))
    assert response.status_code == 201, response.text
    assert response.json()["rejected"] == [], response.text


def named(http: httpx.Client, entity_id: str) -> tuple[str, str]:
    response = http.get(f"/entities/{entity_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["name"], body["type"]


def named_as_of(http: httpx.Client, entity_id: str, as_of: str) -> tuple[str, str]:
    response = http.get(f"/entities/{entity_id}/timeline", params={"as_of": as_of})
    assert response.status_code == 200, response.text
    body = response.json()["entity"]
    return body["name"], body["type"]


def listed(http: httpx.Client, entity_id: str) -> tuple[str, str]:
    entities = http.get("/entities", params={"limit": 500}).json()["entities"]
    found = [(e["name"], e["type"]) for e in entities if e["id"] == entity_id]
    assert len(found) == 1, entities
    return found[0]


def rebuild(http: httpx.Client, server: Server) -> None:
    assert http.post("/projections/entities/rebuild").status_code == 202
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = {p["name"]: p for p in http.get("/projections").json()}
        if states["entities"]["state"] == "live" and states["entities"]["lag"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the rebuild did not finish; stderr:\n{server.stderr()}")


def test_names_and_types_follow_the_statements_in_force(serve) -> None:
    server = serve()
    with server.client() as http:
        # A retracted event never names or types an entity.
        post(http, news("acme-1", "2024-03", [{"id": "acme", "name": "Acme Corp", "type": "organization"}]))
        post(http, news("acme-typo", "2025-01", [{"id": "acme", "name": "ACME CORP (typo)", "type": "person"}]))
        assert named(http, "acme") == ("ACME CORP (typo)", "person")
        before_retraction = http.get("/events/acme-typo").json()["recorded_at"]
        post(http, {"kind": "retraction", "occurred_at": "2025-01", "details": {"retracts": "acme-typo", "reason": "typo"}})
        assert named(http, "acme") == ("Acme Corp", "organization")
        assert listed(http, "acme") == ("Acme Corp", "organization")
        # As of before the retraction, the entity was named as the typo named it.
        assert named_as_of(http, "acme", before_retraction) == ("ACME CORP (typo)", "person")

        # A mention without a type does not turn a person into ``other``.
        post(http, news("musk-1", "2025-05", [{"id": "elon-musk", "name": "Elon Musk", "type": "person"}]))
        post(http, news("musk-2", "2025-05-24", [{"name": "Elon Musk", "role": "subject"}]))
        assert named(http, "elon-musk") == ("Elon Musk", "person")
        assert named_as_of(http, "elon-musk", http.get("/events/musk-2").json()["recorded_at"]) == ("Elon Musk", "person")

        # A correction that changes only the headline of an old event does not bring back its
        # spelling; one that sets ``entities`` is a statement of its own.
        post(http, news("tw-2014", "2014", [{"id": "twitter", "name": "Twitter Inc", "type": "organization"}]))
        post(http, news("tw-2023", "2023", [{"id": "twitter", "name": "Twitter", "type": "organization"}]))
        post(http, {"kind": "correction", "occurred_at": "2025", "details": {"corrects": "tw-2014", "changes": {"headline": "Fixed"}}})
        assert named(http, "twitter") == ("Twitter", "organization")
        post(http, {"kind": "correction", "occurred_at": "2025", "details": {
            "corrects": "tw-2014", "changes": {"entities": [{"id": "twitter", "name": "Twitter, Inc.", "type": "organization"}]}}})
        assert named(http, "twitter") == ("Twitter, Inc.", "organization")

        # An alias declaration with a name names its canonical entity.
        post(http, news("x-1", "2025-05-24", [{"id": "x", "name": "X"}]))
        post(http, {"kind": "entity_alias", "occurred_at": "2025", "details": {"alias": "twitter", "canonical": "x", "name": "X Corp"}})
        assert named(http, "twitter") == ("X Corp", "organization")  # the merged entity's type: Twitter's

        expected = {e: named(http, e) for e in ("acme", "elon-musk", "twitter", "x")}
        rebuild(http, server)
        assert {e: named(http, e) for e in expected} == expected
        assert named_as_of(http, "acme", before_retraction) == ("ACME CORP (typo)", "person")


CHAIN = 10_001  # longer than the 10,000 hops the old cycle check gave up after


def chain_store(db: Any) -> None:
    """A store with a chain of ``CHAIN`` aliases (c0 → c1 → … → c10001: each declaration makes
    the whole chain so far an alias of a new id) and a few events, written straight into SQLite."""
    events: list[dict[str, Any]] = []
    for i in range(40):
        entities = [{"id": f"other-{i % 4}", "name": f"Other {i % 4}", "type": "organization"}]
        if i % 2 == 0:
            entities.append({"id": f"c{(i * 997) % (CHAIN + 1)}", "name": "Chained", "type": "person", "role": "subject"})
        events.append(news(f"ev-{i}", f"2025-{1 + i % 12:02d}", entities, headline=f"Event {i}"))
    events += [
        {"id": f"alias-{i}", "kind": "entity_alias", "occurred_at": "2025", "details": {"alias": f"c{i}", "canonical": f"c{i + 1}"}}
        for i in range(CHAIN)
    ]
    with EventStore(db) as store:
        for start in range(0, len(events), 2000):
            batch = []
            for event in events[start : start + 2000]:
                raw = json.dumps(event).encode()
                batch.append(Candidate(parse_event(event), raw))
            results = store.append(batch)
            assert all(r.status == "stored" for r in results), [r for r in results if r.status != "stored"][:3]


def timed(http: httpx.Client, path: str, **params: Any) -> tuple[float, dict[str, Any]]:
    best = float("inf")
    body: dict[str, Any] = {}
    for _ in range(3):
        started = time.perf_counter()
        response = http.get(path, params=params)
        best = min(best, time.perf_counter() - started)
        assert response.status_code == 200, response.text
        body = response.json()
    return best, body


def test_a_long_alias_chain_reads_merged_and_a_cycle_over_it_is_refused(
    serve, redis_client: redis.Redis, stream_name: str
) -> None:
    server = serve(autostart=False)
    chain_store(server.db)
    server.start()
    root = f"c{CHAIN}"
    chained_events = {f"ev-{i}" for i in range(0, 40, 2)}
    with server.client() as http:
        settle(server, redis_client)
        figures = {}
        figures["entity"], entity = timed(http, "/entities/c0")
        assert entity["id"] == root and len(entity["aliases"]) == CHAIN
        assert entity["event_count"] == len(chained_events)
        assert (entity["name"], entity["type"]) == ("Chained", "person")
        figures["entities"], listing = timed(http, "/entities", limit=5)
        ids = [e["id"] for e in listing["entities"]]
        assert ids[0] == root and not any(i.startswith("c") and i != root for i in ids), ids
        figures["related"], related = timed(http, "/entities/c17/related")
        assert {e["id"] for e in related["entities"]} == {"other-0", "other-2"}
        assert sum(e["count"] for e in related["entities"]) == len(chained_events)
        figures["timeline"], timeline = timed(http, "/entities/c5000/timeline", limit=50)
        assert {e["event_id"] for e in timeline["entries"]} == chained_events
        figures["unrelated timeline"], _ = timed(http, "/entities/other-1/timeline", limit=50)
        figures["unrelated related"], _ = timed(http, "/entities/other-1/related")
        print({k: f"{v * 1000:.1f} ms" for k, v in figures.items()})

        # Closing the cycle over the whole chain is refused; a new alias of the chain is stored.
        closing = json.dumps({"id": "closing", "kind": "entity_alias", "occurred_at": "2025",
                              "details": {"alias": root, "canonical": "c0"}}).encode()
        source = redis_client.xadd(stream_name, {"event": closing}).decode()
        redis_client.xadd(stream_name, {"event": json.dumps({"id": "one-more", "kind": "entity_alias", "occurred_at": "2025",
                                                             "details": {"alias": "d", "canonical": "c0"}})})
        settle(server, redis_client)
        letters = [l for l in dead_letters(redis_client, stream_name) if l["source_id"].decode() == source]
        assert len(letters) == 1 and letters[0]["reason"] == b"schema", letters
        assert letters[0]["event"] == closing and b"details.canonical" in letters[0]["error"]
        assert http.get("/events/closing").status_code == 404
        assert http.get("/entities/d").json()["id"] == root
