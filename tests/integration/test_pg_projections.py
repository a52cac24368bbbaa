"""The projections on PostgreSQL (projections.pg) against the same projections on SQLite.

The same events appended in the same batches to a SQLite store and to a PostgreSQL one (and the
same ones erased) give the same projection rows, row for row, whatever the batch sizes; and on
PostgreSQL as on SQLite, incremental == rebuild == per change.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.erasure import ErasureRefused
from events.models import EventRejected, parse_event
from events.pg.connect import connect
from events.pg.store import PgEventStore
from events.store import Candidate, EventStore
from projections import ProjectionEngine, default_projections, groups
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
                rows = conn.execute(f"SELECT {columns} FROM {base}{cp.tag}").fetchall()
                out[f"{name}.{base}"] = sorted(rows, key=repr)
    return out


def sqlite_tables(engine: ProjectionEngine) -> dict[str, list[tuple]]:
    out = {}
    for name, cp in engine.checkpoints().items():
        conn = engine.connection(name)
        for base in engine.projections[name].schema:
            columns = "rowid" if base == "tl_search" else "*"  # a contentless index: its rowids
            out[f"{name}.{base}"] = sorted(conn.execute(f"SELECT {columns} FROM {base}{cp.tag}").fetchall(), key=repr)
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


# --- leases: one node advances a projection at a time; another takes over when it dies ---------

NODE = """
import sys, time
from projections.pg import PgProjectionEngine, default_projections
engine = PgProjectionEngine(sys.argv[1], default_projections(), batch_size=1, parallel=False)
engine.setup()
while True:
    engine.step()
    print(" ".join(engine.leases()), flush=True)
    time.sleep(0.05)
