"""Many nodes on one PostgreSQL and one Redis (docs/postgresql.md#many-nodes): real
``timeline serve`` processes, each in a working folder of its own, sharing nothing but the
PostgreSQL schema (``TIMELINE_DB``) and the Redis stream.

- Every node consumes (the group spreads the entries), every event is stored exactly once, with
  gap-free positions, however often a node is SIGKILLed mid-ingest.
- Each projection is advanced by one node at a time, the holder of its lease (a session advisory
  lock: one session holds it in ``pg_locks``, one live node reports it in ``GET /health``); when
  that node dies, another takes every lease within seconds and carries on.
- Every node answers reads, the same answers once caught up; a rebuild asked of either node runs
  on the lease holder while both keep answering from the old tables until the swap.

The nodes run on one machine, each in a working folder of its own and, where the machine allows
it (root and iproute2: tests/e2e/netns.py), a network namespace of its own: a node there reaches
nothing of the host's network but PostgreSQL and Redis, through a forwarder on its namespace's
gateway, and the test reaches it at its namespace's address, as a second machine would be reached.
Where namespaces cannot be made, the nodes share the host's loopback (the test prints which); in
both, nothing of a node's lives outside its process and folder (TIMELINE_DB is a URL, REDIS_URL is
set, so there is no store file and no embedded Redis).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest
import redis

from e2e_support import (
    Server, all_pages, dead_letters, pending, report_event, settle, store_counts, store_positions, store_rows,
)
from events.pg.connect import advisory_key
from netns import Namespace, available, namespaces
from timeline.publisher import Publisher

pytestmark = pytest.mark.e2e

PROJECTIONS = ("entities", "related", "search", "timelines")
CUT_SECONDS = 4.0  # how long the network cut lasts: its connections refused for a few seconds
TAKEOVER_SECONDS = 15.0  # a dead node's leases are all held again, by a live node, within this (each takeover's time is printed)


@pytest.fixture
def machines() -> Iterator[list[Namespace | None]]:
    """Two places to run a node: two network namespaces where the machine allows it, else the
    host's loopback twice."""
    if not available():
        print("network namespaces unavailable here (needs root and iproute2): the nodes share the loopback")
        yield [None, None]
        return
    with namespaces(2) as made:
        print("nodes in network namespaces:", [(ns.name, ns.address) for ns in made])
        yield list(made)


def lease_keys(url: str) -> dict[str, tuple[int, int]]:
    """Each projection's lease as pg_locks shows a 64-bit advisory key: (classid, objid)."""
    with psycopg.connect(url, autocommit=True) as conn:
        (schema,) = conn.execute("SELECT current_schema()").fetchone()  # type: ignore[misc]
    out = {}
    for name in PROJECTIONS:
        key = advisory_key(schema, f"projection-lease:{name}") & (2**64 - 1)
        out[name] = (key >> 32, key & 0xFFFFFFFF)
    return out


