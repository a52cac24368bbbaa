"""TIMELINE_DB as a PostgreSQL URL: kept as written (a Path would fold its ``//``), the commands
that print the store hide its password, and those made for a SQLite file say so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from timeline.settings import Settings

URL = "postgresql://timeline:s3cret@db.example:5432/news?options=-csearch_path%3Dnews"


def test_a_url_stays_a_url_and_a_path_a_path(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIMELINE_DB", URL)
    assert Settings().db == URL and Settings().on_postgres
    monkeypatch.setenv("TIMELINE_DB", "postgres://h/db")
    assert Settings().db == "postgres://h/db"
    monkeypatch.setenv("TIMELINE_DB", str(tmp_path / "t.db"))
    assert Settings().db == tmp_path / "t.db" and not Settings().on_postgres
    assert Settings().redis_dir == tmp_path / "redis"


def timeline(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIMELINE_DB": db, "COLUMNS": "400"}
    env.pop("REDIS_URL", None)
    return subprocess.run([str(Path(sys.executable).parent / "timeline"), *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=os.environ.get("TMPDIR", "/tmp"))


def test_info_names_the_store_without_its_password() -> None:
    done = timeline("info", db=URL)
    assert done.returncode == 0, done.stderr
    assert "store: postgresql://timeline:***@db.example:5432/news" in done.stdout and "s3cret" not in done.stdout
    assert "(PostgreSQL)" in done.stdout


def test_backup_of_an_unreachable_database_says_so(tmp_path: Path) -> None:
    """(A PostgreSQL store is backed up into a SQLite file: tests/e2e/test_cli_postgres.py.)"""
    done = timeline("backup", str(tmp_path / "copy.db"), db="postgresql://nobody:s3cret@127.0.0.1:1/none")
    assert done.returncode == 2 and "cannot reach the store's PostgreSQL" in done.stderr, done.stderr
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "copy.db").exists()


def test_verify_of_an_unreachable_database_says_so() -> None:
    done = timeline("verify", db="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert done.returncode == 2 and "cannot reach postgresql://nobody@127.0.0.1:1/none" in done.stderr
