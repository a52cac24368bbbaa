"""The backends' interfaces (events.backend, projections.backend): a TIMELINE_DB value opens its
backend's store, engine and read side, which implement ``Store``, ``Engine`` and ``Reads`` and
answer with typed records, not positional tuples."""

from __future__ import annotations

from events.backend import Store, open_store
from events.records import AliasDeclaration, EventHash
from helpers import alias, append, news
from projections import open_engine, open_queries
from projections.backend import Engine, Reads
from projections.engine import Checkpoint, ProjectionStatus, Rebuild, RebuildStep, Tables


def test_open_store_gives_a_store_with_typed_records(backend):
    with open_store(backend) as store:
        assert isinstance(store, Store)
        assert store.backend == ("postgres" if backend.startswith("postgresql://") else "sqlite")
        append(store, news("n1", "2025-05-24"), alias("a1", "twitter", "x", name="X"))
        found = store.hashes(["n1", "a1", "missing"])
        assert set(found) == {"n1", "a1"}
        assert found["n1"] == EventHash(1, found["n1"].content_hash, False)
        assert store.aliases() == [AliasDeclaration(2, "twitter", "x", "X")]
        assert store.aliases(after=2) == []
        assert [e.event_id for e in store.read_not_plain(0, 2)] == ["a1"]  # a plain news event is not in it
    with open_store(backend, reader=True) as reader:
        assert reader.head() == 2


def test_the_engine_and_the_read_side_implement_their_roles_with_typed_checkpoints(backend):
    """``open_engine`` and ``open_queries`` give an ``Engine`` and a ``Reads`` on each backend, and
    a checkpoint crosses them as a ``Checkpoint`` (with its ``Rebuild`` while one runs), a rebuild's
    step as a ``RebuildStep``, ``GET /projections``' rows as ``ProjectionStatus``."""
    with open_store(backend) as store, open_engine(store) as engine:
        assert isinstance(engine, Engine)
        assert engine.setup() == []
        append(store, news("n1", "2025-05-24"), news("n2", "2025-05-25"))
        engine.catch_up()
        cp = engine.checkpoint("timelines")
        assert cp == Checkpoint("timelines", engine.projections["timelines"].version, 2, "live", cp.tag, None)
        assert engine.is_current(cp) and cp.live == Tables(2, cp.tag) and cp.tables() == [cp.live]
        assert engine.start_rebuild(["timelines"]) == ["timelines"]
        rebuilding = engine.checkpoint("timelines")
        assert rebuilding is not None and rebuilding.state == "rebuilding" and rebuilding.tag == cp.tag
        assert isinstance(rebuilding.rebuild, Rebuild) and rebuilding.rebuild.position == 0
        assert rebuilding.rebuild.alive() and rebuilding.tables()[1] == Tables(0, rebuilding.rebuild.tag)
        queries = open_queries(backend)
        try:
            assert isinstance(queries, Reads)
            statuses = {s.name: s for s in queries.projections()}
            assert all(isinstance(s, ProjectionStatus) for s in statuses.values())
            assert statuses["timelines"].as_json() == {
                "name": "timelines", "version": cp.version, "position": 2, "head": 2, "lag": 0, "state": "rebuilding",
                "rebuild": {"version": cp.version, "position": 0, "lag": 2},
            }
            step = engine.rebuild_step(["timelines"])
            assert isinstance(step, RebuildStep) and step.head == 2
            while not step.done:
                step = engine.rebuild_step(["timelines"])
            swapped = engine.checkpoint("timelines")
            assert swapped is not None and swapped.rebuild is None and swapped.tag == rebuilding.rebuild.tag
            assert "rebuild" not in {s.name: s for s in queries.projections()}["timelines"].as_json()
        finally:
            queries.close()