def lease_sessions(url: str, keys: dict[str, tuple[int, int]]) -> dict[str, int]:
    """projection -> how many PostgreSQL sessions hold its lease (pg_locks, granted)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    return {name: sum(1 for row in rows if tuple(row) == key) for name, key in keys.items()}


def holders(url: str, keys: dict[str, tuple[int, int]], nodes: list[Server]) -> dict[str, list[str]]:
    """projection -> the live nodes that say they hold its lease (``GET /health``'s ``leases``),
    plus ``?`` for each session holding it in PostgreSQL that no live node claims (a dead node's
    session that the server has not yet ended)."""
    claimed: dict[str, list[str]] = {name: [] for name in keys}
    for node in nodes:
        if node.pid is None:
            continue
        try:
            leases = httpx.get(f"{node.base_url}/health", timeout=10).json().get("leases", [])
        except httpx.HTTPError:
            continue
        for name in leases:
            claimed[name].append(node.name)
    sessions = lease_sessions(url, keys)
    out = {}
    for name in keys:
        extra = sessions[name] - len(claimed[name])
        # "?": a session no live node claims; "!": a node's claim that no session backs
        out[name] = sorted(claimed[name]) + (["?"] * extra if extra > 0 else ["!"] * -extra)
    return out


def wait_leases_held(url: str, keys: dict[str, tuple[int, int]], nodes: list[Server], by: str | None = None,
                     timeout: float = TAKEOVER_SECONDS) -> tuple[dict[str, list[str]], float]:
    """Until every lease is held by exactly one live node (``by`` if given); (holders, seconds)."""
    started = time.monotonic()
    seen: dict[str, list[str]] = {}
    while time.monotonic() - started < timeout:
        seen = holders(url, keys, nodes)
        if all(len(h) == 1 and h[0] not in "?!" and (by is None or h[0] == by) for h in seen.values()):
            return seen, time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"leases not all held by {by or 'a live node'} within {timeout:g} s: {seen}")


def publisher_process(url: str, stream: str, n: int, *, prefix: str, chunk: int, pause: float) -> subprocess.Popen[str]:
    code = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from e2e_support import report_event
from timeline.publisher import Publisher
with Publisher({url!r}, {stream!r}) as pub:
    for start in range(0, {n}, {chunk}):
        report = pub.publish([report_event(i, prefix={prefix!r}) for i in range(start, min(start + {chunk}, {n}))])
        assert not report.rejected, report.rejected
        time.sleep({pause})
print("published", {n}, flush=True)
"""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class publishing:
    """``publish_up_to(total)``: publishes report events ``node-<i>`` in chunks until ``total``
    are published (``done``: how many so far)."""

    def __init__(self, pub: Publisher, chunk: int) -> None:
        self.pub, self.chunk, self.done = pub, chunk, 0

    def __call__(self, total: int, paced_by: str | None = None) -> None:
        """``paced_by``: a store; each chunk after the first waits until all but a chunk of
        what was published is stored (the nodes' batches stay small, as a trickle keeps them)."""
        first = True
        while self.done < total:
            if paced_by is not None and not first:
                deadline = time.monotonic() + 120
                while last_position(paced_by) < self.done - self.chunk:
                    assert time.monotonic() < deadline, f"{self.done - last_position(paced_by)} published, not stored"
                    time.sleep(0.01)
            first = False
            end = min(self.done + self.chunk, total)
            report = self.pub.publish([report_event(i, prefix="node") for i in range(self.done, end)])
            assert not report.rejected, report.rejected
            self.done = end


def last_position(db: str) -> int:
    return int(store_rows(db, "SELECT COALESCE(MAX(position), 0) FROM events")[0][0])


def feed_until(publish_up_to: publishing, done: Callable[[], bool], db: str, what: str, timeout: float = 60.0) -> None:
    """Until ``done()``: whenever all that was published is stored, publish another chunk (the
    nodes are never left without entries to read while the test waits for them to read some)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        if last_position(db) >= publish_up_to.done:
            publish_up_to(publish_up_to.done + publish_up_to.chunk)
        time.sleep(0.01)


def consumed(node: Server) -> int:
    """Stream entries the node's consumer has settled since it started (``GET /health``)."""
    try:
        return int(httpx.get(f"{node.base_url}/health", timeout=10).json()["consumer"]["entries"])
    except (httpx.HTTPError, KeyError, TypeError):
        return 0


def status(node: Server, n: int) -> dict[str, Any]:
    """What a node answers about the store: every projection's checkpoint and a sample of events."""
    with node.client() as http:
        out: dict[str, Any] = {"projections": http.get("/projections").json()}
        for i in range(0, n, n // 50):
            got = http.get(f"/events/node-{i}")
            assert got.status_code == 200, got.text
            out[f"event-{i}"] = got.json()
    return out


def answers(node: Server, n: int) -> dict[str, Any]:
    """What a node answers from the projections: the whole timeline, each entity and its
    timeline, searches, the directory."""
    with node.client() as http:
        out: dict[str, Any] = {"timeline": all_pages(http, "/timeline", limit=500)}
        out["entities"] = http.get("/entities", params={"limit": 100}).json()
        for k in range(10):
            out[f"entity-{k}"] = http.get(f"/entities/node-entity-{k}").json()
            out[f"timeline-{k}"] = all_pages(http, f"/entities/node-entity-{k}/timeline", limit=500)
            out[f"search-{k}"] = http.get("/timeline", params={"q": f"number {k}", "limit": 20}).json()
    assert len(out["timeline"]) == n
    return out


def test_two_nodes_one_killed_repeatedly_during_ingest(
    serve, pg_db: str, redis_client: redis.Redis, stream_name: str, tmp_path: Path, machines: list[Namespace | None]
) -> None:
    """Paced by progress: the events come in five parts. The first until both nodes consume; then,
    four times, the next part is published (a chunk at a time as the store takes them: take-over
    claims a dead node's entries one at a time) and the lease holder is SIGKILLed as soon as it
    holds entries read and not acknowledged (mid-batch), the other takes every lease, and the
    killed node comes back under a new name (the next kill is of the survivor)."""
    step = 2_500
    a = serve(db=pg_db, workdir=tmp_path / "node-a", consumer=f"a-{uuid4().hex[:8]}", netns=machines[0])
    b = serve(db=pg_db, workdir=tmp_path / "node-b", consumer=f"b-{uuid4().hex[:8]}", netns=machines[1])
    nodes = [a, b]
    keys = lease_keys(pg_db)
    first, _ = wait_leases_held(pg_db, keys, nodes)
    # Started first, node a took every lease; node b holds none (one node at a time).
    assert all(h == [a.name] for h in first.values()), first

    # (the node killed, its entries pending then, events stored then, seconds until the survivor held every lease)
    kills: list[tuple[str, int, int, float]] = []
    with Publisher(redis_client_url(redis_client), stream_name) as pub:
        publish_up_to = publishing(pub, chunk=250)
        # Both nodes consume: the group spreads the entries between them.
        feed_until(publish_up_to, lambda: all(consumed(node) > 0 for node in nodes), pg_db, "both nodes consume")
        publish_up_to(step, paced_by=pg_db)
        victim = a
        while len(kills) < 4:
            publish_up_to(publish_up_to.done + step, paced_by=pg_db)  # a chunk at a time as the store takes them
            held = 0

            def mid_batch() -> bool:  # the victim holds entries read and not acknowledged
                nonlocal held
                held = pending(redis_client, stream_name, victim.consumer)
                return held > 0

            feed_until(publish_up_to, mid_batch, pg_db, f"{victim.name} never held entries read and not acknowledged")
            survivor = b if victim is a else a
            victim.kill()
            stored_then = store_counts(pg_db)[0]
            taken, took = wait_leases_held(pg_db, keys, [survivor], by=survivor.name)
            kills.append((victim.name, held, stored_then, round(took, 2)))
            victim.restart(consumer=f"{victim.name}-{len(kills)}-{uuid4().hex[:6]}")  # a new host-pid name
            # The lease holder is now the survivor: the next kill is of it (the takeover goes back).
            victim = survivor
        print("kills (node, its entries pending, events stored then, seconds until the survivor held every lease):", kills)
        assert len(kills) == 4
        n = publish_up_to.done  # 5 parts, and the chunks fed while waiting for a node to read (if any)
    for node in nodes:
        settle(node, redis_client, timeout=300)

    # Every event once, positions gap-free; nothing dead-lettered, nothing pending.
    assert store_counts(pg_db) == (n, n, 1, n)
    assert store_positions(pg_db) == list(range(1, n + 1))
    assert dead_letters(redis_client, a.stream) == []
    assert pending(redis_client, a.stream) == 0
    health = [httpx.get(f"{node.base_url}/health", timeout=10).json() for node in nodes]
    assert all(h["status"] == "ok" for h in health), health
    # Each lease held by one node; every projection caught up on the survivor and answered alike.
    wait_leases_held(pg_db, keys, nodes)
    states = [status(node, n) for node in nodes]
    assert all(p["position"] == n and p["lag"] == 0 for p in states[0]["projections"]), states[0]["projections"]
    assert states[0] == states[1]
    seen = [answers(node, n) for node in nodes]
    assert seen[0] == seen[1]
    assert [seen[0][f"entity-{k}"]["event_count"] for k in range(10)] == [n // 10] * 10


def test_a_node_cut_off_from_postgresql_and_redis_gives_way_and_comes_back_without_a_restart(
    serve, pg_db: str, redis_client: redis.Redis, stream_name: str, tmp_path: Path
) -> None:
    """A network failure, not a crash: the lease holder's connections to PostgreSQL and Redis are
    all reset and new ones refused for a few seconds, mid-ingest, while its process lives on. The
    other node takes every lease (the holder's sessions ended with its connections). Once the
    network is back, the other node is SIGKILLed: the cut node, never restarted, must take every
    lease back and finish the ingest alone, nothing lost or doubled."""
    if not available():
        pytest.skip("needs network namespaces (root and iproute2): a node's network cut alone")
    # Paced by progress, not by the clock: chunks until both nodes consume, then a part of the
    # events before the cut, one while it lasts, and, once it is over and the other node is
    # killed holding entries read and not acknowledged, one that the cut node stores alone; each
    # part a chunk at a time as the store takes them. CUT_SECONDS: how long the network is cut.
    part, chunk = 2_000, 200
    with namespaces(2) as (ns_a, ns_b), Publisher(redis_client_url(redis_client), stream_name) as pub:
        a = serve(db=pg_db, workdir=tmp_path / "node-a", consumer=f"a-{uuid4().hex[:8]}", netns=ns_a)
        b = serve(db=pg_db, workdir=tmp_path / "node-b", consumer=f"b-{uuid4().hex[:8]}", netns=ns_b)
        nodes = [a, b]
        keys = lease_keys(pg_db)
        wait_leases_held(pg_db, keys, nodes, by=a.name)
        publish_up_to = publishing(pub, chunk)
        # both consume: the group spreads the entries
        feed_until(publish_up_to, lambda: all(consumed(node) > 0 for node in nodes), pg_db, "both nodes consume")
        publish_up_to(publish_up_to.done + part, paced_by=pg_db)  # the cut comes with entries of a's in flight
        ns_a.cut()
        cut_at = time.monotonic()
        # Its sessions are gone, so are its leases: the other node holds them all, and the
        # cut node, still running and still answering HTTP, does not claim them.
        _, took = wait_leases_held(pg_db, keys, nodes, by=b.name)
        print(f"leases all held by {b.name} {took:.2f} s after the cut")
        publish_up_to(publish_up_to.done + part, paced_by=pg_db)  # the ingest goes on while a is cut off
        time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
        ns_a.restore()
        # b is killed holding entries read and not acknowledged (a chunk at most: take-over
        # claims them one at a time), then a stores the last part alone
        feed_until(publish_up_to, lambda: pending(redis_client, stream_name, b.consumer) > 0, pg_db,
                   f"{b.name} never held entries read and not acknowledged")
        b.kill()
        stored_then = store_counts(pg_db)[0]
        _, took = wait_leases_held(pg_db, keys, [a, b], by=a.name)
        print(f"network back, {b.name} killed with {stored_then} events stored:"
              f" {a.name} held every lease {took:.2f} s later")
        publish_up_to(publish_up_to.done + part, paced_by=pg_db)
        n = publish_up_to.done
        settle(a, redis_client, timeout=300)  # alone: it claims what the dead node left pending
        assert a.starts == 1 and a.pid is not None, "the cut node was restarted"
        assert store_counts(pg_db) == (n, n, 1, n)
        assert store_positions(pg_db) == list(range(1, n + 1))
        assert dead_letters(redis_client, a.stream) == []
        assert pending(redis_client, a.stream) == 0
        assert httpx.get(f"{a.base_url}/health", timeout=10).json()["status"] == "ok"
        b.restart(consumer=f"b-{uuid4().hex[:8]}")
        settle(b, redis_client, timeout=300)
        assert status(a, n) == status(b, n)
        seen_a = answers(a, n)
        assert seen_a == answers(b, n)
        assert [seen_a[f"entity-{k}"]["event_count"] for k in range(10)] == [n // 10] * 10


def health_text(node: Server) -> str:
    try:
        return httpx.get(f"{node.base_url}/health", timeout=10).text
    except httpx.HTTPError as exc:
        return repr(exc)


def redis_client_url(client: redis.Redis) -> str:
    """The test's own Redis URL (the host's side, not a namespace's forwarder)."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def test_a_rebuild_asked_of_a_node_without_the_leases_runs_on_the_holder_and_both_keep_answering(
    serve, pg_db: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    n = 6000
    holder = serve(db=pg_db, workdir=tmp_path / "node-a")
    other = serve(db=pg_db, workdir=tmp_path / "node-b")
    keys = lease_keys(pg_db)
    wait_leases_held(pg_db, keys, [holder, other], by=holder.name)
    pub = publisher_process(holder.redis_url, holder.stream, n, prefix="node", chunk=2000, pause=0.0)
    assert pub.wait(timeout=120) == 0
    settle(holder, redis_client, timeout=120)
    settle(other, redis_client, timeout=120)
    before = {**status(holder, n), **answers(holder, n)}
    tags = {name: tag for name, tag in _tags(pg_db).items()}

    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def read(node: Server) -> None:
        nonlocal reads
        with node.client(timeout=30) as http:
            while not stop.is_set():
                got = http.get("/entities/node-entity-3")
                if got.status_code != 200 or got.json()["event_count"] != n // 10:
                    failures.append(f"{node.name}: {got.status_code} {got.text[:200]}")
                reads += 1

    readers = [threading.Thread(target=read, args=(node,)) for node in (holder, other)]
    for t in readers:
        t.start()
    try:
        with other.client() as http:  # asked of the node that does not hold the leases
            assert http.post("/projections/timelines/rebuild").status_code == 202
            assert http.post("/projections/entities/rebuild").status_code == 202
            deadline = time.monotonic() + 180
            while True:
                states = {node.name: {p["name"]: p["state"] for p in httpx.get(f"{node.base_url}/projections").json()}
                          for node in (holder, other)}
                if all(s == "live" for by in states.values() for s in by.values()):
                    break
                assert time.monotonic() < deadline, states
                time.sleep(0.2)
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=60)
    assert failures == [], failures[:5]
    assert reads > 10
    after = _tags(pg_db)
    assert after["timelines"] != tags["timelines"] and after["entities"] != tags["entities"], (tags, after)
    assert after["search"] == tags["search"] and after["related"] == tags["related"]
    after_holder = {**status(holder, n), **answers(holder, n)}
    assert after_holder == {**status(other, n), **answers(other, n)}
    assert {k: v for k, v in after_holder.items() if k != "projections"} == {
        k: v for k, v in before.items() if k != "projections"}
    # The rebuild ran on the holder: the other node did not take the leases.
    assert all(h == [holder.name] for h in holders(pg_db, keys, [holder, other]).values())


def _tags(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute("SELECT name, tables_tag FROM projection_checkpoints").fetchall())  # type: ignore[arg-type]
