"""Smoke test of ``python -m bench.import_`` at small sizes: it completes and reports the import,
the stream path and the validation scaling (no figure asserted: the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_bench_import_runs(redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.import_", "--events", "1500", "--scaling-events", "1000", "--rounds", "1",
         "--redis-url", redis_url, "--no-peer"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["import_1"]["events"] == figures["import_2"]["events"] == figures["stream"]["events"] == 1500
    assert "stored 1500 (positions 1-1500)" in figures["import_1"]["summary"]
    assert [run["workers"] for run in figures["scaling"]["1"] + figures["scaling"]["2"]] == [1, 2]
    assert figures["fixed"]["seconds"] > 0 and figures["breakdown"]["events"] == 1500
    for row in ("validate, 1 process(es): ", "validate, 2 process(es): ", "import / stream", "import of an empty file: ",
                "in process: "):
        assert row in done.stderr, f"no row {row!r}:\n{done.stderr}"
