"""`timeline backup` and `timeline import` on a real `timeline serve` and a real Redis.

- A backup taken while the service ingests holds a gap-free prefix 1..N of the live store, byte
  for byte, that verifies; a store restored from a backup rebuilds its projections and answers
  every timeline as the live one does.
- A file imported (the service stopped) answers every timeline as the same file streamed does;
  its rejects file holds what the stream refused. An import while the service runs and ingests
  interleaves with the stream in whole transactions, and the service's projections catch up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from e2e_support import all_pages, dead_letters, jsonl, report_event, settle, store_positions, store_rows

pytestmark = pytest.mark.e2e

TIMELINE = str(Path(sys.executable).parent / "timeline")


def timeline(server: Any, *args: str, stdin: bytes | None = None, cwd: Path | None = None,
             **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [TIMELINE, *args], env={**server.env, "COLUMNS": "200", **env}, capture_output=True, timeout=300,
        input=stdin, cwd=cwd or server.workdir,
    )


def rows(db: Path | str, upto: int | None = None) -> list[tuple[Any, ...]]:
    """Every stored event with its chained hash, byte for byte, in position order (either backend)."""
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in store_rows(
        db,
        "SELECT e.position, e.event_id, e.kind, e.target_id, e.content_hash, e.recorded_at, e.raw, e.body, c.hash"
        " FROM events e JOIN event_chain c USING (position)"
        f" WHERE e.position <= {int(upto if upto is not None else 2**62)} ORDER BY e.position",
    )]


def entity_ids(db: Path | str) -> list[str]:
    return [r[0] for r in store_rows(db, "SELECT DISTINCT entity_id FROM event_entities ORDER BY entity_id")]


def every_timeline(server: Any, ids: list[str], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each entity with its whole timeline, as the API answers; ``drop``: fields left out."""
    out: dict[str, Any] = {}
    with server.client() as http:
        for entity_id in ids:
            answer = http.get(f"/entities/{entity_id}")
            assert answer.status_code == 200, answer.text
            entries = all_pages(http, f"/entities/{entity_id}/timeline", limit=500, include_retracted="true")
            out[entity_id] = {
                "entity": answer.json(),
                "entries": [{k: v for k, v in e.items() if k not in drop} for e in entries],
            }
    return out


