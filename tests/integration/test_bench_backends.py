"""Smoke test of ``python -m bench.backends`` on PostgreSQL: one node, the writer with a read-only
node beside it, and two nodes each ingest and answer the benchmark's reads (no read failing),
with the database's CPU measured beside the nodes'. No figure is asserted (the machine is
shared)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_backends_benchmark_reads_on_postgres(redis_url: str, pg_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.backends", "--events", "100", "--seconds", "0.3", "--warmup", "0.2",
         "--clients", "4",
         "--backend", "postgres", "--redis-url", redis_url, "--postgres-url", pg_url],
        cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    out = result.stdout
    assert "not measured" not in out, out
    for nodes in ("1", "1 + 1 read-only", "2"):
        # reads (req/s), p50 / p99, nodes' + database's CPU, reads per core, 404 share
        row = re.search(rf"^\| postgres \| {re.escape(nodes)} \|.*\| ([\d,]+) \| [\d.]+ / [\d.]+ \| ([\d.]+) \+ ([\d.]+) \|"
                        r" ([\d,]+) \| \d+% \|$", out, re.MULTILINE)
        assert row, f"no reads for {nodes!r}:\n{out}"
        assert int(row.group(1).replace(",", "")) > 0 and float(row.group(3)) > 0, row.group(0)
    assert re.search(r"^postgres reads against one node: two nodes [\d.]+×, the writer \+ a read-only node [\d.]+×$",
                     out, re.MULTILINE), out
