"""Hostile cases found by testing the service through its public interfaces only (issue 14):
a real `timeline serve`, a real Redis, real SQLite files, the real `timeline` commands.

- An entity id derived from a name is held to the length of a given one: a 200-character name
  may derive an id of thousands (NFKD expands some characters to 18), which no field naming an
  entity id could name and whose URL the API refuses (414).
- A retraction (or correction) that arrived before its target, when the target comes as an
  editorial event, is history that did not apply: the store refuses it when the target is known
  first, and the target stays in force either way.
- No command writes a file over the store, its log or its projections: the rejects of
  `timeline import`, `timeline export --output`, `timeline dead-letters export` and the copy of
  `timeline backup --force` would otherwise replace the source of truth.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.ids import slugify

pytestmark = pytest.mark.e2e

TIMELINE = str(Path(sys.executable).parent / "timeline")


def timeline(server: Any, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [TIMELINE, *args], env={**server.env, "COLUMNS": "200", **env}, capture_output=True, timeout=300,
        cwd=server.workdir,
    )


def report(event_id: str, entities: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": event_id, "kind": "report", "occurred_at": "2025-05-24", "headline": event_id, "entities": entities}


def post(http: httpx.Client, body: Any) -> dict[str, Any]:
    response = http.post("/events", params={"wait": "true"}, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_derived_entity_id_is_held_to_the_length_of_a_given_one(serve) -> None:
    server = serve()
    expanding = "\ufdfa" * 200  # NFKD: 18 characters each
    doubled = "\u00df" * 150  # case-folded: "ss"
    assert len(slugify(expanding)) > 200 and len(slugify(doubled)) == 300
    fits = "\u00df" * 100  # "ss" * 100: 200 characters, the most a given id may have
    with server.client() as http:
        answer = post(http, [report("long-1", [{"name": expanding}]), report("long-2", [{"name": doubled}]),
                             report("long-3", [{"name": fits}])])
        assert answer["accepted"] == ["long-3"], answer
        assert [r["index"] for r in answer["rejected"]] == [0, 1], answer
        for rejected in answer["rejected"]:
            assert rejected["reason"] == "schema" and rejected["error"].startswith("entities.0.name:"), rejected
            assert "give an id" in rejected["error"], rejected
        derived = slugify(fits)
        assert http.get(f"/entities/{derived}").json()["id"] == derived
        # what a given id of that length can do, the derived one can: be named by an alias
        answer = post(http, {"kind": "entity_alias", "occurred_at": "2025", "details": {"alias": derived, "canonical": "short"}})
        assert answer["rejected"] == [], answer
        assert http.get(f"/entities/{derived}").json()["id"] == "short"


def test_a_retraction_that_waited_for_an_editorial_event_does_not_apply(serve) -> None:
    server = serve()
    with server.client() as http:
        post(http, [report("news-1", [{"id": "acme", "name": "Acme"}]), report("news-2", [{"id": "acme-inc", "name": "Acme"}])])
        post(http, {"id": "retract-alias", "kind": "retraction", "occurred_at": "2025",
                    "details": {"retracts": "later-alias", "reason": "waits"}})
        post(http, {"id": "retract-fix", "kind": "retraction", "occurred_at": "2025",
                    "details": {"retracts": "later-fix", "reason": "waits"}})
        post(http, {"id": "later-alias", "kind": "entity_alias", "occurred_at": "2025",
                    "details": {"alias": "acme-inc", "canonical": "acme"}})
        post(http, {"id": "later-fix", "kind": "correction", "occurred_at": "2025",
                    "details": {"corrects": "news-1", "changes": {"headline": "fixed"}}})
        for target, retraction in (("later-alias", "retract-alias"), ("later-fix", "retract-fix")):
            stood = http.get(f"/events/{target}").json()
            assert stood["status"] == "active", stood
            [outcome] = stood["history"]
            assert outcome["event_id"] == retraction and outcome["applied"] is False, stood
            assert "not a news event" in outcome["error"], stood
            # the same retraction sent after its target is refused, as the history says
            answer = post(http, {"kind": "retraction", "occurred_at": "2025", "details": {"retracts": target, "reason": "now"}})
            assert answer["rejected"][0]["reason"] == "schema", answer
        # and both targets are in force, as the history says
        assert http.get("/entities/acme-inc").json()["id"] == "acme"
        assert http.get("/events/news-1").json()["headline"] == "fixed"
    verified = timeline(server, "verify")
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()


def _events(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def test_no_command_writes_over_the_store(serve, tmp_path: Path) -> None:
    server = serve()
    with server.client() as http:
        post(http, [report(f"kept-{i}", [{"id": "acme", "name": "Acme"}]) for i in range(5)])
    db = Path(server.env["TIMELINE_DB"])
    wal = Path(f"{db}-wal")
    assert wal.exists()  # the service holds it open
    projection = next(Path(f"{db}.projections").glob("timelines*.db"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    targets = [db, wal, Path(f"{db}-shm"), projection]
    for target in targets:
        for args in (
            ("import", str(bad), "--rejected", str(target)),
            ("export", "acme", "--format", "csv", "--output", str(target)),
            ("dead-letters", "export", str(target)),
            ("backup", str(target), "--force"),
        ):
            done = timeline(server, *args)
            message = done.stderr.decode()
            assert done.returncode == 2, (args, done.returncode, message)
            assert "belongs to the store" in " ".join(message.split()), (args, message)
            assert target.exists(), args
    assert _events(db) == 5
    verified = timeline(server, "verify")
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
    with server.client() as http:
        assert len(http.get("/entities/acme/timeline").json()["entries"]) == 5


def test_a_directory_search_holding_u0000_finds_what_it_names(serve, backend: str) -> None:
    """SQLite's LIKE ends its pattern at U+0000 (`q=%00zzzz` listed every entity), and PostgreSQL
    compared U+FFFD with the '?' its search key holds (`q=l%00n` found nothing): both now fold
    U+0000 as the name's search key does."""
    server = serve()
    with server.client() as http:
        post(http, [report("nul-1", [{"id": "nul-name", "name": "Nul\u0000Name"}]),
                    report("plain-1", [{"id": "plain", "name": "Plain"}])])
        for q, found in (("\u0000zzzz", []), ("zz\u0000", []), ("l\u0000n", ["nul-name"]), ("\u0000", ["nul-name"]),
                         ("plain", ["plain"])):
            answer = http.get("/entities", params={"q": q})
            assert answer.status_code == 200, answer.text
            assert [e["id"] for e in answer.json()["entities"]] == found, (q, answer.json())


