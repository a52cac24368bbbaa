"""Rebuild benchmark: every projection rebuilt from N stored events; rate and peak memory.

    .venv/bin/python -m bench.rebuild                 # 1,000,000 events (store cached in bench/.cache)
    .venv/bin/python -m bench.rebuild --events 20000  # a quick run
    .venv/bin/python -m bench.rebuild --live          # catching up from scratch as live, instead
    .venv/bin/python -m bench.rebuild --batch 50000   # events per batch (default: as `timeline rebuild`)
    .venv/bin/python -m bench.rebuild --events 20000 --postgres postgresql://root@127.0.0.1/test
                                                      # the same store copied into a fresh schema
                                                      # of that database, rebuilt there

The store is filled once (validated by the real parser, appended by the real store) and
cached; the rebuild runs in a child process, so its peak RSS is the rebuild's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from events.models import parse_event_bytes
from events.store import Candidate, EventStore

from .server import vm_hwm_mb
from .workload import lines

CACHE = Path(__file__).parent / ".cache"



def fresh_copy(n: int, dest: Path) -> Path:
    """A copy of the cached store of ``n`` benchmark events (filled first if needed) at ``dest``."""
    import shutil

    source = CACHE / f"bench-{n}.db"
    source.parent.mkdir(parents=True, exist_ok=True)
    fill(source, n)
    shutil.copy(source, dest)
    return dest

def fill(path: Path, n: int) -> float:
    """Append n workload events (if not there yet); return the append rate."""
    store = EventStore(path)
    try:
        have = store.head()
        if have >= n:
            return 0.0
        started = time.perf_counter()
        batch: list[Candidate] = []
        for i, raw in enumerate(lines(n)):
            if i < have:
                continue
            batch.append(Candidate(parse_event_bytes(raw), raw))
            if len(batch) == 5000:
                store.append(batch)
                batch = []
                print(f"\r  filling the store: {i + 1:,}/{n:,}", end="", file=sys.stderr, flush=True)
        store.append(batch)
        print(file=sys.stderr)
        return (n - have) / (time.perf_counter() - started)
    finally:
        store.close()


def measure(path: Path | str, names: list[str] | None, live: bool = False, batch: int | None = None) -> dict[str, float]:
    """Run in a child: rebuild (or, ``live``, project from scratch as live) and report the figures.
    ``path``: a store file, or a PostgreSQL store's URL."""
    from events.backend import is_postgres, open_store
    from projections import ProjectionEngine, default_projections, open_engine

    if is_postgres(str(path)):
        if live:
            raise SystemExit("--live is measured on SQLite only")
        store = open_store(str(path))
        engine = open_engine(store, **({"rebuild_batch_size": batch} if batch else {}))
        engine.setup()
        started = time.perf_counter()
        position = engine.rebuild(names, force=True)
        seconds = time.perf_counter() - started
        engine.close()
        store.close()
        return {"events": position, "seconds": seconds, "rate": position / seconds if seconds else 0.0,
                "peak_rss_mb": vm_hwm_mb(os.getpid())}
    store = EventStore(path)
    if live:
        engine = ProjectionEngine(store, default_projections(), **({"batch_size": batch} if batch else {}))
        engine.setup()
        _from_scratch(engine, names or list(engine.projections))
        started = time.perf_counter()
        position = engine.catch_up()
    else:
        # by default as `timeline rebuild` runs; --batch N: batches of N events
        fixed = {"rebuild_batch_size": batch} if batch else {}
        engine = ProjectionEngine(store, default_projections(), **fixed)
        engine.setup()
        started = time.perf_counter()
        position = engine.rebuild(names, force=True)
    seconds = time.perf_counter() - started
    engine.close()
    store.close()
    return {
        "events": position,
        "seconds": seconds,
        "rate": position / seconds if seconds else 0.0,
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child started by a big
        # parent (``python -m bench``) would report the parent's peak.
        "peak_rss_mb": vm_hwm_mb(os.getpid()),
    }


def _from_scratch(engine: Any, names: list[str]) -> None:
    """Live tables (with every index) at checkpoint 0, as if the events had just arrived."""
    for name in names:
        p, conn = engine.projections[name], engine.connection(name)
        conn.execute("BEGIN IMMEDIATE")
        tag = conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = ?", (name,)).fetchone()[0]
        p.drop(conn, tag)
        p.create(conn, tag)
        conn.execute(
            "UPDATE projection_checkpoints SET version = ?, position = 0, state = 'live' WHERE name = ?",
            (p.version, name),
        )
        conn.execute("COMMIT")


def run(
    n: int, names: list[str] | None = None, db: Path | None = None, live: bool = False, batch: int | None = None,
    postgres: str | None = None,
) -> dict[str, float]:
    """Rebuild from n stored events; ``postgres``: a PostgreSQL server's URL, where the same store
    is copied (``timeline copy-store``) into a schema of its own, rebuilt, and dropped."""
    path = db or CACHE / f"bench-{n}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    fill(path, n)
    if postgres:
        return _on_postgres(path, postgres, lambda url: run_child(url, names, live, batch))
    return run_child(path, names, live, batch)


def _on_postgres(path: Path, server: str, work: Any) -> Any:
    import uuid

    import psycopg

    from events.copy import copy_store
    from events.pg.connect import with_schema

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = with_schema(server, schema)
        copy_store(path, url)
        return work(url)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run_child(db: Path | str, names: list[str] | None, live: bool, batch: int | None) -> dict[str, float]:
    args = [sys.executable, "-m", "bench.rebuild", "--measure", str(db)]
    for name in names or []:
        args += ["--projection", name]
    if live:
        args.append("--live")
    if batch:
        args += ["--batch", str(batch)]
    os.sync()  # the previous run's writes are not flushed during this one
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--projection", action="append", help="only these projections (repeatable)")
    parser.add_argument("--db", type=Path, help="store file (default: cached under bench/.cache)")
    parser.add_argument("--live", action="store_true", help="project from scratch as live (indexes kept up throughout)")
    parser.add_argument("--batch", type=int, help="events per batch (default: the engine's)")
    parser.add_argument("--postgres", metavar="URL", help="rebuild on this PostgreSQL (a copy of the store, in a schema of its own)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.projection, args.live, args.batch)))
        return
    rows = []
    from projections import default_projections

    each = [[p.name] for p in default_projections()]
    for names in ([args.projection] if args.projection else [*each, None]):
        figures = run(args.events, names, args.db, args.live, args.batch, args.postgres)
        rows.append((", ".join(names) if names else "all projections", figures))
    what = ("live projection" if args.live else "rebuild") + (" on PostgreSQL" if args.postgres else "")
    print(f"\n{what} from {args.events:,} stored events\n")
    print(f"{'projections':<20} {'seconds':>9} {'events/s':>11} {'peak RSS MB':>12}")
    for label, f in rows:
        print(f"{label:<20} {f['seconds']:>9.2f} {f['rate']:>11,.0f} {f['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