"""


def test_a_node_that_dies_loses_its_leases_and_another_takes_over(pg_db, tmp_path):
    names = sorted(p.name for p in pg_projections())
    with PgEventStore(pg_db) as store:
        with PgProjectionEngine(store, pg_projections()) as first:
            first.setup()  # before any event: the projections are current, built as events come
        append_raw(store, [json.dumps(news_event_body(i)).encode() for i in range(200)])
        head = store.head()
    node = subprocess.Popen([sys.executable, "-c", NODE, pg_db], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        line = node.stdout.readline()
        assert line.split() == names, line  # the first node took every lease
        with PgProjectionEngine(pg_db, pg_projections(), batch_size=1) as other:
            for _ in range(3):
                other.step()
            assert other.leases() == []  # held elsewhere: this node advances none
            positions = {n: cp.position for n, cp in other.checkpoints().items()}
            assert 0 < min(positions.values()) and max(positions.values()) < head  # the first node is mid-way
            node.send_signal(signal.SIGKILL)
            node.wait()
            killed = time.monotonic()
            while other.leases() != names:
                other.step()
                assert time.monotonic() - killed < 5, other.leases()
                time.sleep(0.05)
            took_over = time.monotonic() - killed
            # from the checkpoints the dead node committed, with the rows they hold: exactly once
            assert other.catch_up() == head
            incremental = pg_tables(other)
            other.rebuild()
            assert pg_tables(other) == incremental
        assert took_over < 5
    finally:
        node.kill()
        node.wait()


def news_event_body(i: int) -> dict[str, Any]:
    return {
        "id": f"n{i}",
        "kind": "report",
        "occurred_at": f"2025-05-{1 + i % 28:02d}",
        "headline": f"Report {i}",
        "entities": [{"id": f"org-{i % 7}", "name": f"Org {i % 7}", "role": "subject"},
                     {"id": f"org-{(i + 3) % 7}", "name": f"Org {(i + 3) % 7}", "role": "mentioned"}],
        "details": {"category": "business"},
    }


# --- rebuilds beside the live tables: the old ones answer until the swap ---------------------

def live_rows(conn: Any, name: str, base: str) -> tuple[str, int]:
    """What a reader does: the live tables' tag from the checkpoint, then their rows (read again
    if a swap dropped the tables in between)."""
    while True:
        (tag,) = conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = %s", (name,)).fetchone()
        try:
            (count,) = conn.execute(f"SELECT count(*) FROM {base}{tag}").fetchone()
            return tag, count
        except psycopg.errors.UndefinedTable:
            continue


def test_reads_use_the_old_tables_until_the_swap(pg_db):
    with PgEventStore(pg_db) as store, PgProjectionEngine(store, pg_projections(), rebuild_batch_size=25) as engine:
        engine.setup()
        append_raw(store, [json.dumps(news_event_body(i)).encode() for i in range(300)])
        engine.catch_up()
        with connect(pg_db) as reader:
            old_tag, before = live_rows(reader, "timelines", "tl_events")
            assert before == 300
            seen: list[tuple[str, int]] = []
            stop = threading.Event()

            def read() -> None:
                with connect(pg_db) as conn:
                    while not stop.is_set():
                        seen.append(live_rows(conn, "timelines", "tl_events"))

            thread = threading.Thread(target=read)
            thread.start()
            try:
                engine.start_rebuild(["timelines"])
                done, more = False, 0
                while not done:
                    _, _, done = engine.rebuild_step(["timelines"])
                    if more < 40:  # events keep arriving and are projected live meanwhile
                        append_raw(store, [json.dumps(news_event_body(300 + more)).encode()])
                        engine.step()
                        more += 1
                    time.sleep(0.01)
                time.sleep(0.1)
            finally:
                stop.set()
                thread.join()
            new_tag, after = live_rows(reader, "timelines", "tl_events")
        assert new_tag != old_tag and after == store.head() == 300 + more
        old = [count for tag, count in seen if tag == old_tag]
        new = [count for tag, count in seen if tag == new_tag]
        assert {tag for tag, _ in seen} <= {old_tag, new_tag}
        assert len(old) > 10 and min(old) >= 300 and old == sorted(old)  # the old tables, never emptier
        assert new and min(new) == after


REBUILDER = """
import sys
import threading
from projections.pg import PgProjectionEngine, default_projections
engine = PgProjectionEngine(sys.argv[1], default_projections(), rebuild_batch_size=1, parallel=False)
def progress(position, head):
    print(position, flush=True)
engine.rebuild(progress=progress)
"""


def test_a_rebuild_killed_leaves_the_live_tables_and_is_started_again(pg_db):
    with PgEventStore(pg_db) as store:
        with PgProjectionEngine(store, pg_projections()) as first:
            first.setup()
            append_raw(store, [json.dumps(news_event_body(i)).encode() for i in range(120)])
            first.catch_up()
            live = pg_tables(first)
            tags = {n: cp.tag for n, cp in first.checkpoints().items()}
        node = subprocess.Popen([sys.executable, "-c", REBUILDER, pg_db], stdout=subprocess.PIPE, text=True)
        try:
            assert node.stdout is not None
            while int(node.stdout.readline() or 10**9) < 20:  # mid-way through its rebuild
                pass
            node.send_signal(signal.SIGKILL)
            node.wait()
        finally:
            node.kill()
            node.wait()
        with PgProjectionEngine(store, pg_projections()) as other:
            cps = other.checkpoints()
            assert all(cp.rebuild for cp in cps.values())  # the dead node's, left behind
            assert {n: cp.tag for n, cp in cps.items()} == tags and pg_tables(other) == live
            names = sorted(cps)
            assert other.abandoned_rebuilds() == names  # this node holds the leases now
            other.rebuild(names, force=True)  # drops the leftovers and starts again
            assert pg_tables(other) == live
            assert all(cp.rebuild is None and cp.tag != tags[n] for n, cp in other.checkpoints().items())
            with connect(pg_db) as conn:  # no leftover tables: the live ones and the store's
                tables = {r[0] for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
            suffixes = {t[len(b):] for t in tables for p in pg_projections() for b in p.schema if t.startswith(b)}
            assert suffixes == {cp.tag for cp in other.checkpoints().values()}


def test_a_lost_connection_is_opened_again_and_its_lease_taken_again(pg_db):
    """The server ends a node's projection connections (as a restart or pg_terminate_backend
    does): the node's next steps connect again, take the leases again and carry on."""
    names = sorted(p.name for p in pg_projections())
    with PgEventStore(pg_db) as store, PgProjectionEngine(store, pg_projections(), parallel=False) as engine:
        engine.setup()
        append_raw(store, [json.dumps(news_event_body(i)).encode() for i in range(50)])
        assert engine.catch_up() == 50 and engine.leases() == names
        pids = [engine.connection(n).raw.info.backend_pid for n in names]
        with connect(pg_db) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # waits for it to end
            (keepalive,) = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone()
        assert keepalive == 0  # gone, and their advisory locks with them
        append_raw(store, [json.dumps(news_event_body(50 + i)).encode() for i in range(50)])
        for _ in range(3):
            engine.step()
        assert engine.catch_up() == 100 and engine.leases() == names
        assert all(engine.connection(n).raw.info.backend_pid not in pids for n in names)
        incremental = pg_tables(engine)
        engine.rebuild()
        assert pg_tables(engine) == incremental
        (idle,) = engine.connection("timelines").execute("SHOW tcp_keepalives_idle").fetchone()
        assert idle in ("5", "5s", "0")  # 0: a connection over a Unix socket, which has no keepalives


