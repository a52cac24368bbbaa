"""`timeline export` and `timeline show` beside a `timeline serve` that is projecting a large
batch. Both commands open the store as a writer: the projection engine's `setup` (which takes
each projection file's write lock to read its version) and a catch-up, before reading. The
service's projector holds a projection file's write lock for a whole catch-up batch (up to
20,000 events: tens of seconds on a loaded machine), and the command then fails after SQLite's
30 s busy timeout with a traceback ending in `OperationalError: database is locked` (seen once
in four `export --all` runs during a 4,000-event publish; here the lock is held by the test).
docs/exports.md: "It reads the same snapshot through, even while `timeline serve` writes"."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from test_cli import run

pytestmark = pytest.mark.e2e


@pytest.mark.xfail(strict=True, reason="read commands set up and catch up the projections as a writer: "
                                       "a projector's long batch makes them fail with 'database is locked'")
def test_export_reads_what_is_projected_while_a_projector_holds_its_lock(tmp_path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(
        json.dumps({"id": f"r-{i}", "kind": "report", "occurred_at": "2025-05", "headline": f"Report {i}",
                    "entities": [{"id": "acme", "name": "Acme"}]}) for i in range(5)) + "\n")
    assert run(["import", str(events), "-q"], tmp_path).returncode == 0
    projector = sqlite3.connect(tmp_path / "data" / "timeline.db.projections" / "timelines.db", isolation_level=None)
    projector.execute("BEGIN IMMEDIATE")  # a catch-up batch in progress, as the service's projector holds it
    try:
        started = time.monotonic()
        done = run(["export", "--all", "--format", "ndjson"], tmp_path)
        took = time.monotonic() - started
    finally:
        projector.execute("ROLLBACK")
        projector.close()
    assert done.returncode == 0, done.stderr[-2000:]
    assert [json.loads(line)["event_id"] for line in done.stdout.splitlines()] == [f"r-{i}" for i in range(5)]
    assert took < 20, took