def wait_projected(server: Any, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Until every projection is live, at the code's version, with lag 0."""
    deadline = time.monotonic() + timeout
    rows_: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows_ = httpx.get(f"{server.base_url}/projections", timeout=10).json()
        if rows_ and all(r["state"] == "live" and r["lag"] == 0 and r["version"] > 0 for r in rows_):
            return rows_
        time.sleep(0.2)
    raise AssertionError(f"projections not caught up: {rows_}\n{server.stderr()[-3000:]}")


def publish_in_background(server: Any, events: list[dict[str, Any]], path: Path) -> threading.Thread:
    path.write_bytes(jsonl(events))

    def run() -> None:
        done = timeline(server, "publish", str(path))
        assert done.returncode == 0, done.stderr

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def stored(db: Path | str) -> int:
    """The store's last position (0 when empty)."""
    return int(store_rows(db, "SELECT COALESCE(MAX(position), 0) FROM events")[0][0])


def publish_until(server: Any, stop: threading.Event, chunk: int = 100) -> None:
    """Publish report events a chunk at a time, paced by the store: the next chunk as soon as
    the one before it is stored but for a chunk at most (the service always has a chunk to store,
    never a growing backlog), until ``stop`` (then one more). A chunk of 100 keeps the store
    writing throughout each backup at a third of the events that 500 made (13,000 against
    35,000 over the same three copies), which every later read and the restore's rebuild pay for."""
    from timeline.publisher import Publisher

    with Publisher(server.redis_url, server.stream) as publisher:
        i = 0
        while True:
            last = stop.is_set()
            report = publisher.publish([report_event(i + k, prefix="bk") for k in range(chunk)])
            assert not report.rejected, report.rejected
            i += chunk
            if last:
                return
            while not stop.is_set() and stored(server.db) < i - chunk:
                time.sleep(0.02)


# --- the mixed file both paths take ----------------------------------------------------------


def mixed_events(n: int, prefix: str) -> list[bytes]:
    """News of every kind, corrections (some before their target), retractions, aliases, the same
    event twice, an id conflict, and lines the contract refuses: each path must judge them alike."""
    out: list[bytes] = []
    for i in range(n):
        people = [{"id": f"{prefix}-p{i % 7}", "name": f"Person {i % 7}", "type": "person", "role": "subject"},
                  {"id": f"{prefix}-o{i % 5}", "name": f"Org {i % 5}", "type": "organization"}]
        out.append(json.dumps(report_event(i, prefix=prefix, entities=people)).encode())
        if i % 50 == 10:  # a correction of a later event (it waits for it)
            out.append(json.dumps({"id": f"{prefix}-fix-{i}", "kind": "correction", "occurred_at": "2025-12",
                                   "details": {"corrects": f"{prefix}-{i + 5}",
                                               "changes": {"headline": f"Corrected report {i + 5}"}}}).encode())
        if i % 97 == 3:
            out.append(json.dumps({"id": f"{prefix}-retract-{i}", "kind": "retraction", "occurred_at": "2025-12",
                                   "details": {"retracts": f"{prefix}-{i - 1}", "reason": "wrong"}}).encode())
    out.insert(40, json.dumps({"id": f"{prefix}-alias", "kind": "entity_alias", "occurred_at": "2025-01",
                               "details": {"alias": f"{prefix}-o4", "canonical": f"{prefix}-o3"}}).encode())
    out.insert(60, out[5])  # the same event again: a no-op
    conflict = json.loads(out[7])
    conflict["headline"] = "Other content under the same id"
    out.insert(70, json.dumps(conflict).encode())  # id_conflict
    out.insert(80, json.dumps({"id": f"{prefix}-alias-cycle", "kind": "entity_alias", "occurred_at": "2025-02",
                               "details": {"alias": f"{prefix}-o3", "canonical": f"{prefix}-o4"}}).encode())
    out.insert(90, b'{"kind": "report", "occurred_at": "2025-05"')  # bad_json
    out.insert(100, json.dumps({"kind": "report", "occurred_at": "2025-05", "headline": "no entities"}).encode())
    return out


def test_an_imported_file_answers_as_the_same_file_streamed(serve: Any, redis_url: str, tmp_path: Path) -> None:
    lines = mixed_events(600, "mx")
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n\n")  # a blank line at the end: skipped by both

    streamed = serve(TIMELINE_CLAIM_IDLE_SECONDS="60")  # nothing taken over out of order
    published = timeline(streamed, "publish", str(source), "--wait")
    assert published.returncode == 1  # lines were refused, one dead-lettered
    settle(streamed, redis.Redis.from_url(redis_url))

    imported = serve(autostart=False, stream=f"{streamed.stream}:other")
    done = timeline(imported, "import", str(source), "--workers", "2")
    assert done.returncode == 1, done.stderr
    assert b"rejected 4;" in done.stdout, done.stdout
    assert b"4 lines rejected (bad_json 1, id_conflict 1, schema 2)" in done.stderr.replace(b"\n", b" "), done.stderr
    rejects = [json.loads(line) for line in (tmp_path / "events.jsonl.rejected.jsonl").read_bytes().splitlines()]
    assert [r["line"] for r in rejects] == sorted(r["line"] for r in rejects)
    for reject in rejects:  # each names its line and keeps it as it was
        assert lines[reject["line"] - 1] == reject["event"].encode(), reject
    dead = dead_letters(redis.Redis.from_url(redis_url), streamed.stream)
    assert [(d["reason"].decode(), d["event"]) for d in dead] == [
        (r["reason"], r["event"].encode()) for r in rejects if r["reason"] in ("id_conflict",) or "cycle" in r["error"]
    ]
    imported.start()
    wait_projected(imported)

    # The same events, at the same positions, with the same bytes; only recorded_at differs.
    live, copy = rows(streamed.db), rows(imported.db)
    assert [r[:5] + r[6:8] for r in live] == [r[:5] + r[6:8] for r in copy]
    ids = entity_ids(streamed.db)
    assert every_timeline(streamed, ids, drop=("recorded_at",)) == every_timeline(imported, ids, drop=("recorded_at",))

    again = timeline(imported, "import", str(source), "--quiet")  # idempotent: nothing stored twice
    assert again.returncode == 1 and b"stored 0," in again.stdout, again.stdout


def test_import_while_the_service_ingests(serve: Any, redis_url: str, tmp_path: Path) -> None:
    server = serve()
    streamed = [report_event(i, prefix="live") for i in range(3000)]
    publisher = publish_in_background(server, streamed, tmp_path / "live.jsonl")
    imported = [report_event(i, prefix="bulk") for i in range(30_000)]
    done = timeline(server, "import", "-", stdin=jsonl(imported), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "stdin.rejected.jsonl").exists()
    publisher.join(timeout=120)
    settle(server, redis.Redis.from_url(redis_url), timeout=120)
    wait_projected(server)

    positions = store_positions(server.db)
    assert positions == list(range(1, 33_001))  # gap-free, nothing lost or doubled
    stored = rows(server.db)
    # The import's events are in file order; the stream's batches fall between its transactions.
    bulk = [r[1] for r in stored if r[1].startswith("bulk-")]
    assert bulk == [f"bulk-{i}" for i in range(30_000)]
    # Each import transaction (20,000 events) is one block of consecutive positions.
    bulk_flags = [r[1].startswith("bulk-") for r in stored]
    blocks = sum(1 for i, flag in enumerate(bulk_flags) if flag and (i == 0 or not bulk_flags[i - 1]))
    assert 1 <= blocks <= 2, blocks
    verified = timeline(server, "verify")
    assert verified.returncode == 0, verified.stderr
    with server.client() as http:  # the service's projections answer the imported events
        entries = all_pages(http, "/entities/bulk-entity-3/timeline", limit=500)
        assert len(entries) == 3000
        assert http.get("/events/bulk-29999").status_code == 200


def test_backup_during_ingest_holds_a_verified_prefix_and_restores(
    serve: Any, backend: str, redis_url: str, tmp_path: Path
) -> None:
    """On SQLite, the file's pages; on PostgreSQL, copy-store into a SQLite file: either way a
    verified gap-free prefix, byte for byte, that a service of its own restores."""
    server = serve()
    stop = threading.Event()
    publisher = threading.Thread(target=publish_until, args=(server, stop), daemon=True)
    publisher.start()
    backups = tmp_path / "backups"
    backups.mkdir()
    copies: list[tuple[Path, int]] = []
    deadline = time.monotonic() + 120
    while len(copies) < 3 and time.monotonic() < deadline:  # while the stream is being stored
        head = stored(server.db)  # the last position: not every position read at each look
        if head == 0 or (copies and head == copies[-1][1]):
            time.sleep(0.05)
            continue
        dest = backups / f"copy-{len(copies)}.db"
        done = timeline(server, "backup", str(dest))
        assert done.returncode == 0, done.stderr
        assert b"verified" in done.stdout
        copies.append((dest, len(store_positions(dest))))
    stop.set()  # the publisher publishes once more, then stops: every copy was taken during ingest
    publisher.join(timeout=180)
    client = redis.Redis.from_url(redis_url)
    settle(server, client, timeout=180)
    total = len(store_positions(server.db))
    assert len(copies) == 3 and all(0 < n < total for _, n in copies), (copies, total)
    live = rows(server.db)
    for dest, n in copies:
        assert store_positions(dest) == list(range(1, n + 1))  # a gap-free prefix
        assert rows(dest) == live[:n]  # byte for byte, hash chain included
        check = subprocess.run([TIMELINE, "verify"], env={**server.env, "TIMELINE_DB": str(dest)},
                               capture_output=True, timeout=120)
        assert check.returncode == 0, check.stderr

    # Refused: an existing copy (unless --force), a folder that does not exist.
    refused = timeline(server, "backup", str(copies[0][0]))
    assert refused.returncode == 2 and b"exists" in refused.stderr, refused.stderr
    missing = timeline(server, "backup", str(tmp_path / "no-such-folder" / "copy.db"))
    assert missing.returncode == 2 and b"does not exist" in missing.stderr, missing.stderr

    # Restore: the last copy, taken once everything was stored, under a service of its own.
    final = backups / "final.db"
    assert timeline(server, "backup", str(final)).returncode == 0
    forced = timeline(server, "backup", str(copies[0][0]), "--force")
    assert forced.returncode == 0 and len(store_positions(copies[0][0])) == total
    restored = serve(db=final, stream=f"{server.stream}:restored")
    wait_projected(restored)
    ids = entity_ids(server.db)
    assert every_timeline(restored, ids) == every_timeline(server, ids)
