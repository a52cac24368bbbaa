"""``timeline.backup`` on real SQLite files: a copy that stands alone and verifies, what it refuses
to overwrite, what ``force`` clears, and a copy that does not verify is not put at DEST."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from events.models import parse_event_bytes
from events.store import Candidate, EventStore
from timeline.backup import BackupError, backup


def fill(db: Path, n: int) -> None:
    with EventStore(db) as store:
        raws = [json.dumps({"id": f"b-{i}", "kind": "report", "occurred_at": "2025",
                            "headline": f"Report {i}", "entities": [{"name": "Someone"}]}).encode() for i in range(n)]
        store.append([Candidate(parse_event_bytes(raw), raw) for raw in raws])


def test_a_copy_stands_alone_and_verifies(db: Path, tmp_path: Path) -> None:
    fill(db, 30)
    result = backup(db, tmp_path / "copy.db")
    assert (result.events, result.report.ok) == (30, True)
    assert not Path(f"{tmp_path / 'copy.db'}-wal").exists() and not (tmp_path / "copy.db.partial").exists()
    conn = sqlite3.connect(tmp_path / "copy.db")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # its pages all in the file
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (30,)
    conn.close()


def test_refuses_what_exists_unless_forced_and_force_clears_its_log_and_projections(
    db: Path, tmp_path: Path
) -> None:
    fill(db, 5)
    dest = tmp_path / "copy.db"
    backup(db, dest)
    stale = [Path(f"{dest}-wal"), Path(f"{dest}-shm"), Path(f"{dest}.projections")]
    stale[0].write_bytes(b"an old log that must not be replayed onto the new copy")
    with pytest.raises(BackupError, match="copy.db exists"):
        backup(db, dest)
    dest.rename(tmp_path / "kept.db")
    with pytest.raises(BackupError, match="copy.db-wal exists"):  # a log alone is refused too
        backup(db, dest)
    stale[2].mkdir()
    (stale[2] / "timelines.db").write_bytes(b"projections of the old copy")
    result = backup(db, dest, force=True)
    assert result.events == 5
    assert not any(path.exists() for path in stale)


def test_a_missing_folder_or_store_is_named(db: Path, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no store"):
        backup(db, tmp_path / "copy.db")
    fill(db, 1)
    with pytest.raises(BackupError, match="does not exist"):
        backup(db, tmp_path / "nowhere" / "copy.db")
    with pytest.raises(BackupError, match="the store itself"):
        backup(db, db, force=True)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep.txt").write_text("not to be removed")
    with pytest.raises(BackupError, match="is a folder"):
        backup(db, tmp_path / "folder", force=True)
    assert (tmp_path / "folder" / "keep.txt").exists()


def test_a_copy_that_does_not_verify_is_kept_aside(db: Path, tmp_path: Path) -> None:
    fill(db, 10)
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET body = replace(body, 'Report 3', 'Report three') WHERE event_id = 'b-3'")
    conn.commit()
    conn.close()
    with pytest.raises(BackupError, match="does not verify"):
        backup(db, tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists() and (tmp_path / "copy.db.unverified").exists()


def test_a_restored_copy_tells_live_streams_of_the_erasures_as_the_store_does(backend: str, tmp_path: Path) -> None:
    """``tl_removals`` (the erasures told to live streams) cannot be derived from the store (it
    no longer holds which entities an erased event named): a copy whose projections were rebuilt
    from scratch told a client resuming from before an erasure nothing, where the original tells
    it to remove the entry. The backup carries them; the copy's streams answer as the store's."""
    from events.backend import is_postgres
    from helpers import served, streams_told, told_erasures
    from timeline.backup import backup_postgres

    db = backend
    head = told_erasures(db)
    copy = tmp_path / "copy" / "timeline.db"
    copy.parent.mkdir()
    backup_postgres(db, copy) if is_postgres(db) else backup(Path(db), copy)
    served(copy)
    original = streams_told(db, head)
    assert original["tesla"] and original["None"] and original["x"], original  # told on the store
    assert streams_told(copy, head) == original
