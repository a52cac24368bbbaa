"""Ingest end to end: N workload events published by a separate process with the project's
``Publisher`` into a real ``timeline serve`` (its own SQLite file and stream), timed from the
first XADD until ``GET /projections`` shows every projection at position N with lag 0.

The publisher process generates its events before the clock starts (``ready``), then publishes
on ``go`` and reports how long publishing took. The server's peak RSS is its ``VmHWM``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from .server import ROOT, Server, vm_hwm_mb


def publisher_main(url: str, stream: str, n: int) -> None:
    """The publishing process: generate, wait for ``go`` on stdin, publish, report."""
    from timeline.publisher import Publisher

    from .workload import lines

    payloads = list(lines(n))
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    with Publisher(url, stream) as publisher:
        report = publisher.publish(payloads)
    seconds = time.perf_counter() - started
    print(json.dumps({"accepted": len(report.accepted), "rejected": len(report.rejected), "seconds": seconds}),
          flush=True)


def settled(server: Server, n: int, client: httpx.Client) -> bool:
    rows = client.get(f"{server.url}/projections").json()
    return bool(rows) and all(
        r["position"] == n and r["lag"] == 0 and r.get("state", "live") == "live" for r in rows
    )


def run(
    n: int, redis_url: str, batch_size: int = 2000, timeout: float | None = None, scrape_seconds: float | None = None
) -> dict[str, float]:
    """``scrape_seconds``: also ``GET /metrics`` that often during the ingest, as Prometheus would."""
    timeout = timeout if timeout is not None else 120.0 + n / 200  # a floor of 200 events/s
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        server = Server(workdir / "timeline.db", redis_url, workdir, batch_size=batch_size)
        publisher = None
        try:
            server.start()
            publisher = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "bench.ingest", "--publish", "--redis-url", redis_url,
                 "--stream", server.stream, "--events", str(n)],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            assert publisher.stdin is not None and publisher.stdout is not None
            if publisher.stdout.readline().strip() != "ready":
                raise RuntimeError("the publisher process did not start")
            with httpx.Client(timeout=30.0) as client:
                cpu_before = server.cpu_seconds_with_children()
                started = time.perf_counter()
                publisher.stdin.write("go\n")
                publisher.stdin.flush()
                deadline = time.monotonic() + timeout
                scrapes, next_scrape = 0, time.monotonic()
                while not settled(server, n, client):
                    if scrape_seconds is not None and time.monotonic() >= next_scrape:
                        client.get(f"{server.url}/metrics").raise_for_status()
                        scrapes, next_scrape = scrapes + 1, next_scrape + scrape_seconds
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"ingest of {n} events not settled within {timeout:.0f} s:\n{server.tail()}")
                    if server.process is not None and server.process.poll() is not None:
                        raise RuntimeError(f"timeline serve died during ingest:\n{server.tail()}")
                    time.sleep(0.05)
                seconds = time.perf_counter() - started
                server_cpu = server.cpu_seconds_with_children() - cpu_before
            published = json.loads(publisher.stdout.readline())
            publisher.wait(timeout=60)
            if published["accepted"] != n:
                raise RuntimeError(f"publisher accepted {published['accepted']} of {n}")
            peak = server.peak_rss_mb()
            peak_own = vm_hwm_mb(server.pid)
            dead = redis.Redis.from_url(redis_url).xlen(f"{server.stream}:dead")
            if dead:
                raise RuntimeError(f"{dead} entries were dead-lettered")
            return {
                "events": n,
                "seconds": seconds,
                "rate": n / seconds,
                "publish_seconds": published["seconds"],
                "publish_rate": n / published["seconds"],
                "server_cpu_seconds": server_cpu,  # the server and its validating processes
                "peak_rss_mb": peak,
                "peak_rss_server_mb": peak_own,  # without its validating processes
                "batch_size": batch_size,
                "scrapes": scrapes,
            }
        finally:
            if publisher is not None and publisher.poll() is None:
                publisher.kill()
                publisher.wait()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--batch-size", type=int, default=2000, help="TIMELINE_BATCH_SIZE of the server")
    parser.add_argument("--scrape-seconds", type=float, help="GET /metrics this often during the ingest")
    parser.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        publisher_main(args.redis_url, args.stream, args.events)
        return
    print(json.dumps(run(args.events, args.redis_url, args.batch_size, scrape_seconds=args.scrape_seconds)))


if __name__ == "__main__":
    main()
