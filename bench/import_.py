"""Bulk import against the stream path and the peer, in one run, on the same events.

    .venv/bin/python -m bench.import_                   # 200,000 events
    .venv/bin/python -m bench.import_ --events 20000    # a quick run
    .venv/bin/python -m bench.import_ --scaling-only    # validation on 1 and 2 processes alone

Rows:
  import: `timeline import FILE --quiet` into a fresh store, timed from start to exit (stored and
    projected: the projections rebuilt), twice, before and after the stream run.
  stream: the same events published by a separate process into `timeline serve`, until every
    projection is at the head (bench/ingest.py).
  peer: the `eventsourcing` library's append, then its projection (bench/peer.py).
  fixed cost: `timeline import` of an empty file (the command's start, the store and projections
    opened), wall and CPU time.
  in process, CPU by part: `import_events` in this process, CPU time of the importing thread, of
    the process's other threads (the projections' rebuild beside the import and its finish) and
    of the validating processes, an event (bench/import_.py `breakdown`).
  validation scaling: the import's validation alone (timeline.importer.validate_chunk over chunks
    of 1,000 lines) on a pool of 1 and of 2 processes, alternating, wall time and the processes'
    CPU time (the machine is shared: CPU time says what the work cost, wall time what it took).

Redis: REDIS_URL (or --redis-url) when set, else a private redis-server.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from . import ingest, peer
from .server import ROOT, _command, cpu_seconds
from .workload import lines


def write_file(path: Path, n: int) -> Path:
    with open(path, "wb") as out:
        for line in lines(n):
            out.write(line + b"\n")
    return path


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_import(source: Path, workdir: Path, workers: int | None = None) -> dict[str, float]:
    """``timeline import`` into a fresh store; wall time and CPU time (with its processes)."""
    db = workdir / f"import-{time.monotonic_ns()}" / "timeline.db"
    db.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update(TIMELINE_DB=str(db), PYTHONPATH=str(ROOT))
    args = [*_command(), "import", str(source), "--quiet"]
    if workers is not None:
        args += ["--workers", str(workers)]
    os.sync()
    cpu = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=workdir)  # noqa: S603
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"timeline import failed: {done.stdout}\n{done.stderr}")
    n = sum(1 for _ in open(source, "rb"))
    return {"events": n, "seconds": seconds, "rate": n / seconds, "cpu_seconds": children_cpu() - cpu,
            "summary": done.stdout.strip()}  # type: ignore[dict-item]


def breakdown(source: Path, workdir: Path, workers: int | None = None) -> dict[str, float]:
    """``import_events`` in this process into a fresh store, CPU by part: the importing thread
    (reading, validating while the pool starts, unpickling, appending), this process's other
    threads (the projections' rebuild beside the import and its finish, SQLite's sorter
    threads), the validating processes (started and waited for within the call); and the wall
    time of storing and of projecting after it."""

    from timeline.importer import import_events
    from timeline.service import TimelineService
    from timeline.settings import Settings

    db = workdir / f"inproc-{time.monotonic_ns()}" / "timeline.db"
    service = TimelineService(Settings(TIMELINE_DB=str(db), TIMELINE_VALIDATORS=0))
    try:
        kids, own, thread = children_cpu(), time.process_time(), time.thread_time()
        started = time.perf_counter()
        with open(source, "rb") as fh:
            report = import_events(service, fh, workdir / "inproc.rejects", workers=workers)
        seconds = time.perf_counter() - started
        thread, own, kids = time.thread_time() - thread, time.process_time() - own, children_cpu() - kids
    finally:
        service.close()
    n = report.lines
    return {"events": n, "seconds": seconds, "rate": n / seconds, "store_seconds": report.store_seconds,
            "project_seconds": report.project_seconds, "projected_while_storing": report.projected_while_storing,
            "chunks_here": report.chunks_here, "chunks_pooled": report.chunks_pooled,
            "importing_thread_us": thread / n * 1e6, "other_threads_us": (own - thread) / n * 1e6,
            "validating_processes_us": kids / n * 1e6, "total_us": (own + kids) / n * 1e6}


def fixed_cost(workdir: Path) -> dict[str, float]:
    """``timeline import`` of an empty file: what the command costs whatever it imports (start,
    the store and projections opened, the projections rebuilt over nothing)."""
    empty = workdir / "empty.jsonl"
    empty.write_bytes(b"")
    out = run_import(empty, workdir)
    return {"seconds": out["seconds"], "cpu_seconds": out["cpu_seconds"]}


def validation(source: Path, workers: int) -> dict[str, float]:
    """The import's validation alone on a pool of ``workers`` processes: wall and CPU seconds."""
    from timeline.importer import chunks, read_lines, validate_chunk

    with open(source, "rb") as fh:
        parts = list(chunks(read_lines(fh, lambda *a: None)))
    n = sum(len(p) for p in parts)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        list(pool.map(validate_chunk, [parts[0]] * workers))  # started, models imported: then the clock
        pids = list(pool._processes)  # noqa: SLF001 - their CPU time, read from /proc
        cpu = sum(map(cpu_seconds, pids))
        own = time.process_time()
        started = time.perf_counter()
        for _ in pool.map(validate_chunk, parts):
            pass
        seconds = time.perf_counter() - started
        cpu = sum(map(cpu_seconds, pids)) - cpu
    finally:
        pool.shutdown(wait=True)
    return {"workers": workers, "events": n, "seconds": seconds, "rate": n / seconds,
            "cpu_seconds": cpu, "parent_cpu_seconds": time.process_time() - own}


