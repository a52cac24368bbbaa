"""Erasure: what erasing one event costs on a store of N benchmark events.

N workload events are stored and projected (a rebuild), an event gets three corrections, then K
events (it first) are erased one after the other, each the way the service does it
(``timeline.erasing.erase_stored`` without Redis): the store's transaction with
``secure_delete`` and the log truncated, then every projection's rows removed and the
full-text index merged into one segment. Prints the median and the largest seconds of each part.

    .venv/bin/python -m bench.erasure                      # 200,000 events, 5 erasures
    .venv/bin/python -m bench.erasure --events 20000 --erasures 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from events.erasure import erase
from events.models import parse_event_bytes
from events.store import Candidate, EventStore

from .rebuild import fresh_copy


def run(n: int, count: int, workdir: Path) -> dict[str, float]:
    from projections import ProjectionEngine, default_projections
    from projections.erasure import capture

    path = fresh_copy(n, workdir / "erasure.db")
    store = EventStore(path)
    try:
        with ProjectionEngine(store, default_projections(), batch_size=20_000) as engine:
            engine.setup()
            engine.rebuild(force=True)
            first = store.read(0, 1)[0].event_id
            fixes = [json.dumps({"id": f"bench-erasure-fix-{k}", "kind": "correction", "occurred_at": "2025-06-01",
                                 "details": {"corrects": first, "changes": {"headline": f"fixed {k}"}}}).encode()
                     for k in range(3)]
            store.append([Candidate(parse_event_bytes(raw), raw) for raw in fixes])
            engine.catch_up()
            step = max(1, n // count)
            targets = [first, *(e.event_id for e in (store.read(i * step, 1)[0] for i in range(1, count)))]
            store_s, projections_s = [], []
            for target in targets:
                gone: list = []
                started = time.perf_counter()
                erase(store, target, "bench", "bench", before=lambda s, t=target: gone.append(capture(s, t)))
                middle = time.perf_counter()
                if gone[0] is not None:
                    engine.remove(gone[0])
                store_s.append(middle - started)
                projections_s.append(time.perf_counter() - middle)
    finally:
        store.close()
    return {
        "events": n, "erasures": count,
        "store_median_s": statistics.median(store_s), "store_max_s": max(store_s),
        "projections_median_s": statistics.median(projections_s), "projections_max_s": max(projections_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--erasures", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-erasure-") as tmp:
        print(json.dumps(run(args.events, args.erasures, Path(tmp))))


if __name__ == "__main__":
    main()
