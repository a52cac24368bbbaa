"""The store's append alone against the peer's append alone, on the same events, in one run.

    .venv/bin/python -m bench.append                  # 100,000 events, batches of 2,000
    .venv/bin/python -m bench.append --events 20000

The peer (bench/peer.py) times ``Application.save`` of aggregates built from the decoded JSON
(the decoding outside its timing). Ours is timed two ways on the same events and batches:

  append: ``EventStore.append`` of candidates validated outside the timing: the store's own work
    (ids and conflicts, the hash chain, the events with their entity and fact rows, the commit);
  validate + append: from each event's JSON line: ``parse_event_bytes`` (decoding and the
    contract's validation, which the peer does not do: its timing starts from decoded JSON and
    builds its aggregates), then the append.

Each in this process on a fresh file in a temporary folder; the peer in its child process. CPU
time (``time.process_time``) beside wall time: the machine is shared.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from . import peer
from .workload import lines


def ours(n: int, batch: int, validate_inside: bool) -> dict[str, float]:
    from events.models import parse_event_bytes
    from events.store import Candidate, EventStore

    raws = list(lines(n))
    with tempfile.TemporaryDirectory(prefix="bench-append-") as tmp:
        store = EventStore(Path(tmp) / "t.db")
        try:
            wall = cpu = 0.0
            for i in range(0, n, batch):
                chunk = raws[i : i + batch]
                if not validate_inside:
                    candidates = [Candidate(parse_event_bytes(raw), raw) for raw in chunk]
                started, started_cpu = time.perf_counter(), time.process_time()
                if validate_inside:
                    candidates = [Candidate(parse_event_bytes(raw), raw) for raw in chunk]
                results = store.append(candidates)
                wall += time.perf_counter() - started
                cpu += time.process_time() - started_cpu
                assert len(results) == len(chunk)
        finally:
            store.close()
    return {"rate": n / wall, "cpu_us": cpu / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000, help="events per transaction (the peer's too)")
    parser.add_argument("--no-peer", action="store_true", help="ours only")
    args = parser.parse_args()
    with_peer = not args.no_peer and peer.available()
    if not with_peer and not args.no_peer:
        print("the peer is not installed (pip install -e '.[bench]'): ours only", file=sys.stderr)
    rows = []
    for _ in range(2):  # alternate, so that the machine's moods fall on both
        rows.append(("ours: append", ours(args.events, args.batch, validate_inside=False)))
        rows.append(("ours: validate + append", ours(args.events, args.batch, validate_inside=True)))
        if with_peer:
            p = peer.run(args.events, batch=args.batch)
            rows.append(("peer: append", {"rate": p["append_rate"], "cpu_us": float("nan")}))
    peer_rates = [r["rate"] for name, r in rows if name == "peer: append"]
    print(f"{args.events:,} events, batches of {args.batch:,}; two rounds, alternating")
    for name, r in rows:
        cpu = "" if r["cpu_us"] != r["cpu_us"] else f", {r['cpu_us']:.1f} µs of CPU an event"
        print(f"  {name:<26} {r['rate']:>9,.0f} events/s{cpu}")
    for name in ("ours: append", "ours: validate + append") if with_peer else ():
        rates = [r["rate"] for n_, r in rows if n_ == name]
        print(f"  {name} ÷ peer append: {rates[0] / peer_rates[0]:.2f} / {rates[1] / peer_rates[1]:.2f} (round 1 / 2)")


if __name__ == "__main__":
    main()
