"""The alias index against the plain definition (follow ``alias → canonical`` as of a position)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from events.aliases import AliasIndex

IDS = [f"e{i}" for i in range(7)]


def path(declarations, entity_id, upto):
    graph = {}
    for position, alias, canonical, _ in declarations:
        if position <= upto:
            graph[alias] = canonical
    out = [entity_id]
    while out[-1] in graph:
        out.append(graph[out[-1]])
    return out


def follow(declarations, entity_id, upto):
    graph = {}
    for position, alias, canonical, _ in declarations:
        if position <= upto:
            graph[alias] = canonical
    seen = {entity_id}
    while entity_id in graph:
        entity_id = graph[entity_id]
        assert entity_id not in seen
        seen.add(entity_id)
    return entity_id


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from(IDS), st.sampled_from([None, "N"])), max_size=30))
def test_index_resolves_as_the_definition_does(pairs) -> None:
    index = AliasIndex()
    accepted = []
    position = 0
    for alias, canonical, name in pairs:
        position += 2  # gaps: positions between declarations are asked about too
        # A cycle by the definition: ``alias`` lies on ``canonical``'s path (or is it).
        cycle = alias in path(accepted, canonical, position)
        assert index.would_cycle(alias, canonical) == cycle
        if not cycle:
            index.add(position, alias, canonical, name)
            accepted.append((position, alias, canonical, name))
    assert index.groups == {follow(accepted, a, position) for _, a, _, _ in accepted}
    for upto in range(0, position + 2):
        for entity_id in IDS:
            root = follow(accepted, entity_id, upto)
            assert index.resolve(entity_id, upto) == root
            if root == entity_id:
                expected = [entity_id, *sorted(i for i in IDS if i != entity_id and follow(accepted, i, upto) == entity_id)]
                assert index.members(entity_id, upto) == expected
            named = [n for p, _, c, n in accepted if p <= upto and c == entity_id and n]
            assert index.display_name(entity_id, upto) == (named[-1] if named else None)


def test_a_long_chain_resolves_in_few_steps() -> None:
    index = AliasIndex()
    n = 20_000
    for i in range(n):  # each new declaration makes the whole chain so far an alias of a new id
        index.add(i + 1, f"c{i}", f"c{i + 1}")
    forest = index._forest
    depth = 0
    node = "c0"
    while node in forest.parent:
        node = forest.parent[node][0]
        depth += 1
    assert depth <= 15  # log2(20,001)
    assert index.resolve("c0") == f"c{n}"
    assert index.resolve("c0", upto=10) == "c10"
    assert len(index.members(f"c{n}")) == n + 1
    assert index.would_cycle(f"c{n}", "c0")
    assert not index.would_cycle("d", "c0")