def test_copy_store_writes_into_no_file_that_is_not_a_store(serve, tmp_path: Path) -> None:
    """`timeline copy-store SRC DEST` migrated whatever SQLite file DEST was (a projection of
    SRC: the store's tables written into it, then a traceback), and answered a traceback for
    a DEST that is no database (the store's log)."""
    server = serve()
    with server.client() as http:
        post(http, [report(f"copied-{i}", [{"id": "acme", "name": "Acme"}]) for i in range(3)])
    db = Path(server.env["TIMELINE_DB"])
    projection = next(Path(f"{db}.projections").glob("search*.db"))
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE mine (x)")
    for dest in (projection, Path(f"{db}-wal"), other):
        with sqlite3.connect(f"{dest.absolute().as_uri()}?mode=ro", uri=True) as conn:
            try:
                tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
            except sqlite3.DatabaseError:
                tables = None
        done = timeline(server, "copy-store", str(db), str(dest))
        message = " ".join(done.stderr.decode().split())
        assert done.returncode == 2, (dest, done.returncode, message)
        assert "is not a store" in message and "Traceback" not in message, (dest, message)
        with sqlite3.connect(f"{dest.absolute().as_uri()}?mode=ro", uri=True) as conn:
            try:
                after = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
            except sqlite3.DatabaseError:
                after = None
        assert after == tables, dest
    fresh = tmp_path / "fresh.db"
    done = timeline(server, "copy-store", str(db), str(fresh))
    assert done.returncode == 0, done.stderr.decode()
    assert _events(fresh) == 3
