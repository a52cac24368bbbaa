"""An entry as rendered from its stored event and versions, and the caches of the reads."""

from __future__ import annotations

import bisect
import json
import sqlite3
import sys
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from events.ids import compact_json

from ..changes import RANK


# A timeline entry's fields from a stored event's body, rendered by SQLite: the dates, headline
# and summary, then the sources and details (an entry's role, for an entity, goes between).
STORED_FIELDS = (
    "json_object('occurred_at', body ->> '$.occurred_at', 'ended_at', body ->> '$.ended_at',"
    " 'headline', body ->> '$.headline', 'summary', body ->> '$.summary'),"
    " json_object('sources', json(coalesce(body -> '$.sources', '[]')),"
    " 'details', json(coalesce(body -> '$.details', '{}')))"
)



# A row of _rows; the event's id, recording time and, for a version that is the event as stored
# (details NULL), its fields as written come from the store (see projections.timelines).
ENTRY_COLUMNS = (
    "v.position, v.kind, v.occurred_at, v.ended_at, v.headline, v.summary, v.sources, v.details,"
    " v.status, v.start_key, v.valid_from"
)
# A row's columns by name (a row of an entity's timeline has its entity's role rank last).
POSITION, KIND, OCCURRED_AT, ENDED_AT, HEADLINE, SUMMARY, SOURCES, DETAILS, STATUS, START_KEY, VALID_FROM, RANK_OF = (
    range(12)
)
ROLE_OF = {rank: role for role, rank in RANK.items()}
# What an entry takes from its stored event (``Queries._stored``): its id as JSON, recording
# time, the members of two JSON objects (dates and texts; sources and details) without their
# braces, and its entities as stored: ``(id, name, role rank)`` each.
Card = tuple[str, str, str, str, tuple[tuple[str, str, int], ...]]


def _mentions(entities: str | None) -> tuple[tuple[str, str, int], ...]:
    """``(id, name, role rank)`` of each entity of a stored body's ``entities`` (JSON), by role
    then id (the order entries list them in), each id once (its best role)."""
    best: dict[str, tuple[str, str, int]] = {}
    for e in orjson.loads(entities or "[]"):
        rank = RANK[e["role"]]
        if e["id"] not in best or rank < best[e["id"]][2]:
            best[e["id"]] = (e["id"], e["name"], rank)
    return tuple(sorted(best.values(), key=lambda m: (m[2], m[0])))


def _merged(entities: Sequence[tuple[str, str, int]], canonical: dict[str, str]) -> tuple[tuple[str, str, int], ...]:
    """Mentions with their ids resolved to canonical ones: an entity named by two of its ids
    once, with its best role (its canonical id's own mention on a tie), by role then id."""
    best: dict[str, tuple[str, str, int]] = {}
    for entity_id, written, rank in entities:
        c = canonical[entity_id]
        if c not in best or rank < best[c][2] or (c == entity_id and rank == best[c][2]):
            best[c] = (c, written, rank)
    return tuple(sorted(best.values(), key=lambda m: (m[2], m[0])))


def render_entry(row: Sequence[Any], card: Card, entities: str, by_entity: bool) -> str:
    """A timeline entry as JSON text (docs/contract.md §4's field order): ``row`` a row of
    ``ENTRY_COLUMNS`` (with its role rank last for an entity's timeline), ``card`` what
    ``Queries._stored`` read of the stored event, ``entities`` the JSON array of its entities as
    ``Queries._involved`` resolved them. The one place an entry is rendered: pages, exports and
    anything else that shows entries use it."""
    event_id, recorded_at, dated, described, _ = card
    if row[DETAILS] is not None:  # a corrected version carries its own copies
        dated = compact_json({
            "occurred_at": row[OCCURRED_AT], "ended_at": row[ENDED_AT], "headline": row[HEADLINE],
            "summary": row[SUMMARY],
        })[1:-1]
        described = f'"sources":{row[SOURCES]},"details":{row[DETAILS]}'
    role = f',"role":"{ROLE_OF[row[RANK_OF]]}"' if by_entity else ""
    return (
        f'{{"event_id":{event_id},"kind":"{row[KIND]}",{dated}{role},"entities":{entities},{described},'
        f'"position":{row[POSITION]},"recorded_at":"{recorded_at}","status":"{row[STATUS]}"}}'
    )


# What a card costs beyond its strings (each counted by ``sys.getsizeof``: text stored one, two
# or four bytes a character, as Python keeps it): the tuple, the dict's slot, the allocator's
# rounding. Measured: the process grows ~1.1-1.3 KB a card whose strings take ~800 bytes.
CARD_OVERHEAD = 300
# The cards' memory, by bytes rather than by number: events range from a few hundred bytes to
# tens of kilobytes (a 5,000-character summary, twenty sources), and a cache of so many cards
# would hold whatever they weigh. The budget keeps the benchmark's mix as fast as a larger one
# did while a mixed load of ingest and reads stays within its memory target (docs/performance.md).
CARDS_BUDGET = 40 * 1024 * 1024
ENTITIES_KEPT = 50_000  # rendered ``entities`` kept between two moves of the projections (``_involved``)
NAMES_KEPT = 100_000  # directory names kept between two moves of its checkpoint (``_directory_names``)


