"""Smoke test of ``python -m bench.read_scaling``: a writer and two read-only processes over the
benchmark's store, every configuration measured and printed, no request failing; on SQLite and
on PostgreSQL (``--backend postgres``: a store imported into a schema of the run's own, the
database server's CPU printed). No figure is asserted (the machine is shared); the asyncio
generator, which needs nothing installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _run(redis_url: str, *extra: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bench.read_scaling", "--events", "2000", "--seconds", "0.3", "--warmup", "0.2",
         "--rounds", "1",
         "--connections", "4", "--generator", "asyncio", *extra],
        cwd=PROJECT_ROOT, env={**os.environ, "REDIS_URL": redis_url, **(env or {})}, capture_output=True, text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout


def test_read_scaling_benchmark_prints_every_configuration(redis_url: str) -> None:
    out = _run(redis_url)
    for label in ("writer alone", "1 read-only", "2 read-only", "writer + 1 read-only"):
        row = re.search(rf"^{re.escape(label)} +([\d,]+) .* (\d+) +[\d.]+ +[\d.]+ +[\d.]+ +[\d,]+ ", out, re.MULTILINE)
        assert row, f"no row {label!r}:\n{out}"
        assert int(row.group(1).replace(",", "")) > 0 and row.group(2) == "0", row.group(0)
    assert re.search(r"^2 read-only / 1 read-only: [\d.]+x", out, re.MULTILINE), out


def test_read_scaling_benchmark_on_postgres(redis_url: str, pg_url: str) -> None:
    """Read-only nodes on PostgreSQL: every configuration answers (no error, no 404), the
    database server's CPU is measured beside the servers'."""
    out = _run(redis_url, "--backend", "postgres", "--postgres-url", pg_url)
    assert "backend: postgres" in out and "store: PostgreSQL, 2,000 events imported" in out, out
    for label in ("writer alone", "1 read-only", "2 read-only", "writer + 1 read-only"):
        # req/s, p50, p99, errors, servers CPU, database CPU, generator CPU, others CPU, per core, per core with db
        row = re.search(rf"^{re.escape(label)} +([\d,]+) +[\d.]+ +[\d.]+ +(\d+) +([\d.]+) +([\d.]+) +[\d.]+ +[\d.]+"
                        r" +[\d,]+ +[\d,]+ ", out, re.MULTILINE)
        assert row, f"no row {label!r}:\n{out}"
        assert int(row.group(1).replace(",", "")) > 0 and row.group(2) == "0", row.group(0)
        assert float(row.group(3)) > 0 and float(row.group(4)) > 0, row.group(0)  # servers', database's CPU
    assert re.search(r"^2 read-only / 1 read-only: [\d.]+x", out, re.MULTILINE), out
