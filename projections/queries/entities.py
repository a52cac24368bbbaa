"""Entity cards, as of now or any instant, and the entity directory."""

from __future__ import annotations

import sqlite3
from typing import Any

from events.ids import fold

from ..directory import GROUP_SAID, GROUP_STATS, MEMBERS, SAID, STATS
from ..groups import OPEN
from ..members import unpack
from ..timelines import ENTRIES, EVENTS, GROUP_ENTRIES

from .cursors import as_of_key, decode_list_cursor, encode_list_cursor, list_binding
from .errors import NotFound
from .render import RenderReads


class EntityReads(RenderReads):
    def _entity(
        self, conn: sqlite3.Connection, canonical: str, upto: int, *, as_of: bool = False,
        group: tuple[list[str], list[str]] | None = None,
    ) -> dict[str, Any] | None:
        """An entity's card (``canonical`` and the ids that resolve to it as of ``upto``); with
        ``as_of``, as the store stood at position ``upto``."""
        projected, tag = self._checkpoint(conn, "entities")
        if not (as_of and upto < projected):
            set_id = self._set(conn, "entities", canonical, upto)
            if set_id is not None:
                return self._group_entity(conn, canonical, upto, tag, set_id)
        if as_of and upto < projected and group is None and (held := self._held(conn, canonical, upto)) is not None:
            return self._entity_held(conn, canonical, upto, tag, *held)
        group = group or self._group(conn, canonical, upto)
        if as_of and upto < projected:
            return self._entity_at(conn, canonical, upto, projected, tag, group)
        members, known = group
        if not known:
            return None
        if len(known) == 1:
            row = conn.execute(
                f"SELECT name, type, event_count, first_at, last_at FROM {STATS}{tag} WHERE id = ?", (known[0],)
            ).fetchone()
            if row is None:
                return None
            name, kind, count, first_at, last_at = row
        else:
            among, args = self._in("entity_id", known)
            # One event, one position: an event filed under several members counts once.
            count, first, last = conn.execute(
                f"SELECT COUNT(DISTINCT position), MIN({self.packed()}), MAX({self.packed()}) FROM {MEMBERS}{tag}"
                f" WHERE {among}",
                args,
            ).fetchone()
            first_at = last_at = None
            if count:
                first_at, last_at = (
                    conn.execute(
                        f"SELECT occurred_at FROM {MEMBERS}{tag} WHERE position = ? LIMIT 1", (unpack(value)[1],)
                    ).fetchone()[0]
                    for value in (first, last)
                )
            named = self.naming(conn, f"{SAID}{tag}", known)
            name, kind = named[:2] if named is not None else (canonical, "other")
        return {
            "id": canonical,
            "name": self.aliases.display_name(canonical, upto) or name,
            "type": kind,
            "aliases": members[1:],
            "event_count": count,
            "first_at": first_at,
            "last_at": last_at,
        }

    def _group_entity(self, conn: sqlite3.Connection, canonical: str, upto: int, tag: str, set_id: str) -> dict[str, Any] | None:
        """The card of an entity with aliases from the rows the directory files under its set: a
        few indexed reads, whatever the number of its members."""
        named = self.group_naming(conn, f"{GROUP_SAID}{tag}", set_id, canonical)
        if named is None:
            return None  # no event names any of its ids
        count, first_at, last_at = conn.execute(
            f"SELECT event_count, first_at, last_at FROM {GROUP_STATS}{tag} WHERE set_id = ?", (set_id,)
        ).fetchone()
        return {
            "id": canonical,
            "name": self.aliases.display_name(canonical, upto) or named[0],
            "type": named[1],
            "aliases": self.aliases.members(canonical, upto)[1:],
            "event_count": count,
            "first_at": first_at,
            "last_at": last_at,
        }

    def _entity_held(
        self, conn: sqlite3.Connection, canonical: str, p: int, tag: str, set_id: str, set_to: int
    ) -> dict[str, Any] | None:
        """The card of an entity with aliases as the store stood at ``p``, from the rows the
        timelines projection filed under the set that held its group then (``_held``): its
        count, the entries of its timeline at p (each event once), read by the versions made by
        then; its first and last dates, that timeline's first entry in each order. Its name and
        type: its ids' statements in force then, from those the entities projection filed under
        the set that held it then (``group_naming``), else each id's (``naming``)."""
        timelines, ttag = self._checkpoint(conn, "timelines")
        held = (
            f"FROM {GROUP_ENTRIES}{ttag} en JOIN {EVENTS}{ttag} v ON v.valid_from = en.valid_from"
            " WHERE en.set_id = ? AND en.set_to = ? AND en.valid_from <= ? AND +en.set_from <= ?"
            " AND v.valid_to > ? AND v.status != 'retracted'"
        )
        args = (set_id, set_to, p, p, p)
        count = self._held_count(conn, set_id, set_to, p, tag, ttag, timelines)
        if count is None:
            (count,) = conn.execute(f"SELECT COUNT(DISTINCT en.position) {held}", args).fetchone()
        members = self._members_at(canonical, p)
        said = self._held(conn, canonical, p, "entities")  # the directory's statements of the set then
        if said is not None:
            named = self.group_naming(conn, f"{GROUP_SAID}{tag}", said[0], canonical, p, said[1])
        else:
            named = self.naming(conn, f"{SAID}{tag}", members, p)
        if named is None and not count:
            return None  # not known by then

        def end(direction: str) -> str | None:
            row = conn.execute(
                f"SELECT coalesce(v.occurred_at, m.occurred_at) {held.replace(' WHERE', ' JOIN event_meta m ON m.position = en.position WHERE')}"
                f" ORDER BY en.start_key {direction}, en.position {direction} LIMIT 1",
                args,
            ).fetchone()
            return row[0] if row else None

        return {
            "id": canonical,
            "name": self.aliases.display_name(canonical, p) or (named[0] if named else canonical),
            "type": named[1] if named else "other",
            "aliases": members[1:],
            "event_count": count,
            "first_at": end("ASC") if count else None,
            "last_at": end("DESC") if count else None,
        }

    def _held_count(
        self, conn: sqlite3.Connection, set_id: str, set_to: int, p: int, tag: str, ttag: str, timelines: int
    ) -> int | None:
        """A held set's count at ``p`` from the side after p, when the set still stands and the
        entities projection counts it now (``ent_group_stats``, both projections at the same
        position): its count now, less the events it counts now but did not at p, plus those it
        counted at p and does not now. Only the events of the rows that joined the set after p
        and those a correction or retraction after p changed can differ (``LaterChanges``): the
        work is theirs, not the set's. None otherwise (counted from the side before p)."""
        projected, _ = self._checkpoint(conn, "entities")
        if set_to != OPEN or projected != timelines:
            return None
        now = conn.execute(f"SELECT event_count FROM {GROUP_STATS}{tag} WHERE set_id = ?", (set_id,)).fetchone()
        if now is None:
            return None
        self.later.refresh(conn)
        changed = self.later.changed(p, timelines)
        ge, ev = f"{GROUP_ENTRIES}{ttag}", f"{EVENTS}{ttag}"
        # (each candidate's rows by its position: ``+`` keeps the planner off the set_from index)
        rows = f"FROM {ge} r JOIN {ev} v ON v.valid_from = r.valid_from WHERE r.set_id = ? AND r.set_to = ? AND r.position = c.position"
        candidates, args = f"SELECT position FROM {ge} WHERE set_id = ? AND set_to = ? AND set_from > ?", [set_id, set_to, p]
        if changed:
            touched, touched_args = self._in("position", changed)
            candidates += f" UNION SELECT position FROM {ge} WHERE set_id = ? AND set_to = ? AND {touched}"
            args += [set_id, set_to, *touched_args]
        # (scalar subqueries with LIMIT: probed once a candidate, never hashed over the whole set;
        # a candidate of several rows comes once a row: made distinct here, as DISTINCT in SQL
        # would walk the whole set in position order rather than the range of those after p)
        flags = {row[0]: row[1:] for row in conn.execute(
            f"""WITH c(position) AS ({candidates})
                SELECT c.position, coalesce((SELECT 1 {rows} AND v.valid_to = {OPEN} AND v.status != 'retracted' LIMIT 1), 0),
                       coalesce((SELECT 1 {rows} AND +r.set_from <= ? AND v.valid_to > ? AND v.status != 'retracted'
                                 LIMIT 1), 0)
                FROM c""",
            (*args, set_id, set_to, set_id, set_to, p, p),
        )}
        gained = sum(1 for is_now, was in flags.values() if is_now and not was)
        lost = sum(1 for is_now, was in flags.values() if was and not is_now)
        return now[0] - gained + lost

    def _entity_at(
        self, conn: sqlite3.Connection, canonical: str, p: int, projected: int, tag: str,
        group: tuple[list[str], list[str]],
    ) -> dict[str, Any] | None:
        """An entity's card as the store stood at position ``p`` (below the entities projection's
        ``projected``), without walking the entity's history:

        - the count: its members now (the entities projection) recorded up to p, counted on the
          smaller side of p in the members' (entity, position) index (for one id: the count now
          less those recorded after p), corrected for the events that a correction or retraction
          recorded after p changed: each counts as its version at p says (the timelines
          projection keeps every version). Those are kept in memory (``LaterChanges``): the
          corrections after p that touch the entity, not its size, bound the work;
        - the first and last dates: the first entry of its timeline at p in each order, as a
          page of that timeline finds it.
        """
        _, ttag = self._checkpoint(conn, "timelines")
        all_members, members = group  # the ids that events name are those asked about
        if not members:
            return None
        marks = ",".join("?" * len(members))
        if len(members) == 1 and p >= projected // 2:
            (after,) = conn.execute(
                f"SELECT COUNT(*) FROM {MEMBERS}{tag} WHERE entity_id = ? AND position > ?", (members[0], p)
            ).fetchone()
            now = conn.execute(f"SELECT event_count FROM {STATS}{tag} WHERE id = ?", (members[0],)).fetchone()
            count = (now[0] if now else 0) - after
        else:
            distinct = "COUNT(DISTINCT position)" if len(members) > 1 else "COUNT(*)"
            (count,) = conn.execute(
                f"SELECT {distinct} FROM {MEMBERS}{tag} WHERE entity_id IN ({marks}) AND position <= ?", [*members, p]
            ).fetchone()
        self.later.refresh(conn)
        changed = self.later.between(p, projected, members)
        if changed:  # each counted now as it stands now, and at p as its version then says
            pairs, pairs_args = self._pairs(changed)
            now, then = conn.execute(
                f"""WITH d(position, version) AS ({pairs})
                    SELECT (SELECT COUNT(*) FROM d WHERE EXISTS (SELECT 1 FROM {MEMBERS}{tag} m
                              WHERE m.position = d.position AND m.entity_id IN ({marks}))),
                           (SELECT COUNT(*) FROM d JOIN {EVENTS}{ttag} v ON v.valid_from = d.version
                            WHERE v.valid_to > ? AND v.status != 'retracted' AND EXISTS (
                              SELECT 1 FROM {ENTRIES}{ttag} en WHERE en.entity_id IN ({marks})
                              AND en.start_key = v.start_key AND en.position = d.position
                              AND en.valid_from = d.version))""",
                [*pairs_args, *members, p, *members],
            ).fetchone()
            count += then - now
        # Names and types as the store knew them: its statements in force then (docs/entities.md).
        named = self.naming(conn, f"{SAID}{tag}", members, p)
        if named is None and not count:
            return None  # not known by then
        return {
            "id": canonical,
            "name": self.aliases.display_name(canonical, p) or (named[0] if named else canonical),
            "type": named[1] if named else "other",
            "aliases": all_members[1:],
            "event_count": count,
            "first_at": self._end_at(conn, members, p, ttag, "ASC") if count else None,
            "last_at": self._end_at(conn, members, p, ttag, "DESC") if count else None,
        }

    @staticmethod
    def _end_at(conn: sqlite3.Connection, members: list[str], p: int, ttag: str, direction: str) -> str | None:
        """``occurred_at`` as written of the first (ASC) or last (DESC) entry of the entity's
        timeline at position p: for each id, its entries' key in that order, up to the first
        one valid then (what a page of the timeline reads)."""
        best = None
        for member in members:
            row = conn.execute(
                f"SELECT en.start_key, en.position, coalesce(v.occurred_at, m.occurred_at) FROM {ENTRIES}{ttag} en"
                f" JOIN {EVENTS}{ttag} v ON v.valid_from = en.valid_from JOIN event_meta m ON m.position = en.position"
                " WHERE en.entity_id = ? AND en.valid_from <= ? AND v.valid_to > ? AND v.status != 'retracted'"
                f" ORDER BY en.start_key {direction}, en.position {direction} LIMIT 1",
                (member, p, p),
            ).fetchone()
            if row is not None and (best is None or (row[:2] < best[:2]) == (direction == "ASC")):
                best = row
        return best[2] if best else None

    def entity(self, entity_id: str, as_of: str | None = None) -> dict[str, Any]:
        """One entity (an alias answers with its canonical one); with ``as_of``, as it stood then."""
        key = as_of_key(as_of) if as_of else None
        self._refresh()
        with self.snapshot() as conn:
            head, _ = self._checkpoint(conn, "entities")
            if key is None:
                upto = max(head, self.aliases.seen)
            else:
                upto = min(head, self.store.position_at(key))
            found = self._entity(conn, self.aliases.resolve(entity_id, upto), upto, as_of=key is not None)
        if found is None:
            raise NotFound(f"no entity {entity_id!r}" + (f" as of {as_of}" if as_of else ""))
        return found

    def entities(self, q: str | None = None, type: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The first ``limit`` entities of the directory (``directory``)."""
        return self.directory(q, type, limit)["entities"]

    def directory(
        self, q: str | None = None, type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """A page of the directory, most events first (then by id), and the cursor of the next:
        entities without aliases straight from their rows (from the cursor's key on, in the
        order of their index), each canonical entity with aliases merged (its aliases never
        listed on their own). Each page reads the directory as it stands then."""
        folded = fold(q) if q else None
        bound = list_binding(list="entities", q=folded, type=type)
        after = decode_list_cursor(cursor, bound, (int, str)) if cursor else None
        aliases = self._refresh()
        with self.snapshot() as conn:
            head, tag = self._checkpoint(conn, "entities")
            upto = max(head, aliases.seen)
            groups = set(aliases.groups)
            out: dict[str, dict[str, Any]] = {}
            # the ids of alias groups are not listed on their own (the groups are, below): the
            # directory flags them (``grouped``), so that the listing does not pass them
            where, args = ["grouped = 0"], []
            if q:
                needle = fold(q).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                where.append("search LIKE ? ESCAPE '\\'")
                args.append(f"%{needle}%")
            if type:
                where.append("type = ?")
                args.append(type)
            if after is not None:  # after the last one listed: fewer events, or as many and a later id
                where.append("(event_count < ? OR (event_count = ? AND id > ?))")
                args += [after[0], after[0], after[1]]
            sql = f"SELECT id, name, type, event_count, first_at, last_at FROM {STATS}{tag} WHERE " + " AND ".join(where)
            sql += " ORDER BY event_count DESC, id"
            try:
                listed = conn.execute(sql, args)
            except sqlite3.OperationalError as exc:  # tables of a version from before the flag
                if "grouped" not in str(exc):
                    raise
                listed = conn.execute(sql.replace("WHERE grouped = 0 AND", "WHERE").replace(" WHERE grouped = 0 ", " "), args)
            # Entities without aliases, in order, until one more than ``limit`` of them (aliases
            # and canonical ids with aliases are skipped: merged below; the index's view of them
            # decides, as the directory may not have applied the latest declarations yet).
            for eid, name, kind, count, first_at, last_at in listed:
                if eid in groups or aliases.is_alias(eid, upto):
                    continue
                out[eid] = {"id": eid, "name": name, "type": kind, "aliases": [], "event_count": count,
                            "first_at": first_at, "last_at": last_at}
                if len(out) > limit:
                    break
            # Canonical ids with aliases: merged; with ``q``, those whose name or any member's
            # name or id matches.
            for canonical in sorted(groups):
                found = self._entity(conn, canonical, upto)
                if found is None or (type is not None and found["type"] != type):
                    continue
                if after is not None and (-found["event_count"], canonical) <= (-after[0], after[1]):
                    continue
                if folded is not None and not self._matches(conn, tag, found, folded):
                    continue
                out[canonical] = found
        ranked = sorted(out.values(), key=lambda e: (-e["event_count"], e["id"]))
        page = ranked[:limit]
        next_cursor = None
        if len(ranked) > limit:
            next_cursor = encode_list_cursor([page[-1]["event_count"], page[-1]["id"]], bound)
        return {"entities": page, "next_cursor": next_cursor}

    def _matches(self, conn: sqlite3.Connection, tag: str, entity: dict[str, Any], folded: str) -> bool:
        if folded in fold(entity["name"]) or any(folded in fold(a) for a in [entity["id"], *entity["aliases"]]):
            return True
        among, args = self._in("id", [entity["id"], *entity["aliases"]])
        row = conn.execute(
            f"SELECT 1 FROM {STATS}{tag} WHERE {among} AND {self._contains('search')} LIMIT 1", [*args, folded]
        ).fetchone()
        return row is not None
