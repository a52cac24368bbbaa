"""What the metrics cost, in process: the store observer per append, the HTTP middleware per
request, and one scrape of ``GET /metrics`` (the gauges read from a store's checkpoints).

    python -m bench.metrics

Ingest end to end with /metrics scraped every second: ``python -m bench.ingest --scrape-seconds 1``
(paired with runs of the code before, docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from events.store import AppendDone


def per_call(fn: Any, calls: int) -> float:
    """CPU microseconds a call (this process's CPU time: the machine is shared), best of five."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - started) / calls)
    return best * 1e6


async def _asgi_calls(app: Any, calls: int) -> None:
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    for _ in range(calls):
        await app(dict(scope), receive, send)


def middleware_cost(calls: int) -> tuple[float, float]:
    """Microseconds a request through a bare ASGI app, without and with ``HttpMetrics``."""
    from prometheus_client import CollectorRegistry, Histogram

    from timeline.metrics import HttpMetrics

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    histogram = Histogram("h", "h", ["route", "method", "status"], registry=CollectorRegistry())
    wrapped = HttpMetrics(bare, histogram)
    loop = asyncio.new_event_loop()
    try:  # alternated, so that both see the same machine
        rounds = [
            (per_call(lambda: loop.run_until_complete(_asgi_calls(bare, calls)), 1) / calls,
             per_call(lambda: loop.run_until_complete(_asgi_calls(wrapped, calls)), 1) / calls)
            for _ in range(3)
        ]
        return min(r[0] for r in rounds), min(r[1] for r in rounds)
    finally:
        loop.close()


def scrape_cost(events: int, scrapes: int) -> float:
    """Milliseconds a scrape of a runtime (no consumer) over a store of ``events`` events."""
    from bench.workload import lines
    from timeline.runtime import Runtime
    from timeline.service import prepare_here
    from timeline.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        os.environ.update({"TIMELINE_DB": str(Path(tmp) / "timeline.db"), "REDIS_URL": "redis://127.0.0.1:1/0"})
        runtime = Runtime(Settings(), consume=False)
        try:
            entries = [(f"{i}-0".encode(), {b"event": line}) for i, line in enumerate(lines(events), 1)]
            runtime.service.append(prepare_here(entries))
            runtime.service.project()
            loop = asyncio.new_event_loop()
            try:
                return per_call(lambda: loop.run_until_complete(runtime.metrics.exposition()), scrapes) / 1000
            finally:
                loop.close()
        finally:
            runtime.service.close()


def observer_cost(calls: int) -> float:
    from timeline.metrics import Metrics

    metrics = Metrics(runtime=None)  # type: ignore[arg-type]  # the counters only
    done = AppendDone(time.time_ns(), 0.05, 2000, 1990)
    return per_call(lambda: metrics.appended(done), calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=20_000, help="events in the store a scrape reads")
    args = parser.parse_args()
    bare, timed = middleware_cost(args.calls)
    print(json.dumps({
        "observer_us_per_append": round(observer_cost(args.calls), 2),
        "request_us_bare": round(bare, 2),
        "request_us_with_metrics": round(timed, 2),
        "scrape_ms": round(scrape_cost(args.events, 50), 2),
    }))


if __name__ == "__main__":
    main()
