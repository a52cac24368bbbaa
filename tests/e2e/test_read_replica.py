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

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("pg-replica")]  # one worker starts the replica

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
