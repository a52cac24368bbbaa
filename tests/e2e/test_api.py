"""End to end: the HTTP API of docs/contract.md §4 against a real ``timeline serve`` process."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import redis

from e2e_support import dead_letters, pending, settle, store_counts

pytestmark = pytest.mark.e2e


def event(i: int, **over: Any) -> dict[str, Any]:
    body = {
        "id": f"api-{i}",
        "kind": "report",
        "occurred_at": f"2025-05-{1 + i % 28:02d}",
        "headline": f"API event {i}",
        "entities": [{"id": "api-entity", "name": "API Entity", "type": "organization", "role": "subject"}],
    }
    body.update(over)
    return body


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """An error answer: the status, and JSON ``{"error": str, "detail": ...}``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and "error" in body and "detail" in body, body
    assert isinstance(body["error"], str) and body["error"], body
    return body


@pytest.fixture
def server(serve):
    return serve()


@pytest.fixture
def http(server):
    with server.client() as client:
        yield client


# --------------------------------------------------------------------------------------------
# POST /events
# --------------------------------------------------------------------------------------------


def test_wait_true_answers_once_stored_and_projected(server, http: httpx.Client, redis_client: redis.Redis) -> None:
    for i in range(5):
        response = http.post("/events", params={"wait": "true"}, json=event(i))
        assert response.status_code == 201, response.text
        assert response.json() == {"accepted": [f"api-{i}"], "rejected": []}
        # read right after: no waiting, no retry
        ids = [e["event_id"] for e in http.get("/entities/api-entity/timeline").json()["entries"]]
        assert f"api-{i}" in ids
        assert http.get(f"/events/api-{i}").status_code == 200
        assert f"api-{i}" in [e["event_id"] for e in http.get("/timeline").json()["entries"]]
    # an array: all stored and projected when it answers
    response = http.post("/events?wait=true", json=[event(i) for i in range(5, 305)])
    assert response.status_code == 201, response.text
    assert len(response.json()["accepted"]) == 300
    assert http.get("/entities/api-entity").json()["event_count"] == 305
    assert all(p["lag"] == 0 for p in http.get("/projections").json())


def test_wait_true_moves_an_id_conflict_to_rejected(server, http: httpx.Client, redis_client: redis.Redis) -> None:
    assert http.post("/events?wait=true", json=event(1)).status_code == 201
    conflicting = event(1, headline="Same id, other content")
    response = http.post("/events?wait=true", json=[event(2), conflicting, event(1), event(3)])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["accepted"] == ["api-2", "api-1", "api-3"]  # the same content again is fine
    assert len(body["rejected"]) == 1, body
    rejected = body["rejected"][0]
    assert (rejected["index"], rejected["reason"]) == (1, "id_conflict")
    assert "id" in rejected["error"]
    # the first stays; the conflict is in the dead-letter stream (it went through the stream)
    assert http.get("/events/api-1").json()["headline"] == "API event 1"
    letters = dead_letters(redis_client, server.stream)
    assert [(l["reason"], json.loads(l["event"])) for l in letters] == [(b"id_conflict", conflicting)]


def test_invalid_events_are_answered_and_valid_ones_published(server, http: httpx.Client, redis_client: redis.Redis) -> None:
    big_event = {**event(9), "extra": "q" * 270_000}  # over 256 KiB: too_large before any other rule
    events = [
        event(0),
        event(1, kind="rumour"),
        event(2),
        {k: v for k, v in event(3).items() if k != "headline"},
        event(4, colour="red"),
        big_event,
        [1, 2],
        event(5),
    ]
    response = http.post("/events", json=events)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == ["api-0", "api-2", "api-5"]
    rejected = {r["index"]: r for r in body["rejected"]}
    assert sorted(rejected) == [1, 3, 4, 5, 6]
    for index, reason, field in [(1, "schema", "kind"), (3, "schema", "headline"), (4, "schema", "colour"),
                                 (5, "too_large", "event"), (6, "schema", "event")]:
        assert rejected[index]["reason"] == reason, rejected[index]
        assert field in rejected[index]["error"], rejected[index]
    settle(server, redis_client)
    assert sorted(e["event_id"] for e in http.get("/timeline").json()["entries"]) == ["api-0", "api-2", "api-5"]
    assert dead_letters(redis_client, server.stream) == []  # answered, not dead-lettered
    assert store_counts(server.db)[:2] == (3, 3)


