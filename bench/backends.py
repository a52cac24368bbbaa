"""The two backends side by side, in one run: ingest, rebuild and HTTP reads on SQLite and on
PostgreSQL, with one `timeline serve` node and with two.

    .venv/bin/python -m bench.backends                          # 50,000 events
    .venv/bin/python -m bench.backends --events 20000 --seconds 5

For each backend, on an empty store:
  import  ``timeline import FILE`` of the N events (no stream: validate, append, project), then
  rebuild every projection from the N stored events (``ProjectionEngine.rebuild``, as
          ``timeline rebuild`` runs it), in this process.
Then for each node count (1, 2), on an empty store:
  ingest  a publisher process (bench.ingest's) publishes N workload events onto one stream that
          every node consumes (one consumer group: the entries are spread); timed from the first
          XADD until every node's ``GET /projections`` shows every projection at N, lag 0.
  reads   16 keep-alive clients (bench.queries' load, plain HTTP/1.1) ask
          ``GET /entities/{id}/timeline?limit=50`` for Zipf-drawn entities for a fixed time,
          spread evenly over the nodes; requests per second (200s; the share of 404s apart),
          latency, and the CPU the nodes took (on PostgreSQL, the database backends serving
          them too: bench.server.database_backends), so requests per core.
  beside  on the one-node store, the reads again over the writer and a read-only node
          (``TIMELINE_READ_ONLY=1``) started beside it: the row "1 + 1 read-only".

SQLite's "two nodes" are two processes on one file (one machine: the case read-only nodes and
a second writer share); PostgreSQL's are two processes that share only the database and Redis,
as two machines would. Both run on this machine here, with the database server, Redis and the
clients: the figures are ratios between backends on one machine under one load, not the
capacity of a cluster.

PostgreSQL: ``--postgres-url`` or ``POSTGRES_URL`` (each run makes a schema of its own and drops
it), else a server started from the ``pgserver`` package for the run. Redis: ``--redis-url`` or
``REDIS_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from events.pg.connect import with_schema

from .queries import _load
from .server import ROOT, Server, database_backends, database_cpu_seconds, stop_all


READ_ONLY_BESIDE = "1 + 1 read-only"  # the nodes of the row: the writer and a read-only node beside it


def log(message: str) -> None:
    print(f"[bench.backends {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def postgres(url: str | None, *, niceness: int = 0) -> Iterator[str]:
    """A PostgreSQL server's URL: the one given, else pgserver's for the run. That one runs at
    ``niceness`` (its processes and their autogroup, as ``bench.read_scaling --nice`` runs its own):
    the benchmark's database is then raised with the nodes over the machine's other work."""
    if url:
        yield url
        return
    import shutil

    import pgserver  # the test extra
    import psutil

    folder = tempfile.mkdtemp(prefix="bench-pg-")
    os.chmod(folder, 0o755)
    server = pgserver.get_server(os.path.join(folder, "data"), cleanup_mode="stop")
    try:
        pid = server.get_pid()
        if niceness and pid:
            # the backends it forks later inherit the niceness; PostgreSQL starts each process in a
            # session (an autogroup) of its own, whose niceness is set once it runs (read_scaling's)
            for process in (psutil.Process(pid), *psutil.Process(pid).children()):
                process.nice(niceness)
                Path(f"/proc/{process.pid}/autogroup").write_text(str(niceness))
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def store(backend: str, pg_url: str, workdir: Path) -> Iterator[str]:
    """An empty store's TIMELINE_DB: a new SQLite file, or a new PostgreSQL schema (dropped after)."""
    if backend == "sqlite":
        folder = workdir / f"sqlite-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        yield str(folder / "timeline.db")
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_schema(pg_url, schema)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _settled(url: str, n: int, client: httpx.Client) -> bool:
    rows = client.get(f"{url}/projections").json()
    return bool(rows) and all(r["position"] == n and r["lag"] == 0 and r.get("state", "live") == "live" for r in rows)


