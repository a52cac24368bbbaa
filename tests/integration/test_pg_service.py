"""The service on PostgreSQL, two nodes in one process: two ``TimelineService`` on one schema
(each its own store, engine and connections, as two machines would have).

- The node holding no lease does not step for nothing: ``project_step`` answers the head for the
  projections another node advances (the projector then waits for the next append or a second,
  instead of looping at once), and the holder's answer is its lowest checkpoint.
- A rebuild started on the node without the leases is recorded, waited for there, run by the
  holder, and swapped in for both.
- A node closed (as a stopped or dead node's connections close) gives its leases up; the other
  node takes them at its next step and catches up from the checkpoints.
- The writer's session ended by the server: that batch fails (and stays pending), the next try
  appends on a new connection (``PgEventStore.revive``), the append observers still told.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from events.models import parse_event_bytes
from events.store import Candidate
from timeline.service import TimelineService
from timeline.settings import Settings


def node(db: str, name: str) -> TimelineService:
    return TimelineService(Settings(TIMELINE_DB=db, TIMELINE_CONSUMER=name, TIMELINE_VALIDATORS=0))


def append(service: TimelineService, start: int, n: int) -> None:
    raws = [
        json.dumps({
            "id": f"n-{i}", "kind": "report", "occurred_at": f"2025-0{1 + i % 9}-1{i % 10}",
            "headline": f"Report {i}", "entities": [{"id": f"e-{i % 5}", "name": f"E {i % 5}"}],
        }).encode()
        for i in range(start, start + n)
    ]
    results = service.store.append([Candidate(parse_event_bytes(r), r) for r in raws])
    assert all(r.status == "stored" for r in results)


def positions(service: TimelineService) -> dict[str, int]:
    return {name: cp.position for name, cp in service.engine.checkpoints().items()}


@pytest.fixture
def nodes(pg_db: str) -> Any:
    a, b = node(pg_db, "a"), node(pg_db, "b")
    try:
        yield a, b
    finally:
        b.close()
        a.close()


def test_only_the_lease_holder_steps_and_the_other_answers_the_head(nodes: Any) -> None:
    a, b = nodes
    append(a, 0, 300)
    assert a.project_step() == (300, 300)  # a took every lease and caught up
    assert sorted(a.engine.leases()) == sorted(a.engine.projections)
    append(b, 300, 200)  # b appends too (every node does)
    assert b.project_step() == (500, 500)  # nothing of b's is behind: it advances none
    assert b.engine.leases() == []
    assert set(positions(b).values()) == {300}  # and indeed it did not step them
    assert a.project_step() == (500, 500)
    assert set(positions(b).values()) == {500}


def test_a_rebuild_asked_of_the_other_node_is_run_by_the_holder(nodes: Any) -> None:
    a, b = nodes
    append(a, 0, 400)
    a.project()
    b.project()
    before = a.engine.checkpoint("timelines")
    assert before is not None and "timelines" in a.engine.leases() and b.engine.leases() == []
    b.start_rebuild(["timelines"])  # recorded in the checkpoint
    started = time.monotonic()
    position, head, done = b.rebuild_step(["timelines"])
    assert not done and head == 400
    assert time.monotonic() - started >= 0.4  # b waited (LEASE_POLL_SECONDS) rather than spin
    # The holder finds the rebuild it did not start, starts it again as its own and runs it.
    assert a.engine.abandoned_rebuilds() == ["timelines"]
    a.start_rebuild(["timelines"], force=True)
    while not a.rebuild_step(["timelines"])[2]:
        pass
    position, head, done = b.rebuild_step(["timelines"])
    assert done and position == head == 400
    after = a.engine.checkpoint("timelines")
    assert after is not None and after.tag != before.tag and after.rebuild is None
    assert b.engine.leases() == []


def test_a_closed_node_gives_its_leases_up_and_the_other_carries_on(pg_db: str) -> None:
    a, b = node(pg_db, "a"), node(pg_db, "b")
    try:
        append(a, 0, 100)
        a.project_step()
        append(b, 100, 100)
        assert b.project_step() == (200, 200) and b.engine.leases() == []
        a.close()  # its connections end: PostgreSQL releases its leases as their backends exit
        deadline = time.monotonic() + 5
        while sorted(b.engine.leases()) != sorted(b.engine.projections):  # b's next steps take them
            assert time.monotonic() < deadline, b.engine.leases()
            assert b.project_step()[1] == 200
            time.sleep(0.05)
        assert b.project_step() == (200, 200)
        assert set(positions(b).values()) == {200}
    finally:
        b.close()


def test_the_writer_connection_lost_is_opened_again_for_the_next_append(pg_db: str) -> None:
    """The server ends the node's writer session (as a restart does): that append fails, the
    entries stay pending, and the next try appends on a new connection, observers kept."""
    import psycopg

    a = node(pg_db, "a")
    try:
        seen: list[int] = []
        a.store.observers.append(lambda done: seen.append(done.stored))
        prepared = a.prepare([(f"1-{i}".encode(), {b"event": json.dumps({
            "id": f"w-{i}", "kind": "report", "occurred_at": "2025", "headline": f"W {i}",
            "entities": [{"name": "E"}]}).encode()}) for i in range(10)])
        with psycopg.connect(pg_db, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (a.store.pg.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError):
            a.append(prepared)
        outcome = a.append(prepared)
        assert outcome.stored == 10 and a.store.head() == 10
        assert seen == [10], "the observers were not kept"
    finally:
        a.close()


def test_the_lease_holder_takes_over_recorded_rebuilds_and_other_versions(pg_db: str) -> None:
    """``Runtime._rebuilds_to_take_over`` (what the lease watch starts every second): on the node
    holding the leases, a rebuild recorded by another node, and a projection whose tables are of
    another version than its code's (a rolling upgrade); on the other node, nothing."""
    import psycopg

    from timeline.runtime import Runtime

    settings = [Settings(TIMELINE_DB=pg_db, TIMELINE_CONSUMER=name, TIMELINE_VALIDATORS=0) for name in ("a", "b")]
    a, b = Runtime(settings[0]), Runtime(settings[1])
    try:
        append(a.service, 0, 50)
        a.service.project_step()
        b.service.project_step()
        assert a._rebuilds_to_take_over() == [] and b._rebuilds_to_take_over() == []
        b.service.start_rebuild(["timelines"])  # asked of the node without the lease
        with psycopg.connect(pg_db, autocommit=True) as admin:  # tables written by an older version
            admin.execute("UPDATE projection_checkpoints SET version = version - 1 WHERE name = 'related'")
        assert a._rebuilds_to_take_over() == ["related", "timelines"]
        assert b._rebuilds_to_take_over() == []  # not its to run: it holds no lease
        a.service.start_rebuild(["related", "timelines"], force=True)
        assert a._rebuilds_to_take_over() == []  # now running here, to this code's version
    finally:
        for runtime in (b, a):
            runtime.readers.close()
            runtime.service.close()


