"""Rebuilds without downtime (real server, real processes): reads never fail or see a half-built
table, nothing published meanwhile goes missing, and a killed rebuild harms nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from e2e_support import settle
from events.models import parse_event
from events.backend import is_postgres
from events.backend import open_store
from events.store import Candidate
from projections import default_projections, open_engine
from projections.engine import projection_path
from timeline.publisher import Publisher

pytestmark = pytest.mark.e2e


def make_events(n: int, *, start: int = 0, year: int | None = None) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        a, b = f"entity-{i % 7}", f"entity-{7 + i % 41}"
        y = year or 2015 + i % 10
        out.append(
            {
                "id": f"r-{i}",
                "kind": "report",
                "occurred_at": f"{y}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "headline": f"Report number {i}",
                "summary": "Something happened to two entities.",
                "entities": [{"id": a, "name": a.title(), "role": "subject"}, {"id": b, "name": b.title()}],
                "details": {"category": "business"},
            }
        )
    return out


def projection_rows(db: Path | str) -> dict[str, str]:
    """A digest of each live projection table's rows."""
    out = {}
    if is_postgres(db):
        from projections.pg import default_projections as pg_projections

        with psycopg.connect(str(db), autocommit=True) as pg:
            for p in pg_projections():
                (tag,) = pg.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = %s", (p.name,)).fetchone()
                for base in p.schema:
                    rows = sorted(map(repr, pg.execute(f"SELECT * FROM {base}{tag}").fetchall()))
                    out[f"{p.name}.{base}"] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        return out
    for p in default_projections():
        conn = sqlite3.connect(projection_path(db, p.name))
        try:
            tag = conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = ?", (p.name,)).fetchone()[0]
            for base in p.schema:
                columns = "rowid, *" if base == "tl_search" else "*"
                rows = sorted(map(repr, conn.execute(f"SELECT {columns} FROM {base}{tag}")))
                out[f"{p.name}.{base}"] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        finally:
            conn.close()
    return out


