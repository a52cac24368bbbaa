"""An erased news event taken out of the projections' tables, without a rebuild (docs/erasure.md).

``capture`` reads, inside the erasure's transaction and before the content goes, what the
projections hold of the event: its position, those of the corrections and retraction erased
with it, the headline and summary of each of its versions (what the contentless search index
needs to delete its tokens) and every entity any version filed it under. Each projection's
``remove`` then deletes its rows and recomputes what they counted (entity counts, dates and
names, shared-event pairs), for its live tables and for a rebuild's, as far as each has got
(``reached``): the tables are then what a rebuild without the event would make.

An erased alias declaration is captured too (``kind`` ``entity_alias``, no versions, the alias
and canonical id as its entities): the projections that file rows under alias groups
(``projections.groups``) apply the declarations left again.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.models import NEWS_KINDS
from events.store import EventStore


@dataclass(frozen=True, slots=True)
class Erased:
    seq: int  # the erasure's (``erasures.seq``: the order of erasures)
    event_id: str
    kind: str
    position: int  # the news event's
    positions: tuple[int, ...]  # its own and those of the corrections and retraction erased with it
    versions: tuple[tuple[int, str, str], ...]  # (valid_from, headline, summary) of each version
    entities: frozenset[str]  # every entity any version filed it under
    declared: tuple[str, str] | None = None  # an erased alias declaration's (alias, canonical)


def capture(store: EventStore, event_id: str) -> Erased | None:
    """What the projections hold of a stored news event or alias declaration (None for another
    kind: it has no rows)."""
    event = store.get(event_id)
    if event is not None and event.kind == "entity_alias":
        (seq,) = store.conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM erasures").fetchone()
        details = event.body["details"]
        return Erased(
            seq, event.event_id, event.kind, event.position, (event.position,), (),
            frozenset({details["alias"], details["canonical"]}), (details["alias"], details["canonical"]),
        )
    if event is None or event.kind not in NEWS_KINDS:
        return None
    editorial = [item.position for item in store.editorial_for(event_id)]
    starts = [event.position, *(p for p in editorial if p > event.position)]
    versions = []
    entities: set[str] = set()
    for valid_from in starts:
        _, state = store.folded(event, upto=valid_from)
        body = state.body
        versions.append((valid_from, body["headline"], body.get("summary") or ""))
        entities.update(e["id"] for e in body["entities"])
    # Called inside the erasure's transaction, before it records itself: its seq is the next one.
    (seq,) = store.conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM erasures").fetchone()
    return Erased(
        seq, event.event_id, event.kind, event.position, (event.position, *editorial), tuple(versions),
        frozenset(entities),
    )
