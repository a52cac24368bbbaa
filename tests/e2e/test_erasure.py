"""Erasure end to end (issue 19): a real `timeline serve`, a redis-server of the test's own with
the append-only file on, real SQLite files. An event carries a unique marker in its headline,
summary, an entity's name and a source URL; a correction carries it; a conflicting republish
of its id is dead-lettered with it. After the erasure, the marker is in no byte of any file
under the data folder or Redis' folder, no read shows it, `timeline verify` passes and lists
the erasure, and the id cannot be stored again. A second event is erased with `timeline erase`
while the service runs."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from e2e_support import dead_letters, settle

pytestmark = pytest.mark.e2e

TIMELINE = str(Path(sys.executable).parent / "timeline")
TOKEN = "erasure-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def marked(event_id: str, marker: str) -> dict:
    return {
        "id": event_id, "kind": "report", "occurred_at": "2025-05-24",
        "headline": f"{marker} accused of fraud", "summary": f"Sources say {marker} lied.",
        "entities": [{"id": "x", "name": "X", "type": "organization", "role": "subject"},
                     {"name": f"{marker} Person", "type": "person", "role": "target"}],
        "sources": [{"url": f"https://news.example/{marker}/story"}],
    }


def forms(marker: str) -> list[bytes]:
    """The marker as UTF-8, as the full-text index keeps tokens (lower case) and as UTF-16."""
    return [marker.encode(), marker.lower().encode(), marker.encode("utf-16-le")]


def files_holding(folders: list[Path], marker: str) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path} ({form!r})" for form in forms(marker) if form in data]
    return found


def timeline_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TIMELINE, *args], env={**env, "COLUMNS": "300"}, capture_output=True, text=True,
                          timeout=300)


def test_erased_everywhere(serve, own_redis, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = serve(token=TOKEN, redis_url=own_redis.url, db=data / "timeline.db")
    client = redis.Redis.from_url(own_redis.url)
    folders = [data, own_redis.data_dir]
    first, second = f"Zq{uuid.uuid4().hex[:10]}", f"Zq{uuid.uuid4().hex[:10]}"
    with server.client(headers=AUTH) as http:
        answer = http.post("/events?wait=true", json=[
            marked("story", first), marked("other-story", second),
            {"id": "kept", "kind": "report", "occurred_at": "2025-05-25", "headline": "Kept story",
             "entities": [{"id": "x", "name": "X", "role": "subject"}]},
        ])
        assert answer.status_code == 201, answer.text
        fix = {"id": "story-fix", "kind": "correction", "occurred_at": "2025-05-26",
               "details": {"corrects": "story", "changes": {"summary": f"{first} denies it."}, "reason": f"{first}"}}
        assert http.post("/events?wait=true", json=fix).status_code == 201
        conflict = http.post("/events?wait=true", json={**marked("story", first), "headline": f"{first} again"})
        assert conflict.json()["rejected"][0]["reason"] == "id_conflict"
        settle(server, client)
        assert any(first.encode() in d["event"] for d in dead_letters(client, server.stream))
        assert files_holding(folders, first), "the marker should be on disk before the erasure"

        # without the token: refused
        assert http.post("/events/story/erase", json={"reason": "x"}, headers={"Authorization": ""}).status_code == 401
        erased = http.post("/events/story/erase", json={"reason": "court order 7/2026"})
        assert erased.status_code == 200, erased.text
        body = erased.json()
        assert body["erased_with"] == ["story-fix"] and body["who"].startswith("api-token:")
        assert body["redis"]["deleted"][server.dead_stream] == 1
        assert files_holding(folders, first) == []

        gone = http.get("/events/story")
        assert gone.status_code == 410 and gone.json()["status"] == "erased"
        assert gone.json()["reason"] == "court order 7/2026"
        assert http.get("/events/story-fix").status_code == 410
        for path in ("/timeline", "/entities", "/entities/x/timeline", "/entities/x/related", "/erasures"):
            assert first not in http.get(path).text
        assert http.get("/timeline", params={"q": first}).json()["entries"] == []
        assert http.get("/entities", params={"q": first}).json()["entities"] == []
        assert http.get(f"/entities/{first.lower()}-person").status_code == 404
        assert [e["event_id"] for e in http.get("/erasures").json()["erasures"]] == ["story"]

        again = http.post("/events", json={**marked("story", "plain"), "headline": "back"})
        assert again.json()["rejected"][0]["reason"] == "id_conflict"
        assert "erased" in again.json()["rejected"][0]["error"]

    # the other event, with the command, while the service runs
    env = {**server.env}
    erased_cli = timeline_cli(["erase", "other-story", "--reason", "data-protection request"], env)
    assert erased_cli.returncode == 0, erased_cli.stderr
    assert files_holding(folders, second) == []
    with server.client() as http:
        assert http.get("/events/other-story").status_code == 410
        assert second not in http.get("/timeline").text
        assert "Kept story" in http.get("/timeline").text

    # a scraper publishing the erased id again: dead-lettered, not stored
    client.xadd(server.stream, {"event": httpx.Response(200, json={**marked("other-story", "plain")}).content})
    settle(server, client)
    refused = [d for d in dead_letters(client, server.stream) if b"other-story" in d["event"]]
    assert refused and refused[-1]["reason"] == b"id_conflict" and b"erased" in refused[-1]["error"]

    checked = timeline_cli(["verify"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "erased: story (position 1) with story-fix" in checked.stdout
    assert "os-user:" in checked.stdout and "data-protection request" in checked.stdout
    client.close()


def test_the_api_refuses_erasure_without_a_token_set(serve, redis_url: str) -> None:
    server = serve()
    with server.client() as http:
        assert http.post("/events?wait=true", json={
            "id": "a", "kind": "report", "occurred_at": "2025", "headline": "h",
            "entities": [{"name": "X"}]}).status_code == 201
        refused = http.post("/events/a/erase", json={"reason": "r"})
        assert refused.status_code == 403 and "TIMELINE_API_TOKEN" in refused.json()["error"]
        assert http.get("/erasures").status_code == 403
        assert http.get("/events/a").status_code == 200
