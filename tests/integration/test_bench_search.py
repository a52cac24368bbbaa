"""Smoke test of ``python -m bench.search``: it fills a store, projects it and prints every row
(no figure is asserted: the machine is shared and timings vary)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_search_benchmark_prints_every_row(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.search", "--events", "3000", "--busy", "1000", "--db", str(tmp_path / "s.db")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    rows = [line for line in result.stdout.splitlines() if " q=" in line]
    assert len(rows) == 9, result.stdout
    busy = [line.split() for line in rows if line.startswith("busy q='storm' order=relevance")]
    assert busy and int(busy[0][-1]) == 50, result.stdout  # a full page of the busy entity's matches
