"""Parameters against the real ``timeline serve`` (issue 14 point 2, issue 15 point 5): extreme
dates and forged cursors answer 422 naming the parameter, never 5xx; a cursor goes on only with
the query that gave it out; ``as_of`` takes a day and answers for the entity too."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_api_parameters import answered, requests  # noqa: E402  (the same strategies as in process)

pytestmark = pytest.mark.e2e


def news(event_id: str, filed: list[str], occurred_at: str = "2025-05-24", **over: Any) -> dict[str, Any]:
    event = {"id": event_id, "kind": "report", "occurred_at": occurred_at, "headline": f"Headline of {event_id}",
             "entities": [{"id": e, "name": e.title(), "role": "subject"} for e in filed]}
    return {**event, **over}


def post(http: httpx.Client, *events: dict[str, Any]) -> None:
    response = http.post("/events?wait=true", json=list(events))
    assert response.status_code == 201 and not response.json()["rejected"], response.text


class Live:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def get(self, url: str) -> httpx.Response:
        return self.http.get(url)


@pytest.fixture
def http(serve) -> httpx.Client:
    server = serve()
    with server.client() as client:
        yield client


def test_extreme_parameters_and_cursors_on_the_real_server(http: httpx.Client) -> None:
    post(http, *[news(f"p{i}", ["alpha", "beta"] if i % 2 else ["alpha"], f"2025-05-{1 + i:02d}") for i in range(8)])
    post(http, {"id": "al", "kind": "entity_alias", "occurred_at": "2025", "details": {"alias": "alfa", "canonical": "alpha"}})
    huge = base64.urlsafe_b64encode(json.dumps(["2025-05-01T00:00:00.000000Z", 2**63, 1, "asc"]).encode()).decode()
    for url, name in [
        ("/timeline?as_of=0001-01-01T00:00%2B00:01", "as_of"),
        ("/timeline?since=0001-01-01T00:00%2B00:01", "since"),
        ("/entities/alpha/timeline?until=9999-12-31T23:59-00:01", "until"),
        ("/entities/alpha?as_of=9999-12-31T23:59:59.999999-23:59", "as_of"),
        ("/events/p1?as_of=0001-01-01T00:00%2B23:59", "as_of"),
        (f"/timeline?cursor={huge}", "cursor"),
    ]:
        response = http.get(url)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"].startswith(f"{name}:"), response.text

    # a cursor is bound to its query: another entity, /timeline or other filters are refused
    first = http.get("/entities/alpha/timeline", params={"limit": 3}).json()
    cursor = first["next_cursor"]
    nxt = http.get("/entities/alfa/timeline", params={"limit": 3, "cursor": cursor})  # an alias: the same timeline
    assert [e["event_id"] for e in nxt.json()["entries"]] == ["p3", "p4", "p5"], nxt.text
    for path, params, differs in [
        ("/entities/beta/timeline", {}, ["entity"]),
        ("/timeline", {}, ["entity"]),
        ("/entities/alpha/timeline", {"kind": "outage"}, ["kind"]),
        ("/entities/alpha/timeline", {"order": "desc", "role": "subject"}, ["order", "role"]),
    ]:
        response = http.get(path, params={"limit": 3, "cursor": cursor, **params})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"].startswith("cursor:") and body["detail"]["differs"] == differs, body

    # as_of: a day stands for its end; the entity as it stood then
    recorded = http.get("/events/p7").json()["recorded_at"]
    time.sleep(0.05)
    post(http, news("later", ["alpha"], "2026-01-01"))
    then = http.get("/entities/alpha", params={"as_of": recorded}).json()
    assert (then["event_count"], then["last_at"], then["aliases"]) == (8, "2025-05-08", []), then
    now = http.get("/entities/alpha").json()
    assert (now["event_count"], now["last_at"]) == (9, "2026-01-01")
    page = http.get("/entities/alpha/timeline", params={"as_of": recorded, "limit": 1}).json()
    assert page["entity"] == then
    assert http.get("/entities/alpha", params={"as_of": recorded[:10]}).json() == now  # the end of today
    assert http.get("/entities/alpha", params={"as_of": "2001"}).status_code == 404

    @given(request=requests())
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(request) -> None:
        answered(Live(http), *request)

    fuzz()
