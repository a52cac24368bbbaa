"""`timeline verify` against a real hot standby (tests/pg_replica.py), which refuses every write,
CREATE SCHEMA included: the schema is compared with the catalog shipped for the server's major
version (events/pg/catalogs/), and that catalog is checked here against what the migrations
create on every server the tests reach, so that it cannot drift from the code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from events.pg.connect import connect
from events.pg.integrity import CATALOGS, built_catalog, server_major, shipped_catalog, verify
from test_integrity import N, filled

pytestmark = pytest.mark.xdist_group("pg-replica")  # one replica pair, where xdist groups


def test_verify_on_a_standby_reports_what_it_reports_on_the_primary(replica_db: tuple[str, str], pg_replica: Any) -> None:
    primary, standby = replica_db
    filled(primary)
    pg_replica.replayed()
    on_primary, on_standby = verify(primary), verify(standby)
    assert on_primary.ok and on_standby.ok, (on_primary.problems, on_standby.problems)
    assert (on_standby.checked, on_standby.head, on_standby.head_position) == (N, on_primary.head, N)
    done = subprocess.run([str(Path(sys.executable).parent / "timeline"), "verify"],
                          env={**os.environ, "TIMELINE_DB": standby, "COLUMNS": "400"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"ok: {N} events" in done.stdout, done.stdout + done.stderr

    # a superuser disables a trigger on the primary and edits an event: the standby has it too
    with connect(primary) as conn, conn.transaction():
        conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update")
        conn.execute("UPDATE events SET kind = 'analysis' WHERE position = 3")
    pg_replica.replayed()
    report = verify(standby)
    assert [p for p in report.problems if "events_no_update" in p and "DISABLED" in p], report.problems
    assert report.first_bad == 3, report.problems
    assert sorted(report.problems) == sorted(verify(primary).problems)


def test_a_standby_of_a_version_without_a_shipped_catalog_is_not_passed(
    replica_db: tuple[str, str], pg_replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, standby = replica_db
    filled(primary, 7)
    pg_replica.replayed()
    monkeypatch.setattr("events.pg.integrity.CATALOGS", Path("/nonexistent"))
    report = verify(standby)
    assert not report.ok and any("verify the primary" in p for p in report.problems), report.problems
    assert verify(primary).ok  # a writable server builds its own reference, whatever its version


@pytest.mark.parametrize("server", ["session", "replica"])
def test_the_shipped_catalog_is_what_the_migrations_create(server: str, request: pytest.FixtureRequest) -> None:
    """On each server the tests reach (the session's: POSTGRES_URL or pgserver's; the replica's
    primary: pgserver's PostgreSQL 16): a migration changed without its catalog fails here.
    Write the file again with ``python -m events.pg.integrity URL``."""
    url = request.getfixturevalue("pg_url") if server == "session" else request.getfixturevalue("pg_replica").primary
    with psycopg.connect(url, autocommit=True) as conn:
        major = server_major(conn)
        built = built_catalog(conn)
    path = CATALOGS / f"pg{major}.json"
    assert path.exists(), f"no catalog for PostgreSQL {major}: write it with python -m events.pg.integrity URL"
    assert shipped_catalog(major) == built, f"{path} is not what the migrations create: write it again"
    assert json.loads(path.read_text())  # not empty
