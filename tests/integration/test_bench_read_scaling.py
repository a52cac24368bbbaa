"""Smoke test of ``python -m bench.read_scaling``: a writer and two read-only processes over the
benchmark's store, every configuration measured and printed, no request failing. No figure is
asserted (the machine is shared); the asyncio generator, which needs nothing installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_read_scaling_benchmark_prints_every_configuration(redis_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.read_scaling", "--events", "2000", "--seconds", "1", "--rounds", "1",
         "--connections", "4", "--generator", "asyncio"],
        cwd=PROJECT_ROOT, env={**os.environ, "REDIS_URL": redis_url}, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    out = result.stdout
    for label in ("writer alone", "1 read-only", "2 read-only", "writer + 1 read-only"):
        row = re.search(rf"^{re.escape(label)} +([\d,]+) .* (\d+) +[\d.]+ +[\d.]+ +[\d.]+ +[\d,]+ ", out, re.MULTILINE)
        assert row, f"no row {label!r}:\n{out}"
        assert int(row.group(1).replace(",", "")) > 0 and row.group(2) == "0", row.group(0)
    assert re.search(r"^2 read-only / 1 read-only: [\d.]+x", out, re.MULTILINE), out
