"""The benchmark: one command, one table, every figure from the same run.

    .venv/bin/python -m bench                      # 200,000 ingested, 1,000,000 rebuilt (minutes)
    .venv/bin/python -m bench --quick              # a smoke run with small sizes
    .venv/bin/python -m bench --events 50000 --rebuild-events 200000

Rows:
  raw XADD / XREADGROUP+XACK / SQLite executemany: the same event rows with nothing around them
    (bench/raw.py); the slowest is the ceiling for ingest.
  ingest end to end: a publisher process (timeline.publisher.Publisher) into `timeline serve`,
    until every event is stored and every projection is at the head (bench/ingest.py).
  rebuild: every projection, then timelines alone, from the stored events (bench/rebuild.py).
  project corrections: corrections and retractions of random earlier events, projected live
    (bench/corrections.py).
  correction storm: corrections of one event against as many ordinary events, one a
    transaction, each stored and projected before the next (bench/corrections.py, --storm).
  query: in-process and over HTTP on the rebuilt store (bench/queries.py).
  peer: the same append and per-entity projection with the `eventsourcing` library on SQLite
    (bench/peer.py; `pip install -e '.[bench]'`; skipped when it is not installed).
  validate, read models' floor, bounds: the project's parser alone, the least SQL of each read
    model, and the best rebuild and ingest rates they leave on this machine's cores (bench/floor.py).

Redis: REDIS_URL (or --redis-url) when set, else a private redis-server for the run. Progress
goes to standard error; the table to standard output.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import redis

from . import corrections, floor, ingest, peer, queries, raw, read_scaling
from . import rebuild as rebuild_bench
from .workload import lines

T = TypeVar("T")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def step(title: str, fn: Callable[[], T]) -> T:
    log(f"{title} …")
    started = time.perf_counter()
    result = fn()
    log(f"{title}: done in {time.perf_counter() - started:.1f} s")
    return result


# --- the machine -----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def machine(redis_url: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("server")
        persistence = client.info("persistence")
        redis_line = (
            f"Redis {info.get('redis_version')} (appendonly {'yes' if persistence.get('aof_enabled') else 'no'})"
        )
    finally:
        client.close()
    try:
        peer_version = f"eventsourcing {metadata.version('eventsourcing')}"
    except metadata.PackageNotFoundError:
        peer_version = "eventsourcing not installed"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        f"machine: {cpus} CPUs ({_cpu_model()}), {_ram_gb():.1f} GB RAM, {platform.system()} {platform.release()},"
        f" load average {load:.2f} at start",
        f"software: Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {redis_line}, {peer_version}",
    ]


# --- the table -------------------------------------------------------------------------------


def rate(value: float) -> str:
    return f"{value:,.0f} ev/s"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    out = []
    for i, (name, value, note) in enumerate(rows):
        out.append(f"{name:<{widths[0]}}  {value:>{widths[1]}}  {note}".rstrip())
        if i == 0:
            out.append("-" * (widths[0] + widths[1] + 4 + min(60, max(len(r[2]) for r in rows))))
    return "\n".join(out)


# --- the run ---------------------------------------------------------------------------------


def _redis(url: str | None, workdir: Path) -> tuple[str, Any]:
    if url:
        return url, None
    from timeline.embedded_redis import RedisServer

    server = RedisServer(workdir / "redis", appendonly=False)
    return server.start(), server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=None, help="events ingested end to end (default 200,000)")
    parser.add_argument("--rebuild-events", type=int, default=None,
                        help="stored events rebuilt and queried (default 1,000,000; store cached in bench/.cache)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--batch-size", type=int, default=2000, help="TIMELINE_BATCH_SIZE of the ingest server")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or None,
                        help="default: REDIS_URL, else a private redis-server")
    parser.add_argument("--no-peer", action="store_true", help="skip the eventsourcing peer")
    args = parser.parse_args(argv)

    n = args.events or (2_000 if args.quick else 200_000)
    rebuild_n = args.rebuild_events or (5_000 if args.quick else 1_000_000)
    calls = 200 if args.quick else 2_000
    # a smoke run's HTTP loads: long enough for every figure to have samples, whole seconds
    # (wrk's -d), no warm-up; each second of them keeps both cores busy
    http_seconds, warmup = (1.0, 0.0) if args.quick else (10.0, 1.0)
    run_peer = not args.no_peer and peer.available()

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        redis_url, own_redis = _redis(args.redis_url, workdir)
        try:
            header = machine(redis_url)
            payloads = list(lines(n))
            size = sum(map(len, payloads)) / len(payloads)
            header.append(
                f"workload: bench/workload.py, events of {size:,.0f} bytes on average, 2-4 entities each,"
                f" Zipf-skewed over 20,000 entities; ingest {n:,}, rebuild and queries {rebuild_n:,}"
            )

            # 1. raw limits
            xadd_rate, read_rate = step("raw XADD, XREADGROUP+XACK", lambda: raw.xadd_and_read(redis_url, payloads))
            sqlite_rate = step("raw SQLite executemany", lambda: raw.sqlite_executemany(payloads, workdir))
            validate = step("validate, one core", lambda: floor.validate_rate(payloads))
            del payloads
            limits = {"XADD": xadd_rate, "XREADGROUP+XACK": read_rate, "SQLite executemany": sqlite_rate}
            ceiling_name = min(limits, key=limits.__getitem__)
            ceiling = limits[ceiling_name]

            # 2. ingest end to end
            ing = step(f"ingest end to end, {n:,} events",
                       lambda: ingest.run(n, redis_url, batch_size=args.batch_size))

            # 3. rebuilds (the store is filled once and cached by bench/rebuild.py)
            rb_all = step(f"rebuild all projections, {rebuild_n:,} events", lambda: rebuild_bench.run(rebuild_n))
            rb_tl = step(f"rebuild timelines, {rebuild_n:,} events",
                         lambda: rebuild_bench.run(rebuild_n, ["timelines"]))
            store = rebuild_bench.CACHE / f"bench-{rebuild_n}.db"
            from projections import default_projections

            projection_names = [p.name for p in default_projections()]
            floors = step(f"read models' floor, {rebuild_n:,} events", lambda: floor.read_models(store))
            stored_n = floor.events_in(store)

            # 3b. corrections and retractions of earlier events, projected live
            corr_n, corr_count = (5_000, 200) if args.quick else (200_000, 4_000)
            corr = step(f"corrections, {corr_count:,} of {corr_n:,} events",
                        lambda: corrections.run(corr_n, corr_count, workdir))
            storm_count = 200 if args.quick else 1_000
            storm = step(f"correction storm, {storm_count:,} of one event",
                         lambda: corrections.storm(storm_count, workdir))

            # 4. queries on the rebuilt store
            rare, rare_count = queries.rare_entity(store)
            busy_count = queries.event_count(store, queries.BUSY)
            q_busy = step("query in-process, busy", lambda: queries.in_process(store, queries.BUSY, calls))
            q_rare = step("query in-process, rare", lambda: queries.in_process(store, rare, calls))
            q_http = step("query HTTP, 16 clients",
                          lambda: queries.http(store, redis_url, clients=16, seconds=http_seconds, warmup=warmup))
            q_scale = step("query HTTP, 1 and 2 read-only processes", lambda: read_scaling.run(
                store, redis_url, connections=16, seconds=http_seconds, rounds=1, generator=read_scaling.generator_in_use(),
                configs=["1 read-only", "2 read-only"], warmup=warmup))

            # 6. the peer
            pr = step(f"peer eventsourcing, {rebuild_n:,} events (first {n:,} timed apart)",
                      lambda: peer.run(max(n, rebuild_n), first=n, batch=args.batch_size)) if run_peer else None
        finally:
            if own_redis is not None:
                own_redis.stop()

    rows: list[tuple[str, str, str]] = [("measure", "value", "how")]
    rows += [
        ("raw XADD (pipelined)", rate(xadd_rate), f"redis-py pipeline, 1,000 per round trip, {n:,} entries"),
        ("raw XREADGROUP+XACK", rate(read_rate), "batches of 500: XREADGROUP then XACK"),
        ("raw SQLite executemany", rate(sqlite_rate),
         "events table rows, 5,000 per transaction, WAL, synchronous=FULL"),
        ("ingest end to end", rate(ing["rate"]),
         f"{n:,} events in {ing['seconds']:.2f} s: publisher process -> Redis -> timeline serve"
         f" (batch {ing['batch_size']}), stored and projected; publisher alone {ing['publish_rate']:,.0f} ev/s;"
         f" server CPU {ing['server_cpu_seconds'] / n * 1e6:,.0f} µs an event"),
        ("rebuild all projections", rate(rb_all["rate"]),
         f"{rb_all['events']:,} stored events in {rb_all['seconds']:.2f} s ({', '.join(projection_names)})"),
        ("rebuild timelines", rate(rb_tl["rate"]), f"{rb_tl['events']:,} stored events in {rb_tl['seconds']:.2f} s"),
        ("project corrections", rate(corr["rate"]),
         f"{corr['corrections']:,} corrections and retractions of random events among {corr['events']:,},"
         f" projected live by all four in {corr['seconds']:.2f} s"),
        ("correction storm", f"{storm['corrections_seconds']:.2f} s",
         f"{storm['count']:,} corrections of one event, one a transaction, each stored and projected before the"
         f" next; {storm['count']:,} ordinary events the same way: {storm['ordinary_seconds']:.2f} s"),
        ("query in-process busy p50/p99", f"{q_busy['p50_ms']:.2f} / {q_busy['p99_ms']:.2f} ms",
         f"{queries.BUSY} ({busy_count:,} events), limit 50, {calls:,} calls"),
        ("query in-process rare p50/p99", f"{q_rare['p50_ms']:.2f} / {q_rare['p99_ms']:.2f} ms",
         f"{rare} ({rare_count} events), limit 50, {calls:,} calls"),
        ("query HTTP 16 clients", f"{q_http['rps']:,.0f} req/s",
         f"p50 {q_http['p50_ms']:.1f} ms, p99 {q_http['p99_ms']:.1f} ms, {q_http['requests']:,} requests in"
         f" {q_http['seconds']:.0f} s, {q_http['errors']} errors; GET /entities/{{id}}/timeline?limit=50, Zipf ids;"
         f" CPU cores busy: server {q_http['server_cpu']:.2f}, clients {q_http['client_cpu']:.2f}"),
        ("query HTTP 1 / 2 read-only", "{:,.0f} / {:,.0f} req/s".format(*(q_scale[c][0]["rps"] for c in q_scale)),
         f"{q_scale['2 read-only'][0]['rps'] / max(q_scale['1 read-only'][0]['rps'], 1e-9):.2f}x: timeline serve --read-only"
         f" processes beside the writer, 16 connections spread over them, one round (python -m bench.read_scaling"
         f" for more: docs/performance.md); generator {read_scaling.generator_in_use()}, its CPU"
         f" {q_scale['2 read-only'][0]['generator_cores']:.2f} cores, servers'"
         f" {q_scale['1 read-only'][0]['server_cores']['read-1']:.2f} / "
         f"{sum(q_scale['2 read-only'][0]['server_cores'][n] for n in ('read-1', 'read-2')):.2f}, other work's"
         f" {q_scale['1 read-only'][0]['other_cores']:.2f} / {q_scale['2 read-only'][0]['other_cores']:.2f}"),
        ("peak RSS ingest", f"{ing['peak_rss_mb']:,.0f} MB",
         f"timeline serve with its child processes (sum of each VmHWM); the serve process alone"
         f" {ing.get('peak_rss_server_mb', ing['peak_rss_mb']):,.0f} MB"),
        ("peak RSS rebuild", f"{max(rb_all['peak_rss_mb'], rb_tl['peak_rss_mb']):,.0f} MB",
         f"rebuild process (VmHWM): all {rb_all['peak_rss_mb']:,.0f} MB, timelines {rb_tl['peak_rss_mb']:,.0f} MB"),
    ]
    if pr is not None:
        peer_both = 1 / (1 / pr["first_append_rate"] + 1 / pr["project_rate"])
        rows += [
            ("peer eventsourcing append", rate(pr["first_append_rate"]),
             f"first {pr['first']:,} events, one aggregate each, save() per {args.batch_size:,}, in-process"
             f" (all {pr['events']:,}: {pr['append_rate']:,.0f} ev/s), synchronous={pr['synchronous']}"),
            ("peer eventsourcing projection", rate(pr["project_rate"]),
             f"{pr['projected']:,} notifications -> entity index + tracking, {args.batch_size:,} per transaction"),
        ]
    else:
        rows += [
            ("peer eventsourcing append", "skipped", "eventsourcing not installed: pip install -e '.[bench]'"),
            ("peer eventsourcing projection", "skipped", ""),
        ]
    rows.append(("ingest / raw ceiling", ratio(ing["rate"], ceiling), f"ceiling: {ceiling_name}, {ceiling:,.0f} ev/s"))
    # 7. what this machine allows at best (bench/floor.py)
    n_cores = floor.cores()
    floor_seconds = sum(floors.values())
    rebuild_bound = floor.rebuild_bound(stored_n, floor_seconds, n_cores)
    ingest_bound = floor.ingest_bound(validate, xadd_rate, read_rate, sqlite_rate, floor_seconds / stored_n, n_cores)
    rows += [
        ("validate, one core", rate(validate),
         "the project's parser on the ingest events; ingest pays it twice (publisher, then service)"),
        ("read models' floor", f"{floor_seconds:.2f} s",
         f"least SQL per read model over {stored_n:,} stored events, in memory, one core each: "
         + ", ".join(f"{name} {sec:.2f} s" for name, sec in floors.items())),
        (f"bound: rebuild all, {n_cores} cores", rate(rebuild_bound),
         f"events / (floor / cores); rebuild all reached {ratio(rb_all['rate'], rebuild_bound)} of it"),
        (f"bound: ingest, {n_cores} cores", rate(ingest_bound),
         f"cores / (2 validations + XADD + XREADGROUP+XACK + executemany + floor, per event);"
         f" ingest reached {ratio(ing['rate'], ingest_bound)} of it"),
    ]
    if pr is not None:
        rows += [
            ("ours/peer ingest", ratio(ing["rate"], pr["first_append_rate"]),
             f"ours end to end (Redis, validated, stored, projected) vs peer append in-process;"
             f" vs peer append+projection {ratio(ing['rate'], peer_both)}"),
            ("ours/peer rebuild", ratio(rb_tl["rate"], pr["project_rate"]),
             f"rebuild timelines vs peer projection, both over {rebuild_n:,} events;"
             f" all projections {ratio(rb_all['rate'], pr['project_rate'])}"),
        ]
    else:
        rows += [("ours/peer ingest", "skipped", ""), ("ours/peer rebuild", "skipped", "")]

    print()
    for line in header:
        print(line)
    print()
    print(table(rows))
