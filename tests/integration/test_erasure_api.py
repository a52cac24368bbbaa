"""The erasure endpoints in process (httpx.ASGITransport) over a real store and the real Redis:
refusals and their statuses, the tombstone, reads without the event (as of any time), the
directory without an entity only erased events named, an erased alias, and POST /events
refusing an erased id at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import InProcessApi as Api, alias, append_and_project, correction, news
from timeline.api import create_app
from timeline.runtime import Runtime
from timeline.settings import Settings

TOKEN = "t0ken"



@pytest.fixture
def api(db: Path, redis_url: str, stream_name: str, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    yield from _serve(db, redis_url, stream_name, monkeypatch)


@pytest.fixture
def api_on(backend: str, redis_url: str, stream_name: str, redis_client: Any,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """``api`` on each backend in turn (a SQLite file, a PostgreSQL schema)."""
    yield from _serve(backend, redis_url, stream_name, monkeypatch)


def _serve(db: Path | str, redis_url: str, stream_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    append_and_project(db, [
        news("kept", "2025-05-01", ("x", "elon-musk")),
        news("gone", "2025-05-02", ("x", "only-here"), summary="secret summary"),
        correction("gone-fix", "gone", headline="corrected secret"),
        alias("al", "twitter", "x", name="X Corp"),
    ])
    monkeypatch.setenv("TIMELINE_DB", str(db))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TIMELINE_STREAM", stream_name)
    monkeypatch.setenv("TIMELINE_API_TOKEN", TOKEN)
    monkeypatch.setenv("TIMELINE_API_TOKEN_NAME", "newsroom")
    runtime = Runtime(Settings(), consume=False)
    runtime.redis_url = redis_url
    client = Api(create_app(runtime, manage=False))
    try:
        yield client
    finally:
        client.close()
        runtime.service.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_erase_through_the_api(api: Api) -> None:
    before = api.request("GET", "/timeline").json()["entries"][-1]["recorded_at"]
    assert api.request("POST", "/events/gone/erase", json={"reason": "r"}).status_code == 401
    assert api.request("POST", "/events/gone/erase", json={}, headers=AUTH).status_code == 422
    assert api.request("POST", "/events/gone/erase", json={"reason": "r", "x": 1}, headers=AUTH).status_code == 422
    assert api.request("POST", "/events/nope/erase", json={"reason": "r"}, headers=AUTH).status_code == 404
    assert api.request("POST", "/events/gone-fix/erase", json={"reason": "r"}, headers=AUTH).status_code == 409
    done = api.request("POST", "/events/gone/erase", json={"reason": "legal"}, headers=AUTH)
    assert done.status_code == 200, done.text
    assert done.json()["who"] == "api-token:newsroom" and done.json()["erased_with"] == ["gone-fix"]
    again = api.request("POST", "/events/gone-fix/erase", json={"reason": "other"}, headers=AUTH)
    assert again.status_code == 200 and again.json()["already_erased"] and again.json()["reason"] == "legal"

    tomb = api.request("GET", "/events/gone")
    assert tomb.status_code == 410
    assert {k: tomb.json()[k] for k in ("id", "kind", "status", "reason")} == {
        "id": "gone", "kind": "report", "status": "erased", "reason": "legal"}
    assert api.request("GET", "/events/gone", params={"as_of": before}).status_code == 410
    for params in ({}, {"as_of": before}, {"q": "secret"}, {"include_retracted": "true"}):
        text = api.request("GET", "/timeline", params=params).text
        assert "secret" not in text and '"gone"' not in text, params
    assert api.request("GET", "/entities/only-here").status_code == 404
    assert api.request("GET", "/entities/x").json()["event_count"] == 1
    assert "only-here" not in api.request("GET", "/entities/x/related").text
    listed = api.request("GET", "/erasures", headers=AUTH).json()["erasures"]
    assert [(e["seq"], e["event_id"]) for e in listed] == [(1, "gone")]


def test_erasing_an_alias_separates_the_entities(api: Api) -> None:
    assert api.request("GET", "/entities/twitter").json()["id"] == "x"
    assert api.request("POST", "/events/al/erase", json={"reason": "r"}, headers=AUTH).status_code == 200
    assert api.request("GET", "/entities/twitter").status_code == 404  # nothing names it
    assert api.request("GET", "/entities/x").json()["name"] == "X"


def test_a_reason_holding_u0000_is_refused_on_either_backend(api_on: Api) -> None:
    """PostgreSQL's text cannot hold U+0000 (SQLite's can): such a reason made the erasure fail
    with a 500 on PostgreSQL. It is refused on both, 422 naming the field, and nothing is erased."""
    for reason in ("court\x00order", "\x00"):
        refused = api_on.request("POST", "/events/gone/erase", json={"reason": reason}, headers=AUTH)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"].startswith("reason:") and "U+0000" in refused.json()["error"], refused.text
    assert api_on.request("GET", "/events/gone").status_code == 200
    assert api_on.request("GET", "/erasures", headers=AUTH).json()["erasures"] == []
    done = api_on.request("POST", "/events/gone/erase", json={"reason": "court order"}, headers=AUTH)
    assert done.status_code == 200, done.text


@pytest.mark.parametrize("event_id", ["gone\x00", "\x00"])
def test_an_id_holding_u0000_is_unknown_on_either_backend(api_on: Api, event_id: str) -> None:
    from urllib.parse import quote

    missing = api_on.request("POST", f"/events/{quote(event_id, safe='')}/erase", json={"reason": "r"}, headers=AUTH)
    assert missing.status_code == 404, missing.text

