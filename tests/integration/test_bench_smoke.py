"""Smoke test of the benchmark (``python -m bench --quick``): it completes and prints every row.

No figure is asserted: the machine is shared and timings vary. The peer rows say ``skipped``
when the ``eventsourcing`` library (extra ``bench``) is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

ROWS = [
    "raw XADD (pipelined)",
    "raw XREADGROUP+XACK",
    "raw SQLite executemany",
    "ingest end to end",
    "rebuild all projections",
    "rebuild timelines",
    "project corrections",
    "correction storm",
    "query in-process busy p50/p99",
    "query in-process rare p50/p99",
    "query HTTP 16 clients",
    "query HTTP 1 / 2 read-only",
    "peak RSS ingest",
    "peak RSS rebuild",
    "peer eventsourcing append",
    "peer eventsourcing projection",
    "ingest / raw ceiling",
    "validate, one core",
    "read models' floor",
    "bound: rebuild all,",
    "bound: ingest,",
    "ours/peer ingest",
    "ours/peer rebuild",
]


def test_quick_benchmark_prints_every_row(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--events", "2000", "--rebuild-events", "5000"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=150,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    out = result.stdout
    for prefix in ("machine:", "software:", "workload:"):
        assert any(line.startswith(prefix) for line in out.splitlines()), (prefix, out)
    lines = {line.split("  ")[0].strip(): line for line in out.splitlines() if "  " in line}
    for row in ROWS:  # the bounds' names end with the machine's number of cores
        assert any(name == row or (row.endswith(",") and name.startswith(row)) for name in lines), (
            f"row {row!r} missing from:\n{out}"
        )
    bounds = [line for name, line in lines.items() if name.startswith("bound: ")]
    assert len(bounds) == 2 and all("ev/s" in line for line in bounds), bounds
    if importlib.util.find_spec("eventsourcing") is None:
        assert "skipped" in lines["peer eventsourcing append"]
    else:
        assert "ev/s" in lines["peer eventsourcing append"]
        assert "ev/s" in lines["peer eventsourcing projection"]
