"""The store alone on each backend: appends of the same events, in batches, on a SQLite file and
on PostgreSQL, in one run (``python -m bench.store_backends --pg URL``).

What is timed is ``Store.append`` only: events parsed and their candidates built beforehand, no
Redis, no projections. Reports events/s on each backend and their ratio. The PostgreSQL store is
made in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from events.backend import open_store
from events.models import parse_event_bytes
from events.pg.connect import with_schema
from events.store import Candidate


def candidates(count: int) -> list[Candidate]:
    """News events about 500 entities, one in 50 a correction of the one before it."""
    out = []
    for i in range(count):
        event: dict = {"id": f"e{i}", "kind": "report", "occurred_at": f"2025-05-{i % 28 + 1:02d}",
                       "headline": f"headline {i}", "entities": [{"name": f"Entity {i % 500}", "role": "subject"},
                                                                 {"name": "Other"}]}
        if i % 50 == 49:
            event = {"id": f"c{i}", "kind": "correction", "occurred_at": "2025-06",
                     "details": {"corrects": f"e{i - 1}", "changes": {"headline": "fixed"}}}
        raw = json.dumps(event).encode()
        out.append(Candidate(parse_event_bytes(raw), raw))
    return out


def appends(db: str, batch: list[Candidate], size: int) -> float:
    with open_store(db) as store:
        started = time.perf_counter()
        for offset in range(0, len(batch), size):
            store.append(batch[offset : offset + size])
        return len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", required=True, help="a PostgreSQL URL (a schema is made in it and dropped)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batch = candidates(args.events)
    for _ in range(args.rounds):
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            with tempfile.TemporaryDirectory() as folder:
                sqlite = appends(str(Path(folder) / "store.db"), batch, args.batch)
            postgres = appends(with_schema(args.pg, schema), batch, args.batch)
        finally:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        print(f"{args.events} events in batches of {args.batch}: SQLite {sqlite:,.0f}/s,"
              f" PostgreSQL {postgres:,.0f}/s, ratio {postgres / sqlite:.2f}")


if __name__ == "__main__":
    main()
