"""The entities that share events with one."""

from __future__ import annotations

from typing import Any

from .. import groups
from ..members import KEY_WIDTH, PACKED_WIDTH
from ..related import MEMBERS as RELATED_MEMBERS
from ..related import GROUP_PAIRS, PAIRS

from .cursors import GROUP_PREFIX, _desc, decode_list_cursor, encode_list_cursor, list_binding
from .entities import EntityReads
from .errors import NotFound


class RelatedReads(EntityReads):
    def related(self, entity_id: str, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        """The entities that share events with this one (aliases merged), most shared first (then
        the latest shared first, then by id); a page of them and the cursor of the next."""
        aliases = self._refresh()
        with self.snapshot() as conn:
            head, _ = self._checkpoint(conn, "entities")
            _, tag = self._checkpoint(conn, "related")
            upto = max(head, aliases.seen)
            canonical = aliases.resolve(entity_id, upto)
            # a group the directory files: its card from its rows, and every id of it asked about
            # below (an id no event names has no rows); else the ids the directory knows
            grouped = self._set(conn, "entities", canonical, upto) is not None
            group = None if grouped else self._group(conn, canonical, upto)
            entity = self._entity(conn, canonical, upto, group=group)
            if entity is None:
                raise NotFound(f"no entity {entity_id!r}")
            bound = list_binding(list="related", entity=canonical)
            after = decode_list_cursor(cursor, bound, (int, str, str)) if cursor else None
            counted: dict[str, list[Any]] = {}  # other -> [count, last_key, last_at]
            set_id = self._related_set(conn, canonical, upto)
            if set_id is not None:  # the pairs the related projection keeps for the group's set
                counted = {
                    root or other: [count, last_key, last_at]
                    for other, root, count, last_key, last_at in conn.execute(
                        f"SELECT p.other_id, s.root, p.count, p.last_key, p.last_at FROM {GROUP_PAIRS}{tag} p"
                        f" LEFT JOIN {GROUP_PREFIX['related']}{groups.SETS}{tag} s ON s.set_id = p.other_id WHERE p.set_id = ?",
                        (set_id,),
                    )
                }
            else:  # the members asked one by one
                members = aliases.members(canonical, upto) if group is None else group[1]
                # (one id that events name: its pairs; it may be an alias of a canonical id none names)
                pairs = conn.execute(
                    f"SELECT other_id, count, last_key, last_at FROM {PAIRS}{tag} WHERE entity_id = ?"
                    " ORDER BY count DESC, last_key DESC, other_id",
                    (members[0] if len(members) == 1 else canonical,),
                ).fetchall()
                grouped = {row[0] for row in pairs if row[0] in aliases.groups or aliases.is_alias(row[0], upto)}
                alone = len(members) == 1 and canonical not in aliases.groups
                if len(members) == 1 and not grouped:
                    counted = {row[0]: [row[1], row[2], row[3]] for row in pairs}
                elif alone and (sides := self._group_sides(conn, tag, canonical)) is not None:
                    # an id in no group: its pairs with the ids in no group, and the groups' rows
                    # against it (each group's shared events counted once), not its events
                    counted = {row[0]: [row[1], row[2], row[3]] for row in pairs if row[0] not in grouped}
                    counted.update(sides)
                else:  # aliases on either side: count distinct shared events exactly
                    mine, mine_args = self._in("m1.entity_id", members)
                    others, others_args = self._in("m2.entity_id", members, negate=True)
                    shares = (
                        f" FROM {RELATED_MEMBERS}{tag} m1 JOIN {RELATED_MEMBERS}{tag} m2 ON m2.position = m1.position"
                        f" WHERE {mine} AND {others}"
                    )
                    # each other id's shared events counted in SQL (one row an id, not one an event);
                    # the ids resolved here, and merged by event only when two resolve to one entity
                    # the latest by (start key, position), as the projection's pairs: its date after
                    by_id = conn.execute(
                        f"SELECT m2.entity_id, COUNT(DISTINCT m1.position),"
                        f" {self._text_max(self.packed('m1') + ' || m1.occurred_at')}{shares} GROUP BY m2.entity_id",
                        [*mine_args, *others_args],
                    ).fetchall()
                    resolved = {row[0]: aliases.resolve(row[0], upto) for row in by_id}
                    if len(set(resolved.values())) == len(resolved) and canonical not in resolved.values():
                        counted = {
                            resolved[other]: [count, last[:KEY_WIDTH], last[PACKED_WIDTH:]] for other, count, last in by_id
                        }
                    else:  # two of the other ids are one entity: their shared events merged by event
                        shared: dict[str, dict[int, tuple[str, int, str]]] = {}
                        for other, position, start_key, occurred_at in conn.execute(  # one event, one position
                            f"SELECT m2.entity_id, m1.position, m1.start_key, m1.occurred_at{shares}",
                            [*mine_args, *others_args],
                        ):
                            shared.setdefault(aliases.resolve(other, upto), {})[position] = (
                                start_key, position, occurred_at
                            )
                        for other, events in shared.items():
                            if other == canonical:
                                continue
                            last = max(events.values())  # by (start key, position)
                            counted[other] = [len(events), last[0], last[2]]
            def rank(other: str, count: int, last_key: str) -> tuple[Any, ...]:
                return (-count, _desc(last_key), other)

            ranked = sorted(
                (kv for kv in counted.items() if after is None or rank(kv[0], *kv[1][:2]) > rank(after[2], *after[:2])),
                key=lambda kv: rank(kv[0], *kv[1][:2]),
            )
            next_cursor = None
            if len(ranked) > limit:
                other, (count, last_key, _) = ranked[limit - 1]
                next_cursor = encode_list_cursor([count, last_key or "", other], bound)
            out = []
            for other, (count, _, last_at) in ranked[:limit]:
                info = self._entity(conn, other, upto) or {"name": other, "type": "other"}
                out.append({"id": other, "name": info["name"], "type": info["type"], "count": count, "last_at": last_at})
        return {"entities": out, "next_cursor": next_cursor}

    # --- timelines -----------------------------------------------------------------------