def _head(db: str) -> int:
    """The store's last position, read straight from it."""
    import sqlite3

    if "://" in db:
        with psycopg.connect(db, autocommit=True) as conn:
            return int(conn.execute("SELECT coalesce(MAX(position), 0) FROM events").fetchone()[0])  # type: ignore[index]
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute("SELECT coalesce(MAX(position), 0) FROM events").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def reads(servers: list[Server], *, clients: int, seconds: float, warmup: float = 1.0) -> dict[str, Any]:
    """``clients`` keep-alive connections spread evenly over ``servers``, for ``seconds`` (after
    ``warmup`` seconds' warm-up): answers (200) a second summed, latency of the slowest node; or ``error``
    when a read failed (a status other than 200 and 404, a connection lost) or none answered."""

    postgres = "://" in str(servers[0].db)
    readings: list[float] = []  # the database backends' CPU at the window's start and end (PostgreSQL)

    def cpu(server: Server) -> Callable[[], float]:
        def read() -> float:
            # the meter reads each node's CPU at the window's start and its end; the first node's
            # reading takes the database backends' too (serving every node, found anew each time)
            if postgres and server is servers[0]:
                readings.append(database_cpu_seconds(database_backends(str(server.db), servers)))
            return server.cpu_seconds()
        return read

    async def everyone() -> list[dict[str, float]]:
        shares = [clients // len(servers) + (1 if i < clients % len(servers) else 0) for i in range(len(servers))]
        return await asyncio.gather(*(_load(s.url, share, seconds, warmup, cpu(s))
                                      for s, share in zip(servers, shares) if share))

    try:
        loads = asyncio.run(everyone())
    except Exception as exc:  # noqa: BLE001 - the ingest figures stand; the table says why reads do not
        return {"error": f"reads: {type(exc).__name__}: {exc}"}
    errors, answers = sum(r["errors"] for r in loads), sum(r["requests"] for r in loads)
    if errors or not answers:
        return {"error": f"reads: {errors} errors, {answers} answers",
                "log": "".join(s.tail()[-1500:] for s in servers)}
    not_found = sum(r["not_found"] for r in loads)
    return {
        "read_rps": sum(r["rps"] for r in loads),
        # per node p50/p99, the worst node's
        "read_p50_ms": max(r["p50_ms"] for r in loads),
        "read_p99_ms": max(r["p99_ms"] for r in loads),
        "read_requests": answers,
        # the share answered 404 (an entity the store never saw): not in read_rps
        "read_not_found": not_found / (answers + not_found),
        "server_cpu": sum(r["server_cpu"] for r in loads),
        **({"database_cpu": (readings[-1] - readings[0]) / seconds} if len(readings) >= 2 else {}),
    }


def ingest_and_read(db: str, nodes: int, n: int, redis_url: str, workdir: Path, *, clients: int,
                    seconds: float, warmup: float = 1.0, beside: bool = False) -> dict[str, Any]:
    """Start ``nodes`` servers on ``db`` sharing one stream; ingest ``n`` events; then reads. With
    ``beside`` (one node), then reads again with a read-only node started beside the writer."""
    servers = [Server(db, redis_url, workdir) for _ in range(nodes)]  # type: ignore[arg-type]
    stream = servers[0].stream
    for server in servers:
        server.stream = stream
        server.env["TIMELINE_STREAM"] = stream
        server.env["TIMELINE_DB"] = db
    publisher = None
    try:
        for server in servers:
            server.start()
        publisher = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bench.ingest", "--publish", "--redis-url", redis_url, "--stream", stream,
             "--events", str(n)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert publisher.stdin is not None and publisher.stdout is not None
        if publisher.stdout.readline().strip() != "ready":
            raise RuntimeError("the publisher process did not start")
        with httpx.Client(timeout=30.0) as client:
            started = time.perf_counter()
            publisher.stdin.write("go\n")
            publisher.stdin.flush()
            deadline = time.monotonic() + 120 + n / 100
            stored_seconds = None
            while not all(_settled(s.url, n, client) for s in servers):
                if stored_seconds is None and _head(db) >= n:  # stored; the projections may lag
                    stored_seconds = time.perf_counter() - started
                for s in servers:
                    if s.process is not None and s.process.poll() is not None:
                        raise RuntimeError(f"timeline serve died during ingest:\n{s.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ingest of {n} events on {nodes} node(s) not settled:\n{servers[0].tail()}")
                time.sleep(0.05)
            ingest_seconds = time.perf_counter() - started
            stored_seconds = stored_seconds or ingest_seconds
        publisher.wait(timeout=60)

        out: dict[str, Any] = {
            "nodes": nodes, "events": n, "ingest_seconds": ingest_seconds, "ingest_rate": n / ingest_seconds,
            # every event in the store (the projections then catch up): the append side's rate
            "stored_rate": n / stored_seconds,
        }
        out.update(reads(servers, clients=clients, seconds=seconds, warmup=warmup))
        if beside and nodes == 1:
            # a read-only node beside the writer, on the store it wrote: reads spread over the two
            reader = Server(db, redis_url, workdir, stream=stream, env={"TIMELINE_READ_ONLY": "1"})  # type: ignore[arg-type]
            servers.append(reader)
            try:
                reader.start()
            except RuntimeError as exc:
                out["beside"] = {"error": f"read-only node: {str(exc).splitlines()[0]}", "log": str(exc)[-3000:]}
            else:
                out["beside"] = reads(servers, clients=clients, seconds=seconds, warmup=warmup)
        return out
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
            publisher.wait()
        stop_all(servers)


def rebuild(db: str) -> dict[str, float]:
    """Every projection rebuilt from the stored events, as ``timeline rebuild`` does."""
    from events.backend import open_store
    from projections import open_engine

    with open_store(db) as s:
        engine = open_engine(s, batch_size=20_000)
        try:
            engine.setup()
            started = time.perf_counter()
            position = engine.rebuild()
            took = time.perf_counter() - started
        finally:
            engine.close()
    return {"events": position, "rebuild_seconds": took, "rebuild_rate": position / took}


def bulk_import(db: str, source: Path, n: int, workdir: Path) -> dict[str, float]:
    """``timeline import FILE`` into an empty store (the stream-less ingest: validate, append in
    transactions of 20,000, then bring the projections up), timed as a user sees it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update({"TIMELINE_DB": db, "PYTHONPATH": str(ROOT)})
    command = [sys.executable, "-m", "timeline.cli", "import", str(source), "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True, timeout=600 + n / 50)  # noqa: S603
    took = time.perf_counter() - started
    if done.returncode != 0 or f"stored {n} " not in done.stdout:
        raise RuntimeError(f"timeline import failed ({done.returncode}): {done.stdout}{done.stderr[-2000:]}")
    return {"import_seconds": took, "import_rate": n / took}


def run(n: int, redis_url: str, pg_url: str, *, clients: int = 16, seconds: float = 10.0, warmup: float = 1.0,
        backends: tuple[str, ...] = ("sqlite", "postgres")) -> dict[str, Any]:
    from .workload import lines

    out: dict[str, Any] = {"events": n, "load_before": os.getloadavg(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        workdir = Path(tmp)
        source = workdir / "events.jsonl"
        with open(source, "wb") as fh:
            for line in lines(n):
                fh.write(line + b"\n")
        for backend in backends:
            with store(backend, pg_url, workdir) as db:
                log(f"{backend}: timeline import of {n:,} events, then a rebuild of every projection")
                row: dict[str, Any] = {"backend": backend, "nodes": 1, **bulk_import(db, source, n, workdir)}
                row.update(rebuild(db))
            for nodes in (1, 2):
                if nodes == 2:
                    row = {"backend": backend, "nodes": 2}
                beside: dict[str, Any] | None = None
                with store(backend, pg_url, workdir) as db:
                    log(f"{backend}, {nodes} node(s): ingest {n:,} events through the stream, then reads"
                        + (", then reads with a read-only node beside the writer" if nodes == 1 else ""))
                    try:
                        row.update(ingest_and_read(db, nodes, n, redis_url, workdir, clients=clients, seconds=seconds,
                                                   warmup=warmup, beside=nodes == 1))
                    except Exception as exc:  # noqa: BLE001 - the other rows still count; the table says why
                        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        log(f"{backend}, {nodes} node(s): {row['error']}")
                    beside = row.pop("beside", None)
                for done in (row, *([{"backend": backend, "nodes": READ_ONLY_BESIDE, **beside}] if beside else [])):
                    if "log" in done:
                        log(f"{done['backend']}, {done['nodes']}: {done['error']}; the servers' log ends:\n{done.pop('log')}")
                    out["rows"].append(done)
                    log(json.dumps(done))
    out["load_after"] = os.getloadavg()
    return out


def table(result: dict[str, Any]) -> str:
    def num(row: dict[str, Any], key: str, fmt: str = "{:,.0f}") -> str:
        return fmt.format(row[key]) if key in row else "—"

    lines = [
        f"{result['events']:,} events; load average before {result['load_before'][0]:.1f}, after"
        f" {result['load_after'][0]:.1f}",
        "",
        "| backend | nodes | stream ingest, projected (events/s) | of which stored (events/s) | import (events/s) |"
        " rebuild (events/s) | HTTP reads (req/s) | p50 / p99 (ms) | reads' CPU: servers + database (cores) |"
        " reads per core (req/s) | 404 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        latency = f"{r['read_p50_ms']:.1f} / {r['read_p99_ms']:.1f}" if "read_p50_ms" in r else "—"
        cores = r.get("server_cpu", 0.0) + r.get("database_cpu", 0.0)
        used = (f"{r['server_cpu']:.2f}" + (f" + {r['database_cpu']:.2f}" if "database_cpu" in r else "")
                if "server_cpu" in r else "—")
        per_core = f"{r['read_rps'] / cores:,.0f}" if "read_rps" in r and cores else "—"
        lines.append(
            f"| {r['backend']} | {r['nodes']} | {num(r, 'ingest_rate')} | {num(r, 'stored_rate')} | {num(r, 'import_rate')} |"
            f" {num(r, 'rebuild_rate')} | {num(r, 'read_rps')} | {latency} | {used} | {per_core} |"
            f" {num(r, 'read_not_found', '{:.0%}')} |"
        )
    errors = [f"{r['backend']}, {r['nodes']}{' node(s)' if isinstance(r['nodes'], int) else ''}: {r['error']}"
              for r in result["rows"] if "error" in r]
    lines += [""] + [f"not measured: {e}" for e in errors] if errors else []
    rows = {(r["backend"], r["nodes"]): r for r in result["rows"]}
    s, p = rows.get(("sqlite", 1), {}), rows.get(("postgres", 1), {})
    ratios = [f"{label} {p[key] / s[key]:.2f}×" for label, key in
              (("stream ingest", "ingest_rate"), ("stored", "stored_rate"), ("import", "import_rate"),
               ("rebuild", "rebuild_rate"),
               ("reads", "read_rps")) if key in s and key in p]
    if ratios:
        lines += ["", "PostgreSQL / SQLite, one node: " + ", ".join(ratios)]
    for backend in ("sqlite", "postgres"):
        one = rows.get((backend, 1), {}).get("read_rps")
        more = [f"{label} {rows[(backend, nodes)]['read_rps'] / one:.2f}×" for label, nodes in
                (("two nodes", 2), ("the writer + a read-only node", READ_ONLY_BESIDE))
                if one and "read_rps" in rows.get((backend, nodes), {})]
        if more:
            lines.append(f"{backend} reads against one node: " + ", ".join(more))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="HTTP reads: measured for this long")
    parser.add_argument("--warmup", type=float, default=1.0, help="HTTP reads: warmed up for this long first")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--postgres-url", default=os.environ.get("POSTGRES_URL"))
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"], help="only this one (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error("give --redis-url or set REDIS_URL")
    with postgres(args.postgres_url) as pg_url:
        result = run(args.events, args.redis_url, pg_url, clients=args.clients, seconds=args.seconds,
                     warmup=args.warmup, backends=tuple(args.backend or ("sqlite", "postgres")))
    print(table(result))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
