"""The store's interface (events.backend): a TIMELINE_DB value opens its backend's store, which
implements ``Store`` and answers with typed records, not positional tuples."""

from __future__ import annotations

from events.backend import Store, open_store
from events.records import AliasDeclaration, EventHash
from helpers import alias, append, news


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
