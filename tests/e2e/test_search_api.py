"""Search through the real ``timeline serve`` HTTP API: entity search finds names as people
type them (transliterated), ``q`` speaks a query language (stems, prefixes, OR, NOT,
phrases), and no query, however hostile, is answered with a 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e

EVENTS = [
    ("boat", "2015-09-01", "Refugee boat capsizes off Lesbos", ["borge-brende"]),
    ("fence", "2015-09-02", "Hungary builds a border fence", ["borge-brende", "lodz"]),
    ("march", "2015-09-03", "Refugees march towards Hungary", ["lodz"]),
    ("camp", "2015-09-04", "Refugees crowd the camp on Lesbos", ["dorde"]),
]
NAMES = {"borge-brende": "Børge Brende", "lodz": "Łódź", "dorde": "Đorđe Balašević", "aero": "Ærøskøbing"}


@pytest.fixture
def http(serve) -> httpx.Client:
    server = serve()
    with server.client() as client:
        events: list[dict[str, Any]] = [
            {"id": eid, "kind": "report", "occurred_at": when, "headline": headline,
             "entities": [{"id": e, "name": NAMES[e], "role": "subject"} for e in filed]}
            for eid, when, headline, filed in EVENTS
        ]
        events.append({"id": "aero-1", "kind": "report", "occurred_at": "2015", "headline": "Ferry to the island",
                       "entities": [{"name": "Ærøskøbing", "type": "place", "role": "subject"}]})
        events.append({"id": "al", "kind": "entity_alias", "occurred_at": "2016",
                       "details": {"alias": "dorde-balasevic-band", "canonical": "dorde"}})
        response = client.post("/events?wait=true", json=events)
        assert response.status_code == 201, response.text
        yield client


def found(http: httpx.Client, q: str) -> list[str]:
    response = http.get("/entities", params={"q": q})
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()["entities"]]


def hits(http: httpx.Client, q: str, entity: str | None = None, **params: Any) -> list[str]:
    path = f"/entities/{entity}/timeline" if entity else "/timeline"
    response = http.get(path, params={"q": q, **params})
    assert response.status_code == 200, response.text
    return [e["event_id"] for e in response.json()["entries"]]


def test_entity_search_finds_what_people_type(http: httpx.Client) -> None:
    assert found(http, "borge") == ["borge-brende"]
    assert found(http, "lodz") == ["lodz"]
    assert found(http, "dorde") == ["dorde"]
    assert found(http, "aeroskobing") == ["ærøskøbing"]  # its id, derived by the contract's rule
    assert found(http, "BALASEVIC") == ["dorde"]
    assert found(http, "band") == ["dorde"]  # by an alias
    assert http.get("/entities/ærøskøbing").status_code == 200


def test_full_text_query_language(http: httpx.Client) -> None:
    assert hits(http, "refugees") == ["boat", "march", "camp"]
    assert hits(http, "Hungar*") == ["fence", "march"]
    assert hits(http, "lesbos OR hungary") == ["boat", "fence", "march", "camp"]
    assert hits(http, "refugees NOT lesbos") == ["march"]
    assert hits(http, '"border fence"') == ["fence"]
    assert hits(http, "refugees", "lodz") == ["march"]
    assert hits(http, "hungary OR lesbos", "borge-brende", order="desc") == ["fence", "boat"]
    assert hits(http, "refugee", "dorde", order="relevance") == ["camp"]
    assert hits(http, "refugee OR lesbos", "dorde-balasevic-band", order="relevance") == ["camp"]  # by an alias
    response = http.get("/timeline", params={"q": "NOT lesbos"})
    assert response.status_code == 422 and "q" in response.text and "NOT" in response.text
    assert http.get("/timeline", params={"q": "*"}).status_code == 422


HOSTILE = st.lists(
    st.one_of(
        st.sampled_from(['"', "(", ")", "NEAR(", "NEAR", "*", "^", "-", ":", "headline:", "summary:x", "OR", "AND",
                         "NOT", ",", "+", "{", "}", "'", "\\", "%", "_", "\x00", "refugees", "camp", "hungar*", "ü", "ø",
                         "北京", "🙂", " ", "NEAR/2", "\u0301", "\ufeff", "col:x", "rank", "bm25("]),
        st.text(max_size=6),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=HOSTILE, order=st.sampled_from(["asc", "desc", "relevance"]))
def test_hostile_queries_never_get_a_5xx(http: httpx.Client, q: str, order: str) -> None:
    for path in ("/timeline", "/entities/borge-brende/timeline", "/entities/dorde-balasevic-band/timeline",
                 "/entities"):
        params = {"q": q} if path == "/entities" else {"q": q, "order": order}
        response = http.get(path, params=params)
        assert response.status_code < 500, (path, q, response.text)
        if response.status_code != 200:
            assert response.status_code == 422 and response.json()["detail"] is not None, response.text
