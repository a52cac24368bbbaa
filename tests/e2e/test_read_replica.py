"""A read-only node on a real PostgreSQL read replica (docs/read-only.md, "On PostgreSQL"): a
writer (`timeline serve`) on a private primary, a read-only node (`timeline serve --read-only`)
whose ``TIMELINE_DB`` names the primary's hot standby, made by ``pg_basebackup -R`` and
streaming from it (tests/pg_replica.py). Both on a real Redis.

Once the standby has replayed, the node answers what the writer's node answers. With the
standby's replay paused (``pg_wal_replay_pause()``: a real replication lag, as long as wanted),
the node answers what the standby has, its ``?wait=true`` ends in ``202`` although the writer
stored the events, an ``as_of`` after them answers without them and gains them once replay
resumes, its live stream delivers them only then, and ``/health`` says the standby trails."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from e2e_support import all_pages, report_event

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("pg-replica")]  # one replica pair, where xdist groups

ENTITY = [{"id": "rep-entity", "name": "Replicated", "role": "subject"}]
SAME = ("/timeline", "/timeline?q=report", "/entities?q=entity", "/entities/rep-entity",
        "/entities/rep-entity/timeline", "/entities/rep-entity/related", "/events/rep-4", "/projections")


def timeline(http: httpx.Client, **params: Any) -> list[str]:
    return [e["event_id"] for e in all_pages(http, "/entities/rep-entity/timeline", limit=500, **params)]


def answers(http: httpx.Client) -> dict[str, Any]:
    out = {}
    for path in SAME:
        response = http.get(path)
        assert response.status_code == 200, (path, response.text)
        out[path] = response.json()
    return out


class Listener(threading.Thread):
    """The entries of the read-only node's live stream of ``rep-entity``, from the start."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.got: list[str] = []
        self.opened = threading.Event()
        self.stop = threading.Event()
        self.error: list[BaseException] = []

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(90.0)) as http:
                with connect_sse(http, "GET", "/entities/rep-entity/timeline/stream", params={"after": "0"}) as source:
                    assert source.response.status_code == 200, source.response.read()
                    self.opened.set()
                    for sse in source.iter_sse():
                        if sse.event == "entry":
                            self.got.append(json.loads(sse.data)["event_id"])
                        if self.stop.is_set():
                            return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error.append(exc)
        finally:
            self.opened.set()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline and not self.error:
            time.sleep(0.05)
        assert not self.error, self.error
        return list(self.got)


def test_a_read_only_node_on_a_real_read_replica(serve, replica_db: tuple[str, str], pg_replica: Any) -> None:
    primary, standby = replica_db
    writer = serve(db=primary)
    pg_replica.replayed()  # the writer's migrations are on the standby: the node may start
    reader = serve(db=standby, TIMELINE_READ_ONLY="1", TIMELINE_WAIT_TIMEOUT_SECONDS="2")
    listener = Listener(reader.base_url)
    with writer.client() as rw, reader.client() as ro:
        first = [report_event(i, prefix="rep", entities=ENTITY if i % 2 == 0 else None) for i in range(20)]
        assert rw.post("/events", params={"wait": "true"}, json=first).status_code == 201
        lag = pg_replica.replayed()
        assert answers(ro) == answers(rw)
        before = timeline(ro)
        assert sorted(before) == sorted(f"rep-{i}" for i in range(0, 20, 2))
        health = ro.get("/health").json()
        assert health["node"] == "read-only" and health["status"] == "ok", health
        assert health["replication"]["standby"] is True and health["replication"]["replay"] == "not paused", health
        assert rw.get("/health").json().get("replication") is None  # a writer: not a replica's matter

        listener.start()
        assert listener.opened.wait(30)
        assert sorted(listener.wait_for(len(before))) == sorted(before)

        late = [report_event(100 + i, prefix="rep", entities=ENTITY) for i in range(3)]
        with pg_replica.replay_paused():  # a replication lag as long as this block
            assert rw.post("/events", params={"wait": "true"}, json=late).status_code == 201
            as_of = datetime.now(timezone.utc).isoformat()  # after the writer recorded them
            assert sorted(timeline(rw)) == sorted(before + [e["id"] for e in late])

            # what the standby has: not the late events, at any as_of
            assert timeline(ro) == before
            assert timeline(ro, as_of=as_of) == before
            assert ro.get("/events/rep-100").status_code == 404
            # ?wait=true on the replica: 202 pending at its timeout, although the writer stored it
            started = time.monotonic()
            waited = ro.post("/events", params={"wait": "true"}, json=late[0])
            assert waited.status_code == 202 and waited.json()["pending"] == ["rep-100"], waited.text
            assert time.monotonic() - started >= 2
            # /health: behind counts against the standby's copy; replication tells the lag
            health = ro.get("/health").json()
            assert health["status"] == "ok" and health["behind"]["events"] == 0, health
            assert health["replication"]["replay"] == "paused", health
            assert health["replication"]["lag_seconds"] >= 2, health
            # writes refused as on any read-only node
            refused = ro.post("/projections/timelines/rebuild")
            assert refused.status_code == 403 and "read-only node" in refused.json()["error"], refused.text
            erase = ro.post("/events/rep-4/erase", json={"reason": "test"})
            assert erase.status_code == 403 and "read-only node" in erase.json()["error"], erase.text
            assert sorted(listener.got) == sorted(before)  # nothing new streamed: the standby has nothing new
            paused_lag = health["replication"]["lag_seconds"]

        lag = max(lag, pg_replica.replayed())
        # replayed: the same as_of now answers the events recorded before it, as the docs say
        assert sorted(timeline(ro, as_of=as_of)) == sorted(before + [e["id"] for e in late])
        waited = ro.post("/events", params={"wait": "true"}, json=late[0])
        assert waited.status_code == 201 and waited.json()["accepted"] == ["rep-100"], waited.text
        assert answers(ro) == answers(rw)
        assert sorted(listener.wait_for(len(before) + 3)) == sorted(before + [e["id"] for e in late])
        assert listener.got[len(before):] == [e["id"] for e in late]  # in store order, after the rest
        listener.stop.set()
        health = ro.get("/health").json()
        assert health["replication"] == {"standby": True, "replay": "not paused", "lag_seconds": 0}, health
    print(f"replication: caught up in {lag:.3f} s at most; {paused_lag} s of lag reported while paused")