def test_u0000_in_names_and_headlines_is_projected(pg_db):
    """A headline, a summary or an entity's name may hold U+0000 (SQLite stores it): on PostgreSQL
    the projections write U+FFFD there, as the store does, instead of failing the batch for ever."""
    news = {"id": "z1", "kind": "report", "occurred_at": "2025-05-01", "headline": "Nul\x00byte boat",
            "summary": "sum\x00mary", "entities": [{"id": "nul-org", "name": "Nul\x00Org", "role": "subject"},
                                                    {"id": "other", "name": "Other", "role": "mentioned"}],
            "details": {"category": "business"}}
    fix = {"id": "z2", "kind": "correction", "occurred_at": "2025-05-02",
           "details": {"corrects": "z1", "reason": "r", "changes": {
               "headline": "Fixed\x00again", "entities": [{"id": "nul-org", "name": "Nul\x00Org 2", "role": "actor"}]}}}
    with PgEventStore(pg_db) as store, PgProjectionEngine(store, pg_projections(), parallel=False) as engine:
        engine.setup()
        append_raw(store, [json.dumps(news).encode()])
        engine.catch_up()
        append_raw(store, [json.dumps(fix).encode()])
        assert engine.catch_up() == store.head() == 2
        tag = engine.checkpoint("entities").tag
        (name,) = engine.connection("entities").execute(f"SELECT name FROM ent_stats{tag} WHERE id = 'nul-org'").fetchone()
        assert name == "Nul\ufffdOrg 2"
        ttag = engine.checkpoint("timelines").tag
        (headline,) = engine.connection("timelines").execute(
            f"SELECT headline FROM tl_events{ttag} WHERE valid_from = 2").fetchone()
        assert headline == "Fixed\ufffdagain"
        incremental = pg_tables(engine)
        engine.rebuild()
        assert pg_tables(engine) == incremental


# --- alias groups (projections.groups): the same sets and rows as on SQLite -------------------

GROUP_TABLES = (
    "timelines.tl_links", "timelines.tl_groups", "timelines.tl_sets", "timelines.tl_group_entries",
    "timelines.tl_member_log", "timelines.tl_set_log", "entities.ent_member_log", "entities.ent_set_log",
    "entities.ent_links", "entities.ent_groups", "entities.ent_sets", "entities.ent_group_members",
    "entities.ent_group_said", "entities.ent_group_stats",
    "related.rel_links", "related.rel_groups", "related.rel_sets", "related.rel_group_members", "related.rel_group_pairs",
)


