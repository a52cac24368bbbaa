"""Corrections: the live projections taking corrections and retractions of earlier events.

N workload events are stored and projected; then C events correct (a new date) or retract (half
each) events drawn at random among them, and the four projections catch up on those C. What it
measures is the path that takes an event away from its entities and pairs: counts and dates
kept exact without rescanning busy entities.

    .venv/bin/python -m bench.corrections                       # 200,000 events, 4,000 corrections
    .venv/bin/python -m bench.corrections --events 20000 --corrections 400
    .venv/bin/python -m bench.corrections --storm 1000          # 1,000 corrections of one event

``--storm N``: N corrections of one event against N ordinary events, each appended in a
transaction of its own and projected by all four before the next (a lone event arriving live):
the n-th correction should cost what the first did, so the two times should be alike.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from events.models import parse_event_bytes
from events.store import Candidate, EventStore

from .rebuild import fresh_copy


def changes(n: int, count: int, *, seed: int = 5) -> list[bytes]:
    """``count`` corrections and retractions (alternating) of workload events drawn among ``n``."""
    rng = random.Random(seed)
    out = []
    for j in range(count):
        target = f"bench-7-{rng.randrange(n)}"  # the workload's ids (bench/workload.py, seed 7)
        if j % 2:
            event: dict[str, Any] = {"id": f"bench-retraction-{j}", "kind": "retraction", "occurred_at": "2025-06-02",
                                     "details": {"retracts": target, "reason": "the story was false"}}
        else:
            event = {"id": f"bench-correction-{j}", "kind": "correction", "occurred_at": "2025-06-01",
                     "details": {"corrects": target, "changes": {"occurred_at": f"{rng.randint(2015, 2025)}-0{rng.randint(1, 9)}"}}}
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


def run(n: int, count: int, workdir: Path) -> dict[str, float]:
    from projections import ProjectionEngine, default_projections

    path = fresh_copy(n, workdir / "corrections.db")
    store = EventStore(path)
    try:
        with ProjectionEngine(store, default_projections(), batch_size=20_000) as engine:
            engine.setup()
            engine.rebuild(force=True)
            results = store.append([Candidate(parse_event_bytes(raw), raw) for raw in changes(n, count)])
            stored = sum(r.status == "stored" for r in results)
            if stored != count:
                raise RuntimeError(f"{count - stored} of the corrections were not stored: {results[:3]}")
            started = time.perf_counter()
            position = engine.catch_up()
            seconds = time.perf_counter() - started
            if position != n + count:
                raise RuntimeError(f"projections reached {position}, not {n + count}")
    finally:
        store.close()
    return {"events": n, "corrections": count, "seconds": seconds, "rate": count / seconds}


def storm(count: int, workdir: Path) -> dict[str, float]:
    """``count`` corrections of one event, then ``count`` ordinary events, one a transaction, each
    appended and projected before the next; the seconds of each."""
    from projections import ProjectionEngine, default_projections

    def one(raw: bytes) -> None:
        [result] = store.append([Candidate(parse_event_bytes(raw), raw)])
        if result.status != "stored":
            raise RuntimeError(f"not stored: {result}")
        engine.catch_up()

    def news(event_id: str) -> bytes:
        return json.dumps({"id": event_id, "kind": "outage", "occurred_at": "2025-05-24", "headline": event_id,
                           "entities": [{"name": "X", "role": "subject"}, {"name": "Downdetector"}],
                           "details": {"service": "X", "duration_minutes": 120}}).encode()

    seconds: dict[str, float] = {}
    store = EventStore(workdir / "storm.db")
    try:
        with ProjectionEngine(store, default_projections()) as engine:
            engine.setup()
            one(news("storm-target"))
            started = time.perf_counter()
            for i in range(count):
                one(json.dumps({"id": f"storm-{i}", "kind": "correction", "occurred_at": "2025-05-25",
                                "details": {"corrects": "storm-target", "reason": f"fix {i}",
                                            "changes": {"headline": f"X is down, take {i}",
                                                        "details": {"service": "X", "duration_minutes": i}}}}).encode())
            seconds["corrections"] = time.perf_counter() - started
            started = time.perf_counter()
            for i in range(count):
                one(news(f"storm-news-{i}"))
            seconds["ordinary"] = time.perf_counter() - started
    finally:
        store.close()
    return {"count": count, "corrections_seconds": seconds["corrections"], "ordinary_seconds": seconds["ordinary"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--corrections", type=int, default=4_000)
    parser.add_argument("--storm", type=int, metavar="N", help="N corrections of one event vs N ordinary events")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-corrections-") as tmp:
        if args.storm:
            print(json.dumps(storm(args.storm, Path(tmp))))
        else:
            print(json.dumps(run(args.events, args.corrections, Path(tmp))))


if __name__ == "__main__":
    main()
