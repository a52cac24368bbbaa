"""End to end: the HTTP API of docs/contract.md §4 against a real ``timeline serve`` process.

The tests that neither stop nor reconfigure the server share one (``serve_module``: starting
``timeline serve`` took 30-40 s under load), with an API token (writes send it). Each keeps to its own ids, entity and year of
``occurred_at`` (:class:`Mine`); what it says about the whole store (counts, positions, dead
letters) it says about what its own requests changed, read before and after.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any
from uuid import uuid4

import httpx
import pytest
import redis

from e2e_support import dead_letters, pending, settle, store_counts

pytestmark = pytest.mark.e2e


def event(i: int, tag: str = "", year: int = 2025, **over: Any) -> dict[str, Any]:
    body = {
        "id": f"api{tag}-{i}",
        "kind": "report",
        "occurred_at": f"{year}-05-{1 + i % 28:02d}",
        "headline": f"API event {i}",
        "entities": [{"id": f"api-entity{tag}", "name": "API Entity", "type": "organization", "role": "subject"}],
    }
    body.update(over)
    return body


_years = itertools.count(1901)


class Mine:
    """One test's share of the shared server: ids ``api-<tag>-<i>``, the entity
    ``api-entity-<tag>``, and a year of ``occurred_at`` no other test uses (``in_my_year``: the
    parameters that narrow the whole timeline to it)."""

    def __init__(self) -> None:
        self.tag = f"-{uuid4().hex[:10]}"
        self.year = next(_years)
        self.entity = f"api-entity{self.tag}"
        self.in_my_year = {"since": str(self.year), "until": str(self.year)}

    def id(self, i: int) -> str:
        return f"api{self.tag}-{i}"

    def event(self, i: int, **over: Any) -> dict[str, Any]:
        return event(i, self.tag, self.year, **over)


def dead_letters_after(client: redis.Redis, stream: str, mark: bytes) -> list[dict[str, bytes]]:
    """Dead letters added after ``mark`` (the dead-letter stream's last id when the test began)."""
    return [l for l in dead_letters(client, stream) if l["_id"] > mark]


def last_dead_letter(client: redis.Redis, stream: str) -> bytes:
    last = client.xrevrange(stream + ":dead", count=1)
    return last[0][0] if last else b"0-0"


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """An error answer: the status, and JSON ``{"error": str, "detail": ...}``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and "error" in body and "detail" in body, body
    assert isinstance(body["error"], str) and body["error"], body
    return body


TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(serve_module):
    """The module's server: writes need ``TOKEN`` (``http`` sends it; ``test_token`` checks it)."""
    return serve_module(token=TOKEN)


@pytest.fixture
def http(server):
    with server.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
def mine() -> Mine:
    return Mine()


# --------------------------------------------------------------------------------------------
# POST /events
# --------------------------------------------------------------------------------------------


def test_wait_true_answers_once_stored_and_projected(server, http: httpx.Client, mine: Mine) -> None:
    for i in range(5):
        response = http.post("/events", params={"wait": "true"}, json=mine.event(i))
        assert response.status_code == 201, response.text
        assert response.json() == {"accepted": [mine.id(i)], "rejected": []}
        # read right after: no waiting, no retry
        ids = [e["event_id"] for e in http.get(f"/entities/{mine.entity}/timeline").json()["entries"]]
        assert mine.id(i) in ids
        assert http.get(f"/events/{mine.id(i)}").status_code == 200
        everyone = http.get("/timeline", params=mine.in_my_year).json()["entries"]
        assert mine.id(i) in [e["event_id"] for e in everyone]
    # an array: all stored and projected when it answers
    response = http.post("/events?wait=true", json=[mine.event(i) for i in range(5, 305)])
    assert response.status_code == 201, response.text
    assert len(response.json()["accepted"]) == 300
    assert http.get(f"/entities/{mine.entity}").json()["event_count"] == 305
    assert all(p["lag"] == 0 for p in http.get("/projections").json())


def test_wait_true_moves_an_id_conflict_to_rejected(server, http: httpx.Client, redis_client: redis.Redis, mine: Mine) -> None:
    mark = last_dead_letter(redis_client, server.stream)
    assert http.post("/events?wait=true", json=mine.event(1)).status_code == 201
    conflicting = mine.event(1, headline="Same id, other content")
    response = http.post("/events?wait=true", json=[mine.event(2), conflicting, mine.event(1), mine.event(3)])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["accepted"] == [mine.id(2), mine.id(1), mine.id(3)]  # the same content again is fine
    assert len(body["rejected"]) == 1, body
    rejected = body["rejected"][0]
    assert (rejected["index"], rejected["reason"]) == (1, "id_conflict")
    assert "id" in rejected["error"]
    # the first stays; the conflict is in the dead-letter stream (it went through the stream)
    assert http.get(f"/events/{mine.id(1)}").json()["headline"] == "API event 1"
    letters = dead_letters_after(redis_client, server.stream, mark)
    assert [(l["reason"], json.loads(l["event"])) for l in letters] == [(b"id_conflict", conflicting)]


def test_invalid_events_are_answered_and_valid_ones_published(server, http: httpx.Client, redis_client: redis.Redis, mine: Mine) -> None:
    settle(server, redis_client)  # the store's counts before: nothing of an earlier test in flight
    mark, before = last_dead_letter(redis_client, server.stream), store_counts(server.db)
    big_event = {**mine.event(9), "extra": "q" * 270_000}  # over 256 KiB: too_large before any other rule
    events = [
        mine.event(0),
        mine.event(1, kind="rumour"),
        mine.event(2),
        {k: v for k, v in mine.event(3).items() if k != "headline"},
        mine.event(4, colour="red"),
        big_event,
        [1, 2],
        mine.event(5),
    ]
    response = http.post("/events", json=events)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == [mine.id(0), mine.id(2), mine.id(5)]
    rejected = {r["index"]: r for r in body["rejected"]}
    assert sorted(rejected) == [1, 3, 4, 5, 6]
    for index, reason, field in [(1, "schema", "kind"), (3, "schema", "headline"), (4, "schema", "colour"),
                                 (5, "too_large", "event"), (6, "schema", "event")]:
        assert rejected[index]["reason"] == reason, rejected[index]
        assert field in rejected[index]["error"], rejected[index]
    settle(server, redis_client)
    everyone = http.get("/timeline", params=mine.in_my_year).json()["entries"]
    assert sorted(e["event_id"] for e in everyone) == [mine.id(0), mine.id(2), mine.id(5)]
    assert dead_letters_after(redis_client, server.stream, mark) == []  # answered, not dead-lettered
    after = store_counts(server.db)
    assert (after[0] - before[0], after[1] - before[1]) == (3, 3)  # these three, once each, nothing else


def test_body_limits(server, http: httpx.Client, redis_client: redis.Redis, mine: Mine) -> None:
    settle(server, redis_client)
    before = store_counts(server.db)
    # 1,000 events is the most one request takes
    response = http.post("/events", json=[mine.event(i) for i in range(1000)])
    assert response.status_code == 202, response.text
    assert len(response.json()["accepted"]) == 1000
    assert_error(http.post("/events", json=[mine.event(i) for i in range(1000, 2001)]), 422)
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
    after = store_counts(server.db)
    assert (after[0] - before[0], after[1] - before[1]) == (1000, 1000)


def test_token(server, redis_client: redis.Redis, mine: Mine) -> None:
    settle(server, redis_client)  # the store's counts before: nothing of an earlier test in flight
    before = store_counts(server.db)
    with server.client() as http:  # no Authorization header of its own
        assert_error(http.post("/events", json=mine.event(1)), 401)
        assert_error(http.post("/events", json=mine.event(1), headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(http.post("/events", json=mine.event(1), headers={"Authorization": TOKEN}), 401)
        assert_error(http.post("/events", json=mine.event(1), headers={"Authorization": f"Basic {TOKEN}"}), 401)
        assert_error(http.post("/projections/timelines/rebuild"), 401)
        response = http.post("/events", json=mine.event(1), headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == [mine.id(1)]
        settle(server, redis_client)
        # GETs are open
        for path in ("/health", "/projections", "/timeline", "/entities", f"/entities/{mine.entity}",
                     f"/entities/{mine.entity}/timeline", f"/events/{mine.id(1)}", "/openapi.json"):
            assert http.get(path).status_code == 200, path
    after = store_counts(server.db)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


# --------------------------------------------------------------------------------------------
# reading: parameters and errors
# --------------------------------------------------------------------------------------------


def test_parameters_are_checked(server, http: httpx.Client, mine: Mine) -> None:
    assert http.post("/events?wait=true", json=mine.event(1)).status_code == 201
    for path in ("/timeline", f"/entities/{mine.entity}/timeline", "/entities"):
        for limit in ("0", "501", "-1", "many"):
            body = assert_error(http.get(path, params={"limit": limit}), 422)
            assert "limit" in json.dumps(body), (path, body)
        assert http.get(path, params={"limit": "500"}).status_code == 200, path
        assert http.get(path, params={"limit": "1"}).status_code == 200, path
    unknown = [
        ("/timeline", {"colour": "red"}),
        ("/timeline", {"role": "subject"}),  # roles are for an entity's timeline
        (f"/entities/{mine.entity}/timeline", {"sinse": "2025"}),
        ("/entities", {"name": "x"}),
        (f"/entities/{mine.entity}", {"x": "1"}),
        (f"/events/{mine.id(1)}", {"include_retracted": "true"}),
        ("/projections", {"x": "1"}),
        ("/health", {"verbose": "1"}),
    ]
    for path, params in unknown:
        body = assert_error(http.get(path, params=params), 422)
        assert list(params)[0] in json.dumps(body), (path, body)
    assert_error(http.post("/events", params={"wiat": "true"}, json=mine.event(2)), 422)
    bad_values = [
        ("/timeline", {"since": "yesterday"}, "since"),
        ("/timeline", {"until": "2025-13"}, "until"),
        ("/timeline", {"kind": "rumour"}, "kind"),
        ("/timeline", {"order": "sideways"}, "order"),
        ("/timeline", {"as_of": "2025-05-24T10:00"}, "as_of"),  # a time needs an offset
        ("/timeline", {"cursor": "not-a-cursor"}, "cursor"),
        ("/timeline", {"include_retracted": "perhaps"}, "include_retracted"),
        (f"/entities/{mine.entity}/timeline", {"role": "hero"}, "role"),
        ("/entities", {"type": "planet"}, "type"),
        (f"/events/{mine.id(1)}", {"as_of": "soon"}, "as_of"),
    ]
    for path, params, name in bad_values:
        body = assert_error(http.get(path, params=params), 422)
        assert name in json.dumps(body), (path, params, body)
    # fractional seconds are allowed in as_of
    assert http.get("/timeline", params={"as_of": "2099-01-01T00:00:00.123456Z"}).status_code == 200


def test_unknown_things_are_404(server, http: httpx.Client, mine: Mine) -> None:
    assert http.post("/events?wait=true", json=mine.event(1)).status_code == 201
    assert_error(http.get("/entities/nobody"), 404)
    assert_error(http.get("/entities/nobody/timeline"), 404)
    assert_error(http.get("/events/no-such-event"), 404)
    assert_error(http.get("/no/such/route"), 404)


def test_related_entities(server, http: httpx.Client, mine: Mine) -> None:
    hub, often, once, elsewhere = (f"{name}{mine.tag}" for name in ("hub", "often", "once", "elsewhere"))

    def with_entities(i: int, *ids: str) -> dict[str, Any]:
        return mine.event(i, entities=[{"id": e, "name": e.title(), "role": "subject" if not n else "mentioned"}
                                       for n, e in enumerate(ids)])

    events = [
        with_entities(1, hub, often),
        with_entities(2, hub, often, once),
        with_entities(3, often, hub),
        with_entities(4, elsewhere, once),
    ]
    assert http.post("/events?wait=true", json=events).status_code == 201
    response = http.get(f"/entities/{hub}/related")
    assert response.status_code == 200, response.text
    related = response.json()["entities"]
    assert [(e["id"], e["count"]) for e in related] == [(often, 3), (once, 1)]
    assert set(related[0]) >= {"id", "name", "type", "count", "last_at"}
    assert [e["id"] for e in http.get(f"/entities/{hub}/related", params={"limit": 1}).json()["entities"]] == [often]
    for limit in ("0", "501"):
        assert_error(http.get(f"/entities/{hub}/related", params={"limit": limit}), 422)
    assert_error(http.get(f"/entities/{hub}/related", params={"colour": "red"}), 422)
    assert_error(http.get("/entities/nobody/related"), 404)


def test_docs_and_openapi(server, http: httpx.Client) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/events" in paths and "/timeline" in paths and "/health" in paths
    docs = http.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


def test_projections_and_health(server, http: httpx.Client, redis_client: redis.Redis, mine: Mine) -> None:
    settle(server, redis_client)  # the head before: nothing of an earlier test in flight
    head = store_counts(server.db)[3]
    assert http.post("/events?wait=true", json=[mine.event(i) for i in range(10)]).status_code == 201
    projections = http.get("/projections").json()
    assert isinstance(projections, list) and projections
    for p in projections:
        assert set(p) >= {"name", "version", "position", "head", "lag", "state"}
        assert (p["position"], p["head"], p["lag"], p["state"]) == (head + 10, head + 10, 0, "live")
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
