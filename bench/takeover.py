"""Taking over a dead consumer's entries: how fast a ``timeline serve`` stores what another
consumer read and never acknowledged (docs/performance.md, "Session 12").

``python -m bench.takeover [--n 4000] [--runs 3] [--other DIR]``: for each run, ``n`` valid
events are added to a fresh stream and read by a consumer named ``dead`` (``XREADGROUP``, never
acknowledged); then ``timeline serve`` starts (``TIMELINE_CLAIM_IDLE_SECONDS=1``, a store of
its own: a SQLite file, or with ``--backend postgres`` a schema of ``--postgres-url`` or
``POSTGRES_URL``, else of a pgserver started for the run) and takes them over. Timed from its first ``/health`` 200 (the entries are idle by
then: a start takes seconds) to nothing pending; the rate counts the entries still pending at
that first 200. With ``--other`` (a source tree, e.g. ``git archive main``), each run starts that
tree's server too, in turn with this one (the order alternating), for paired figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import redis

from .backends import postgres, store
from .server import ROOT, Server, redis_url_or_embedded
from .workload import lines

GROUP = "store"


def leave_pending(client: redis.Redis, stream: str, n: int) -> None:
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    with client.pipeline(transaction=False) as pipe:
        for line in lines(n):
            pipe.xadd(stream, {"event": line})
        pipe.execute()
    read = client.xreadgroup(GROUP, "dead", {stream: ">"}, count=n + 1)
    assert len(read[0][1]) == n


def one(root: Path, redis_url: str, n: int, workdir: Path, db: str) -> dict[str, object]:
    server = Server(db, redis_url, workdir, env={"PYTHONPATH": str(root), "TIMELINE_CLAIM_IDLE_SECONDS": "1"})  # type: ignore[arg-type]
    client = redis.Redis.from_url(redis_url)
    try:
        leave_pending(client, server.stream, n)
        load = os.getloadavg()[0]
        server.start()
        started = time.monotonic()
        left = int(client.xpending(server.stream, GROUP)["pending"])
        while int(client.xpending(server.stream, GROUP)["pending"]):
            time.sleep(0.05)
            if time.monotonic() - started > 900:
                raise RuntimeError(f"not taken over within 900 s:\n{server.tail()}")
        seconds = time.monotonic() - started
        consumer = httpx.get(f"{server.url}/health", timeout=30).json().get("consumer", {})
        return {
            "root": str(root), "entries": left, "seconds": round(seconds, 2),
            "events_per_s": round(left / seconds, 1), "batches": consumer.get("batches"),
            "load": round(load, 1),
        }
    finally:
        server.stop()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--other", type=Path, help="another source tree, run in turn with this one")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("POSTGRES_URL"))
    args = parser.parse_args()
    roots = [ROOT] if args.other is None else [args.other.resolve(), ROOT]
    with (
        redis_url_or_embedded(args.redis_url) as url,
        tempfile.TemporaryDirectory(prefix="bench-takeover-") as tmp,
        postgres(args.postgres_url if args.backend == "postgres" else "unused") as pg_url,
    ):
        for run in range(args.runs):
            for root in roots if run % 2 == 0 else roots[::-1]:
                with store(args.backend, pg_url, Path(tmp)) as db:
                    result = one(root, url, args.n, Path(tmp), db)
                print(json.dumps({"run": run, "backend": args.backend, **result}), flush=True)


if __name__ == "__main__":
    main()