def table_names(db: Path | str) -> list[str]:
    """The tables of the store (and, on PostgreSQL, of the projections beside it)."""
    if is_postgres(db):
        with psycopg.connect(str(db), autocommit=True) as pg:
            return [r[0] for r in pg.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )]
    conn = sqlite3.connect(db)
    try:
        return [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    finally:
        conn.close()


def checkpoints(db: Path | str) -> dict[str, dict[str, Any]]:
    columns = "name, state, tables_tag, rebuild_tag, rebuild_position"
    if is_postgres(db):  # beside the store's tables, in its schema
        with psycopg.connect(str(db), autocommit=True) as pg:
            rows = pg.execute(f"SELECT {columns} FROM projection_checkpoints").fetchall()
        return {r[0]: {"state": r[1], "tag": r[2], "rebuild_tag": r[3], "rebuild_position": r[4]} for r in rows}
    out = {}
    for p in default_projections():
        conn = sqlite3.connect(projection_path(db, p.name))
        try:
            rows = conn.execute(f"SELECT {columns} FROM projection_checkpoints")
            out.update({r[0]: {"state": r[1], "tag": r[2], "rebuild_tag": r[3], "rebuild_position": r[4]} for r in rows})
        finally:
            conn.close()
    return out


def test_rebuild_while_clients_read_and_a_publisher_writes(serve, backend: str, redis_client: redis.Redis) -> None:
    server = serve()
    with Publisher(server.redis_url, server.stream) as publisher:
        assert not publisher.publish(make_events(20_000)).rejected
    settle(server, redis_client, timeout=120)
    http = server.client()
    first_page = http.get("/entities/entity-0/timeline", params={"limit": 5}).json()["entries"]
    global_page = http.get("/timeline", params={"limit": 5}).json()["entries"]
    baseline_count = http.get("/entities/entity-0").json()["event_count"]
    assert len(first_page) == 5 and baseline_count > 2000

    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        last_count = baseline_count
        with server.client(timeout=30) as client:
            while not stop.is_set():
                try:
                    page = client.get("/entities/entity-0/timeline", params={"limit": 5})
                    everything = client.get("/timeline", params={"limit": 5})
                    entity = client.get("/entities/entity-0")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                reads += 1
                if page.status_code != 200 or page.json()["entries"] != first_page:
                    failures.append(f"entity page: {page.status_code} {page.text[:200]}")
                if everything.status_code != 200 or everything.json()["entries"] != global_page:
                    failures.append(f"global page: {everything.status_code} {everything.text[:200]}")
                if entity.status_code != 200:
                    failures.append(f"entity: {entity.status_code} {entity.text[:200]}")
                else:
                    count = entity.json()["event_count"]
                    if count < last_count:  # a half-built table would show fewer
                        failures.append(f"event_count went back from {last_count} to {count}")
                    last_count = count

    def writer() -> None:
        # Dated 2030: later than everything, so the first pages above stay the same.
        with Publisher(server.redis_url, server.stream) as publisher:
            for chunk in range(30):
                publisher.publish(make_events(100, start=100_000 + chunk * 100, year=2030))
                time.sleep(0.05)

    old_tags = {name: cp["tag"] for name, cp in checkpoints(server.db).items()}
    threads = [threading.Thread(target=reader), threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        for name in sorted(old_tags):
            response = http.post(f"/projections/{name}/rebuild")
            assert response.status_code == 202, response.text
            state = {p["name"]: p["state"] for p in http.get("/projections").json()}
            assert state[name] in ("rebuilding", "live")  # live again only if already swapped
        threads[2].join(timeout=120)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            listed = http.get("/projections").json()
            if all(p["state"] == "live" for p in listed):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"rebuilds did not finish: {listed}; stderr:\n{server.stderr()}")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads[:2]:
            t.join(timeout=60)
    settle(server, redis_client, timeout=120)
    assert failures == [], failures[:5]
    assert reads > 10
    new_tags = {name: cp["tag"] for name, cp in checkpoints(server.db).items()}
    assert all(new_tags[n] != old_tags[n] for n in new_tags), (old_tags, new_tags)
    # Nothing published during the rebuild is missing from the swapped-in tables.
    total = sum(e["event_count"] for e in http.get("/entities", params={"limit": 500}).json()["entities"])
    assert total == 2 * 23_000
    late = http.get("/timeline", params={"since": "2030", "limit": 500}).json()
    seen = len(late["entries"])
    cursor = late["next_cursor"]
    while cursor:
        page = http.get("/timeline", params={"since": "2030", "limit": 500, "cursor": cursor}).json()
        seen += len(page["entries"])
        cursor = page["next_cursor"]
    assert seen == 3_000
    http.close()


def test_a_rebuild_killed_midway_leaves_the_live_tables_and_a_second_rebuild_completes(backend: str) -> None:
    db = backend
    store = open_store(db)
    engine = open_engine(store, batch_size=5000)
    engine.setup()  # before any event: the projections are live from position 0
    raws = [json.dumps(e).encode() for e in make_events(40_000)]
    for i in range(0, len(raws), 5000):
        store.append([Candidate(parse_event(json.loads(r)), r) for r in raws[i : i + 5000]])
    engine.catch_up()
    engine.close()
    store.close()
    before = projection_rows(db)

    env = {**os.environ, "TIMELINE_DB": str(db)}
    env.pop("REDIS_URL", None)
    command = [str(Path(sys.executable).parent / "timeline"), "rebuild"]
    for attempt in range(3):  # catch it mid-way; a fast machine may need another try
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        midway = False
        while time.monotonic() < deadline and proc.poll() is None:
            cps = checkpoints(db)
            # Started and not swapped in: copying a batch (one batch may hold all 40,000 events),
            # deriving aggregates or building read indexes.
            if any(cp["rebuild_tag"] for cp in cps.values()):
                midway = True
                break
            time.sleep(0.005)
        if midway and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        proc.wait()
    else:
        pytest.skip("the rebuild finished before it could be killed mid-way")

    states = checkpoints(db)
    assert any(cp["state"] == "rebuilding" for cp in states.values()), states
    assert projection_rows(db) == before  # the live tables are untouched

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rebuilt" in done.stdout and "events/s" in done.stdout
    states = checkpoints(db)
    assert all(cp["state"] == "live" and cp["rebuild_tag"] is None for cp in states.values()), states
    assert projection_rows(db) == before  # the same rows, in the swapped-in tables
    live_tags = {cp["tag"] for cp in states.values()}
    leftovers = [
        name
        for name in table_names(db)
        if (tag := re.search(r"_v\d+(_r\d+)?", name)) and tag.group(0) not in live_tags
    ]
    assert leftovers == [], "a killed rebuild's tables were not dropped"
