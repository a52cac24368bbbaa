"""HTTP reads with one and with two read-only processes beside the writer (docs/read-only.md).

A writer (``timeline serve``) and two read-only nodes (``TIMELINE_READ_ONLY=1``) run over the
benchmark's SQLite store (``--events`` workload events, built once and cached in bench/.cache,
as ``python -m bench.queries`` does). Clients ask ``GET /entities/{id}/timeline?limit=50`` for
entities drawn with the workload's Zipf weights, on keep-alive connections, for a fixed time:

- ``1 read-only``: every connection to the first read-only node;
- ``2 read-only``: half of them to each read-only node (separate ports: uvicorn has no
  SO_REUSEPORT option, and the kernel's hashing of connections over a shared port would split
  16 connections unevenly, measuring the split rather than the processes);
- ``writer + 1 read-only``: half to the writer, half to a read-only node;
- ``writer alone``: every connection to the writer (the one process of ``bench.queries``).

The configurations alternate (``--rounds``), so a change in the machine's load falls on all of
them; each is warmed up for a second first (``--warmup``).

The load generator needs CPU too, on the same two cores. It is ``wrk`` when installed (C, epoll:
``apt-get install wrk``; a Lua script draws the paths), which costs a few hundredths of a core at
these rates; else the benchmark's own asyncio client (plain HTTP/1.1 over asyncio streams, as
``bench.queries`` runs it), which costs a tenth to a fifth of the server's CPU a request. Either
way the generator's CPU is measured and printed beside the servers', with the requests per
second of server CPU, so that what the generator took from the servers can be read off.

``--backend postgres``: the same over a PostgreSQL store (``--postgres-url`` or ``POSTGRES_URL``,
a schema of the run's own, dropped after; else a server from the ``pgserver`` package), filled
by ``timeline import`` of the ``--events`` workload events (not cached). The database server
does part of each read's work in its own processes (a backend a connection of a node's reader
pool): their CPU over the measuring window is printed ("database CPU"), read from ``/proc`` for
the backends ``pg_stat_activity`` shows connected from the nodes' sockets (when the server runs
on this machine). ``--own-postgres`` starts a server of the run's own (pgserver) even with
``POSTGRES_URL`` set, so that ``--nice`` raises it with the nodes (its processes, and the
autogroup of each: PostgreSQL starts each process in a session of its own); a shared server
keeps its niceness. ``--pin`` pins the nodes, not the database
server: on two cores its backends run on whichever core is free, so the "1 read-only"
configuration gets more than the one core its process is pinned to.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from events.backend import is_postgres
from projections.engine import projection_path

from .queries import _get, _zipf_ids, percentile
from .server import Server, cpu_seconds, database_backends, redis_url_or_embedded, stop_all

PATH = "/entities/{}/timeline?limit=50"
LUA = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local i = tonumber(os.getenv("BENCH_OFFSET")) or 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
"""