def test_body_limits(server, http: httpx.Client, redis_client: redis.Redis) -> None:
    # 1,000 events is the most one request takes
    response = http.post("/events", json=[event(i) for i in range(1000)])
    assert response.status_code == 202, response.text
    assert len(response.json()["accepted"]) == 1000
    assert_error(http.post("/events", json=[event(i) for i in range(1001)]), 422)
    # a body over 5 MiB: 413, with a length declared or streamed in chunks
    huge = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    assert_error(http.post("/events", content=huge, headers={"content-type": "application/json"}), 413)

    def chunks():
        for _ in range(6):
            yield b" " * (1024 * 1024)

    assert_error(http.post("/events", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert_error(http.post("/events", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert_error(http.post("/events", content=b"", headers={"content-type": "application/json"}), 422)
    settle(server, redis_client)
    assert store_counts(server.db)[:2] == (1000, 1000)


def test_token(serve, redis_client: redis.Redis) -> None:
    server = serve(token="s3cret-token")
    with server.client() as http:
        assert_error(http.post("/events", json=event(1)), 401)
        assert_error(http.post("/events", json=event(1), headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(http.post("/events", json=event(1), headers={"Authorization": "s3cret-token"}), 401)
        assert_error(http.post("/events", json=event(1), headers={"Authorization": "Basic s3cret-token"}), 401)
        assert_error(http.post("/projections/timelines/rebuild"), 401)
        response = http.post("/events", json=event(1), headers={"Authorization": "Bearer s3cret-token"})
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == ["api-1"]
        settle(server, redis_client)
        # GETs are open
        for path in ("/health", "/projections", "/timeline", "/entities", "/entities/api-entity",
                     "/entities/api-entity/timeline", "/events/api-1", "/openapi.json"):
            assert http.get(path).status_code == 200, path
    assert store_counts(server.db)[:2] == (1, 1)


# --------------------------------------------------------------------------------------------
# reading: parameters and errors
# --------------------------------------------------------------------------------------------


def test_parameters_are_checked(server, http: httpx.Client) -> None:
    assert http.post("/events?wait=true", json=event(1)).status_code == 201
    for path in ("/timeline", "/entities/api-entity/timeline", "/entities"):
        for limit in ("0", "501", "-1", "many"):
            body = assert_error(http.get(path, params={"limit": limit}), 422)
            assert "limit" in json.dumps(body), (path, body)
        assert http.get(path, params={"limit": "500"}).status_code == 200, path
        assert http.get(path, params={"limit": "1"}).status_code == 200, path
    unknown = [
        ("/timeline", {"colour": "red"}),
        ("/timeline", {"role": "subject"}),  # roles are for an entity's timeline
        ("/entities/api-entity/timeline", {"sinse": "2025"}),
        ("/entities", {"name": "x"}),
        ("/entities/api-entity", {"x": "1"}),
        ("/events/api-1", {"include_retracted": "true"}),
        ("/projections", {"x": "1"}),
        ("/health", {"verbose": "1"}),
    ]
    for path, params in unknown:
        body = assert_error(http.get(path, params=params), 422)
        assert list(params)[0] in json.dumps(body), (path, body)
    assert_error(http.post("/events", params={"wiat": "true"}, json=event(2)), 422)
    bad_values = [
        ("/timeline", {"since": "yesterday"}, "since"),
        ("/timeline", {"until": "2025-13"}, "until"),
        ("/timeline", {"kind": "rumour"}, "kind"),
        ("/timeline", {"order": "sideways"}, "order"),
        ("/timeline", {"as_of": "2025-05-24T10:00"}, "as_of"),  # a time needs an offset
        ("/timeline", {"cursor": "not-a-cursor"}, "cursor"),
        ("/timeline", {"include_retracted": "perhaps"}, "include_retracted"),
        ("/entities/api-entity/timeline", {"role": "hero"}, "role"),
        ("/entities", {"type": "planet"}, "type"),
        ("/events/api-1", {"as_of": "soon"}, "as_of"),
    ]
    for path, params, name in bad_values:
        body = assert_error(http.get(path, params=params), 422)
        assert name in json.dumps(body), (path, params, body)
    # fractional seconds are allowed in as_of
    assert http.get("/timeline", params={"as_of": "2099-01-01T00:00:00.123456Z"}).status_code == 200


def test_unknown_things_are_404(server, http: httpx.Client) -> None:
    assert http.post("/events?wait=true", json=event(1)).status_code == 201
    assert_error(http.get("/entities/nobody"), 404)
    assert_error(http.get("/entities/nobody/timeline"), 404)
    assert_error(http.get("/events/no-such-event"), 404)
    assert_error(http.get("/no/such/route"), 404)


def test_related_entities(server, http: httpx.Client) -> None:
    def with_entities(i: int, *ids: str) -> dict[str, Any]:
        return event(i, entities=[{"id": e, "name": e.title(), "role": "subject" if not n else "mentioned"}
                                  for n, e in enumerate(ids)])

    events = [
        with_entities(1, "hub", "often"),
        with_entities(2, "hub", "often", "once"),
        with_entities(3, "often", "hub"),
        with_entities(4, "elsewhere", "once"),
    ]
    assert http.post("/events?wait=true", json=events).status_code == 201
    response = http.get("/entities/hub/related")
    assert response.status_code == 200, response.text
    related = response.json()["entities"]
    assert [(e["id"], e["count"]) for e in related] == [("often", 3), ("once", 1)]
    assert set(related[0]) >= {"id", "name", "type", "count", "last_at"}
    assert [e["id"] for e in http.get("/entities/hub/related", params={"limit": 1}).json()["entities"]] == ["often"]
    for limit in ("0", "501"):
        assert_error(http.get("/entities/hub/related", params={"limit": limit}), 422)
    assert_error(http.get("/entities/hub/related", params={"colour": "red"}), 422)
    assert_error(http.get("/entities/nobody/related"), 404)


def test_docs_and_openapi(server, http: httpx.Client) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/events" in paths and "/timeline" in paths and "/health" in paths
    docs = http.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


def test_projections_and_health(server, http: httpx.Client, redis_client: redis.Redis) -> None:
    assert http.post("/events?wait=true", json=[event(i) for i in range(10)]).status_code == 201
    projections = http.get("/projections").json()
    assert isinstance(projections, list) and projections
    for p in projections:
        assert set(p) >= {"name", "version", "position", "head", "lag", "state"}
        assert (p["position"], p["head"], p["lag"], p["state"]) == (10, 10, 0, "live")
    health = http.get("/health")
    assert health.status_code == 200
    backlog = health.json()["backlog"]
    assert isinstance(backlog, int) and not isinstance(backlog, bool) and backlog == 0


def test_health_follows_redis(serve, own_redis) -> None:
    server = serve(redis_url=own_redis.url)
    with server.client(timeout=30) as http:
        health = http.get("/health")
        assert health.status_code == 200, health.text
        assert isinstance(health.json()["backlog"], int)

        own_redis.stop()
        try:
            response = http.get("/health")
            assert response.status_code == 503, response.text
            assert "redis" in json.dumps(response.json()).lower(), response.text
        finally:
            own_redis.start()

        deadline = time.monotonic() + 20
        last = None
        while time.monotonic() < deadline:
            last = http.get("/health")
            if last.status_code == 200:
                break
            time.sleep(0.2)
        assert last is not None and last.status_code == 200, f"{last.text}\nstderr:\n{server.stderr()}"
        first_ok = last.json()  # the first 200 after Redis is back: checked at the end
        # and the consumer works again: an event posted now is stored and projected
        response = http.post("/events?wait=true", json=event(1))
        assert response.status_code == 201, f"{response.text}\nstderr:\n{server.stderr()}"
        assert http.get("/events/api-1").status_code == 200
        again = http.get("/health")
        assert again.status_code == 200 and isinstance(again.json()["backlog"], int), again.text
    client = redis.Redis.from_url(own_redis.url)
    try:
        assert pending(client, server.stream) == 0
    finally:
        client.close()
    # a 200 says the service is healthy: then it reports the backlog as a number, not null
    assert isinstance(first_ok["backlog"], int), f"first 200 after Redis came back: {first_ok}"
