"""Raw limits for the same event rows, with none of the service's work around them.

- ``xadd``: the entries (``event`` field, the same bytes) written with redis-py pipelines of
  1,000 XADDs per round trip.
- ``xreadgroup``: those entries read by a consumer group, 500 per XREADGROUP, each batch then
  acknowledged with one XACK (two round trips per batch, as the consumer does).
- ``sqlite``: the rows the store writes into ``events`` (the same columns, indexes and triggers,
  copied from a fresh store's schema; bodies normalised by the real parser beforehand, outside
  the timing) inserted with ``executemany``, 5,000 per transaction, WAL, ``synchronous=FULL``.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import redis

from events.dates import utc_now_key
from events.models import parse_event_bytes
from events.store import EventStore

XADD_PIPELINE = 1000
READ_BATCH = 500
SQLITE_BATCH = 5000


def xadd_and_read(url: str, payloads: list[bytes]) -> tuple[float, float]:
    """events/s of pipelined XADD, then of XREADGROUP + XACK, on a stream of its own."""
    client = redis.Redis.from_url(url)
    stream = f"bench:raw:{uuid.uuid4().hex}"
    try:
        started = time.perf_counter()
        for offset in range(0, len(payloads), XADD_PIPELINE):
            with client.pipeline(transaction=False) as pipe:
                for data in payloads[offset : offset + XADD_PIPELINE]:
                    pipe.xadd(stream, {"event": data})
                pipe.execute()
        xadd_rate = len(payloads) / (time.perf_counter() - started)

        client.xgroup_create(stream, "store", id="0")
        read = 0
        started = time.perf_counter()
        while True:
            answer = client.xreadgroup("store", "raw", {stream: ">"}, count=READ_BATCH)
            if not answer or not answer[0][1]:
                break
            entries = answer[0][1]
            client.xack(stream, "store", *[entry_id for entry_id, _ in entries])
            read += len(entries)
        read_rate = read / (time.perf_counter() - started)
        assert read == len(payloads), (read, len(payloads))
        return xadd_rate, read_rate
    finally:
        client.delete(stream)
        client.close()


def events_schema() -> list[str]:
    """The CREATE statements of ``events`` (table, indexes, triggers) of the current code."""
    with tempfile.TemporaryDirectory(prefix="bench-schema-") as tmp:
        store = EventStore(Path(tmp) / "schema.db")
        try:
            rows = store.conn.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'events' AND sql IS NOT NULL"
                " ORDER BY type = 'table' DESC, rowid"
            ).fetchall()
        finally:
            store.close()
    return [r[0] for r in rows]


def stored_rows(payloads: list[bytes]) -> list[tuple]:
    """The rows the store would write for these events (parsed and normalised here, untimed)."""
    rows = []
    recorded_at = utc_now_key()
    for position, raw in enumerate(payloads, 1):
        event = parse_event_bytes(raw)
        body = json.dumps(event.body, ensure_ascii=False, separators=(",", ":"))
        rows.append((position, event.id, event.kind, event.target, event.content_hash, recorded_at, raw, body))
    return rows


def sqlite_executemany(payloads: list[bytes], workdir: Path) -> float:
    """events/s of executemany into a copy of the events table, WAL, synchronous=FULL."""
    rows = stored_rows(payloads)
    path = workdir / "raw.db"
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        for sql in events_schema():
            conn.execute(sql)
        insert = (
            "INSERT INTO events (position, event_id, kind, target_id, content_hash, recorded_at, raw, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        started = time.perf_counter()
        for offset in range(0, len(rows), SQLITE_BATCH):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, rows[offset : offset + SQLITE_BATCH])
            conn.execute("COMMIT")
        return len(rows) / (time.perf_counter() - started)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
