"""Query latency and throughput on a store with projections built.

- in-process: ``Queries(path).timeline(entity, TimelineQuery(limit=50))`` for a busy entity
  (``entity-0``, the most frequent in the workload) and a rare one (an entity with about 5
  events, from the entity directory); p50 and p99 over many calls after a warm-up.
- HTTP: a ``timeline serve`` on the same file; 16 concurrent clients (keep-alive connections
  in one asyncio loop) ask ``GET /entities/{id}/timeline?limit=50`` for entities drawn with the
  workload's Zipf weights (popular entities asked more often) for a fixed time. The clients
  speak plain HTTP/1.1 over asyncio streams, like wrk: a general client library (httpx) costs
  as much CPU per request as the server does, on the same two cores, and would measure itself.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from projections.engine import projection_path

from .server import Server, redis_url_or_embedded

BUSY = "entity-0"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def rare_entity(path: Path, around: int = 5) -> tuple[str, int]:
    """An entity with about ``around`` events (from the entity directory's live table)."""
    conn = sqlite3.connect(f"file:{projection_path(path, 'entities')}?mode=ro", uri=True)
    try:
        (tag,) = conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = 'entities'").fetchone()
        row = conn.execute(
            f"SELECT id, event_count FROM ent_stats{tag} ORDER BY abs(event_count - ?), id LIMIT 1", (around,)
        ).fetchone()
        return row[0], row[1]
    finally:
        conn.close()


def event_count(path: Path, entity: str) -> int:
    conn = sqlite3.connect(f"file:{projection_path(path, 'entities')}?mode=ro", uri=True)
    try:
        (tag,) = conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = 'entities'").fetchone()
        row = conn.execute(f"SELECT event_count FROM ent_stats{tag} WHERE id = ?", (entity,)).fetchone()
        return row[0] if row else 0
    finally:
        conn.close()


def in_process(path: Path, entity: str, calls: int) -> dict[str, float]:
    from projections.queries import Queries, TimelineQuery

    queries = Queries(str(path))
    query = TimelineQuery(limit=50)
    try:
        for _ in range(min(50, calls)):
            queries.timeline(entity, query)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            result = queries.timeline(entity, query)
            samples.append(time.perf_counter() - started)
        assert result["entries"], f"no entries for {entity}"
    finally:
        queries.close()
    return {
        "calls": calls,
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
        "entries": len(result["entries"]),
    }


def _zipf_ids(count: int, entities: int = 20_000, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    cumulative, total = [], 0.0
    for rank in range(entities):
        total += 1.0 / (rank + 1) ** 1.1
        cumulative.append(total)
    return [f"entity-{bisect.bisect_left(cumulative, rng.random() * total)}" for _ in range(count)]


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, target: str) -> int:
    """One GET on a keep-alive connection; the status (the body is read and dropped)."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _load(
    base_url: str, clients: int, seconds: float, warmup: float, server_cpu: Callable[[], float]
) -> dict[str, float]:
    ids = _zipf_ids(100_000)
    samples: list[float] = []
    errors = not_found = 0
    counter = 0
    host, port = base_url.removeprefix("http://").split(":")
    loop_start = time.perf_counter()
    measure_from = loop_start + warmup
    stop_at = measure_from + seconds
    async def worker() -> None:
        nonlocal counter, errors, not_found
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                entity = ids[counter % len(ids)]
                counter += 1
                started = time.perf_counter()
                status = await _get(reader, writer, host, f"/entities/{entity}/timeline?limit=50")
                ended = time.perf_counter()
                if started >= measure_from and ended <= stop_at:
                    if status == 200:
                        samples.append(ended - started)
                    elif status == 404:  # an entity the store never saw: answered, not counted
                        not_found += 1
                    else:
                        errors += 1
        finally:
            writer.close()

    async def meter() -> None:
        nonlocal cpu
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        begin = (time.perf_counter(), time.process_time(), server_cpu())
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        wall = time.perf_counter() - begin[0]
        cpu = ((time.process_time() - begin[1]) / wall, (server_cpu() - begin[2]) / wall)

    cpu = (0.0, 0.0)
    await asyncio.gather(meter(), *(worker() for _ in range(clients)))
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(samples),
        "rps": len(samples) / seconds,
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "errors": errors,
        "not_found": not_found,
        "client_cpu": cpu[0],  # cores busy in this (client) process while measuring
        "server_cpu": cpu[1],  # cores busy in the server process
    }


def http(path: Path, redis_url: str, clients: int = 16, seconds: float = 10.0, warmup: float = 1.0) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        with Server(path, redis_url, Path(tmp)) as server:
            figures = asyncio.run(_load(server.url, clients, seconds, warmup, server.cpu_seconds))
            figures["server_peak_rss_mb"] = server.peak_rss_mb()
    return figures


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.queries``: the query rows of the benchmark on their own."""
    import argparse
    import os

    from . import rebuild

    parser = argparse.ArgumentParser(
        prog="python -m bench.queries", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000,
                        help="stored events (the store is filled and rebuilt once, cached in bench/.cache)")
    parser.add_argument("--calls", type=int, default=2_000, help="in-process calls per entity")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="HTTP measuring time")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or None,
                        help="default: REDIS_URL, else a private redis-server")
    args = parser.parse_args(argv)
    store = rebuild.CACHE / f"bench-{args.events}.db"
    if not projection_path(store, "timelines").exists():
        rebuild.run(args.events)  # fills the store, then builds the projections
    rare, rare_count = rare_entity(store)
    for name, entity, count in ((BUSY, BUSY, event_count(store, BUSY)), ("rare", rare, rare_count)):
        q = in_process(store, entity, args.calls)
        print(f"in-process {name:<8} p50 {q['p50_ms']:.2f} ms  p99 {q['p99_ms']:.2f} ms  ({entity}, {count:,} events)")
    with redis_url_or_embedded(args.redis_url) as url:
        h = http(store, url, clients=args.clients, seconds=args.seconds)
    print(
        f"HTTP {h['clients']} clients  {h['rps']:,.0f} req/s  p50 {h['p50_ms']:.1f} ms  p99 {h['p99_ms']:.1f} ms"
        f"  {h['errors']} errors  CPU cores: server {h['server_cpu']:.2f}, clients {h['client_cpu']:.2f}"
        f"  server peak RSS {h['server_peak_rss_mb']:,.0f} MB"
    )


if __name__ == "__main__":
    main()
