"""What the ``timeline`` command imports: a command that uses neither Redis nor PostgreSQL does
not load their clients (``redis`` with the ``opentelemetry`` it imports, ``psycopg``): ~0.45 s of
CPU of the command's start (docs/performance.md, Session 11), which a bulk import into SQLite
pays once for nothing.

Each case runs the real console script (``python -X importtime -m timeline.cli``) in a fresh
process and reads the modules it imported from ``-X importtime``'s report on standard error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ("redis", "opentelemetry", "psycopg")
EVENT = next(line for line in (ROOT / "timeline/data/demo_events.jsonl").read_bytes().splitlines() if line.strip())


def imported_by(args: list[str], env: dict[str, str], cwd: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-X", "importtime", "-m", "timeline.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    modules = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", done.stderr, re.M)}
    return modules, done


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_") and k not in ("REDIS_URL", "POSTGRES_URL")}
    out.update(TIMELINE_DB=str(tmp_path / "timeline.db"), PYTHONPATH=str(ROOT))
    return out


@pytest.mark.parametrize("args", [["import", "--help"], ["--help"], ["dead-letters", "--help"]])
def test_help_loads_no_client(args: list[str], env: dict[str, str], tmp_path: Path) -> None:
    modules, done = imported_by(args, env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage" in done.stdout
    assert not modules & set(CLIENTS), sorted(modules & set(CLIENTS))


def test_an_import_into_sqlite_loads_no_client(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(EVENT + b"\n" + b'{"not": "an event"}\n')
    modules, done = imported_by(["import", str(source), "--quiet"], env, tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]  # one line rejected: exit 1, as documented
    assert "stored 1" in done.stdout and "rejected 1" in done.stdout, done.stdout
    assert not modules & set(CLIENTS), sorted(modules & set(CLIENTS))
    # and the store it made verifies (another command, the same rule)
    modules, done = imported_by(["verify"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert not modules & set(CLIENTS), sorted(modules & set(CLIENTS))


def test_an_import_into_postgresql_still_loads_psycopg(env: dict[str, str], tmp_path: Path, pg_db: str) -> None:
    """The lazy imports keep PostgreSQL working: the same command on a PostgreSQL store."""
    source = tmp_path / "events.jsonl"
    source.write_bytes(EVENT + b"\n")
    env = {**env, "TIMELINE_DB": pg_db}
    modules, done = imported_by(["import", str(source), "--quiet"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "stored 1" in done.stdout, done.stdout
    assert "psycopg" in modules
