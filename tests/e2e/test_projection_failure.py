"""One projection that cannot write does not hold the others up (a real ``timeline serve``, a
real store on each backend): a trigger in the store's database makes every batch of the
``related`` projection fail, as a full disk or a broken table would. The other projections go on
catching up at once with each new event; ``/projections`` and ``/health`` name the failing one,
which is retried with a growing delay and catches up once it can write again."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import psycopg
import pytest

from events.backend import is_postgres
from projections.engine import projection_path

pytestmark = pytest.mark.e2e

FAILING = "related"


def _break(db: str, broken: bool) -> None:
    """Make the ``related`` projection's checkpoint refuse to move (each batch then rolls back)."""
    if is_postgres(db):
        with psycopg.connect(db, autocommit=True) as conn:
            if broken:
                conn.execute("CREATE FUNCTION e2e_refuse() RETURNS trigger AS $$ BEGIN"
                             " RAISE EXCEPTION 'e2e: related cannot write'; END $$ LANGUAGE plpgsql")
                conn.execute(f"CREATE TRIGGER e2e_refuse BEFORE UPDATE ON projection_checkpoints FOR EACH ROW"
                             f" WHEN (NEW.name = '{FAILING}' AND NEW.position > OLD.position) EXECUTE FUNCTION e2e_refuse()")
            else:
                conn.execute("DROP TRIGGER e2e_refuse ON projection_checkpoints")
                conn.execute("DROP FUNCTION e2e_refuse()")
        return
    conn = sqlite3.connect(projection_path(db, FAILING), timeout=30, isolation_level=None)
    try:
        if broken:
            conn.execute("CREATE TRIGGER e2e_refuse BEFORE UPDATE OF position ON projection_checkpoints"
                         " BEGIN SELECT RAISE(ABORT, 'e2e: related cannot write'); END")
        else:
            conn.execute("DROP TRIGGER e2e_refuse")
    finally:
        conn.close()


def _projections(http: httpx.Client) -> dict[str, dict[str, Any]]:
    response = http.get("/projections")
    assert response.status_code == 200, response.text
    return {row["name"]: row for row in response.json()}


def _publish(http: httpx.Client, i: int) -> None:
    event = {"id": f"pf-{i}", "kind": "report", "occurred_at": "2025-05-01", "headline": f"h{i}",
             "entities": [{"id": "acme", "name": "Acme"}, {"id": f"other-{i % 3}", "name": f"Other {i % 3}"}]}
    assert http.post("/events", json=event).status_code == 202


def _healthy_at_head(rows: dict[str, dict[str, Any]]) -> bool:
    return all(row["lag"] == 0 for name, row in rows.items() if name != FAILING)


def _until(check: Any, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_projection_that_cannot_write_holds_the_others_up_no_more(serve, backend: str) -> None:
    server = serve()
    db = str(server.db)
    with server.client(timeout=30) as http:
        _publish(http, 0)
        _until(lambda: all(r["lag"] == 0 and r["head"] == 1 for r in _projections(http).values()), 30)
        _break(db, True)
        _publish(http, 1)
        _until(lambda: (_projections(http)[FAILING].get("failing") or {}).get("attempts", 0) >= 1, 30)
        rows = _projections(http)
        assert _healthy_at_head(rows) and rows[FAILING]["lag"] == 1, rows
        failing = rows[FAILING]["failing"]
        assert "related cannot write" in failing["error"] and failing["retry_in_seconds"] >= 0, failing
        health = http.get("/health")
        assert health.status_code == 503 and FAILING in health.json()["checks"]["projections"], health.text
        # Failing long enough for the retries to space out (the delay doubles: 0.1 s ... 30 s)...
        time.sleep(8)
        spaced = _projections(http)[FAILING]["failing"]
        assert 3 <= spaced["attempts"] <= 10, spaced  # retried, but not in a tight loop
        # ... each new event still reaches the other projections at once, not at the next retry.
        for i in range(2, 5):
            _publish(http, i)
            waited = _until(lambda: _healthy_at_head(_projections(http)) and
                            _projections(http)["timelines"]["head"] == i + 1, 30)
            assert waited < 4.0, (i, waited)  # before: up to the failing one's backoff (5 s)
            assert _projections(http)[FAILING]["lag"] == i
        _break(db, False)
        _until(lambda: all(r["lag"] == 0 and "failing" not in r for r in _projections(http).values()), 60)
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["checks"]["projections"] == "ok", health.text
        assert "cannot catch up" in server.stderr()
