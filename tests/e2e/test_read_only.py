"""Read-only nodes (docs/read-only.md) on real processes: a writer (`timeline serve`) and a
read-only node (`TIMELINE_READ_ONLY=1`, `timeline serve --read-only`) over one SQLite store and a
real Redis. What the writer stores the read-only node answers (``?wait=true`` included), it never
writes (no file of the store changes under it, no consumer of its in the group, rebuilds and
erasures refused), its live streams see new events, and killing it loses nothing."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from projections.engine import projection_path

from e2e_support import GROUP, _command, all_pages, report_event, settle, store_counts

pytestmark = pytest.mark.e2e

READ_ONLY = {"TIMELINE_READ_ONLY": "1"}


def consumers(client: redis.Redis, stream: str) -> set[str]:
    return {c["name"].decode() for c in client.xinfo_consumers(stream, GROUP)}


def files(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under the store's folder but the WAL indexes (``-shm``: shared memory every
    reader maps): (mtime in ns, size, SHA-256)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith("-shm"):
            data = path.read_bytes()
            out[str(path.relative_to(folder))] = (path.stat().st_mtime_ns, len(data), hashlib.sha256(data).hexdigest())
    return out


def assert_unwritten(before: dict[str, tuple[int, int, str]], after: dict[str, tuple[int, int, str]]) -> None:
    """Every file as it was; the only files added are empty write-ahead logs (a reader of a WAL
    file creates one when there is none: docs/read-only.md)."""
    assert {name: after[name] for name in before} == before
    added = {name: after[name] for name in set(after) - set(before)}
    assert all(name.endswith("-wal") and size == 0 for name, (_, size, _) in added.items()), added


def tables_tag(db: Path, name: str) -> str:
    conn = sqlite3.connect(f"file:{projection_path(db, name)}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = ?", (name,)).fetchone()[0]
    finally:
        conn.close()


def entity_ids(http: httpx.Client, entity: str) -> list[str]:
    return [e["event_id"] for e in all_pages(http, f"/entities/{entity}/timeline", limit=500)]


def test_read_only_node_answers_what_the_writer_stores_and_waits_for_it(serve, redis_client: redis.Redis) -> None:
    writer = serve()
    reader = serve(db=writer.db, **READ_ONLY)
    with reader.client() as ro, writer.client() as rw:
        health = ro.get("/health")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["node"] == "read-only" and "consumer" not in body["checks"], body
        assert body["behind"] == {"events": 0, "seconds": 0.0}, body
        assert rw.get("/health").json()["node"] == "writer"

        # Published through the read-only node, stored by the writer: ?wait=true answers once the
        # writer's projections hold them, so they are readable from the read-only node at once.
        events = [report_event(i, prefix="ro") for i in range(40)]
        answer = ro.post("/events", params={"wait": "true"}, json=events)
        assert answer.status_code == 201, answer.text
        assert sorted(answer.json()["accepted"]) == sorted(e["id"] for e in events)
        for entity in {e["entities"][0]["id"] for e in events}:
            assert entity_ids(ro, entity) == entity_ids(rw, entity) != []
        assert ro.get("/events/ro-7").json()["headline"] == "Report number 7"
        assert ro.get("/projections").json() == rw.get("/projections").json()

        # An id conflict is dead-lettered by the writer: the read-only node's wait sees it too.
        clash = dict(events[0], headline="Another headline")
        answer = ro.post("/events", params={"wait": "true"}, json=clash)
        assert answer.status_code == 201, answer.text
        assert answer.json()["accepted"] == [] and answer.json()["rejected"][0]["reason"] == "id_conflict"

    assert consumers(redis_client, writer.stream) == {writer.consumer}


def test_read_only_node_waits_a_bounded_time_without_a_writer(serve, redis_client: redis.Redis) -> None:
    writer = serve()
    reader = serve(db=writer.db, TIMELINE_WAIT_TIMEOUT_SECONDS="1.5", **READ_ONLY)
    writer.terminate()  # nothing consumes now
    with reader.client() as ro:
        started = time.monotonic()
        answer = ro.post("/events", params={"wait": "true"}, json=report_event(1, prefix="late"))
        took = time.monotonic() - started
    assert answer.status_code == 202 and answer.json()["pending"] == ["late-1"], answer.text
    assert 1.5 <= took < 10, took
    writer.start()  # the entry waited in the stream: stored once the writer is back
    settle(writer, redis_client)
    with reader.client() as ro:
        assert ro.get("/events/late-1").status_code == 200


def test_read_only_node_never_writes(serve, redis_client: redis.Redis) -> None:
    writer = serve()
    with writer.client() as rw:
        events = [report_event(i, prefix="w") for i in range(30)]
        assert rw.post("/events", params={"wait": "true"}, json=events).status_code == 201
    reader = serve(db=writer.db, **READ_ONLY)
    assert consumers(redis_client, writer.stream) == {writer.consumer}
    writer.terminate()
    folder = writer.db.parent
    before = files(folder)
    assert "timeline.db" in before and any(name.startswith("timeline.db.projections") for name in before), before

    with reader.client() as ro:
        assert ro.get("/health").status_code == 200
        for path in ("/timeline", "/entities?q=entity", "/entities/w-entity-3", "/entities/w-entity-3/timeline",
                     "/entities/w-entity-3/related", "/events/w-4", "/projections", "/timeline?q=report",
                     "/entities/w-entity-3/timeline?format=csv", "/", "/metrics"):
            response = ro.get(path)
            assert response.status_code == 200, (path, response.text)
        refused = ro.post("/projections/timelines/rebuild")
        assert refused.status_code == 403 and "read-only node" in refused.json()["error"], refused.text
        assert ro.get("/projections").json()[0]["state"] == "live"
        erase = ro.post("/events/w-4/erase", json={"reason": "test"})
        assert erase.status_code == 403 and "read-only node" in erase.json()["error"], erase.text
        assert ro.get("/events/w-4").status_code == 200
    reader.terminate()

    assert_unwritten(before, files(folder))
    assert consumers(redis_client, writer.stream) == {writer.consumer}


def test_live_stream_from_a_read_only_node_sees_new_events(serve) -> None:
    writer = serve()
    reader = serve(db=writer.db, **READ_ONLY)
    got: list[dict[str, Any]] = []
    opened = threading.Event()
    error: list[BaseException] = []

    def listen() -> None:
        try:
            with httpx.Client(base_url=reader.base_url, timeout=httpx.Timeout(60.0)) as http:
                with connect_sse(http, "GET", "/entities/live-entity/timeline/stream", params={"after": "0"}) as source:
                    assert source.response.status_code == 200, source.response.read()
                    opened.set()
                    for sse in source.iter_sse():
                        if sse.event == "entry":
                            got.append(json.loads(sse.data))
                        if len(got) >= 6:
                            return
        except BaseException as exc:  # noqa: BLE001 - reported below
            error.append(exc)
        finally:
            opened.set()

    with writer.client() as rw:  # the entity must exist for its stream to open
        first = report_event(0, prefix="live", entities=[{"id": "live-entity", "name": "Live", "role": "subject"}])
        assert rw.post("/events", params={"wait": "true"}, json=first).status_code == 201
        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        assert opened.wait(30)
        for i in range(1, 6):  # each published on its own, after the stream opened
            event = report_event(i, prefix="live", entities=[{"id": "live-entity", "name": "Live", "role": "subject"}])
            assert rw.post("/events", json=event).status_code == 202
            time.sleep(0.2)
    thread.join(60)
    assert not error, error
    assert [e["event_id"] for e in got] == [f"live-{i}" for i in range(6)]


def test_sigkill_of_a_read_only_node_loses_nothing(serve, redis_client: redis.Redis) -> None:
    writer = serve()
    reader = serve(db=writer.db, **READ_ONLY)
    accepted: list[str] = []
    for round_ in range(4):
        with reader.client() as ro:
            batch = [report_event(round_ * 100 + i, prefix="k") for i in range(100)]
            answer = ro.post("/events", json=batch)
            assert answer.status_code == 202, answer.text
            accepted += answer.json()["accepted"]
            # one more in flight as it dies: accepted or not, nothing half-done is left behind
            try:
                ro.post("/events", json=[report_event(round_ * 100 + 50 + i, prefix="k2") for i in range(50)],
                        timeout=0.05)
            except httpx.HTTPError:
                pass
        reader.kill()
        assert consumers(redis_client, writer.stream) == {writer.consumer}
        reader.start()
    settle(writer, redis_client)
    count, distinct, low, high = store_counts(writer.db)
    assert count == distinct and (low, high) == (1, count), (count, distinct, low, high)
    with reader.client() as ro, writer.client() as rw:
        for event_id in accepted:
            assert ro.get(f"/events/{event_id}").status_code == 200, event_id
        assert ro.get("/projections").json() == rw.get("/projections").json()
    assert len(accepted) == 400


def test_read_only_node_refuses_a_store_that_is_not_there(tmp_path: Path, redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update({"REDIS_URL": redis_url, "TIMELINE_DB": str(tmp_path / "none" / "timeline.db")})
    done = subprocess.run([*_command(), "serve", "--read-only", "--port", "0"], env=env, capture_output=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done
    assert b"no store at" in done.stderr and b"start `timeline serve` (the writer)" in done.stderr, done.stderr
    assert not (tmp_path / "none").exists()


def test_read_only_node_follows_a_rebuild_on_the_writer(serve) -> None:
    writer = serve()
    reader = serve(db=writer.db, **READ_ONLY)
    with writer.client() as rw, reader.client() as ro:
        events = [report_event(i, prefix="rb") for i in range(200)]
        assert rw.post("/events", params={"wait": "true"}, json=events).status_code == 201
        entities = sorted({e["entities"][0]["id"] for e in events})
        before = {entity: entity_ids(ro, entity) for entity in entities}
        old_tag = tables_tag(writer.db, "timelines")
        assert rw.post("/projections/timelines/rebuild").status_code == 202
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # answered throughout, from the old tables then the new
            assert {entity: entity_ids(ro, entity) for entity in entities[:2]} == {e: before[e] for e in entities[:2]}
            states = {p["name"]: p["state"] for p in rw.get("/projections").json()}
            if states["timelines"] == "live":
                break
            time.sleep(0.05)
        assert states["timelines"] == "live", states
        assert tables_tag(writer.db, "timelines") != old_tag  # swapped: the read-only node reads the new tables
        assert {entity: entity_ids(ro, entity) for entity in entities} == before
        assert ro.get("/projections").json() == rw.get("/projections").json()


def test_commands_that_write_refuse_the_read_only_setting(serve) -> None:
    writer = serve()
    with writer.client() as rw:
        assert rw.post("/events", params={"wait": "true"}, json=report_event(1, prefix="c")).status_code == 201
    writer.terminate()
    before = files(writer.db.parent)
    env = {**writer.env, **READ_ONLY}
    for args in (["rebuild"], ["erase", "c-1", "--reason", "test"], ["demo"]):
        done = subprocess.run([*_command(), *args], env=env, capture_output=True, timeout=60, cwd=writer.workdir)
        assert done.returncode == 2 and b"TIMELINE_READ_ONLY is set" in done.stderr, (args, done)
    shown = subprocess.run([*_command(), "show", "c-entity-1"], env=env, capture_output=True, timeout=60,
                           cwd=writer.workdir)
    assert shown.returncode == 0 and b"Report number 1" in shown.stdout, shown
    assert_unwritten(before, files(writer.db.parent))


def test_without_redis_url_a_read_only_node_uses_the_writers_embedded_redis(serve, tmp_path: Path) -> None:
    db = tmp_path / "solo" / "timeline.db"
    lone = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_") and k != "REDIS_URL"}
    lone["TIMELINE_DB"] = str(db)
    db.parent.mkdir()
    from events.store import EventStore

    EventStore(db).close()  # a store, and no Redis running for its folder: refused in one line
    done = subprocess.run([*_command(), "serve", "--read-only", "--port", "0"], env=lone, capture_output=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and b"no embedded Redis running" in done.stderr, done
    assert not (db.parent / "redis").exists()

    writer = serve(db=db, REDIS_URL="")  # REDIS_URL empty: the writer starts the folder's embedded Redis
    reader = serve(db=db, REDIS_URL="", **READ_ONLY)
    with reader.client() as ro:
        answer = ro.post("/events", params={"wait": "true"}, json=report_event(1, prefix="emb"))
        assert answer.status_code == 201, answer.text
        assert ro.get("/events/emb-1").status_code == 200
    reader.terminate()
    with writer.client() as rw:  # the writer's Redis outlives the read-only node
        assert rw.get("/health").status_code == 200