def test_a_read_whose_connection_the_server_ended_reads_again_on_a_new_one(pg_db: str) -> None:
    """PostgreSQL restarted, a failover, the network dropped: a reader's connection is gone. The
    read that finds it so reads again once on a new connection and answers 200 (no 503 per reader
    thread, no restart of the node)."""
    import psycopg

    from helpers import InProcessApi
    from timeline.api import create_app
    from timeline.runtime import Runtime

    writer = node(pg_db, "writer")
    append(writer, 0, 20)
    writer.project_step()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIMELINE_DB", pg_db)
        mp.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
        mp.setenv("TIMELINE_READERS", "1")  # one reader thread: the next read is on the same connection
        runtime = Runtime(Settings(), consume=False)
        api = InProcessApi(create_app(runtime, manage=False))
        try:
            assert api.get("/entities/e-1/timeline").json()["entries"]
            readers = [s.pg.info.backend_pid for s in runtime.service.queries._open]
            assert readers
            with psycopg.connect(pg_db, autocommit=True) as admin:
                for pid in readers:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            again = api.get("/entities/e-1/timeline")
            assert again.status_code == 200, again.text
            assert len(again.json()["entries"]) == 4
            now = [s.pg.info.backend_pid for s in runtime.service.queries._open if not s.pg.closed]
            assert now and not set(now) & set(readers)  # on a new connection
            assert api.get("/projections").status_code == 200
        finally:
            api.close()
            runtime.service.close()
            writer.close()


def test_reads_across_a_postgresql_restart_and_outage() -> None:
    """A real PostgreSQL restart (a private server, stopped and started): the first read after it
    answers 200, on the same reader thread (whose connection the restart ended); while the server
    is down a read answers 503 naming the cause, and the first once it is back 200."""
    from helpers import InProcessApi
    from pg_replica import private_server
    from timeline.api import create_app
    from timeline.runtime import Runtime

    with private_server() as server:
        writer = node(server.url, "writer")
        append(writer, 0, 20)
        writer.project_step()
        writer.close()
        # The projections commit with synchronous_commit off: a crash (stop -m immediate) may
        # take their last commits with it (they are projected again; the store's are durable).
        # A checkpoint first, so that what the reads expect is on disk before the crashes.
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TIMELINE_DB", server.url)
            mp.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
            mp.setenv("TIMELINE_READERS", "1")
            runtime = Runtime(Settings(), consume=False)
            api = InProcessApi(create_app(runtime, manage=False))
            try:
                assert len(api.get("/entities/e-1/timeline").json()["entries"]) == 4
                server.stop()
                server.start()
                restarted = api.get("/entities/e-1/timeline")
                assert restarted.status_code == 200, restarted.text
                assert len(restarted.json()["entries"]) == 4
                server.stop()
                down = api.get("/entities/e-1/timeline")
                assert down.status_code == 503, down.text
                assert "cannot be reached" in down.json()["error"] and down.headers["retry-after"]
                server.start()
                back = api.get("/entities/e-1/timeline")
                assert back.status_code == 200, back.text
                assert len(back.json()["entries"]) == 4
            finally:
                api.close()
                runtime.service.close()
