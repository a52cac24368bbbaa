"""The alias-group sets the projections keep, as the reads ask about them."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .. import groups
from ..directory import STATS
from ..related import GROUP_PAIRS

from .base import QueriesBase
from .cursors import GROUP_PREFIX


class GroupReads(QueriesBase):
    def _members_at(self, canonical: str, upto: int) -> list[str]:
        """``aliases.members(canonical, upto)``, the last few kept (a read of a group as of a
        position asks for them several times: its size, its card, its name on entries), while
        the alias index is the same and has read no declaration since."""
        aliases = self.aliases
        key = (aliases, aliases.seen, canonical, upto)  # (the index itself: a new one after an erasure)
        kept = getattr(self._local, "members_at", None)
        if kept is None:
            kept = self._local.members_at = {}
        found = kept.get(key)
        if found is None:
            found = aliases.members(canonical, upto)
            if len(kept) >= 8:
                kept.pop(next(iter(kept)))
            kept[key] = found
        return list(found)
    @staticmethod
    def _group_rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]] | None:
        """The rows of ``sql`` over a projection's alias-group tables; None when they are the
        tables of a version from before the groups (no such table)."""
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return None

    def _set(self, conn: sqlite3.Connection, name: str, canonical: str, upto: int) -> str | None:
        """The set id under which a projection (``timelines`` or ``entities``) files the rows of
        ``canonical``'s group, when those rows are its group's as of ``upto``: the group has not
        changed since ``upto`` (as the alias index knows it) nor since the projection's
        checkpoint, and the projection's set has the same canonical id and size. None otherwise
        (an entity without aliases, an ``as_of`` before the group's latest declaration, a
        projection behind the declarations, or tables from before the groups): the reads then
        ask about each member (``_group``)."""
        aliases = self.aliases
        if canonical not in aliases.groups:  # no aliases now (one that had some then changed since)
            return None
        changed = aliases.changed_at(canonical)
        projected, tag = self._checkpoint(conn, name)
        if changed == 0 or changed > upto or changed > projected:
            return None
        prefix = GROUP_PREFIX[name]
        found = self._group_rows(
            conn,
            f"SELECT s.set_id, s.root, s.size FROM {prefix}{groups.GROUPS}{tag} g"
            f" JOIN {prefix}{groups.SETS}{tag} s ON s.set_id = g.set_id WHERE g.entity_id = ?",
            (canonical,),
        )
        if not found:
            return None
        row = found[0]
        if row[1] != canonical or row[2] != len(aliases.members(canonical, upto)):
            return None
        return row[0]

    def _held(
        self, conn: sqlite3.Connection, canonical: str, upto: int, name: str = "timelines"
    ) -> tuple[str, int] | None:
        """``(set id, set_to)`` under which a projection (``timelines``: its entries; ``entities``:
        its statements) filed the rows of ``canonical``'s group as the group stood at ``upto``,
        from the sets' history: the run of rows of the set that held ``canonical`` then
        (``set_to``: where that run ends, ``groups.OPEN`` if it is the set's current one), whose
        rows with ``set_from <= upto`` are the group's then. For an ``as_of`` before the group's
        latest declaration (``_set`` answers the others); None when ``canonical`` had no aliases
        then, the projection is behind ``upto``, its set then had another root or size than the
        alias index's group, or the tables are from before the history: the members are then
        asked one by one. Two indexed probes, whatever the group's size; the run holds at most
        ``groups.REFILE_GROWTH`` times the group's ids then (a set is refiled as it grows), so the
        rows of ids that joined it later, which the read skips, are fewer than the group's."""
        size = len(self._members_at(canonical, upto))
        projected, tag = self._checkpoint(conn, name)
        if size < 2 or upto > projected:
            return None
        prefix = GROUP_PREFIX[name]
        found = self._group_rows(
            conn,
            f"SELECT set_id, set_to FROM {prefix}{groups.MEMBER_LOG}{tag} WHERE entity_id = ? AND set_from <= ?"
            " ORDER BY set_from DESC LIMIT 1",
            (canonical, upto),
        )
        if not found or found[0][1] <= upto:
            return None
        set_id, set_to = found[0]
        logged = self._group_rows(
            conn,
            f"SELECT root, size FROM {prefix}{groups.SET_LOG}{tag} WHERE set_id = ? AND set_from <= ?"
            " ORDER BY set_from DESC LIMIT 1",
            (set_id, upto),
        )
        if not logged or logged[0][0] != canonical or logged[0][1] != size:
            return None
        return set_id, set_to

    def _related_set(self, conn: sqlite3.Connection, canonical: str, upto: int) -> str | None:
        """The set under which the related projection keeps the pairs of ``canonical``'s group,
        when they are the group's now and so are the sides they name: the group's rows are
        (``_set``) and the projection has applied every declaration the alias index knows (a side
        that is a set is named by its root, an id in no group by itself). None otherwise: the
        members are asked one by one."""
        if not self._related_ready(conn):
            return None
        return self._set(conn, "related", canonical, upto)

    def _related_ready(self, conn: sqlite3.Connection) -> bool:
        """Whether the related projection's groups are the alias index's: it has applied every
        declaration the index knows."""
        projected, _ = self._checkpoint(conn, "related")
        return self.aliases.seen <= projected

    def _group_sides(self, conn: sqlite3.Connection, tag: str, entity_id: str) -> dict[str, list[Any]] | None:
        """``{canonical id: [count, last_key, last_at]}`` of the groups that share events with an id
        in no group, from the related projection's pairs per set; None when those are not the
        alias index's groups (``_related_ready``) or the tables are from before them."""
        if not self._related_ready(conn):
            return None
        prefix = GROUP_PREFIX["related"]
        rows = self._group_rows(
            conn,
            f"SELECT s.root, p.count, p.last_key, p.last_at FROM {GROUP_PAIRS}{tag} p"
            f" JOIN {prefix}{groups.SETS}{tag} s ON s.set_id = p.set_id WHERE p.other_id = ?",
            (entity_id,),
        )
        if rows is None:
            return None
        return {root: [count, last_key, last_at] for root, count, last_key, last_at in rows}

    def _group(self, conn: sqlite3.Connection, canonical: str, upto: int) -> tuple[list[str], list[str]]:
        """``canonical`` and the ids that resolve to it as of ``upto``; and those of them that the
        directory knows (that any event names), canonical first: the ones reads ask about."""
        members = self.aliases.members(canonical, upto)
        if len(members) == 1:
            return members, members
        _, tag = self._checkpoint(conn, "entities")
        ordered, args = self._ordered(members)
        known = [
            row[0]
            for row in conn.execute(
                f"SELECT j.value FROM ({ordered}) j WHERE EXISTS (SELECT 1 FROM {STATS}{tag} s WHERE s.id = j.value)"
                " ORDER BY j.key",
                args,
            )
        ]
        return members, known
