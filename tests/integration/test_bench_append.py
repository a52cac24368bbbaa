"""Smoke test of ``python -m bench.append`` at a small size: it completes and reports both of our
rows (no figure asserted: the machine is shared; the peer only when it is installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_bench_append_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.append", "--events", "400", "--batch", "100", "--no-peer"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ours: append ") == 2 and done.stdout.count("ours: validate + append") == 2, done.stdout
