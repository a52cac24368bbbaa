"""Reads of an entity with a long alias chain against reads of an entity without aliases.

`python -m bench.aliases [--chain 10001] [--reads 200]` builds, in a temporary directory, a store
with a chain of ``chain`` aliases (``c0 → c1 → … → c<chain>``: each declaration makes the whole
chain so far an alias of a new id, the order in which a canonical id that moves costs most),
one event filed under every member of the chain, and an entity without aliases (``solo``) with
as many events; the projections are caught up through the engine (the declarations applied as
live batches are, in batches of 5,000 positions). Then, in process, alternating, the p50 over
``reads`` calls after a warm-up of:

- a timeline's head page (50 entries), the entity's card (``GET /entities/{id}``), the
  directory's first page (``GET /entities``, the group first) and ``related``;
- a search within the timeline (``q=event``, every entry matching: a page in time order, and a
  page by relevance);
- the head page and the card ``as_of`` the end of the next-to-last batch (before the group's
  last declarations: read from the set that held the group then, the sets' history), and as of
  the chain's midpoint and a quarter (the group then of half and a quarter of its ids: read from
  the run of rows its set had then, ``groups.REFILE_GROWTH``);
- for the group, the same reads as the fan-out over its members answers them (what reads did
  before the groups were filed in the projections, and for an ``as_of`` before the group's
  latest declaration until the sets kept their history), in the same run; a search's fan-out takes tens of seconds, so it
  is timed once, in the first round, without a warm-up.

It prints one line per read and the time the projections took to apply the chain.
`--no-fan-out` leaves the fan-out column out (it takes most of the run's time).

`--postgres URL` builds the same store on that PostgreSQL instead (in a schema of its own,
dropped after) and prints only the time the projections (``projections.pg``) took to apply the
chain: the reads of the projections are not written for PostgreSQL yet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from events.models import parse_event
from events.store import Candidate, EventStore
from projections import ProjectionEngine, default_projections
from projections.queries import Queries, TimelineQuery


def news(event_id: str, month: int, entities: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": event_id, "kind": "report", "occurred_at": f"2025-{month:02d}-{1 + int(event_id.split('-')[-1]) % 28:02d}",
        "headline": f"Event {event_id}", "entities": entities, "details": {"category": "business"},
    }


def build(path: Path | str, chain: int) -> float:
    """The store and its projections (``path``: a SQLite file or a PostgreSQL URL); the seconds
    the projections took to catch up."""
    events: list[dict[str, Any]] = []
    for i in range(chain + 1):
        events.append(news(f"g-{i}", 1 + i % 12, [
            {"id": f"c{i}", "name": "Chained", "type": "person", "role": "subject"},
            {"id": f"other-{i % 7}", "name": f"Other {i % 7}", "type": "organization"},
        ]))
        events.append(news(f"s-{i}", 1 + i % 12, [
            {"id": "solo", "name": "Solo", "type": "person", "role": "subject"},
            {"id": f"other-{i % 7}", "name": f"Other {i % 7}", "type": "organization"},
        ]))
    declared = len(events)
    events += [
        {"id": f"alias-{i}", "kind": "entity_alias", "occurred_at": "2025", "details": {"alias": f"c{i}", "canonical": f"c{i + 1}"}}
        for i in range(chain)
    ]
    # batches of 5,000, and one ending where the group held each of ``deep``'s sizes (an
    # ``as_of`` instant there: one ``recorded_at`` a batch)
    cuts = sorted({*range(0, len(events), 5000), *(declared + ids - 1 for ids in deep(chain).values()), len(events)})
    if isinstance(path, str):  # a PostgreSQL URL
        from events.pg.store import PgEventStore
        from projections import pg

        store: Any = PgEventStore(path)
        engine: Any = pg.PgProjectionEngine(store, pg.default_projections())
    else:
        store = EventStore(path)
        engine = ProjectionEngine(store, default_projections())
    with store, engine:
        engine.setup()  # on the empty store: live tables, which the catch-up fills batch by batch
        for start, end in zip(cuts, cuts[1:]):
            batch = [Candidate(parse_event(e), json.dumps(e).encode()) for e in events[start:end]]
            store.append(batch)
        started = time.perf_counter()
        engine.catch_up()
        return time.perf_counter() - started


def deep(chain: int) -> dict[str, int]:
    """Points deep in the chain's history: the group then of half and of a quarter of its ids."""
    return {"midpoint": (chain + 1) // 2, "quarter": (chain + 1) // 4}


def p50(fn: Callable[[], Any], reads: int, warm: int = 10) -> float:
    for _ in range(warm):
        fn()
    samples = []
    for _ in range(reads):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def run(
    chain: int = 10_001, reads: int = 200, only: str | None = None, fan_out_too: bool = True
) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "aliases.db"
        caught_up = build(path, chain)
        print(f"projections caught up in {caught_up:.1f} s ({2 * (chain + 1)} events, {chain} aliases)")
        queries = Queries(str(path))
        group, fan_out = f"c{chain}", Queries(str(path))
        fan_out._set = lambda *args, **kwargs: None  # type: ignore[method-assign]  # the members, one by one
        fan_out._held = lambda *args, **kwargs: None  # type: ignore[method-assign]  # as_of too
        head = TimelineQuery(limit=50)
        # as of the end of the next-to-last batch: the last declarations after it (the group then
        # held by the set that holds it now, a few ids smaller)
        store = EventStore(path)
        try:
            before = store.read(5000 * ((store.head() - 1) // 5000) - 1, 1)[0]
            print(f"as_of: position {before.position} of {store.head()} ({before.recorded_at})")
            # as of the chain's midpoint and a quarter: the group then in a set 2-4 times larger now
            deep_at = {point: store.read(2 * (chain + 1) + ids - 2, 1)[0] for point, ids in deep(chain).items()}
            for point, at in deep_at.items():
                print(f"as_of {point}: position {at.position} ({at.recorded_at})")
        finally:
            store.close()
        then = TimelineQuery(limit=50, as_of=before.recorded_at)
        deep_then = {point: TimelineQuery(limit=50, as_of=at.recorded_at) for point, at in deep_at.items()}
        search, ranked = TimelineQuery(q="event", limit=50), TimelineQuery(q="event", order="relevance", limit=50)
        reads_of: dict[str, Callable[[Queries, str], Any]] = {
            "timeline head page": lambda q, e: q.timeline(e, head, render=True),
            "entity card": lambda q, e: q.entity(e),
            # (c0: an alias of the group's canonical id then; the canonical id of now came later)
            "timeline head page, as_of": lambda q, e: q.timeline("c0" if e == group else e, then, render=True),
            "entity card, as_of": lambda q, e: q.entity("c0" if e == group else e, as_of=before.recorded_at),
            **{
                f"timeline head page, as_of {point}": (
                    lambda q, e, query=query: q.timeline("c0" if e == group else e, query, render=True)
                )
                for point, query in deep_then.items()
            },
            **{
                f"entity card, as_of {point}": (
                    lambda q, e, when=at.recorded_at: q.entity("c0" if e == group else e, as_of=when)
                )
                for point, at in deep_at.items()
            },
            "directory page": lambda q, e: q.directory(limit=50),
            "related": lambda q, e: q.related(e),
            "search (q), time order": lambda q, e: q.timeline(e, search, render=True),
            "search (q), by relevance": lambda q, e: q.timeline(e, ranked, render=True),
        }
        slow_fan_out = {"search (q), time order", "search (q), by relevance"}
        out: dict[str, dict[str, float]] = {}
        try:
            for name, read in reads_of.items():
                if only is not None and only not in name:
                    continue
                # alternating, so that the machine's load weighs on each alike
                figures: dict[str, list[float]] = {"solo": [], "group": [], "group, fan-out": []}
                for round_ in range(3):
                    figures["solo"].append(p50(lambda: read(queries, "solo"), reads))
                    figures["group"].append(p50(lambda: read(queries, group), reads))
                    if fan_out_too and name not in slow_fan_out:
                        figures["group, fan-out"].append(p50(lambda: read(fan_out, group), reads))
                    elif fan_out_too and round_ == 0:
                        figures["group, fan-out"].append(p50(lambda: read(fan_out, group), 1, warm=0))
                out[name] = {k: min(v) * 1000 for k, v in figures.items() if v}
                print(f"{name}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in out[name].items()))
        finally:
            queries.close()
            fan_out.close()
    return out


def on_postgres(server: str, chain: int) -> float:
    """``build`` on a PostgreSQL server, in a schema of its own (dropped after)."""
    import uuid

    import psycopg

    from events.pg.connect import with_schema

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        caught_up = build(with_schema(server, schema), chain)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    print(f"projections on PostgreSQL caught up in {caught_up:.1f} s ({2 * (chain + 1)} events, {chain} aliases)")
    return caught_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=10_001)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--postgres", metavar="URL", help="build on this PostgreSQL (the catch-up's time only)")
    parser.add_argument("--only", metavar="TEXT", help="only the reads whose name holds TEXT (e.g. as_of)")
    parser.add_argument("--no-fan-out", action="store_true", help="not the members one by one (the slow column)")
    args = parser.parse_args()
    if args.postgres:
        on_postgres(args.postgres, args.chain)
    else:
        run(args.chain, args.reads, args.only, fan_out_too=not args.no_fan_out)


if __name__ == "__main__":
    main()
