"""The peer: the same append and per-entity timeline projection written with the ``eventsourcing``
library (PyPI, ``pip install -e '.[bench]'``) on its SQLite backend.

- **Append**: each news event is one aggregate (``NewsItem``, id = uuid5 of the event id, so the
  same event twice is refused by the primary key), created from the decoded JSON and saved with
  ``Application.save(*aggregates)``: one SQLite transaction per batch, as our consumer does.
- **Projection**: a follower reads the application's notification log
  (``recorder.select_notifications``), turns each notification back into the domain event with
  the application's mapper, and writes one row per (entity, event) into an entity -> event index
  (``peer_timeline``, ordered by the start of ``occurred_at``) together with its tracking record
  (``SQLiteTrackingRecorder._insert_tracking``) in one transaction per batch: the library's
  documented way of a reliable projection. The library's ``ProjectionRunner`` needs a recorder
  that supports ``subscribe``, which its SQLite recorder does not, hence the plain follower.

Both run in a child process (``python -m bench.peer``) so that the library's import and memory
stay out of the caller. Our projection writes more per event (every version of the event, the
entries per entity, an FTS index, the entity directory); this peer writes only the index.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from .workload import lines

ROOT = Path(__file__).resolve().parent.parent


def available() -> bool:
    try:
        import eventsourcing  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=65536)
def _start_key(text: str) -> str:
    from events.dates import parse_partial

    return parse_partial(text).start_key


def measure(n: int, first: int, batch: int, db: Path) -> dict[str, float]:
    """Append n events (the first ``first`` timed on their own too), then project them all."""
    os.environ["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
    os.environ["SQLITE_DBNAME"] = str(db)

    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate
    from eventsourcing.persistence import Tracking
    from eventsourcing.sqlite import SQLiteCursor, SQLiteTrackingRecorder

    class NewsItem(Aggregate):
        @staticmethod
        def create_id(event_id: str, **_: Any) -> uuid.UUID:  # type: ignore[override]
            return uuid.uuid5(uuid.NAMESPACE_URL, "news:" + event_id)

        def __init__(self, event_id: str, kind: str, occurred_at: str, headline: str, summary: str | None,
                     entities: list[dict[str, Any]], sources: list[dict[str, Any]], details: dict[str, Any]) -> None:
            self.event_id = event_id
            self.kind = kind
            self.occurred_at = occurred_at
            self.headline = headline
            self.summary = summary
            self.entities = entities
            self.sources = sources
            self.details = details

    class NewsApp(Application):  # type: ignore[type-arg]
        name = "News"

    class TimelineView(SQLiteTrackingRecorder):
        """The materialised view: an entity -> event index, written with its tracking record."""

        def construct_create_table_statements(self) -> list[str]:
            return [
                *super().construct_create_table_statements(),
                "CREATE TABLE IF NOT EXISTS peer_timeline (entity_id TEXT NOT NULL, start_key TEXT NOT NULL,"
                " position INTEGER NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL, role TEXT NOT NULL,"
                " headline TEXT NOT NULL, PRIMARY KEY (entity_id, start_key, position)) WITHOUT ROWID",
            ]

        def project(self, rows: list[tuple[Any, ...]], tracking: Tracking) -> None:
            with self.datastore.transaction(commit=True) as c:
                assert isinstance(c, SQLiteCursor)
                c.executemany("INSERT INTO peer_timeline VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._insert_tracking(c, tracking)

    app = NewsApp()
    with app.recorder.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
        c.execute("PRAGMA synchronous")  # 2 = FULL: the library leaves SQLite's default
        sync_level = c.fetchone()[0]

    # --- append: the workload is generated and decoded outside the timing -------------------
    source = lines(n)
    appended = 0
    append_seconds = first_seconds = 0.0
    while appended < n:
        size = min(batch, n - appended)
        if appended < first < appended + size:
            size = first - appended  # a batch boundary at `first`, to time the first events alone
        data = [json.loads(next(source)) for _ in range(size)]
        started = time.perf_counter()
        app.save(*[
            NewsItem(
                event_id=e["id"], kind=e["kind"], occurred_at=e["occurred_at"], headline=e["headline"],
                summary=e.get("summary"), entities=e["entities"], sources=e.get("sources", []),
                details=e["details"],
            )
            for e in data
        ])
        append_seconds += time.perf_counter() - started
        appended += size
        if appended == first:
            first_seconds = append_seconds

    # --- projection ------------------------------------------------------------------------
    view = TimelineView(app.factory.datastore)  # type: ignore[attr-defined]
    view.create_table()
    recorder = app.recorder
    to_domain_event = app.mapper.to_domain_event
    started = time.perf_counter()
    last = view.max_tracking_id(app.name) or 0
    projected = 0
    while True:
        notifications = recorder.select_notifications(start=last, limit=batch, inclusive_of_start=False)
        if not notifications:
            break
        rows: list[tuple[Any, ...]] = []
        for notification in notifications:
            domain_event = to_domain_event(notification)
            key = _start_key(domain_event.occurred_at)
            for entity in domain_event.entities:
                rows.append((entity["id"], key, notification.id, domain_event.event_id, domain_event.kind,
                             entity["role"], domain_event.headline))
        last = notifications[-1].id
        view.project(rows, Tracking(app.name, last))
        projected += len(notifications)
    project_seconds = time.perf_counter() - started
    app.close()
    return {
        "events": n,
        "first": first,
        "first_append_rate": first / first_seconds if first_seconds else 0.0,
        "append_seconds": append_seconds,
        "append_rate": n / append_seconds,
        "projected": projected,
        "project_seconds": project_seconds,
        "project_rate": projected / project_seconds if project_seconds else 0.0,
        "synchronous": sync_level,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run(n: int, first: int | None = None, batch: int = 2000) -> dict[str, float]:
    """Append n workload events with the peer (the first ``first`` timed apart), then project
    them; in a child process, on a temporary file."""
    first = n if first is None else min(first, n)
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "bench.peer", "--events", str(n), "--first", str(first),
             "--batch", str(batch), "--db", str(Path(tmp) / "peer.db")],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--first", type=int, help="also time the first N appends on their own")
    parser.add_argument("--batch", type=int, default=2000, help="events per transaction")
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.db is None:
        print(json.dumps(run(args.events, args.first, args.batch)))
        return
    first = args.events if args.first is None else min(args.first, args.events)
    print(json.dumps(measure(args.events, first, args.batch, args.db)))


if __name__ == "__main__":
    main()
