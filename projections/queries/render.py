"""An entry's stored fields, its entities and their names, read for a page."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # json.dumps' own: non-ASCII as is
from typing import Any

from events.ids import compact_json

from ..directory import GROUP_SAID, SAID, STATS
from ..groups import OPEN

from .cards import Card, DETAILS, ENTITIES_KEPT, NAMES_KEPT, POSITION, ROLE_OF, VALID_FROM, _mentions, _merged, render_entry
from .sets import GroupReads


class RenderReads(GroupReads):
    def _stored(self, conn: sqlite3.Connection, page: list[int], *, keep: bool = True) -> dict[int, Card]:
        """``{position: Card}`` of stored events.

        A timeline's events lie all over the store (by position), so each one read from the
        ``events`` table costs page reads of its own; they are kept (``StoredCards``), as what
        is stored at a position never changes.
        """
        cards = self.cards
        stored: dict[int, Card] = {}
        missing = []
        for position in page:
            card = cards.get(position)
            if card is None:
                missing.append(position)
            else:
                stored[position] = card
        for i in range(0, len(missing), 900):
            chunk = missing[i : i + 900]
            for position, *rest in self._stored_rows(conn, chunk):
                event_id, recorded_at, dated, described, entities = rest
                card = stored[position] = (
                    compact_json(event_id), recorded_at, dated[1:-1], described[1:-1], _mentions(entities),
                )
                if keep:
                    cards.put(position, card)
        return stored

    def _involved(
        self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], stored: dict[int, Card], p: int, *, as_of: bool,
        keep: bool = True,
    ) -> dict[int, str]:
        """``{position: JSON array}``: each entry's entities as its version states them (a
        correction that set ``entities`` replaced them), ids resolved to their canonical entity as
        of ``p`` (an event naming two members of one entity lists it once, with its best role),
        each with the name the directory shows for it (``_names``), by role then id.

        Batched: the stored events' entities come with their cards (``_stored``), the corrected
        versions' (rare) from one statement, the names from one or a few; never one per entry.
        Reads of the present keep what they rendered, by version, until the timelines or the
        directory move on or an alias arrives: a page asked again costs a look-up an entry
        (``keep=False``, an export's pages, read once: looked up, not kept)."""
        if as_of:
            return self._render_involved(conn, rows, stored, p, as_of=True)
        key = (p, *self._checkpoint(conn, "entities"), len(self.aliases))
        kept_key, kept = self._kept_entities
        if kept_key != key or len(kept) > ENTITIES_KEPT:
            kept = {}
            self._kept_entities = (key, kept)
        out = {row[POSITION]: kept[row[VALID_FROM]] for row in rows if row[VALID_FROM] in kept}
        missing = [row for row in rows if row[POSITION] not in out]
        if missing:
            fresh = self._render_involved(conn, missing, stored, p, as_of=False)
            for row in missing:
                out[row[POSITION]] = fresh[row[POSITION]]
                if keep:
                    kept[row[VALID_FROM]] = out[row[POSITION]]
        return out

    def _render_involved(
        self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], stored: dict[int, Card], p: int, *, as_of: bool
    ) -> dict[int, str]:
        """What ``_involved`` returns, read and rendered."""
        listed: dict[int, tuple[tuple[str, str, int], ...]] = {}  # position -> (id, name as written, rank)
        corrected = [(row[POSITION], row[VALID_FROM]) for row in rows if row[DETAILS] is not None]
        for row in rows:
            if row[DETAILS] is None:
                listed[row[POSITION]] = stored[row[POSITION]][4]
        if corrected:
            # the event's state at the version: the latest change to it up to the version's start
            for position, entities in self._entities_at(conn, corrected):
                listed[position] = _mentions(entities)
        aliases = self.aliases
        canonical = {i: i for entities in listed.values() for i, _, _ in entities}
        if len(aliases):  # each id once a page
            canonical = {i: aliases.resolve(i, p) for i in canonical}
        names = self._names(conn, set(canonical.values()), p, as_of=as_of)
        out: dict[int, str] = {}
        for position, entities in listed.items():
            if len(aliases) and any(canonical[i] != i for i, _, _ in entities):
                entities = _merged(entities, canonical)
            out[position] = "[" + ",".join(
                f'{{"id":{encode_basestring(i)},"name":{encode_basestring(names.get(i) or written)},'
                f'"role":"{ROLE_OF[rank]}"}}'
                for i, written, rank in entities
            ) + "]"
        return out

    def _changed_at(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> dict[int, str]:
        """``{valid_from: recorded_at}``: when the change that made each version was recorded
        (the event's own recording, or its correction's or retraction's)."""
        among, args = self._in("position", sorted({row[VALID_FROM] for row in rows}))
        return dict(conn.execute(f"SELECT position, recorded_at FROM events WHERE {among}", args).fetchall())

    def render_rows(
        self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], p: int, *, by_entity: bool,
        as_of: bool = False, keep: bool = True,
    ) -> list[str]:
        """Timeline entries as JSON text, from rows of ``ENTRY_COLUMNS`` (with the entity's role
        rank last in an entity's timeline) read in a snapshot at position ``p``: what the timeline
        pages, the exports and the live streams (``projections.live``) send. Each takes from its
        stored event what it shows and its ``entities`` (``_involved``), rendered by
        ``render_entry``; a row whose event was erased since the projections were read is left
        out (erasure.md). ``keep=False``: what is read is not kept in the caches."""
        return [text for _, text in self._render(conn, rows, p, by_entity=by_entity, as_of=as_of, keep=keep)]

    def _render(
        self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], p: int, *, by_entity: bool,
        as_of: bool, keep: bool,
    ) -> list[tuple[Sequence[Any], str]]:
        """``render_rows``, each entry with its row."""
        stored = self._stored(conn, [row[POSITION] for row in rows], keep=keep)
        shown = [row for row in rows if row[POSITION] in stored]
        involved = self._involved(conn, shown, stored, p, as_of=as_of, keep=keep)
        return [(row, render_entry(row, stored[row[POSITION]], involved[row[POSITION]], by_entity)) for row in shown]

    def _directory_names(self, conn: sqlite3.Connection, ids: set[str], projected: int, tag: str) -> dict[str, str]:
        """The directory's names of these ids, kept until its checkpoint moves (a page's entries
        name many of the same entities; each read from the directory is an index and a row)."""
        kept_at, kept = self._kept_names
        if kept_at != (projected, tag) or len(kept) > NAMES_KEPT:
            kept = {}
            self._kept_names = ((projected, tag), kept)
        missing = [i for i in ids if i not in kept]
        if missing:
            among, args = self._in("id", missing)
            kept.update(conn.execute(f"SELECT id, name FROM {STATS}{tag} WHERE {among}", args).fetchall())
        return {i: kept[i] for i in ids if i in kept}

    def _names(self, conn: sqlite3.Connection, ids: set[str], p: int, *, as_of: bool) -> dict[str, str]:
        """The name the directory shows for each of these canonical ids (``GET /entities/{id}``'s):
        now from the directory's rows, in one statement; ``as_of``, from the statements in force at
        ``p``; an entity with aliases from its alias name or its members' statements."""
        if not ids:
            return {}
        projected, tag = self._checkpoint(conn, "entities")
        aliases = self.aliases
        grouped = {i for i in ids if i in aliases.groups}
        names: dict[str, str] = {}
        if not as_of:
            names = self._directory_names(conn, ids - grouped, projected, tag)
        for entity_id in sorted(ids if as_of else grouped):
            named = aliases.display_name(entity_id, p) if entity_id in grouped else None
            if named is None:
                # a group's statements filed under its set (as of p: its members then are those of now)
                set_id = self._set(conn, "entities", entity_id, p) if entity_id in grouped else None
                set_to = OPEN
                if (
                    set_id is None and as_of and entity_id in grouped
                    and (held := self._held(conn, entity_id, p, "entities")) is not None
                ):
                    set_id, set_to = held  # the set that held its group then (before a later declaration)
                if set_id is not None:
                    said = self.group_naming(conn, f"{GROUP_SAID}{tag}", set_id, entity_id, p, set_to)
                else:
                    members = aliases.members(entity_id, p) if entity_id in grouped else [entity_id]
                    said = self.naming(conn, f"{SAID}{tag}", members, p)
                named = said[0] if said is not None else None
            if named is not None:
                names[entity_id] = named
        return names
