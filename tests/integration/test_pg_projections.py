"""The projections on PostgreSQL (projections.pg) against the same projections on SQLite.

The same events appended in the same batches to a SQLite store and to a PostgreSQL one (and the
same ones erased) give the same projection rows, row for row, whatever the batch sizes; and on
PostgreSQL as on SQLite, incremental == rebuild == per change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.erasure import ErasureRefused
from events.models import EventRejected, parse_event
from events.pg.connect import connect
from events.pg.store import PgEventStore
from events.store import Candidate, EventStore
from projections import ProjectionEngine, default_projections
from projections.erasure import Erased, capture
from projections.pg import PgProjectionEngine
from projections.pg import default_projections as pg_projections
from test_rebuild_property import editorial_event, news_event


def sqlite_projections() -> list[Any]:
    return default_projections()


def erase(store: Any, event_id: str) -> Erased | None:
    """Erase an event from the store as the service does; what the projections must take out."""
    gone: list[Erased | None] = []
    try:
        store.erase(event_id, "test", "hypothesis", before=lambda s: gone.append(capture(s, event_id)))
    except ErasureRefused:
        return None
    return gone[0] if gone else None


def pg_tables(engine: PgProjectionEngine, *, docs: bool = True) -> dict[str, list[tuple]]:
    """Every projection table's rows; the search index's versions (with their lexemes if ``docs``:
    SQLite's FTS5 index has none to compare with)."""
    out = {}
    with connect(engine.url) as conn:
        for name, cp in engine.checkpoints().items():
            for base in engine.projections[name].schema:
                columns = "version" if base == "tl_search" and not docs else "*"
                if base == "tl_search" and docs:
                    columns = "version, doc::text"
                rows = conn.execute(f"SELECT {columns} FROM {base}{cp['tag']}").fetchall()
                out[f"{name}.{base}"] = sorted(rows, key=repr)
    return out


def sqlite_tables(engine: ProjectionEngine) -> dict[str, list[tuple]]:
    out = {}
    for name, cp in engine.checkpoints().items():
        conn = engine.connection(name)
        for base in engine.projections[name].schema:
            columns = "rowid" if base == "tl_search" else "*"  # a contentless index: its rowids
            out[f"{name}.{base}"] = sorted(conn.execute(f"SELECT {columns} FROM {base}{cp['tag']}").fetchall(), key=repr)
    return out


def append_raw(store: Any, raws: list[bytes]) -> None:
    batch = []
    for raw in raws:
        try:
            batch.append(Candidate(parse_event(json.loads(raw)), raw))
        except EventRejected:
            pass
    store.append(batch)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    events=st.lists(st.one_of(news_event(), news_event(), editorial_event()), min_size=1, max_size=30),
    data=st.data(),
)
def test_postgres_rows_equal_sqlite_rows_and_rebuilds(tmp_path_factory, pg_url, events, data) -> None:
    from pg_support import drop_schema, fresh_schema

    url = fresh_schema(pg_url)
    try:
        raws = [json.dumps(e).encode() for e in events]
        path = Path(tmp_path_factory.mktemp("pgprop")) / "t.db"
        batch = data.draw(st.integers(1, 7), label="engine batch")
        with EventStore(path) as store, PgEventStore(url) as pg_store, \
                ProjectionEngine(store, sqlite_projections(), batch_size=batch, parallel=False) as lite, \
                PgProjectionEngine(pg_store, pg_projections(), batch_size=batch, rebuild_batch_size=batch) as pg:
            lite.setup()
            pg.setup()
            i = 0
            while i < len(raws):
                size = data.draw(st.integers(1, 6), label="append batch")
                append_raw(store, raws[i : i + size])
                append_raw(pg_store, raws[i : i + size])
                if data.draw(st.booleans(), label="catch up before erasing"):
                    lite.catch_up()
                    pg.catch_up()
                if data.draw(st.integers(0, 3), label="erase") == 0:
                    victim = data.draw(st.sampled_from(store.read(0, 10**6) or [None]), label="erased")
                    if victim is not None:
                        gone = erase(store, victim.event_id)
                        assert erase(pg_store, victim.event_id) == gone
                        if gone is not None:
                            lite.remove(gone)
                            pg.remove(gone)
                lite.catch_up()
                pg.catch_up()
                i += size
            assert pg.lowest() == lite.lowest() == store.head() == pg_store.head()
            assert pg_tables(pg, docs=False) == sqlite_tables(lite)
            incremental = pg_tables(pg)
            pg.rebuild()
            assert pg_tables(pg) == incremental
            pg.close()  # its leases go with its connections
            with PgProjectionEngine(url, pg_projections(), rebuild_batch_size=3, set_based=False) as per_change:
                per_change.rebuild()
                assert pg_tables(per_change) == incremental
    finally:
        drop_schema(url)