@pytest.mark.parametrize("growth", [groups.REFILE_GROWTH, 1])
def test_alias_groups_rows_equal_sqlite_rows_through_redeclarations_and_erasures(pg_db, tmp_path, monkeypatch, growth):
    """Declarations merge sets (union by size), a re-declaration moves a subtree to another group,
    corrections and retractions change a group's count, dates and names, late events join a
    group, an erased declaration splits one again: after each step PostgreSQL's rows (the group
    tables, ``ent_stats.grouped``, the related pairs per set) are SQLite's, and a rebuild (set-based, then per change)
    makes them again. With ``growth`` 1, a set is refiled at every merge into it (its runs of
    rows closed, ``groups.REFILE_GROWTH``), on both."""
    from helpers import alias, correction, ent, news, retraction

    monkeypatch.setattr(groups, "REFILE_GROWTH", growth)

    def day(i: int) -> str:
        return f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"

    steps = [
        [news(f"e-{i}", day(i), [ent(f"m{i % 6}", name=f"M{i % 6}", type="person"), ent("x", "mentioned")])
         for i in range(30)],
        [alias("a1", "m1", "m0"), alias("a2", "m2", "m1"), alias("a3", "m3", "m4"), alias("a4", "m5", "m3")],
        [alias("a5", "m1", "m4", name="Moved"), retraction("r1", "e-4"),
         correction("c1", "e-10", entities=[ent("m2", name="Renamed"), ent("x", "mentioned")]),
         news("late", "2020-01-01", [ent("m5", name="Early"), ent("m0", "mentioned")])],
        [alias("a6", "x", "m4"), news("e-99", "2030-01-01", [ent("m3", "actor")])],
    ]
    with EventStore(tmp_path / "t.db") as store, PgEventStore(pg_db) as pg_store, \
            ProjectionEngine(store, sqlite_projections(), batch_size=3, parallel=False) as lite, \
            PgProjectionEngine(pg_store, pg_projections(), batch_size=3, parallel=False) as pg:
        lite.setup()
        pg.setup()

        def same() -> dict[str, list[tuple]]:
            assert lite.catch_up() == pg.catch_up() == store.head() == pg_store.head()
            rows = pg_tables(pg, docs=False)
            assert rows == sqlite_tables(lite)
            return rows

        for events in steps:
            raws = [json.dumps(e).encode() for e in events]
            append_raw(store, raws)
            append_raw(pg_store, raws)
            rows = same()
        assert all(rows[t] for t in GROUP_TABLES), [t for t in GROUP_TABLES if not rows[t]]
        assert {r[0] for r in rows["entities.ent_sets"]} == {"m4"}  # one group: m1..m5 and x under m4
        for victim in ("a3", "e-7"):  # an alias declaration, then a news event of a group
            gone = erase(store, victim)
            assert gone is not None and erase(pg_store, victim) == gone
            lite.remove(gone)
            pg.remove(gone)
            rows = same()
        assert len(rows["entities.ent_sets"]) == 2  # a3 erased: m3 and m5 are a group of their own again
        incremental = pg_tables(pg)
        pg.rebuild()
        assert pg_tables(pg) == incremental
    with PgProjectionEngine(pg_db, pg_projections(), rebuild_batch_size=2, set_based=False) as per_change:
        per_change.rebuild()
        assert pg_tables(per_change) == incremental


