"""Reads as of an instant: the entity card and a timeline page of the busiest entity, as of
several points of a store whose later part corrects and retracts earlier events.

N workload events are stored (cached, as for the rebuild benchmark) and projected; then C
corrections and retractions of random earlier events are appended and projected in ten batches,
each recorded at its own instant. For ``entity-0`` (the busiest) and a rare entity, it times
``Queries.entity(id, as_of=...)`` and ``Queries.timeline(id, limit=50, as_of=...)`` as of: the
first quarter of the events, the end of the events, the middle of the corrections, and now
(no ``as_of``): p50 and p99 of many calls, in process.

    .venv/bin/python -m bench.as_of                         # 200,000 events, 4,000 corrections
    .venv/bin/python -m bench.as_of --events 20000 --corrections 400
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from events.models import parse_event_bytes
from events.store import Candidate, EventStore

from .corrections import changes
from .queries import BUSY, percentile, rare_entity
from .rebuild import fresh_copy


def timed(call, calls: int) -> tuple[float, float]:
    for _ in range(min(10, calls)):
        call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return percentile(samples, 50) * 1000, percentile(samples, 99) * 1000


def run(n: int, count: int, workdir: Path, calls: int) -> list[tuple[str, str, float, float]]:
    from projections import ProjectionEngine, default_projections
    from projections.queries import Queries, TimelineQuery

    path = fresh_copy(n, workdir / "as_of.db")
    store = EventStore(path)
    instants: dict[str, str | None] = {}
    try:
        with ProjectionEngine(store, default_projections(), batch_size=20_000) as engine:
            engine.setup()
            engine.rebuild(force=True)
            raws = changes(n, count)
            for i in range(10):
                part = raws[i * len(raws) // 10 : (i + 1) * len(raws) // 10]
                store.append([Candidate(parse_event_bytes(raw), raw) for raw in part])
                engine.catch_up()
                time.sleep(0.002)
        instants["a quarter of the events"] = store.read(n // 4 - 1, 1)[0].recorded_at
        instants["the end of the events"] = store.read(n - 1, 1)[0].recorded_at
        instants["mid-corrections"] = store.read(n + count // 2 - 1, 1)[0].recorded_at
        instants["now (no as_of)"] = None
    finally:
        store.close()
    rare, _ = rare_entity(path)
    queries = Queries(str(path))
    rows = []
    try:
        for entity in (BUSY, rare):
            for label, as_of in instants.items():
                card = timed(lambda: queries.entity(entity, as_of=as_of), calls)
                page = timed(lambda: queries.timeline(entity, TimelineQuery(limit=50, as_of=as_of)), calls)
                rows.append((entity, label, *card, *page))
    finally:
        queries.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--corrections", type=int, default=4_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--keep", type=Path, default=None, help="build the store in this folder and keep it")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        rows = run(args.events, args.corrections, args.keep, args.calls)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-as-of-") as tmp:
            rows = run(args.events, args.corrections, Path(tmp), args.calls)
    print(f"{'entity':<14} {'as of':<24} {'card p50':>9} {'card p99':>9} {'page p50':>9} {'page p99':>9}  (ms)")
    for entity, label, c50, c99, p50, p99 in rows:
        print(f"{entity:<14} {label:<24} {c50:9.2f} {c99:9.2f} {p50:9.2f} {p99:9.2f}")


if __name__ == "__main__":
    main()
