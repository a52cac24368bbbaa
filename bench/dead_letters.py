"""Dead letters at scale: N dead letters (valid events, as a validator bug would have left them)
exported and then replayed with the real ``timeline dead-letters`` commands against a real
``timeline serve``, on a Redis of its own. Reports each command's wall time, rate and peak RSS
(its ``VmHWM``, read while it runs), for a small N and a large one: flat memory means the two
peaks are about the same.

    python -m bench.dead_letters --small 10000 --large 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from timeline.embedded_redis import RedisServer

from .server import Server, vm_hwm_mb

PLANT_CHUNK = 5000


def plant(client: redis.Redis, dead_stream: str, prefix: str, n: int) -> None:
    for start in range(0, n, PLANT_CHUNK):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + PLANT_CHUNK)):
                event = {
                    "id": f"{prefix}-{i}", "kind": "report", "occurred_at": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    "headline": f"Replayed report {i}", "entities": [{"name": f"Entity {i % 1000}", "role": "subject"}],
                }
                pipe.xadd(dead_stream, {
                    "event": json.dumps(event, separators=(",", ":")), "reason": "schema",
                    "error": "event: cannot be validated (a bug since fixed)", "source_id": f"1-{i}",
                })
            pipe.execute()


def timed(server: Server, *args: str) -> dict[str, float]:
    """Run ``timeline dead-letters ARGS`` with the server's settings: seconds and peak RSS (MB)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "timeline"), "dead-letters", *args],
        env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    peak = 0.0
    while process.poll() is None:
        try:
            peak = max(peak, vm_hwm_mb(process.pid))  # VmHWM only grows: the last read is the peak
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"timeline dead-letters {' '.join(args)} exited {process.returncode}: {err.decode()[-2000:]}")
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak}


def measure(n: int, prefix: str, server: Server, client: redis.Redis) -> dict[str, object]:
    dead_stream = f"{server.stream}:dead"
    plant(client, dead_stream, prefix, n)
    export = timed(server, "export", "/dev/null")
    replay = timed(server, "replay", "--all", "--timeout", "600")
    left = client.xlen(dead_stream)
    if left:
        raise RuntimeError(f"{left} dead letters left after the replay")
    return {
        "dead_letters": n,
        "export": {**export, "per_second": n / export["seconds"]},
        "replay": {**replay, "per_second": n / replay["seconds"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dead-") as tmp:
        work = Path(tmp)
        with RedisServer(work / "redis", appendonly=False) as own_redis:
            client = redis.Redis.from_url(own_redis.url)
            with Server(work / "timeline.db", own_redis.url, work) as server:
                results = [measure(n, name, server, client) for n, name in ((args.small, "small"), (args.large, "large"))]
            client.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
