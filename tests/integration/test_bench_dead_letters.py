"""Smoke test of ``python -m bench.dead_letters`` at a small scale: it completes, replays every
dead letter and reports each figure (none is asserted: the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_the_dead_letter_benchmark_runs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_") and k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.dead_letters", "--small", "10", "--large", "30"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert [r["dead_letters"] for r in results] == [10, 30]
    for result in results:
        for command in ("export", "replay"):
            assert set(result[command]) == {"seconds", "peak_rss_mb", "per_second"}
            assert result[command]["peak_rss_mb"] > 0