def _weight(value: Any) -> int:
    """The bytes a card's strings and tuples take (``sys.getsizeof``, nested tuples summed)."""
    if isinstance(value, tuple):
        return sys.getsizeof(value) + sum(map(_weight, value))
    return sys.getsizeof(value)


class StoredCards:
    """What timeline entries take from stored events, by store position, most recently used.

    A stored event never changes (corrections are events of their own, and corrected entries
    carry their own copies), so an entry is never stale. Two generations of at most half the
    budget (its strings' bytes plus ``CARD_OVERHEAD`` a card) each, switched when the young one
    fills: an approximate LRU whose lookups and inserts are single dict operations, safe for the
    API's threads without a lock (a race at worst reads an event twice or miscounts a card).
    """

    def __init__(self, budget: int = CARDS_BUDGET) -> None:
        self.budget = budget
        self._young: dict[int, tuple[str, ...]] = {}
        self._old: dict[int, tuple[str, ...]] = {}
        self._young_bytes = 0

    def get(self, position: int) -> tuple[str, ...] | None:
        card = self._young.get(position)
        if card is None:
            card = self._old.get(position)
            if card is not None:
                self.put(position, card)
        return card

    def put(self, position: int, card: tuple[Any, ...]) -> None:
        young = self._young
        young[position] = card
        self._young_bytes += CARD_OVERHEAD + _weight(card)
        if self._young_bytes >= self.budget // 2:
            self._old, self._young, self._young_bytes = young, {}, 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


class LaterChanges:
    """The corrections and retractions of events stored before them, by store position: what
    makes an event's state at a position differ from its state now. Append-only, so kept in
    memory and read on from where it was (a cold start reads the store's index of targets),
    with the entities each changed event was ever filed under, so that a read looks only at
    those of its entity. A correction stored before its target changes nothing after the
    target arrives: not kept."""

    def __init__(self) -> None:
        self.positions: list[int] = []  # of the corrections and retractions, ascending
        self.targets: list[int] = []  # the position of the event each one changed
        self.versions: dict[int, list[int]] = {}  # an event's position -> those changing it, ascending
        self.filed: dict[int, set[str]] = {}  # an event's position -> every entity any version filed it under
        self.seen: int | None = None
        self._lock = threading.Lock()

    def refresh(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            (head,) = conn.execute("SELECT coalesce(MAX(position), 0) FROM events").fetchone()
            if self.seen is not None and head <= self.seen:
                return
            rows = conn.execute(self.statement(cold=self.seen is None), (self.seen or 0, head)).fetchall()
            for position, target, moved, stored in rows:
                self.positions.append(position)
                self.targets.append(target)
                self.versions.setdefault(target, []).append(position)
                filed = self.filed.setdefault(target, set(json.loads(stored)))
                if moved:
                    filed.update(e["id"] for e in json.loads(moved))
            self.seen = head

    @staticmethod
    def statement(*, cold: bool) -> str:
        """The corrections and retractions stored in ``(?, ?]``: each one's position, its target's,
        the entities it moved (JSON or NULL) and those its target was stored with (a JSON list)."""
        # cold: the whole index of targets; warm: the events stored since (by position)
        source = "events c INDEXED BY events_target" if cold else "events c"
        return (
            "SELECT c.position, t.position, c.body -> '$.details.changes.entities',"
            " (SELECT json_group_array(entity_id) FROM event_entities e WHERE e.position = t.position)"
            f" FROM {source} CROSS JOIN events t ON t.event_id = c.target_id"
            " WHERE c.target_id IS NOT NULL AND c.position > ? AND c.position <= ?"
            " AND t.position < c.position AND c.body <> '' AND t.body <> '' ORDER BY c.position"
        )

    def changed(self, p: int, upto: int) -> list[int]:
        """The positions of the events stored up to ``p`` that a correction or retraction in
        ``(p, upto]`` changed (whatever they are filed under)."""
        low, high = bisect.bisect_right(self.positions, p), bisect.bisect_right(self.positions, upto)
        return sorted({t for t in self.targets[low:high] if t <= p})

    def between(self, p: int, upto: int, members: Sequence[str]) -> list[tuple[int, int]]:
        """``(position, version at p)`` of the events stored up to ``p``, ever filed under one of
        ``members``, that a correction or retraction in ``(p, upto]`` changed; a version is
        named by the position that made it."""
        low, high = bisect.bisect_right(self.positions, p), bisect.bisect_right(self.positions, upto)
        wanted = set(members)
        out = []
        for target in sorted({t for t in self.targets[low:high] if t <= p and not wanted.isdisjoint(self.filed[t])}):
            changes = self.versions[target]
            before = bisect.bisect_right(changes, p)
            out.append((target, changes[before - 1] if before else target))
        return out
