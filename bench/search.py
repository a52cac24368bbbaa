"""Full-text search latency within one busy entity and across all (in process, best of 5).

    .venv/bin/python -m bench.search                           # 100,000 events, 30,000 of them filed under `busy`
    .venv/bin/python -m bench.search --events 200000 --busy 60000

The store is filled once with the workload's events (bench.workload: ~500 bytes, Zipf-popular
entities, headlines and summaries drawn from a small vocabulary, so every word is frequent),
every (events / busy)-th also filed under the entity ``busy``, appended by the real store in
batches, projected by the real engine, and cached under bench/.cache.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from events.models import parse_event_bytes
from events.store import Candidate, EventStore
from projections import ProjectionEngine, default_projections
from projections.queries import Queries, TimelineQuery

from .queries import rare_entity
from .workload import events as workload_events

CACHE = Path(__file__).parent / ".cache"
BUSY = {"id": "busy", "name": "Busy Entity", "type": "organization", "role": "mentioned"}


def fill(path: Path, n: int, busy: int) -> None:
    with EventStore(path) as store:
        if store.head() < n:
            every = max(1, n // busy)
            batch: list[Candidate] = []
            for i, event in enumerate(workload_events(n, seed=11)):
                if i < store.head():
                    continue
                if i % every == 0 and len(event["entities"]) < 50:
                    event["entities"].append(BUSY)
                raw = json.dumps(event, separators=(",", ":")).encode()
                batch.append(Candidate(parse_event_bytes(raw), raw))
                if len(batch) == 5000:
                    store.append(batch)
                    batch = []
            store.append(batch)
        with ProjectionEngine(store, default_projections()) as engine:
            outdated = engine.setup()
            if outdated:
                engine.rebuild(outdated)
            engine.catch_up()


def measure(path: Path, cases: list[tuple[str | None, str, str]], repeat: int = 5) -> list[tuple[str, float, int]]:
    queries = Queries(str(path))
    out = []
    try:
        for entity, q, order in cases:
            best, found = float("inf"), 0
            for _ in range(repeat):
                started = time.perf_counter()
                page = queries.timeline(entity, TimelineQuery(q=q, order=order, limit=50))
                best = min(best, time.perf_counter() - started)
                found = len(page["entries"])
            out.append((f"{entity or '(all)'} q={q!r} order={order}", best, found))
    finally:
        queries.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--busy", type=int, default=30_000, help="events filed under the entity `busy`")
    parser.add_argument("--db", type=Path, help="store file (default: cached under bench/.cache)")
    args = parser.parse_args()
    path = args.db or CACHE / f"search-{args.events}-{args.busy}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    fill(path, args.events, args.busy)
    rare, _ = rare_entity(path, around=8)
    cases = [
        ("busy", "storm", "relevance"),
        ("busy", "storm OR flood", "relevance"),
        ("busy", "zebra", "relevance"),
        ("busy", "storm", "asc"),
        ("busy", "zebra", "asc"),
        (rare, "storm", "relevance"),
        (rare, "storm", "asc"),
        (None, "storm", "relevance"),
        (None, "storm", "asc"),
    ]
    print(f"\nfull-text search, {args.events:,} events, {args.busy:,} of them under `busy` (best of 5)\n")
    print(f"{'query':<48} {'ms':>9} {'entries':>8}")
    for label, seconds, found in measure(path, cases):
        print(f"{label:<48} {seconds * 1000:>9.1f} {found:>8}")


if __name__ == "__main__":
    main()