def test_a_rebuild_and_an_erasure_on_the_primary_reach_the_node_on_the_standby(
    serve, replica_db: tuple[str, str], pg_replica: Any
) -> None:
    """A rebuild's swap drops the old tables on the primary: replayed on the standby while the
    node reads, it answers throughout, from the old tables then the new. An erasure on the
    primary is ``410`` on the node once replayed."""
    primary, standby = replica_db
    writer = serve(db=primary, token="replica-token")  # erasure needs the API token
    pg_replica.replayed()
    reader = serve(db=standby, token="replica-token", TIMELINE_READ_ONLY="1")
    auth = {"Authorization": "Bearer replica-token"}
    with writer.client(headers=auth) as rw, reader.client(headers=auth) as ro:
        events = [report_event(i, prefix="rb") for i in range(2000)]
        for start in range(0, len(events), 500):
            assert rw.post("/events", params={"wait": "true"}, json=events[start:start + 500]).status_code == 201
        pg_replica.replayed()
        entities = sorted({e["entities"][0]["id"] for e in events})
        before = {entity: [e["event_id"] for e in all_pages(ro, f"/entities/{entity}/timeline", limit=500)]
                  for entity in entities}
        assert sum(map(len, before.values())) == 2000
        assert rw.post("/projections/timelines/rebuild").status_code == 202
        deadline, reads = time.monotonic() + 90, 0
        while time.monotonic() < deadline:  # answered throughout, from the old tables then the new
            for entity in entities[:3]:
                response = ro.get(f"/entities/{entity}/timeline", params={"limit": 500})
                assert response.status_code == 200, response.text
                assert [e["event_id"] for e in response.json()["entries"]] == before[entity]
                reads += 1
            states = {p["name"]: p["state"] for p in rw.get("/projections").json()}
            if states["timelines"] == "live":
                break
        assert states["timelines"] == "live", states
        pg_replica.replayed()
        assert {entity: [e["event_id"] for e in all_pages(ro, f"/entities/{entity}/timeline", limit=500)]
                for entity in entities} == before
        assert ro.get("/projections").json() == rw.get("/projections").json()

        assert rw.post("/events/rb-4/erase", json={"reason": "test"}).status_code == 200
        pg_replica.replayed()
        assert ro.get("/events/rb-4").status_code == 410
        assert "rb-4" not in [e["event_id"] for e in all_pages(ro, "/entities/rb-entity-4/timeline", limit=500)]
        assert answers_of(ro, entities) == answers_of(rw, entities)
    print(f"{reads} reads on the standby during the rebuild")


def answers_of(http: httpx.Client, entities: list[str]) -> dict[str, Any]:
    return {entity: http.get(f"/entities/{entity}/timeline", params={"limit": 500}).json() for entity in entities}