def scaling(source: Path, rounds: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {"1": [], "2": []}
    for _ in range(rounds):
        for workers in (1, 2):
            out[str(workers)].append(validation(source, workers))
    return out


def _redis(url: str | None, workdir: Path) -> tuple[str, Any]:
    if url:
        return url, None
    from timeline.embedded_redis import RedisServer

    server = RedisServer(workdir / "redis", appendonly=False)
    return server.start(), server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or None)
    parser.add_argument("--scaling-events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the validation scaling")
    parser.add_argument("--scaling-only", action="store_true")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="the import's validating processes (default: its own)")
    args = parser.parse_args()
    log = lambda text: print(f"[bench.import_ {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)  # noqa: E731
    results: dict[str, Any] = {"load_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        workdir = Path(tmp)
        small = write_file(workdir / "scaling.jsonl", args.scaling_events)
        log("validation scaling, 1 and 2 processes, alternating")
        results["scaling"] = scaling(small, args.rounds)
        if not args.scaling_only:
            source = write_file(workdir / "events.jsonl", args.events)
            redis_url, own = _redis(args.redis_url, workdir)
            try:
                log(f"import {args.events:,}")
                results["import_1"] = run_import(source, workdir, args.workers)
                log(f"stream {args.events:,}")
                results["stream"] = ingest.run(args.events, redis_url)
                log(f"import {args.events:,} again")
                results["import_2"] = run_import(source, workdir, args.workers)
                log("import of an empty file (the command's fixed cost)")
                results["fixed"] = fixed_cost(workdir)
                log(f"import {args.events:,} in process, CPU by part")
                results["breakdown"] = breakdown(source, workdir, args.workers)
                if not args.no_peer and peer.available():
                    log(f"peer {args.events:,}")
                    results["peer"] = peer.run(args.events)
            finally:
                if own is not None:
                    own.stop()
    results["load_at_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1))
    report(results)


def report(r: dict[str, Any]) -> None:
    print(f"\nload average {r['load_at_start']:.1f} at start, {r['load_at_end']:.1f} at end", file=sys.stderr)
    for workers, runs in r["scaling"].items():
        print(f"validate, {workers} process(es): " + ", ".join(
            f"{x['rate']:,.0f} ev/s ({x['cpu_seconds'] / x['events'] * 1e6:.1f} µs CPU an event)" for x in runs),
            file=sys.stderr)
    if "stream" not in r:
        return
    imports = [r["import_1"]["rate"], r["import_2"]["rate"]]
    stream = r["stream"]["rate"]
    cpu = [r[k]["cpu_seconds"] / r[k]["events"] * 1e6 for k in ("import_1", "import_2")]
    server = r["stream"].get("server_cpu_seconds", 0) / r["stream"]["events"] * 1e6
    print(f"import: {imports[0]:,.0f} / {imports[1]:,.0f} ev/s ({cpu[0]:.0f} / {cpu[1]:.0f} µs CPU an event);"
          f" stream: {stream:,.0f} ev/s (the server {server:.0f} µs CPU an event, the publisher and Redis not"
          f" counted); import / stream: {min(imports) / stream:.2f}-{max(imports) / stream:.2f}", file=sys.stderr)
    if "fixed" in r:
        print(f"import of an empty file: {r['fixed']['seconds']:.2f} s, {r['fixed']['cpu_seconds']:.2f} s CPU",
              file=sys.stderr)
    if "breakdown" in r:
        b = r["breakdown"]
        print(f"in process: {b['rate']:,.0f} ev/s (stored in {b['store_seconds']:.2f} s, projected after in"
              f" {b['project_seconds']:.2f} s); CPU an event: importing thread {b['importing_thread_us']:.1f} µs,"
              f" projection threads {b['other_threads_us']:.1f}, validating processes"
              f" {b['validating_processes_us']:.1f}, total {b['total_us']:.1f}", file=sys.stderr)
    if "peer" in r:
        p = r["peer"]
        both = 1 / (1 / p["append_rate"] + 1 / p["project_rate"])
        print(f"peer append {p['append_rate']:,.0f}, projection {p['project_rate']:,.0f}, both {both:,.0f} ev/s;"
              f" import / peer: {min(imports) / both:.2f}-{max(imports) / both:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
