"""What this machine allows at best: each stage's work alone, and the bounds they add up to.

The raw rows (``bench/raw.py``) are the ceiling of one layer each. The targets are for the
whole pipeline on this machine's cores, so this adds the stages no layer can skip and sums
what they cost per event:

- ``validate``: the project's parser (``events.models.parse_event_bytes``) over the ingest
  events, on one core. Ingest pays it twice: the publisher checks an event before its XADD
  (so that a bad one is answered at once) and the service again after XREADGROUP (an XADD
  from any language is not trusted).
- the read models' floor: the least SQL that derives each read model the service answers
  from, over the rebuild's stored events, into an in-memory database with no other column, no
  checkpoint and no durability, one statement each, timed on one core:
  full-text index (the ``search`` projection's own FTS5 definition, of the news events'
  headlines and summaries), per-entity order (entity, date, position over every membership:
  what a timeline page is a range of), entity figures (count, first and last date per entity)
  and pairs (count and latest date per pair of entities sharing events).

The bounds assume every stage runs at its floor and the machine's cores are shared perfectly
among them, with nothing else (no framework, no event loop, no durability for the read
models): no implementation of this design does better on this machine.

- rebuild bound = events / (read models' floor seconds / cores)
- ingest bound = 1 / ((2 / validate + 1 / XADD + 1 / (XREADGROUP+XACK) + 1 / executemany
  + read models' floor per event) / cores); the Redis rows' time is the client's and the
  server's together (a pipeline waits for its answers), the SQLite row is the stored rows only.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from events.models import parse_event_bytes
from projections.search import SEARCH, SearchProjection


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def validate_rate(payloads: list[bytes]) -> float:
    """events/s of the project's parser on one core (after a warm-up of its caches)."""
    for raw in payloads[:1000]:
        parse_event_bytes(raw)
    started = time.perf_counter()
    for raw in payloads:
        parse_event_bytes(raw)
    return len(payloads) / (time.perf_counter() - started)


def _fts_definition() -> str:
    (create,) = SearchProjection.schema[SEARCH]
    return create.format(t="floor_search")


READ_MODELS: dict[str, list[str]] = {
    "full-text index": [
        _fts_definition(),
        """INSERT INTO floor_search (rowid, headline, summary)
           SELECT e.position, e.body ->> 'headline', coalesce(e.body ->> 'summary', '')
           FROM store.event_meta m JOIN store.events e ON e.position = m.position WHERE m.plain""",
    ],
    "per-entity order": [
        """CREATE TABLE floor_order (entity_id TEXT, start_key TEXT, position INTEGER,
           PRIMARY KEY (entity_id, start_key, position)) WITHOUT ROWID""",
        """INSERT INTO floor_order SELECT x.entity_id, m.start_key, m.position
           FROM store.event_meta m JOIN store.event_entities x ON x.position = m.position WHERE m.plain
           ORDER BY 1, 2, 3""",
    ],
    "entity figures": [
        """CREATE TABLE floor_entities AS
           SELECT x.entity_id, COUNT(*) AS n, MIN(m.start_key) AS first_key, MAX(m.start_key) AS last_key
           FROM store.event_meta m JOIN store.event_entities x ON x.position = m.position WHERE m.plain
           GROUP BY x.entity_id""",
    ],
    "pairs": [
        """CREATE TABLE floor_pairs AS
           SELECT a.entity_id, b.entity_id AS other_id, COUNT(*) AS n, MAX(m.start_key) AS last_key
           FROM store.event_meta m
           JOIN store.event_entities a ON a.position = m.position
           JOIN store.event_entities b ON b.position = m.position AND b.entity_id > a.entity_id
           WHERE m.plain GROUP BY a.entity_id, b.entity_id""",
    ],
}


def read_models(store: Path) -> dict[str, float]:
    """Seconds of each read model's least SQL over the stored events (in memory, one core)."""
    seconds: dict[str, float] = {}
    for name, statements in READ_MODELS.items():
        conn = sqlite3.connect(":memory:", isolation_level=None, uri=True)
        try:
            conn.execute("ATTACH DATABASE ? AS store", (f"file:{store}?mode=ro",))
            started = time.perf_counter()
            conn.execute("BEGIN")
            for sql in statements:
                conn.execute(sql)
            conn.execute("COMMIT")
            seconds[name] = time.perf_counter() - started
        finally:
            conn.close()
    return seconds


def events_in(store: Path) -> int:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
    finally:
        conn.close()


def rebuild_bound(events: int, floor_seconds: float, n_cores: int) -> float:
    return events / (floor_seconds / n_cores) if floor_seconds else 0.0


def ingest_bound(
    validate: float, xadd: float, read: float, executemany: float, floor_per_event: float, n_cores: int
) -> float:
    per_event = 2 / validate + 1 / xadd + 1 / read + 1 / executemany + floor_per_event
    return n_cores / per_event
