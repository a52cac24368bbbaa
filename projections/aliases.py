"""Entity aliases, resolved when reading: retroactive by construction, and as of any position.

The store refuses an alias that would close a cycle, so following ``alias → canonical`` always
ends. A later declaration for the same alias replaces the earlier one from its position on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from events.store import EventStore


@dataclass
class AliasMap:
    declarations: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    seen: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refresh(self, store: EventStore) -> None:
        with self._lock:
            new = store.aliases(after=self.seen)
            if new:
                self.declarations.extend(new)
                self.seen = new[-1][0]

    def graph(self, upto: int) -> dict[str, str]:
        g: dict[str, str] = {}
        for position, alias, canonical, _ in self.declarations:
            if position <= upto:
                g[alias] = canonical
        return g

    def resolve(self, entity_id: str, upto: int) -> str:
        return self._follow(self.graph(upto), entity_id)

    def members(self, canonical: str, upto: int) -> list[str]:
        """The canonical id first, then every id that resolves to it."""
        g = self.graph(upto)
        out = [canonical]
        for alias in g:
            if alias != canonical and self._follow(g, alias) == canonical:
                out.append(alias)
        return out

    def display_name(self, canonical: str, upto: int) -> str | None:
        name = None
        for position, _, target, new_name in self.declarations:
            if position <= upto and target == canonical and new_name:
                name = new_name
        return name

    @staticmethod
    def _follow(g: dict[str, str], entity_id: str) -> str:
        seen = {entity_id}
        while entity_id in g:
            entity_id = g[entity_id]
            if entity_id in seen:  # cannot happen: the store refuses cycles
                break
            seen.add(entity_id)
        return entity_id
