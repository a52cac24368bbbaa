"""Helpers for the integration tier: events built from a valid default, appends, projections.

Everything here runs on real SQLite files or a real PostgreSQL schema (a ``db`` that is a
``postgresql://`` URL: the ``backend`` fixture); nothing is mocked. ``make_event`` gives a valid
news event (docs/contract.md §1) with any field overridden (``DROP`` removes a field).
"""

from __future__ import annotations

import copy
import json
import contextlib
import sqlite3
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from events.backend import is_postgres, open_store
from events.models import parse_event_bytes
from events.store import AppendResult, Candidate, EventStore
from projections import default_projections, open_engine
from projections.engine import projection_path, projections_dir
from projections.queries import Queries, TimelineQuery

DROP = object()  # make_event(field=DROP) leaves the field out

BASE_EVENT: dict[str, Any] = {
    "id": "x-outage-2025-05-24",
    "kind": "outage",
    "occurred_at": "2025-05-24",
    "headline": "X is down for about two hours worldwide",
    "summary": "Users around the world report failures; failover did not work.",
    "entities": [
        {"id": "x", "name": "X", "type": "organization", "role": "subject"},
        {"name": "Downdetector", "type": "organization", "role": "mentioned"},
    ],
    "sources": [
        {
            "url": "https://news.example/x-outage",
            "publisher": "Example Wire",
            "published_at": "2025-05-25T08:00:00Z",
        }
    ],
    "details": {"service": "X", "duration_minutes": 120, "cause": "unknown"},
}


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid outage event (the contract's example) with fields overridden or dropped."""
    event = copy.deepcopy(BASE_EVENT)
    for key, value in overrides.items():
        if value is DROP:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def ent(entity_id: str, role: str = "subject", name: str | None = None, type: str = "organization") -> dict[str, Any]:
    return {"id": entity_id, "name": name or entity_id.replace("-", " ").title(), "type": type, "role": role}


def news(
    event_id: str,
    occurred_at: str,
    entities: Sequence[str | dict[str, Any]] = ("x",),
    *,
    kind: str = "report",
    headline: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A small valid news event; entities given as ids (role ``subject``) or as dicts."""
    ents = [ent(e) if isinstance(e, str) else e for e in entities]
    event: dict[str, Any] = {
        "id": event_id,
        "kind": kind,
        "occurred_at": occurred_at,
        "headline": headline or f"headline of {event_id}",
        "entities": ents,
    }
    if kind == "outage":
        event["details"] = {"service": ents[0]["name"]}
    elif kind == "statement":
        event["details"] = {"speaker": ents[0]["id"], "quote": f"quote of {event_id}"}
    elif kind == "political_move":
        event["details"] = {"actor": ents[0]["id"], "action": "other"}
    event.update(extra)
    return event


def correction(event_id: str, corrects: str, *, at: str = "2025-06-01", reason: str | None = None,
               **changes: Any) -> dict[str, Any]:
    """A correction (its own ``occurred_at`` is ``at``); keyword arguments are the changes."""
    details: dict[str, Any] = {"corrects": corrects, "changes": changes}
    if reason is not None:
        details["reason"] = reason
    return {"id": event_id, "kind": "correction", "occurred_at": at, "details": details}


def retraction(event_id: str, retracts: str, reason: str = "the story was false",
               occurred_at: str = "2025-06-02") -> dict[str, Any]:
    return {"id": event_id, "kind": "retraction", "occurred_at": occurred_at,
            "details": {"retracts": retracts, "reason": reason}}


def alias(event_id: str, alias_id: str, canonical: str, name: str | None = None,
          occurred_at: str = "2023-07-24") -> dict[str, Any]:
    details: dict[str, Any] = {"alias": alias_id, "canonical": canonical}
    if name is not None:
        details["name"] = name
    return {"id": event_id, "kind": "entity_alias", "occurred_at": occurred_at, "details": details}


def candidate(event: dict[str, Any] | str | bytes) -> Candidate:
    """Parse an event exactly as the consumer does (from bytes) and keep those bytes."""
    if isinstance(event, dict):
        raw = json.dumps(event, ensure_ascii=False).encode("utf-8")
    elif isinstance(event, str):
        raw = event.encode("utf-8")
    else:
        raw = event
    return Candidate(parse_event_bytes(raw), raw)


@contextlib.contextmanager
def plain_connection(db: str | Path) -> Iterator[Any]:
    """A connection to the store's database that is not the store's (as an intruder would open
    one), taking ``?`` marks on either backend; in autocommit mode."""
    if is_postgres(db):
        from events.pg.connect import Qmark, connect

        conn = Qmark(connect(str(db)))
    else:
        conn = sqlite3.connect(str(db), isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def db_errors(db: str | Path) -> tuple[type[Exception], type[Exception]]:
    """The backend's (error, integrity error) classes."""
    if is_postgres(db):
        import psycopg

        return psycopg.Error, psycopg.IntegrityError
    return sqlite3.DatabaseError, sqlite3.IntegrityError


def sql_rows(db: str | Path, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of a query on the store's database, through a plain connection."""
    with plain_connection(db) as conn:
        return [tuple(row) for row in conn.execute(query, params).fetchall()]


def append(store: EventStore, *events: dict[str, Any] | str | bytes) -> list[AppendResult]:
    """Append the events as one batch."""
    return store.append([candidate(e) for e in events])


def _bring_up(store: EventStore, batch_size: int = 5000) -> int:
    """Set the projections up (a projection new to a store with events is rebuilt) and catch up."""
    with open_engine(store, batch_size=batch_size) as engine:
        outdated = engine.setup()
        if outdated:
            engine.rebuild(outdated)
        return engine.catch_up()


def project(path: str | Path, batch_size: int = 5000) -> int:
    with open_store(path) as store:
        return _bring_up(store, batch_size)


def append_and_project(path: str | Path, events: Iterable[dict[str, Any] | str | bytes]) -> list[AppendResult]:
    """Append the events as one batch, then bring every projection up to the head (a SQLite path
    or a ``postgresql://`` URL: the ``backend`` fixture)."""
    with open_store(path) as store:
        results = append(store, *events)
        _bring_up(store)
    return results


def append_batches(path: str | Path, *batches: Sequence[dict[str, Any]], pause: float = 0.005,
                   project_each: bool = True) -> list[list[AppendResult]]:
    """Each batch in its own transaction (so each has its own, later ``recorded_at``)."""
    out = []
    for i, batch in enumerate(batches):
        if i:
            time.sleep(pause)
        out.append(append_and_project(path, batch) if project_each else _append_only(path, batch))
    return out


def _append_only(path: str | Path, events: Sequence[dict[str, Any]]) -> list[AppendResult]:
    with open_store(path) as store:
        return append(store, *events)


def ids(result: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in result["entries"]]


def timeline_ids(queries: Queries, entity_id: str | None, **params: Any) -> list[str]:
    return ids(queries.timeline(entity_id, TimelineQuery(**params)))


def walk(queries: Queries, entity_id: str | None, **params: Any) -> list[list[str]]:
    """Every page of a timeline, following ``next_cursor`` until it is null."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = queries.timeline(entity_id, TimelineQuery(cursor=cursor, **params))
        pages.append(ids(page))
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10_000, "next_cursor never ends"


def projection_tables(path: str | Path) -> dict[str, tuple[str, str]]:
    """``{base name: (projection, live table)}`` for every table of every projection, the live
    table named by its file's ``projection_checkpoints.tables_tag`` (a rebuild swaps in another tag)."""
    out = {}
    for projection in default_projections():
        conn = sqlite3.connect(str(projection_path(path, projection.name)))
        try:
            (tag,) = conn.execute(
                "SELECT tables_tag FROM projection_checkpoints WHERE name = ?", (projection.name,)
            ).fetchone()
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
        for base in projection.schema:
            table = projection.table(base, tag)
            assert table in names, f"{table} missing; tables: {sorted(names)}"
            out[base] = (projection.name, table)
    for base in ("tl_events", "tl_entries", "ent_stats", "ent_members"):
        assert base in out, f"no {base} table among {out}"
    return out


def projection_conn(path: str | Path, name: str) -> sqlite3.Connection:
    """A plain connection to one projection's file (the caller closes it)."""
    return sqlite3.connect(str(projection_path(path, name)))


def dump_tables(path: str | Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every projection table, by base name, in a total order of all columns."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    checkpoints: list[tuple[Any, ...]] = []
    for base, (name, table) in projection_tables(path).items():
        conn = projection_conn(path, name)
        try:
            ncols = len(conn.execute(f"SELECT * FROM {table} LIMIT 0").description)
            order = ", ".join(str(i + 1) for i in range(ncols))
            out[base] = conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        finally:
            conn.close()
    for projection in default_projections():
        conn = projection_conn(path, projection.name)
        try:
            checkpoints += conn.execute("SELECT name, version, position, state FROM projection_checkpoints").fetchall()
        finally:
            conn.close()
    out["projection_checkpoints"] = sorted(checkpoints)
    return out


def copy_store(source: str | Path, target: str | Path) -> None:
    """Copy a store and its projections' files, each with SQLite's backup API (what is committed,
    wherever it is: the main file or a WAL that an open connection has not checkpointed)."""
    pairs = [(Path(source), Path(target))]
    if projections_dir(source).exists():
        projections_dir(target).mkdir(parents=True, exist_ok=True)
        pairs += [(f, projections_dir(target) / f.name) for f in sorted(projections_dir(source).glob("*.db"))]
    for src, dst in pairs:
        with contextlib.closing(sqlite3.connect(str(src))) as a, contextlib.closing(sqlite3.connect(str(dst))) as b:
            a.backup(b)


# --- for the multi-process test (spawned children import this module by name) -----------------


def append_worker(path: str, prefix: str, count: int, barrier: Any, results: Any, pause: float = 0.0) -> None:
    """Append ``count`` distinct events one by one (``pause`` seconds apart, as a consumer reads
    between batches); report ``(prefix, stored, errors)``."""
    errors: list[str] = []
    stored = 0
    try:
        barrier.wait(timeout=60)
        with open_store(path) as store:
            for i in range(count):
                event = news(f"{prefix}-{i:05d}", "2025-05-24", (f"{prefix}-entity",))
                try:
                    (result,) = append(store, event)
                except Exception as exc:  # noqa: BLE001 - reported to the parent
                    errors.append(f"{i}: {type(exc).__name__}: {exc}")
                    continue
                if result.status == "stored":
                    stored += 1
                else:
                    errors.append(f"{i}: {result}")
                if pause:
                    time.sleep(pause)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"worker: {type(exc).__name__}: {exc}")
    results.put((prefix, stored, errors))


def open_worker(paths: list[str], prefix: str, per_file: int, barrier: Any, results: Any) -> None:
    """For each (new) file in turn: meet the other writer at the barrier, then open the store
    (creating and migrating it) and append ``per_file`` events; report ``(prefix, stored, errors)``."""
    errors: list[str] = []
    stored = 0
    for n, path in enumerate(paths):
        try:
            barrier.wait(timeout=60)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{path}: barrier: {type(exc).__name__}")
            break
        try:
            with EventStore(path) as store:
                for i in range(per_file):
                    (result,) = append(store, news(f"{prefix}-{n}-{i}", "2025", (f"{prefix}-entity",)))
                    stored += result.status == "stored"
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            where = [f"{f.name}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)
                     if "/events/" in f.filename or "/projections/" in f.filename]
            errors.append(f"{Path(path).name}: {type(exc).__name__}: {exc} (in {' > '.join(where)})")
    results.put((prefix, stored, errors))


class InProcessApi:
    """An app served in this process (``httpx.ASGITransport``), called synchronously."""

    def __init__(self, app: Any) -> None:
        import asyncio

        import httpx

        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process")

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@contextlib.contextmanager
def app_in_process(db: Path) -> Iterator[Any]:
    """The HTTP API over the store ``db`` in this process, with no consumer and an unreachable
    Redis: yields ``request(path, method="GET", **kwargs)``."""
    import pytest

    from timeline.api import create_app
    from timeline.runtime import Runtime
    from timeline.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIMELINE_DB", str(db))
        mp.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
        runtime = Runtime(Settings(), consume=False)
        api = InProcessApi(create_app(runtime, manage=False))
        try:
            yield lambda path, method="GET", **kw: api.request(method, path, **kw)
        finally:
            api.close()
            runtime.service.close()


def told_erasures(db: str | Path) -> int:
    """Events in the store ``db`` (either backend) that its live streams tell of as erased: two
    news events filed under 'tesla', one under 'twitter', an alias of 'twitter' to 'x', then the
    first event and the alias declaration erased (``tl_removals`` rows for both). Returns the
    position from which a resuming stream is told of them (``streams_told``)."""
    from events.erasure import erase
    from projections.erasure import capture

    with open_store(db) as store, open_engine(store) as engine:
        engine.setup()
        r = append(store, news("a1", "2025-01-01", ["tesla"]), news("t1", "2025-01-02", ["twitter"]),
                   news("a2", "2025-01-03", ["tesla", "x"]), alias("al", "twitter", "x"))
        engine.catch_up()
        for event_id in ("a1", "al"):
            gone: list[Any] = []
            erase(store, event_id, "test", "test", before=lambda s, e=event_id: gone.append(capture(s, e)))
            engine.remove(gone[0])
    return r[-1].position


def served(db: str | Path) -> None:
    """What ``timeline serve`` does with the projections of a store it finds: set up, rebuilt
    where outdated, caught up."""
    with open_store(db) as store, open_engine(store) as engine:
        engine.rebuild(engine.setup())
        engine.catch_up()


def streams_told(db: str | Path, after: int) -> dict[str, list[tuple[int, str, str]]]:
    """The live streams' messages (position, kind, data) after ``after`` (``told_erasures``' store),
    of the global stream and of each entity's."""
    from projections import open_queries
    from projections.live import StreamCursor, StreamFilter, changes

    q = open_queries(str(db))
    try:
        return {
            str(entity): [(m.position, m.kind, m.data)
                          for m in changes(q, entity, StreamCursor(after), StreamFilter(), 50).messages]
            for entity in (None, "tesla", "x", "twitter")
        }
    finally:
        q.close()
