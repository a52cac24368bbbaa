"""The service on a real hot standby (tests/pg_replica.py): a read-only node's ``TimelineService``
reads what a writer on the primary stored and projected, once replayed, and cannot write; the
store reports the replication (``/health``'s ``replication``); a node that writes, started on
the standby, is refused at once with one line naming the replica (``timeline serve`` and
``timeline import`` exit 2), not with PostgreSQL's error of its first write."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from events.pg.store import StandbyStore
from timeline.importer import import_events
from timeline.service import ReadOnlyNode, TimelineService
from timeline.settings import Settings

from helpers import news, timeline_ids

pytestmark = pytest.mark.xdist_group("pg-replica")  # one replica pair, where xdist groups


def settings(db: str, **over: object) -> Settings:
    return Settings(TIMELINE_DB=db, REDIS_URL="redis://127.0.0.1:1/0", **over)


def store_events(writer: TimelineService, tmp_path: Path, *events: dict[str, Any]) -> None:
    lines = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    import_events(writer, io.BytesIO(lines), tmp_path / "rejects.jsonl", workers=0)


def test_a_read_only_service_on_the_standby(replica_db: tuple[str, str], pg_replica: Any, tmp_path: Path) -> None:
    primary, standby = replica_db
    pg_replica.replayed()
    with pytest.raises(ReadOnlyNode, match="lacks migrations 0001_store"):  # the writer has not migrated yet
        TimelineService(settings(standby, TIMELINE_READ_ONLY=True))
    writer = TimelineService(settings(primary))
    try:
        store_events(writer, tmp_path, news("r-1", "2025-01", ["acme"]), news("r-2", "2025-02", ["acme"]))
        pg_replica.replayed()
        reader = TimelineService(settings(standby, TIMELINE_READ_ONLY=True))
        try:
            assert timeline_ids(reader.queries, "acme") == timeline_ids(writer.queries, "acme") == ["r-1", "r-2"]
            assert reader.store.replication() == {"standby": True, "replay": "not paused", "lag_seconds": 0}
            assert writer.store.replication() == {"standby": False}
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                reader.store.conn.raw.execute("CREATE TABLE written_by_a_reader (x int)")
            with pg_replica.replay_paused():
                store_events(writer, tmp_path, news("r-3", "2025-03", ["acme"]))
                assert timeline_ids(reader.queries, "acme") == ["r-1", "r-2"]  # what the standby has
                lag = reader.store.replication()
                assert lag["replay"] == "paused" and lag["lag_seconds"] > 0, lag
            pg_replica.replayed()
            assert timeline_ids(reader.queries, "acme") == ["r-1", "r-2", "r-3"]
        finally:
            reader.close()
    finally:
        writer.close()


def test_a_node_that_writes_is_refused_on_the_standby_with_one_line(
    replica_db: tuple[str, str], pg_replica: Any, tmp_path: Path, redis_url: str
) -> None:
    primary, standby = replica_db
    TimelineService(settings(primary)).close()  # migrated
    pg_replica.replayed()
    with pytest.raises(StandbyStore, match="read replica .* name the primary"):
        TimelineService(settings(standby))
    timeline = str(Path(sys.executable).parent / "timeline")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update(TIMELINE_DB=standby, REDIS_URL=redis_url, COLUMNS="400")
    (tmp_path / "in.jsonl").write_text(json.dumps(news("c-1", "2025-01", ["acme"])) + "\n")
    for argv in (["serve", "--port", "0"], ["import", str(tmp_path / "in.jsonl")]):
        done = subprocess.run([timeline, *argv], env=env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, cwd=tmp_path)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert "read replica" in done.stderr and "Traceback" not in done.stderr, (argv, done.stderr)
