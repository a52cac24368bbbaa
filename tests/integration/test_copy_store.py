"""``timeline copy-store SRC DEST`` (events.copy): a SQLite store to PostgreSQL and back, every
row as it was, the chain verified on arrival; a copy that does not verify writes nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from events.backend import open_store
from events.copy import TABLES, CopyError, copy_store
from events.erasure import erase
from helpers import alias, append, correction, ent, make_event, news, project, retraction, sql_rows, timeline_ids
from projections.queries import Queries


def filled(db: str) -> None:
    with open_store(db) as store:
        append(store, *(news(f"n{i}", f"2025-05-{i + 1:02d}", ("x", "y") if i % 2 else ("x",)) for i in range(12)))
        append(store, correction("c1", "n3", headline="n3 fixed"), retraction("r1", "n4"),
               correction("waits", "later", headline="x"), alias("al", "twitter", "x", name="X"))
        append(store, news("later", "2025-06"), make_event(id="gone", entities=[ent("x")]),
               correction("gone-fix", "gone", headline="y"))
        erase(store, "gone", "test", "alice")
        append(store, news("after", "2025-07", ("y",)))


def rows(db: str) -> dict[str, list[tuple]]:
    return {table: sql_rows(db, f"SELECT {columns} FROM {table} ORDER BY {key}") for table, key, columns in TABLES}


def norm(tables: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """Values as Python compares them across drivers (bytes, ints)."""
    return {t: [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rs] for t, rs in tables.items()}


def test_sqlite_to_postgresql_and_back_keeps_every_row(tmp_path: Path, pg_db: str) -> None:
    source = str(tmp_path / "source.db")
    filled(source)
    there = copy_store(source, pg_db)
    assert there.events == 20 and there.verified is not None and there.verified.ok, there.verified
    assert norm(rows(pg_db)) == norm(rows(source))
    with open_store(source) as a, open_store(pg_db) as b:
        assert b.head() == a.head() == 20
        assert b.state("n3") == a.state("n3") and b.state("n4") == a.state("n4")
        assert b.state("later") == a.state("later")
        assert b.aliases() == a.aliases()
        assert b.erasures() == a.erasures() and b.get("gone") is None
        assert b.hashes(["gone"])["gone"].erased
    back = str(tmp_path / "back.db")
    again = copy_store(pg_db, back)
    assert again.head_hash == there.head_hash and again.verified.ok
    assert norm(rows(back)) == norm(rows(source))
    # appending goes on where the copy ended, the chain too; the projections build from the copy
    with open_store(pg_db) as store:
        (r,) = append(store, news("next", "2025-08", ("x",)))
        assert r.position == 21
    from events.pg.integrity import verify

    assert verify(pg_db).ok
    project(back)
    project(source)
    q_back, q_source = Queries(back), Queries(source)
    try:
        assert timeline_ids(q_back, "x") == timeline_ids(q_source, "x") != []
    finally:
        q_back.close()
        q_source.close()


def test_a_destination_with_events_is_refused(tmp_path: Path, pg_db: str) -> None:
    source = str(tmp_path / "source.db")
    filled(source)
    with open_store(pg_db) as store:
        append(store, news("there", "2025"))
    with pytest.raises(CopyError, match="already holds events") as refused:
        copy_store(source, pg_db)
    assert refused.value.status == 2
    assert sql_rows(pg_db, "SELECT event_id FROM events") == [("there",)]
    with pytest.raises(CopyError, match="no store"):
        copy_store(str(tmp_path / "missing.db"), pg_db)


def test_a_source_whose_chain_is_broken_writes_nothing(tmp_path: Path, pg_db: str) -> None:
    source = tmp_path / "source.db"
    filled(str(source))
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET body = replace(body, 'headline of n5', 'forged') WHERE event_id = 'n5'")
    conn.close()
    with pytest.raises(CopyError, match="does not verify") as failed:
        copy_store(str(source), pg_db)
    assert failed.value.status == 1 and "position 6" in str(failed.value)
    assert sql_rows(pg_db, "SELECT count(*) FROM events") == [(0,)]
    assert sql_rows(pg_db, "SELECT count(*) FROM event_chain") == [(0,)]


def test_the_command(tmp_path: Path, pg_db: str) -> None:
    source = str(tmp_path / "source.db")
    filled(source)
    timeline = str(Path(sys.executable).parent / "timeline")
    env = {**os.environ, "COLUMNS": "400"}
    done = subprocess.run([timeline, "copy-store", source, pg_db], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "copied 20 events" in done.stdout and "verified" in done.stdout
    again = subprocess.run([timeline, "copy-store", source, pg_db], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds events" in again.stderr


@pytest.mark.parametrize("direction", ["sqlite-to-postgres", "postgres-to-sqlite"])
def test_the_copy_tells_live_streams_of_the_erasures_as_the_source_does(
    direction: str, tmp_path: Path, pg_db: str
) -> None:
    """``tl_removals`` (the erasures told to live streams) cannot be derived from the store: the
    copy's projections, rebuilt from its events, told a client resuming from before an erasure
    nothing, where the source tells it to remove the entry (and what an erased alias merged).
    ``timeline copy-store`` carries them as ``timeline backup`` does, either way."""
    from helpers import served, streams_told, told_erasures

    sqlite_db = str(tmp_path / "store.db")
    source, dest = (sqlite_db, pg_db) if direction == "sqlite-to-postgres" else (pg_db, sqlite_db)
    head = told_erasures(source)
    timeline = str(Path(sys.executable).parent / "timeline")
    done = subprocess.run([timeline, "copy-store", source, dest], env={**os.environ, "COLUMNS": "400"},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    served(dest)
    original = streams_told(source, head)
    assert original["tesla"] and original["None"] and original["x"], original  # told on the source
    assert streams_told(dest, head) == original


def test_an_entity_name_holding_u0000_is_copied_to_postgresql_and_back(tmp_path: Path, pg_db: str) -> None:
    """PostgreSQL's ``text`` cannot hold U+0000: its store derives such a name as U+FFFD
    (``events.pg.store.pg_text``), SQLite's keeps it. Each copy writes ``event_entities`` as the
    destination's append derives it: the copy to PostgreSQL failed (``DataError``, a traceback),
    and one back to SQLite would not verify (U+FFFD where its event says U+0000)."""
    import json

    from events.models import parse_event
    from events.store import Candidate

    source = str(tmp_path / "source.db")
    filled(source)
    raw = json.dumps({"id": "nul-1", "kind": "report", "occurred_at": "2025-05", "headline": "h\u0000",
                      "entities": [{"name": "Nul\u0000Name"}, {"name": "Plain\ufffd"}]}).encode()
    with open_store(source) as store:
        assert [r.status for r in store.append([Candidate(parse_event(json.loads(raw)), raw)])] == ["stored"]
    names = "SELECT entity_id, name FROM event_entities WHERE position = 21 ORDER BY entity_id"
    there = copy_store(source, pg_db)
    assert there.events == 21 and there.verified.ok, there.verified.problems
    assert sql_rows(pg_db, names) == [("nul-name", "Nul\ufffdName"), ("plain", "Plain\ufffd")]
    back = str(tmp_path / "back.db")
    again = copy_store(pg_db, back)
    assert again.head_hash == there.head_hash and again.verified.ok, again.verified.problems
    assert norm(rows(back)) == norm(rows(source))
