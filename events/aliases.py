"""Entity aliases, resolved incrementally: as of any store position, in time independent of chains.

The declarations (``entity_alias`` events) form a forest at every position: an alias points to
its canonical, a later declaration for the same alias replaces the earlier one from its position
on, and the store refuses one that would close a cycle (``would_cycle``). An id resolves to the
root of its tree; a root's *members* are itself and every id that resolves to it.

Following ``alias → canonical`` one hop at a time costs the length of the chain, and a chain can
be thousands of declarations long. So each declaration is also applied to a persistent
union-find (``_Forest``): union by size, no path compression, each link stamped with the
position that made it. Links only ever point to a tree of at least the same size, so a node is
at most log2(n) links below its set's representative, and the set as of a position ``P`` is the
one reached by following only the links stamped ``<= P``: resolving an id as of any position
takes at most log2(n) steps, and listing a root's members takes time in their number. Each
representative keeps the history of its set's root (the canonical id), as (position, root).

A union-find cannot split a set, and a re-declaration (an alias already declared) moves a
subtree from one tree to another. It starts a new *epoch*: a forest built afresh from the graph
as it stands after it (time in the number of aliases, paid once per re-declaration). Reads as of
a position before it use the forest of their own epoch, built again on demand from the
declarations and kept (the latest few).
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .records import AliasDeclaration

Declaration = tuple[int, str, str, "str | None"]  # (position, alias, canonical, name)
EVERYTHING = 2**62


class _Declarations(Protocol):
    def aliases(self, after: int = 0) -> "list[AliasDeclaration]": ...


class _Forest:
    """A union-find whose links are stamped with the position that made them (never changed)."""

    __slots__ = ("parent", "size", "children", "roots", "latest")

    def __init__(self) -> None:
        self.parent: dict[str, tuple[str, int]] = {}  # id -> (representative it links to, position)
        self.size: dict[str, int] = {}
        self.children: dict[str, list[tuple[int, str]]] = {}  # representative -> [(position, id)]
        # representative -> ([positions], [root ids]): its set's root from each position on
        self.roots: dict[str, tuple[list[int], list[str]]] = {}
        self.latest: dict[str, int] = {}  # representative -> the position of its set's latest link

    def find(self, entity_id: str, upto: int) -> str:
        parent = self.parent
        while True:
            link = parent.get(entity_id)
            if link is None or link[1] > upto:
                return entity_id
            entity_id = link[0]

    def root_of(self, representative: str, upto: int) -> str:
        history = self.roots.get(representative)
        if history is None:
            return representative
        i = bisect_right(history[0], upto) - 1
        return history[1][i] if i >= 0 else representative

    def resolve(self, entity_id: str, upto: int) -> str:
        return self.root_of(self.find(entity_id, upto), upto)

    def link(self, alias: str, canonical: str, position: int) -> None:
        """``alias`` (the root of its tree) joins ``canonical``'s tree, whose root stays the root."""
        a, c = self.find(alias, EVERYTHING), self.find(canonical, EVERYTHING)
        root = self.root_of(c, EVERYTHING)
        size_a, size_c = self.size.get(a, 1), self.size.get(c, 1)
        if size_a > size_c:
            a, c = c, a  # the smaller set links to the larger one
            history = self.roots.setdefault(c, ([], []))
            history[0].append(position)
            history[1].append(root)
        self.parent[a] = (c, position)
        self.children.setdefault(c, []).append((position, a))
        self.size[c] = size_a + size_c
        self.latest[c] = position

    def members(self, root: str, upto: int) -> list[str]:
        """The ids that resolve to ``root`` as of ``upto`` (``root`` first, the rest sorted)."""
        representative = self.find(root, upto)
        if self.root_of(representative, upto) != root:
            return [root]  # an alias as of then: the caller resolves first
        out, stack = [], [representative]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(child for position, child in self.children.get(node, ()) if position <= upto)
        return [root, *sorted(i for i in out if i != root)]


