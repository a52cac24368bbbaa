"""The commands that open the store, on a PostgreSQL store (``TIMELINE_DB=postgresql://…``), as
a user runs them: import, rebuild, backup (into a verified SQLite file), info; and the one-line
refusals when there is no store in the schema or PostgreSQL does not answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from e2e_support import jsonl, report_event, store_rows

pytestmark = pytest.mark.e2e

TIMELINE = str(Path(sys.executable).parent / "timeline")


def run(args: list[str], cwd: Path, db: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update({"TIMELINE_DB": db, "COLUMNS": "200"})
    return subprocess.run(
        [TIMELINE, *args], cwd=cwd, env=env, capture_output=True, timeout=300,
        input=stdin.decode() if stdin is not None else None, text=True,
    )


STORE_COLUMNS = (
    "SELECT e.position, e.event_id, e.kind, e.target_id, e.content_hash, e.recorded_at, e.raw, e.body, c.hash"
    " FROM events e JOIN event_chain c USING (position) ORDER BY e.position"
)


def rows(db: str | Path) -> list[tuple]:
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in store_rows(db, STORE_COLUMNS)]


def test_import_rebuild_and_backup_on_postgresql(pg_db: str, tmp_path: Path) -> None:
    events = [report_event(i, prefix="pgcli") for i in range(2000)]
    source = tmp_path / "events.jsonl"
    source.write_bytes(jsonl(events))
    imported = run(["import", str(source), "--quiet"], tmp_path, pg_db)
    assert imported.returncode == 0, imported.stderr
    assert "stored 2000 (positions 1-2000)" in imported.stdout

    rebuilt = run(["rebuild", "timelines"], tmp_path, pg_db)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt timelines: 2000 events" in rebuilt.stdout

    dest = tmp_path / "backup.db"
    backed = run(["backup", str(dest)], tmp_path, pg_db)
    assert backed.returncode == 0, backed.stderr
    assert "backed up 2000 events" in backed.stdout and "verified" in backed.stdout
    assert dest.is_file() and not Path(f"{dest}.partial").exists() and not Path(f"{dest}-wal").exists()
    assert rows(dest) == rows(pg_db)  # byte for byte, hash chain included
    checked = run(["verify"], tmp_path, str(dest))
    assert checked.returncode == 0, checked.stderr

    again = run(["backup", str(dest)], tmp_path, pg_db)
    assert again.returncode == 2 and "exists" in again.stderr, again.stderr
    assert run(["backup", str(dest), "--force"], tmp_path, pg_db).returncode == 0
    folder = run(["backup", str(tmp_path / "missing" / "copy.db")], tmp_path, pg_db)
    assert folder.returncode == 2 and "does not exist" in folder.stderr

    info = run(["info"], tmp_path, pg_db)
    assert info.returncode == 0, info.stderr
    assert "(PostgreSQL)" in info.stdout and "projections: in the store's schema" in info.stdout


def test_no_store_in_the_schema_and_postgresql_not_answering_are_one_line(pg_db: str, tmp_path: Path) -> None:
    for command in (["show", "x"], ["export", "x"], ["erase", "x", "--reason", "test"]):
        empty = run(command, tmp_path, pg_db)
        assert empty.returncode == 2, (command, empty.stderr)
        assert "no store in" in empty.stderr and "Traceback" not in empty.stderr, empty.stderr
    # A server that does not answer (nothing listens on port 1), with a password not to print.
    parts = urlsplit(pg_db)
    down = urlunsplit(parts._replace(netloc="someone:s3cret@127.0.0.1:1"))
    for command in (["show", "x"], ["rebuild"], ["import", "-"], ["serve", "--port", "0"]):
        failed = run(command, tmp_path, down, stdin=b"")
        assert failed.returncode == 2, (command, failed.stderr)
        lines = [line for line in failed.stderr.splitlines() if line.strip()]
        assert "cannot reach the store's PostgreSQL" in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
        assert "s3cret" not in failed.stderr and len(lines) <= 3, failed.stderr
