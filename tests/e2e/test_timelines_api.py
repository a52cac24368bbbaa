"""Timelines that are right, through the real HTTP API (docs/contract.md §1, §4): corrections,
retractions, aliases, imprecise dates, time travel and search."""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e


def news(event_id: str, filed: list[str], **over: Any) -> dict[str, Any]:
    event = {
        "id": event_id,
        "kind": "report",
        "occurred_at": "2025-05-24",
        "headline": f"Headline of {event_id}",
        "entities": [{"id": e, "name": e.replace("-", " ").title(), "role": "subject" if i == 0 else "mentioned"}
                     for i, e in enumerate(filed)],
    }
    event.update(over)
    return event


def post(http: httpx.Client, *events: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/events?wait=true", json=list(events))
    assert response.status_code == 201, response.text
    return response.json()


def ids(http: httpx.Client, entity: str, **params: Any) -> list[str]:
    response = http.get(f"/entities/{entity}/timeline", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return [e["event_id"] for e in response.json()["entries"]]


@pytest.fixture
def http(serve) -> httpx.Client:
    server = serve()
    with server.client() as client:
        yield client


def test_a_correction_moves_an_event_between_two_timelines(http: httpx.Client) -> None:
    post(http, news("move-1", ["alpha-corp"]), news("stay-1", ["alpha-corp", "beta-corp"]))
    assert ids(http, "alpha-corp") == ["move-1", "stay-1"]
    assert ids(http, "beta-corp") == ["stay-1"]

    body = post(http, {"id": "fix-move-1", "kind": "correction", "occurred_at": "2025-05-25",
                       "details": {"corrects": "move-1", "reason": "wrong company",
                                   "changes": {"entities": [{"id": "beta-corp", "name": "Beta Corp", "role": "subject"}],
                                               "headline": "Beta did it"}}})
    assert body["accepted"] == ["fix-move-1"]
    assert ids(http, "alpha-corp") == ["stay-1"]
    assert ids(http, "beta-corp") == ["move-1", "stay-1"]
    assert http.get("/entities/alpha-corp").json()["event_count"] == 1
    assert http.get("/entities/beta-corp").json()["event_count"] == 2
    event = http.get("/events/move-1").json()
    assert event["status"] == "corrected" and event["headline"] == "Beta did it"
    assert [h["event_id"] for h in event["history"]] == ["fix-move-1"]


def test_a_correction_that_arrives_before_its_target_is_applied_when_it_arrives(http: httpx.Client) -> None:
    post(http, {"id": "early-fix", "kind": "correction", "occurred_at": "2025-05-26",
                "details": {"corrects": "late-1", "changes": {"occurred_at": "2025-05-20"}}})
    assert http.get("/events/late-1").status_code == 404
    post(http, news("late-1", ["gamma"], occurred_at="2025-05-27"), news("other-1", ["gamma"], occurred_at="2025-05-22"))
    entries = http.get("/entities/gamma/timeline").json()["entries"]
    assert [(e["event_id"], e["occurred_at"], e["status"]) for e in entries] == [
        ("late-1", "2025-05-20", "corrected"),
        ("other-1", "2025-05-22", "active"),
    ]
    assert [h["event_id"] for h in http.get("/events/late-1").json()["history"]] == ["early-fix"]


def test_corrections_apply_in_store_order_and_a_retraction_hides_the_event(http: httpx.Client) -> None:
    post(http, news("r-1", ["delta"]))
    post(http, {"id": "c-1", "kind": "correction", "occurred_at": "2025-05-25",
                "details": {"corrects": "r-1", "changes": {"headline": "First fix"}}})
    post(http, {"id": "c-2", "kind": "correction", "occurred_at": "2025-05-25",
                "details": {"corrects": "r-1", "changes": {"headline": "Second fix"}}})
    assert http.get("/entities/delta/timeline").json()["entries"][0]["headline"] == "Second fix"
    post(http, {"id": "x-1", "kind": "retraction", "occurred_at": "2025-05-26",
                "details": {"retracts": "r-1", "reason": "the story was false"}})
    assert ids(http, "delta") == []
    shown = http.get("/entities/delta/timeline", params={"include_retracted": "true"}).json()["entries"]
    assert [(e["event_id"], e["status"]) for e in shown] == [("r-1", "retracted")]
    event = http.get("/events/r-1").json()
    assert event["status"] == "retracted"
    assert [h["event_id"] for h in event["history"]] == ["c-1", "c-2", "x-1"]
    assert http.get("/timeline").json()["entries"] == []


def test_an_alias_chain_resolves_and_merges_retroactively(http: httpx.Client) -> None:
    post(
        http,
        news("old-1", ["twitter-inc"], occurred_at="2012"),
        news("mid-1", ["twitter"], occurred_at="2020-03"),
        news("new-1", ["x"], occurred_at="2025-05-24"),
        news("both-1", ["x", "twitter"], occurred_at="2023-07-23"),
    )
    post(http, {"id": "a-1", "kind": "entity_alias", "occurred_at": "2022",
                "details": {"alias": "twitter-inc", "canonical": "twitter"}})
    post(http, {"id": "a-2", "kind": "entity_alias", "occurred_at": "2023-07",
                "details": {"alias": "twitter", "canonical": "x", "name": "X"}})
    for asked in ("x", "twitter", "twitter-inc"):
        timeline = http.get(f"/entities/{asked}/timeline").json()
        assert timeline["entity"]["id"] == "x"
        assert [e["event_id"] for e in timeline["entries"]] == ["old-1", "mid-1", "both-1", "new-1"]
    entity = http.get("/entities/twitter-inc").json()
    assert entity["id"] == "x" and entity["name"] == "X"
    assert sorted(entity["aliases"]) == ["twitter", "twitter-inc"]
    assert entity["event_count"] == 4  # both-1 names two members: counted once
    found = http.get("/entities", params={"q": "twitter"}).json()["entities"]
    assert [e["id"] for e in found] == ["x"]

    cycle = http.post("/events?wait=true", json={"id": "a-3", "kind": "entity_alias", "occurred_at": "2025",
                                                  "details": {"alias": "x", "canonical": "twitter-inc"}})
    assert cycle.status_code == 201
    rejected = cycle.json()["rejected"]
    assert rejected[0]["reason"] == "schema" and "cycle" in rejected[0]["error"]


def test_as_of_before_and_after_a_correction(http: httpx.Client) -> None:
    post(http, news("t-1", ["epsilon"], headline="Original headline"))
    first = http.get("/events/t-1").json()["recorded_at"]
    time.sleep(0.05)
    post(http, {"id": "t-fix", "kind": "correction", "occurred_at": "2025-05-25",
                "details": {"corrects": "t-1", "changes": {"headline": "Corrected headline"}}})
    fixed = http.get("/events/t-fix").json()["recorded_at"]
    assert fixed > first
    before = http.get("/entities/epsilon/timeline", params={"as_of": first}).json()["entries"]
    after = http.get("/entities/epsilon/timeline", params={"as_of": fixed}).json()["entries"]
    assert [e["headline"] for e in before] == ["Original headline"]
    assert [e["headline"] for e in after] == ["Corrected headline"]
    assert http.get("/events/t-1", params={"as_of": first}).json()["history"] == []
    assert http.get("/events/t-1", params={"as_of": "2000-01-01T00:00:00Z"}).status_code == 404
    assert http.get("/entities/epsilon/timeline", params={"as_of": "2000-01-01T00:00:00.5Z"}).json()["entries"] == []
    bad = http.get("/timeline", params={"as_of": "2025-05-32"})
    assert bad.status_code == 422 and "as_of" in bad.json()["error"]


def test_imprecise_dates_order_overlap_and_keep_their_form(http: httpx.Client) -> None:
    post(
        http,
        news("d-day", ["zeta"], occurred_at="2025-05-24"),
        news("d-month", ["zeta"], occurred_at="2025-05"),
        news("d-year", ["zeta"], occurred_at="2025"),
        news("d-instant", ["zeta"], occurred_at="2025-05-24T14:30:00+02:00"),
        news("d-span", ["zeta"], occurred_at="2025-04-30", ended_at="2025-05-02"),
        news("d-before", ["zeta"], occurred_at="2024-12-31T23:00Z"),
    )
    entries = http.get("/entities/zeta/timeline").json()["entries"]
    assert [(e["event_id"], e["occurred_at"]) for e in entries] == [
        ("d-before", "2024-12-31T23:00Z"),
        ("d-year", "2025"),
        ("d-span", "2025-04-30"),
        ("d-month", "2025-05"),
        ("d-day", "2025-05-24"),
        ("d-instant", "2025-05-24T14:30:00+02:00"),
    ]
    assert entries[2]["ended_at"] == "2025-05-02"
    assert ids(http, "zeta", since="2025-05-20", until="2025-05-21") == ["d-year", "d-month"]
    assert ids(http, "zeta", since="2025-05-01", until="2025-05-01") == ["d-year", "d-span", "d-month"]
    assert ids(http, "zeta", since="2025-05-24T12:00Z", until="2025-05-24T12:59Z") == [
        "d-year", "d-month", "d-day", "d-instant"]
    assert ids(http, "zeta", until="2024") == ["d-before"]
    assert ids(http, "zeta", order="desc")[:2] == ["d-instant", "d-day"]


def test_full_text_search_and_accent_blind_entity_search(http: httpx.Client) -> None:
    post(
        http,
        news("s-1", ["societe-generale"], headline="Société Générale reports a data centre outage",
             entities=[{"name": "Société Générale", "type": "organization", "role": "subject"}]),
        news("s-2", ["societe-generale"], headline="Quarterly results",
             summary="The bank says its failover worked during the outage",
             entities=[{"name": "Société Générale", "type": "organization", "role": "subject"}]),
        news("s-3", ["other-bank"], headline="Unrelated merger talks"),
    )
    assert [e["id"] for e in http.get("/entities", params={"q": "societe"}).json()["entities"]] == ["societe-generale"]
    assert [e["id"] for e in http.get("/entities", params={"q": "GÉNÉRALE"}).json()["entities"]] == ["societe-generale"]
    hits = http.get("/timeline", params={"q": "outage"}).json()["entries"]
    assert sorted(e["event_id"] for e in hits) == ["s-1", "s-2"]
    assert ids(http, "societe-generale", q="failover") == ["s-2"]
    assert ids(http, "societe-generale", q="generale") == ["s-1"]
    ranked = http.get("/timeline", params={"q": "outage", "order": "relevance"}).json()["entries"]
    assert {e["event_id"] for e in ranked} == {"s-1", "s-2"}
    assert http.get("/timeline", params={"q": "\"'; DROP TABLE events; --"}).status_code == 200
    assert http.get("/timeline", params={"q": "NEAR(outage"}).status_code == 200


def test_the_demo_alias_shows_the_outage_under_x_and_twitter(http: httpx.Client) -> None:
    lines = resources.files("timeline").joinpath("data/demo_events.jsonl").read_text().splitlines()
    response = http.post("/events?wait=true", content="[" + ",".join(l for l in lines if l.strip()) + "]",
                         headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["rejected"] == []
    for asked in ("x", "twitter"):
        timeline = http.get(f"/entities/{asked}/timeline").json()
        assert timeline["entity"]["id"] == "x"
        assert "x-outage-2025-05-24" in [e["event_id"] for e in timeline["entries"]]
        assert "twitter-rebrand-to-x-2023-07" in [e["event_id"] for e in timeline["entries"]]
    musk = http.get("/entities/elon-musk/timeline").json()
    assert musk["entity"]["name"] == "Elon Musk" and len(musk["entries"]) >= 10
    related = http.get("/entities/x/related").json()["entities"]
    assert related[0]["id"] == "elon-musk"