def _wrk_run(targets: list[str], connections: int, seconds: float, workdir: Path) -> dict[str, Any]:
    """One wrk process a target (one thread each), ``connections`` split between them; their
    requests/s summed, latency percentiles of the slowest, CPU of the wrk processes."""
    script = workdir / "paths.lua"
    script.write_text(LUA)
    procs = []
    for i, url in enumerate(targets):
        share = connections // len(targets) + (1 if i < connections % len(targets) else 0)
        env = {**os.environ, "BENCH_PATHS": str(workdir / "paths.txt"), "BENCH_OFFSET": str(i * 7919)}
        procs.append(subprocess.Popen(  # noqa: S603
            ["wrk", "-t1", f"-c{share}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        ))
    time.sleep(0.2)
    cpu0 = sum(_cpu(p.pid) for p in procs)
    outs = []
    cpu1 = cpu0
    while any(p.poll() is None for p in procs):
        cpu1 = max(cpu1, sum(_cpu(p.pid) for p in procs))
        time.sleep(0.1)
    outs = [p.communicate()[0] for p in procs]
    figures: dict[str, Any] = {"rps": 0.0, "errors": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    for out in outs:
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if rps is None:
            raise RuntimeError(f"wrk did not report a rate:\n{out}")
        figures["rps"] += float(rps.group(1))
        non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        figures["non_2xx"] = figures.get("non_2xx", 0) + (int(non.group(1)) if non else 0)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        figures["errors"] += sum(int(x) for x in errors.groups()) if errors else 0
        for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
            found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
            if found:
                value = float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
                figures[key] = max(figures[key], value)
    figures["generator_cpu_seconds"] = cpu1 - cpu0  # up to the last look before wrk exited
    return figures


def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


async def _asyncio_run(targets: list[str], connections: int, seconds: float, paths: list[str]) -> dict[str, Any]:
    samples: list[float] = []
    counter = errors = non_2xx = 0
    stop_at = time.perf_counter() + seconds

    async def worker(url: str, offset: int) -> None:
        nonlocal counter, errors, non_2xx
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        i = offset
        try:
            while time.perf_counter() < stop_at:
                i += 1
                started = time.perf_counter()
                try:
                    status = await _get(reader, writer, host, paths[i % len(paths)])
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    return
                ended = time.perf_counter()
                if ended <= stop_at:
                    samples.append(ended - started)
                    non_2xx += status >= 300
        finally:
            writer.close()

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(targets[c % len(targets)], c * 7919) for c in range(connections)))
    return {
        "rps": len(samples) / seconds, "errors": errors, "non_2xx": non_2xx,
        "p50_ms": percentile(samples, 50) * 1000, "p99_ms": percentile(samples, 99) * 1000,
        "generator_cpu_seconds": time.process_time() - cpu0,
    }


def load(targets: list[str], connections: int, seconds: float, workdir: Path, paths: list[str], generator: str) -> dict[str, Any]:
    if generator == "wrk":
        return _wrk_run(targets, connections, seconds, workdir)
    return asyncio.run(_asyncio_run(targets, connections, seconds, paths))


def busy_seconds() -> float:
    """CPU time spent by the whole machine so far (every core; /proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def measure(
    servers: dict[str, Server], config: list[str], connections: int, seconds: float, workdir: Path,
    paths: list[str], generator: str, db: str | None = None, database_niceness: int = 0, warmup: float = 1.0,
) -> dict[str, Any]:
    targets = [servers[name].url for name in config]
    if warmup:  # (none in a smoke run)
        load(targets, connections, warmup, workdir, paths, generator)  # warm-up: connections, caches
    backends = database_backends(db, [servers[name] for name in config]) if db else set()
    if database_niceness:
        # PostgreSQL puts each backend in a session (so an autogroup) of its own: the niceness it
        # inherited weighs only within that group, the group's own against the machine's others
        for pid in backends:
            try:
                Path(f"/proc/{pid}/autogroup").write_text(str(database_niceness))
            except OSError:
                pass
    before = {name: s.cpu_seconds() for name, s in servers.items()}
    database = {pid: _cpu(pid) for pid in backends}
    machine = busy_seconds()
    started = time.perf_counter()
    figures = load(targets, connections, seconds, workdir, paths, generator)
    wall = time.perf_counter() - started
    figures["server_cores"] = {name: (s.cpu_seconds() - before[name]) / wall for name, s in servers.items()}
    if db:
        # backends opened during the window count from their start (their CPU then is all the window's)
        later = database_backends(db, [servers[name] for name in config]) - backends
        figures["database_cores"] = (sum(_cpu(pid) - cpu for pid, cpu in database.items())
                                     + sum(_cpu(pid) for pid in later)) / wall
    figures["generator_cores"] = figures.pop("generator_cpu_seconds") / wall
    # what everything else on the machine took meanwhile (other users' work, the kernel's)
    figures["other_cores"] = max(
        0.0, (busy_seconds() - machine) / wall - sum(figures["server_cores"].values()) - figures["generator_cores"]
        - figures.get("database_cores", 0.0)
    )
    return figures


def known_entities(store: Path | str, ids: list[str]) -> set[str]:
    """Those of ``ids`` the entity directory holds (the others would be answered 404)."""
    import sqlite3

    if is_postgres(str(store)):
        import psycopg

        with psycopg.connect(str(store), autocommit=True) as pg:
            row = pg.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = 'entities'").fetchone()
            assert row is not None, "no entity directory in the store"
            return {r[0] for r in pg.execute(f"SELECT id FROM ent_stats{row[0]} WHERE id = ANY(%s)", (sorted(set(ids)),))}

    conn = sqlite3.connect(f"file:{projection_path(store, 'entities')}?mode=ro", uri=True)
    try:
        (tag,) = conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = 'entities'").fetchone()
        wanted = sorted(set(ids))
        found: set[str] = set()
        for i in range(0, len(wanted), 900):
            chunk = wanted[i : i + 900]
            found |= {row[0] for row in conn.execute(
                f"SELECT id FROM ent_stats{tag} WHERE id IN ({','.join('?' * len(chunk))})", chunk)}
        return found
    finally:
        conn.close()


CONFIGS = {
    "writer alone": ["writer"],
    "1 read-only": ["read-1"],
    "2 read-only": ["read-1", "read-2"],
    "writer + 1 read-only": ["writer", "read-1"],
}


def generator_in_use() -> str:
    """``wrk`` when installed, else the asyncio client."""
    return "wrk" if shutil.which("wrk") else "asyncio"


def run(
    store: Path | str, redis_url: str, *, connections: int, seconds: float, rounds: int, generator: str, pin: bool = False,
    configs: list[str] | None = None, database_niceness: int = 0, warmup: float = 1.0,
) -> dict[str, list[dict[str, Any]]]:
    """Each configuration (``CONFIGS``, or those named) measured ``rounds`` times, alternating;
    with ``database_niceness``, the database backends serving the nodes raised (a server of the
    run's own)."""
    chosen = {name: CONFIGS[name] for name in (configs or CONFIGS)}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    with tempfile.TemporaryDirectory(prefix="bench-read-scaling-") as tmp:
        work = Path(tmp)
        ids = _zipf_ids(100_000)
        known = known_entities(store, ids)
        paths = [PATH.format(entity) for entity in ids if entity in known]  # every answer a 200
        (work / "paths.txt").write_text("\n".join(paths) + "\n")
        writer = Server(store, redis_url, work).start()  # type: ignore[arg-type]
        servers = {"writer": writer}
        try:
            for cpu, name in enumerate(("read-1", "read-2")):  # the two start together
                servers[name] = Server(store, redis_url, work, stream=writer.stream, env={"TIMELINE_READ_ONLY": "1"},  # type: ignore[arg-type]
                                       prefix=["taskset", "-c", str(cpu)] if pin else None).launch()
            for name in ("read-1", "read-2"):
                servers[name].wait_healthy()
            for _ in range(rounds):
                for label, config in chosen.items():
                    results[label].append(measure(servers, config, connections, seconds, work, paths, generator,
                                                  db=str(store) if is_postgres(str(store)) else None,
                                                  database_niceness=database_niceness, warmup=warmup))
        finally:
            stop_all(list(reversed(servers.values())))
    return results


def _autogroup() -> str:
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return "no autogroup"


@contextmanager
def postgres_store(url: str | None, events: int, *, niceness: int = 0) -> Iterator[str]:
    """A PostgreSQL store of ``events`` workload events, projections built (``timeline import``),
    in a schema of its own (dropped after); on the server at ``url``, else on one started for the
    run (at ``niceness``)."""
    from . import backends
    from .workload import lines

    with backends.postgres(url, niceness=niceness) as pg_url, tempfile.TemporaryDirectory(prefix="bench-read-scaling-pg-") as tmp:
        work = Path(tmp)
        source = work / "events.jsonl"
        with open(source, "wb") as fh:
            for line in lines(events):
                fh.write(line + b"\n")
        with backends.store("postgres", pg_url, work) as db:
            started = time.perf_counter()
            backends.bulk_import(db, source, events, work)
            print(f"store: PostgreSQL, {events:,} events imported in {time.perf_counter() - started:.1f} s")
            yield db


def main(argv: list[str] | None = None) -> None:
    from . import rebuild

    parser = argparse.ArgumentParser(
        prog="python -m bench.read_scaling", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="stored events (SQLite: cached in bench/.cache)")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("POSTGRES_URL") or None,
                        help="--backend postgres: default POSTGRES_URL, else a server from pgserver for the run")
    parser.add_argument("--own-postgres", action="store_true",
                        help="--backend postgres: a server from pgserver for the run even with POSTGRES_URL set;"
                             " with --nice it runs at that niceness too (a shared server keeps its own)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time of each configuration")
    parser.add_argument("--rounds", type=int, default=3, help="times each configuration is measured, alternating")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up time before each measurement (seconds)")
    parser.add_argument("--generator", choices=("auto", "wrk", "asyncio"), default="auto",
                        help="load generator (auto: wrk when installed, else the asyncio client)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or None,
                        help="default: REDIS_URL, else a private redis-server")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the servers and the generator at this niceness (e.g. -10, as root: on a machine"
                             " shared with other work, theirs then takes little of the two cores; not the database"
                             " server's)")
    parser.add_argument("--pin", action="store_true",
                        help="each read-only process on a core of its own (taskset): one core against two")
    args = parser.parse_args(argv)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every process started below
        # With the kernel's autogroups, niceness weighs only within a session's group: the group's
        # own (this session's, which the processes below join) weighs it against the others'.
        try:
            Path("/proc/self/autogroup").write_text(str(args.nice))
        except OSError:
            pass
    generator = args.generator if args.generator != "auto" else generator_in_use()
    with ExitStack() as stack:
        if args.backend == "postgres":
            store: Path | str = stack.enter_context(postgres_store(
                None if args.own_postgres else args.postgres_url, args.events, niceness=args.nice))
            if args.nice and not args.own_postgres and args.postgres_url:
                print(f"note: --nice {args.nice} raises the nodes and the generator, not the database server"
                      " (POSTGRES_URL's, shared): --own-postgres to raise a server of the run's own too")
        else:
            store = rebuild.CACHE / f"bench-{args.events}.db"
            if not projection_path(store, "timelines").exists():
                rebuild.run(args.events)  # fills the store, then builds the projections
        url = stack.enter_context(redis_url_or_embedded(args.redis_url))
        print(f"load before: {os.getloadavg()[0]:.2f} (1 min); {os.cpu_count()} cores; generator: {generator};"
              f" niceness {os.getpriority(os.PRIO_PROCESS, 0)} ({_autogroup()}){'; pinned' if args.pin else ''};"
              f" backend: {args.backend}")
        results = run(store, url, connections=args.connections, seconds=args.seconds, rounds=args.rounds,
                      generator=generator, pin=args.pin, warmup=args.warmup,
                      database_niceness=args.nice if args.backend == "postgres" and args.own_postgres else 0)
        print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    pg = args.backend == "postgres"
    print(f"\nHTTP reads ({args.backend}), {args.events:,} events, {args.connections} connections, {args.seconds:g} s each,"
          f" {args.rounds} rounds alternating (median round)\n")
    print(f"{'configuration':<22} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7} {'servers CPU':>12}"
          + (f" {'database CPU':>13}" if pg else "")
          + f" {'generator CPU':>14} {'others CPU':>11} {'req/s per server core':>22}"
          + (f" {'per server+db core':>19}" if pg else "") + "   rounds req/s")
    medians: dict[str, dict[str, Any]] = {}
    for label, rows in results.items():
        ordered = sorted(rows, key=lambda r: r["rps"])
        mid = medians[label] = ordered[len(ordered) // 2]
        server_cores = sum(mid["server_cores"][n] for n in CONFIGS[label])
        database_cores = mid.get("database_cores", 0.0)
        print(
            f"{label:<22} {mid['rps']:>8,.0f} {mid['p50_ms']:>7.1f} {mid['p99_ms']:>7.1f} {mid['non_2xx'] + mid['errors']:>7}"
            f" {server_cores:>12.2f}" + (f" {database_cores:>13.2f}" if pg else "")
            + f" {mid['generator_cores']:>14.2f} {mid['other_cores']:>11.2f}"
            f" {mid['rps'] / max(server_cores, 1e-9):>22,.0f}"
            + (f" {mid['rps'] / max(server_cores + database_cores, 1e-9):>19,.0f}" if pg else "")
            + f"   {', '.join(format(r['rps'], ',.0f') for r in rows)}"
        )
    one, two = results["1 read-only"], results["2 read-only"]
    per_round = [b["rps"] / a["rps"] for a, b in zip(one, two)]
    print(f"\n2 read-only / 1 read-only: {medians['2 read-only']['rps'] / medians['1 read-only']['rps']:.2f}x"
          f" (per round: {', '.join(format(r, '.2f') for r in per_round)})")
    # The cores the median rounds used: what the second process adds in cores alone, whatever
    # the other work on the machine did to each rate.
    used = [sum(medians[label]["server_cores"][n] for n in CONFIGS[label]) + medians[label].get("database_cores", 0.0)
            for label in ("1 read-only", "2 read-only")]
    print(f"{'server and database' if pg else 'server'} cores used: 1 read-only {used[0]:.2f}, 2 read-only {used[1]:.2f}:"
          f" {used[1] / max(used[0], 1e-9):.2f}x (the ratio at equal requests per core)")


if __name__ == "__main__":
    main()
