"""The planner's statistics on PostgreSQL after a rebuild and after ``timeline import``.

A table just filled has none until autovacuum comes by (a minute later at the earliest, and only
once it grew by a tenth; the test server runs none): the reads that follow were planned on
guesses (docs/performance.md: 2.8 ms of the database's CPU a timeline read, 1.95 after
``ANALYZE``). A rebuild analyzes its tables before it swaps them in, and an import the store's
tables it filled and, caught up rather than rebuilt, the projections' live tables:
``pg_stat_user_tables.last_analyze`` is set for each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from events.models import parse_event_bytes
from events.pg.store import APPENDED_TABLES, PgEventStore
from events.store import Candidate
from projections.pg import PgProjectionEngine
from projections.pg import default_projections as pg_projections


def lines(n: int, prefix: str = "n") -> list[bytes]:
    return [
        json.dumps({
            "id": f"{prefix}-{i}", "kind": "report", "occurred_at": f"2025-0{1 + i % 9}-1{i % 10}",
            "headline": f"Report {i}", "entities": [{"id": f"e-{i % 7}", "name": f"E {i % 7}"}],
        }).encode()
        for i in range(n)
    ]


def unanalyzed(url: str, tables: list[str]) -> list[str]:
    """Those of ``tables`` (in the URL's schema) that were never analyzed."""
    with psycopg.connect(url, autocommit=True) as conn:
        analyzed = dict(conn.execute(
            "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE schemaname = current_schema()"
        ).fetchall())
    return [t for t in tables if not analyzed.get(t)]


def projection_tables(engine: PgProjectionEngine) -> list[str]:
    return [f"{base}{cp.tag}" for name, cp in engine.checkpoints().items() for base in engine.projections[name].schema]


def schema_tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]


def test_a_rebuild_analyzes_the_tables_it_swaps_in(pg_db: str) -> None:
    store = PgEventStore(pg_db)
    engine = PgProjectionEngine(store, pg_projections())
    try:
        engine.setup()
        store.append([Candidate(parse_event_bytes(r), r) for r in lines(300)])
        engine.rebuild()
        tables = projection_tables(engine)
        assert tables
        assert unanalyzed(pg_db, tables) == []
    finally:
        engine.close()
        store.close()


def test_timeline_import_analyzes_the_store_and_the_projections(pg_db: str, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update(TIMELINE_DB=pg_db, COLUMNS="400")
    timeline = str(Path(sys.executable).parent / "timeline")
    for prefix, n in (("a", 400), ("b", 20)):  # into an empty store (rebuilt beside), then caught up
        source.write_bytes(b"\n".join(lines(n, prefix)) + b"\n")
        with psycopg.connect(pg_db, autocommit=True) as conn:  # what the first import analyzed: no more
            for table in schema_tables(pg_db):
                conn.execute(f"SELECT pg_stat_reset_single_table_counters('{table}'::regclass)")
        done = subprocess.run([timeline, "import", str(source), "--quiet"], env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        engine = PgProjectionEngine(pg_db, pg_projections())
        try:
            tables = [*APPENDED_TABLES, *projection_tables(engine)]
        finally:
            engine.close()
        assert unanalyzed(pg_db, tables) == [], prefix