class AliasIndex:
    """Every alias declaration of a store, and the forests that resolve them (see the module)."""

    def __init__(self) -> None:
        self.declarations: list[Declaration] = []
        self._positions: list[int] = []
        self.seen = 0  # the position of the last declaration read
        self.graph: dict[str, str] = {}  # alias -> canonical, as declared, now
        self._names: dict[str, tuple[list[int], list[str]]] = {}  # canonical -> positions, names
        self._starts = [0]  # where each epoch begins
        self._forest = _Forest()  # the current epoch's
        self._old: OrderedDict[int, _Forest] = OrderedDict()  # earlier epochs' forests, built on demand
        self.groups: set[str] = set()  # the roots that have aliases, now
        # root -> its members now (a set's members as of any position after its latest link are
        # those of now); emptied by every declaration
        self._members: dict[str, list[str]] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self.declarations)

    def refresh(self, store: _Declarations) -> None:
        """Read the declarations stored since the last refresh."""
        with self._lock:
            for d in store.aliases(after=self.seen):
                self.add(d.position, d.alias, d.canonical, d.name)

    def add(self, position: int, alias: str, canonical: str, name: str | None = None) -> None:
        """Apply one declaration (positions increasing; the store has refused cycles)."""
        with self._lock:
            self.declarations.append((position, alias, canonical, name))
            self._members.clear()
            self._positions.append(position)
            self.seen = position
            if name:
                history = self._names.setdefault(canonical, ([], []))
                history[0].append(position)
                history[1].append(name)
            redeclared = alias in self.graph
            self.graph[alias] = canonical
            if redeclared:
                self._starts.append(position)
                self._forest = forest = _build(self.graph, position)
                self.groups = {forest.resolve(a, EVERYTHING) for a in self.graph}
            else:
                self._forest.link(alias, canonical, position)
                self.groups.discard(alias)
                self.groups.add(self._forest.resolve(canonical, EVERYTHING))

    def would_cycle(self, alias: str, canonical: str) -> bool:
        """Whether declaring ``alias → canonical`` now would close a cycle (complete, no limit)."""
        with self._lock:
            if alias == canonical:
                return True
            forest = self._forest
            if alias not in self.graph:  # ``alias`` is a root: a cycle iff ``canonical`` resolves to it
                return forest.resolve(canonical, EVERYTHING) == alias
            if forest.find(alias, EVERYTHING) != forest.find(canonical, EVERYTHING):
                return False  # other trees
            # A re-declaration within one tree: a cycle iff ``alias`` lies on ``canonical``'s path.
            current = canonical
            while current in self.graph:
                if current == alias:
                    return True
                current = self.graph[current]
            return current == alias

    def chain(self, entity_id: str) -> list[str]:
        """``entity_id``'s path to its root, now (for error messages)."""
        with self._lock:
            path = [entity_id]
            while path[-1] in self.graph and len(path) <= len(self.graph):
                path.append(self.graph[path[-1]])
            return path

    def _at(self, upto: int) -> _Forest:
        i = bisect_right(self._starts, upto) - 1
        if i == len(self._starts) - 1:
            return self._forest
        start = self._starts[i]
        forest = self._old.get(start)
        if forest is None:
            end = self._starts[i + 1]
            graph: dict[str, str] = {}
            first = bisect_right(self._positions, start)
            for _, alias, canonical, _ in self.declarations[:first]:
                graph[alias] = canonical
            forest = _build(graph, start)
            for position, alias, canonical, _ in self.declarations[first : bisect_right(self._positions, end - 1)]:
                forest.link(alias, canonical, position)
            self._old[start] = forest
            while len(self._old) > 4:
                self._old.popitem(last=False)
        else:
            self._old.move_to_end(start)
        return forest

    def resolve(self, entity_id: str, upto: int = EVERYTHING) -> str:
        """The canonical id of ``entity_id`` as of a position."""
        with self._lock:
            return self._at(upto).resolve(entity_id, upto)

    def members(self, canonical: str, upto: int = EVERYTHING) -> list[str]:
        """The canonical id first, then every id that resolves to it as of a position."""
        with self._lock:
            forest = self._at(upto)
            if forest is not self._forest:
                return forest.members(canonical, upto)
            representative = forest.find(canonical, EVERYTHING)
            if upto < forest.latest.get(representative, 0):
                return forest.members(canonical, upto)
            found = self._members.get(canonical)
            if found is None:
                found = self._members[canonical] = forest.members(canonical, upto)
            return list(found)

    def changed_at(self, canonical: str) -> int:
        """The position of the latest declaration that changed ``canonical``'s set of members, as
        the index stands now (0: none): as of any position from there on, its members are those
        of now. (A re-declaration starts an epoch whose links all carry its position.)"""
        with self._lock:
            forest = self._forest
            return forest.latest.get(forest.find(canonical, EVERYTHING), 0)

    def is_alias(self, entity_id: str, upto: int = EVERYTHING) -> bool:
        return self.resolve(entity_id, upto) != entity_id

    def display_name(self, canonical: str, upto: int = EVERYTHING) -> str | None:
        """The name the latest declaration naming ``canonical`` (up to a position) gave it."""
        with self._lock:
            history = self._names.get(canonical)
            if history is None:
                return None
            i = bisect_right(history[0], upto) - 1
            return history[1][i] if i >= 0 else None


def _build(graph: dict[str, str], position: int) -> _Forest:
    """A forest of a whole graph, every link stamped ``position`` (an epoch's start).

    Linking a forest's edges in any order keeps each partial tree's top node its set's root, so
    each link joins a root to a tree as ``_Forest.link`` expects."""
    forest = _Forest()
    for alias, canonical in graph.items():
        forest.link(alias, canonical, position)
    return forest
