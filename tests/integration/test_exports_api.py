"""Exports and directory paging through the API in process (``httpx.ASGITransport``) over real
SQLite files: every format holds what the JSON pages hold, with the same filters and ``as_of``;
the right headers; a bad ``format`` is a 422 naming it; a read failing mid-export is never a
silently complete file; the directory and ``related`` page through everything exactly once."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import feedparser
import httpx
import pytest

from helpers import alias, append_and_project, append_batches, correction, ent, news, retraction
from projections.queries import Queries, ReadTimeout
from timeline.api import create_app
from timeline.exports import TOMBSTONES, entry_id
from timeline.runtime import Runtime
from timeline.settings import Settings


class Api:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime, manage=False)), base_url="http://in-process"
        )

    def get(self, url: str, **params: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.get(url, params=params))

    def pages(self, url: str, key: str = "entries", **params: Any) -> list[dict[str, Any]]:
        out, cursor = [], None
        while True:
            body = self.get(url, **params, **({"cursor": cursor} if cursor else {})).json()
            out += body[key]
            cursor = body["next_cursor"]
            if cursor is None:
                return out

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        self.runtime.service.close()


def _api(db: Path, monkeypatch: pytest.MonkeyPatch) -> Api:
    monkeypatch.setenv("TIMELINE_DB", str(db))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached by a GET
    return Api(Runtime(Settings(), consume=False))


@pytest.fixture
def story(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, str]]:
    """1,234 entries of x (across three pages of an export), a correction and a retraction
    recorded after the rest (``then``: the instant before them), an alias, imprecise dates."""
    db = tmp_path / "timeline.db"
    events = [
        news(f"n{i:04}", f"20{10 + i % 15}-{1 + i % 12:02}" + (f"-{1 + i % 28:02}" if i % 3 else ""),
             [ent("x"), ent(f"o{i % 7}", "mentioned")] if i % 2 else [ent("twitter", "target", "Twitter")],
             kind=("report", "outage", "statement")[i % 3], headline=f"headline {i}")
        for i in range(1234)
    ]
    append_batches(db, events, [alias("al", "twitter", "x", name="X Corp")])
    with sqlite3.connect(db) as conn:
        (then,) = conn.execute("SELECT max(recorded_at) FROM events").fetchone()
    append_batches(db, [correction("c1", "n0001", headline="corrected headline"), retraction("r1", "n0003")])
    api = _api(db, monkeypatch)
    try:
        yield api, then
    finally:
        api.close()


FORMATS = {
    "ndjson": ("application/x-ndjson", "x.ndjson"),
    "csv": ("text/csv; charset=utf-8", "x.csv"),
    "timelinejs": ("application/json", "x.timelinejs.json"),
    "atom": ("application/atom+xml; charset=utf-8", "x.atom"),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_has_its_headers(story: tuple[Api, str], fmt: str) -> None:
    api, _ = story
    response = api.get("/entities/x/timeline", format=fmt, limit=3)
    assert response.status_code == 200
    media, name = FORMATS[fmt]
    assert response.headers["content-type"] == media
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'


@pytest.mark.parametrize("params", [
    {}, {"kind": "outage"}, {"since": "2015", "until": "2018-06"}, {"role": "target"}, {"order": "desc"},
    {"include_retracted": "true"}, {"q": "headline"}, {"q": "headline", "order": "relevance"},
])
def test_ndjson_is_every_entry_of_every_page(story: tuple[Api, str], params: dict[str, str]) -> None:
    api, _ = story
    paged = api.pages("/entities/x/timeline", limit=500, **params)
    lines = api.get("/entities/x/timeline", format="ndjson", **params).text.splitlines()
    assert [json.loads(line) for line in lines] == paged
    assert len(paged) > 0


def test_the_global_timeline_exports_too(story: tuple[Api, str]) -> None:
    api, _ = story
    paged = api.pages("/timeline", limit=500)
    lines = api.get("/timeline", format="ndjson").text.splitlines()
    assert [json.loads(line) for line in lines] == paged and len(paged) == 1233  # one retracted


def test_as_of_exports_the_timeline_as_it_stood(story: tuple[Api, str]) -> None:
    api, then = story
    rows = list(csv.DictReader(io.StringIO(api.get("/entities/x/timeline", format="csv", as_of=then).text)))
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in api.pages("/entities/x/timeline", as_of=then)]
    by_id = {r["event_id"]: r for r in rows}
    assert by_id["n0001"]["headline"] == "headline 1" and "n0003" in by_id  # before the correction and retraction
    now = {r["event_id"]: r for r in csv.DictReader(io.StringIO(api.get("/entities/x/timeline", format="csv").text))}
    assert now["n0001"]["headline"] == "corrected headline" and "n0003" not in now


def test_limit_caps_an_export_and_may_exceed_a_page(story: tuple[Api, str]) -> None:
    api, _ = story
    assert len(api.get("/entities/x/timeline", format="ndjson", limit=1000).text.splitlines()) == 1000
    assert len(api.get("/entities/x/timeline", format="ndjson", limit=7).text.splitlines()) == 7
    refused = api.get("/entities/x/timeline", limit=1000)
    assert refused.status_code == 422 and refused.json()["detail"]["field"] == "limit"


def test_a_cursor_starts_an_export_where_a_page_ended(story: tuple[Api, str]) -> None:
    api, _ = story
    first = api.get("/entities/x/timeline", limit=100).json()
    rest = api.get("/entities/x/timeline", format="ndjson", cursor=first["next_cursor"], limit=100).text.splitlines()
    assert [json.loads(line) for line in rest] == api.get(
        "/entities/x/timeline", limit=100, cursor=first["next_cursor"]).json()["entries"]


def test_timelinejs_holds_every_entry_but_the_retracted(story: tuple[Api, str]) -> None:
    api, _ = story
    data = api.get("/entities/x/timeline", format="timelinejs", include_retracted="true").json()
    paged = api.pages("/entities/x/timeline", limit=500)
    assert [s["unique_id"] for s in data["events"]] == [e["event_id"] for e in paged]
    for slide, entry in zip(data["events"], paged):
        assert slide["text"]["headline"] == entry["headline"] and slide["group"] == entry["kind"]
        parts = entry["occurred_at"].split("-")
        assert [slide["start_date"].get(k) for k in ("year", "month", "day")][: len(parts)] == [int(p) for p in parts]
        assert len(slide["start_date"]) == len(parts)


def test_atom_moves_updated_on_a_correction_and_tombstones_a_retraction(story: tuple[Api, str]) -> None:
    api, _ = story
    text = api.get("/entities/x/timeline", format="atom").content
    feed = feedparser.parse(text)
    assert not feed.bozo, feed.bozo_exception
    entries = {e.id: e for e in feed.entries}
    assert len(entries) == len(api.pages("/entities/x/timeline", limit=500))
    corrected, plain = entries[entry_id("n0001")], entries[entry_id("n0005")]
    assert corrected.title == "corrected headline"
    assert corrected.updated > corrected.published and plain.updated == plain.published
    (tombstone,) = ET.fromstring(text).findall(f"{{{TOMBSTONES}}}deleted-entry")
    assert tombstone.get("ref") == entry_id("n0003") and tombstone.get("when") > plain.published


def test_entries_name_their_entities_with_aliases_resolved(story: tuple[Api, str]) -> None:
    api, _ = story
    entries = api.get("/entities/x/timeline", limit=40).json()["entries"]
    assert entries[0]["entities"] == [{"id": "x", "name": "X Corp", "role": "target"}]  # twitter is x
    other = next(e for e in entries if len(e["entities"]) == 2)
    assert other["entities"][0] == {"id": "x", "name": "X Corp", "role": "subject"}
    assert other["entities"][1]["role"] == "mentioned"


@pytest.mark.parametrize(("url", "params", "status", "field"), [
    ("/entities/x/timeline", {"format": "pdf"}, 422, "format"),
    ("/timeline", {"format": ""}, 422, "format"),
    ("/entities/nobody/timeline", {"format": "csv"}, 404, None),
    ("/entities/x/timeline", {"format": "csv", "cursor": "forged"}, 422, "cursor"),
    ("/timeline", {"format": "atom", "role": "subject"}, 422, "role"),
    ("/entities/x/timeline", {"format": "ndjson", "limit": "0"}, 422, "limit"),
])
def test_a_bad_export_is_refused_before_it_starts(
    story: tuple[Api, str], url: str, params: dict[str, str], status: int, field: str | None
) -> None:
    api, _ = story
    response = api.get(url, **params)
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    if field is not None:
        assert field in response.json()["error"]


@pytest.mark.parametrize(("fmt", "marker"), [
    ("ndjson", '{"error": "the read was stopped at its time limit"}\n'),
    ("csv", "#error: the read was stopped at its time limit\r\n"),
    ("atom", "\n<!-- export failed: the read was stopped at its time limit -->\n"),
])
def test_a_read_failing_mid_export_is_never_a_complete_file(
    story: tuple[Api, str], monkeypatch: pytest.MonkeyPatch, fmt: str, marker: str
) -> None:
    """The second page's read times out: the answer ends with the format's marker and the
    connection is dropped (an ASGI app error), not ended as if the file were whole."""
    api, _ = story
    real = Queries.timeline
    calls = 0

    def second_fails(self: Queries, *args: Any, **kwargs: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ReadTimeout("the read was stopped at its time limit")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Queries, "timeline", second_fails)
    with pytest.raises(Exception, match="failed after 500 entries"):  # the app ends in an error, not a clean end
        api.get("/entities/x/timeline", format=fmt)
    # what was sent before the error (this transport keeps it when told not to raise)
    lenient = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.client._transport.app, raise_app_exceptions=False),
                                base_url="http://in-process")
    calls = 0
    response = api.loop.run_until_complete(lenient.get("/entities/x/timeline", params={"format": fmt}))
    api.loop.run_until_complete(lenient.aclose())
    assert response.status_code == 200 and response.text.endswith(marker)
    if fmt == "atom":
        assert feedparser.parse(response.content).bozo  # an open feed: no reader takes it as whole
    else:
        assert response.text.count("\n") == 500 + (fmt == "csv") + 1  # the first page, then the marker


# --- the directory -----------------------------------------------------------------------

@pytest.fixture
def crowd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """1,260 entities with counts that tie in runs, some merged by aliases; one hub related to
    all of them."""
    db = tmp_path / "timeline.db"
    events = [
        news(f"e{i}-{j}", "2025-05-01", [ent(f"ent-{i:04}", name=f"Entity {i}"), ent("hub", "mentioned")])
        for i in range(1260) for j in range(1 + i % 3)
    ]
    events += [alias(f"al{i}", f"ent-{i:04}", f"ent-{i + 1:04}") for i in range(0, 60, 6)]
    append_and_project(db, events)
    api = _api(db, monkeypatch)
    try:
        yield api
    finally:
        api.close()


@pytest.mark.parametrize("limit", [1, 37, 500])
def test_the_directory_pages_through_every_entity_exactly_once(crowd: Api, limit: int) -> None:
    listed = crowd.pages("/entities", key="entities", limit=limit)
    ids = [e["id"] for e in listed]
    assert len(ids) == len(set(ids)) == 1260 + 1 - 10  # the hub, less the ten aliases
    assert listed == sorted(listed, key=lambda e: (-e["event_count"], e["id"]))
    assert not {f"ent-{i:04}" for i in range(0, 60, 6)} & set(ids)


def test_directory_pages_keep_their_filters(crowd: Api) -> None:
    listed = crowd.pages("/entities", key="entities", limit=7, q="entity 1")
    assert listed == crowd.pages("/entities", key="entities", limit=500, q="entity 1")
    assert len(listed) == len({e["id"] for e in listed}) > 300
    assert all("entity 1" in e["name"].lower() or any(a.startswith("ent-1") for a in e["aliases"]) for e in listed)
    first = crowd.get("/entities", q="entity 1", limit=5).json()
    refused = crowd.get("/entities", q="entity 2", limit=5, cursor=first["next_cursor"])
    assert refused.status_code == 422 and refused.json()["detail"]["field"] == "cursor"


def test_related_pages_through_every_entity_exactly_once(crowd: Api) -> None:
    listed = crowd.pages("/entities/hub/related", key="entities", limit=97)
    ids = [e["id"] for e in listed]
    assert len(ids) == len(set(ids)) == 1250
    assert crowd.pages("/entities/hub/related", key="entities", limit=500) == listed
    first = crowd.get("/entities/hub/related", limit=5).json()
    refused = crowd.get("/entities/ent-0100/related", limit=5, cursor=first["next_cursor"])
    assert refused.status_code == 422 and refused.json()["detail"]["field"] == "cursor"


def test_over_http_a_failed_export_is_a_broken_transfer(story: tuple[Api, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real HTTP server (uvicorn, as ``timeline serve`` runs it): the chunked answer of an
    export whose second read fails is never ended, so clients see a broken transfer."""
    import socket
    import threading

    import uvicorn

    api, _ = story
    real = Queries.timeline
    calls = 0

    def second_fails(self: Queries, *args: Any, **kwargs: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ReadTimeout("the read was stopped at its time limit")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Queries, "timeline", second_fails)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.client._transport.app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            with httpx.stream("GET", f"http://127.0.0.1:{port}/entities/x/timeline", params={"format": "ndjson"}) as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    received.extend(chunk)
        assert received.decode().endswith('{"error": "the read was stopped at its time limit"}\n')
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("fmt", ["atom", "csv", "timelinejs", "ndjson"])
def test_an_as_of_out_of_the_calendar_is_a_422_in_every_format(story: tuple[Api, str], fmt: str) -> None:
    api, _ = story
    response = api.get("/timeline", format=fmt, as_of="0000", since="0000")  # found by schemathesis: was a 500
    assert response.status_code == 422 and response.json()["detail"]["field"] in ("as_of", "since")