def test_related_alias_chain_on_postgres_reads_no_whole_table_a_declaration(pg_db):
    """A chain of 1,000 declarations (each makes the whole chain so far an alias of a new id, with
    an event of its own): the related projection files each by index lookups. Before, PostgreSQL,
    without statistics on the tables a catch-up had just filled, hashed the whole members and
    groups tables into one count a declaration: a chain of n read n times tables that grew with
    it. Counted here: the rows its connection read by sequential scans of its tables
    (``pg_stat_user_tables``, flushed by that connection), while it applied the declarations."""
    from helpers import alias, ent, news

    chain = 1000
    plain = []
    for i in range(chain + 1):
        plain.append(news(f"g-{i}", f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}", [ent(f"c{i}", type="person"), ent(f"o{i % 7}")]))
        plain.append(news(f"s-{i}", f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}", [ent("solo", type="person"), ent(f"o{i % 7}")]))
    declarations = [alias(f"a-{i}", f"c{i}", f"c{i + 1}") for i in range(chain)]
    with PgEventStore(pg_db) as store, \
            PgProjectionEngine(store, [p for p in pg_projections() if p.name == "related"], batch_size=5000) as engine:
        engine.setup()
        append_raw(store, [json.dumps(e).encode() for e in plain])
        engine.catch_up()
        conn = engine.connection("related")
        tag = engine.checkpoint("related").tag

        def seq_reads() -> int:
            conn.execute("SELECT pg_stat_force_next_flush()")  # this statement's end reports them
            with connect(engine.url) as other:
                rows = other.execute(
                    "SELECT relname, seq_tup_read FROM pg_stat_user_tables WHERE schemaname = current_schema()"
                ).fetchall()
            return sum(int(n) for name, n in rows if name.startswith("rel_") and name.endswith(tag))

        before = seq_reads()
        append_raw(store, [json.dumps(e).encode() for e in declarations])
        assert engine.catch_up() == store.head()
        read = seq_reads() - before
        with connect(engine.url) as other:
            (members,) = other.execute(f"SELECT COUNT(*) FROM rel_members{tag}").fetchone()
            (sets,) = other.execute(f"SELECT COUNT(*) FROM rel_groups{tag}").fetchone()
    assert sets == chain + 1  # one group of every id of the chain
    # a few passes over the tables at most (a quadratic filing read them once a declaration)
    assert read < 5 * (members + sets), (read, members, sets)


def test_postgres_projection_batches_read_their_range_of_the_store_only(pg_db):
    """3,000 news events projected live in batches of 100, on a store without statistics
    (as a fresh one is until ANALYZE: the test server runs no autovacuum): each batch reads its
    own events from the store, and the entities' rows it updates, by their keys. Before, the
    planner guessed 130 entities an event and hashed the whole of ``event_entities`` (and of
    ``event_meta``, ``ent_stats``) into a batch's statements: every batch read the store so far.
    Counted: the rows the projections' connections read by sequential scans."""
    from helpers import ent, news

    tables = ("event_entities", "event_meta", "ent_stats")
    with PgEventStore(pg_db) as store, PgProjectionEngine(store, pg_projections(), batch_size=100) as engine:
        engine.setup()

        def seq_reads() -> dict[str, int]:
            for name in engine.projections:  # each statement's end reports its connection's counts
                engine.connection(name).execute("SELECT pg_stat_force_next_flush()")
            with connect(engine.url) as other:
                rows = other.execute(
                    "SELECT relname, seq_tup_read FROM pg_stat_user_tables WHERE schemaname = current_schema()"
                ).fetchall()
            return {t: sum(int(n) for name, n in rows if name.startswith(t)) for t in tables}

        before = seq_reads()
        raws = [
            json.dumps(news(f"e-{i}", f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}",
                            [ent(f"p{i % 500}", type="person"), ent(f"o{i * 7 % 300}", "mentioned")])).encode()
            for i in range(3000)
        ]
        for i in range(0, len(raws), 500):
            append_raw(store, raws[i : i + 500])
        assert engine.catch_up() == store.head() == 3000
        after = seq_reads()
        with connect(engine.url) as other:
            (entities,) = other.execute("SELECT COUNT(*) FROM event_entities").fetchone()
    read = {t: after[t] - before[t] for t in tables}
    # at most one pass over each table in all (30 batches that each read the store so far: ~15)
    assert all(read[t] <= entities for t in tables), (read, entities)
