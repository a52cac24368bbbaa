"""The related-entities projection: for each entity, who shares its events, how often, how lately.

``rel_pairs`` counts the events two entities share (both directions), with the latest date;
``rel_members`` lists the events that count now, keyed by the event's store position (so
that new events append at its end), so that a correction or retraction that takes an event
away leaves the affected pairs exact: their counts fall by one, and a pair whose latest shared
event it was is recomputed from the members. Aliases merge when reading.

``rel_pairs`` is an aggregate of ``rel_members``: a rebuild leaves it out while it fills
``rel_members`` and derives it once caught up (``finish``), with one GROUP BY whose rows come
in key order, instead of merging every batch's pairs into random places of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any


from .changes import Change
from . import groups, members
from .engine import Projection
from .erasure import Erased
from .groups import GroupedProjection, Regrouped

PAIRS = "rel_pairs"
PREFIX = "rel"  # of the group tables (``projections.groups``): rel_links, rel_groups, rel_sets
GROUP_MEMBERS = "rel_group_members"
GROUP_PAIRS = "rel_group_pairs"


def _merging(key: str) -> str:
    """An upsert's tail that adds a pair row's count to the stored one keyed by ``key`` and keeps
    the later of the two last shared events."""
    return f"""
ON CONFLICT({key}) DO UPDATE SET
  count = count + excluded.count,
  last_at = CASE WHEN (excluded.last_key, excluded.last_position) > (last_key, last_position)
                 THEN excluded.last_at ELSE last_at END,
  last_position = CASE WHEN (excluded.last_key, excluded.last_position) > (last_key, last_position)
                 THEN excluded.last_position ELSE last_position END,
  last_key = CASE WHEN (excluded.last_key, excluded.last_position) > (last_key, last_position)
                 THEN excluded.last_key ELSE last_key END
"""


GROUP_MERGE = _merging("set_id, other_id")
MERGE = _merging("entity_id, other_id")

MEMBERS = "rel_members"
# A pair's recompute scans the members of whichever of its two entities has fewer: each is
# counted up to RECOMPUTE_SMALL first, and only if both reach it, further (up to RECOMPUTE_PROBE).
RECOMPUTE_SMALL = 1024
RECOMPUTE_PROBE = 1_000_000


class RelatedProjection(GroupedProjection, Projection):
    name = "related"
    # 5: alias groups (rel_links, rel_groups, rel_sets) and pairs per set (rel_group_*)
    version = 5
    schema = {
        **groups.schema(PREFIX),
        GROUP_MEMBERS: [groups.GROUP_MEMBERS_SCHEMA],
        GROUP_PAIRS: [
            """CREATE TABLE {t} (
                set_id TEXT NOT NULL, other_id TEXT NOT NULL, count INTEGER NOT NULL,
                last_key TEXT NOT NULL, last_position INTEGER NOT NULL, last_at TEXT NOT NULL,
                PRIMARY KEY (set_id, other_id)
            ) WITHOUT ROWID""",
            # a merge finds the rows of the sets that shared events with the id or set that went
            "CREATE INDEX IF NOT EXISTS {t}_other ON {t}(other_id)",
        ],
        PAIRS: [
            """CREATE TABLE {t} (
                entity_id TEXT NOT NULL, other_id TEXT NOT NULL, count INTEGER NOT NULL,
                last_key TEXT, last_position INTEGER, last_at TEXT, PRIMARY KEY (entity_id, other_id)
            ) WITHOUT ROWID""",
        ],
        MEMBERS: [members.SCHEMA],
    }
    indexes = {MEMBERS: ["CREATE INDEX IF NOT EXISTS {t}_entity ON {t}(entity_id)"]}

    # The statements that differ between databases (``projections.pg.related``)
    members_insert = staticmethod(members.insert_sql)

    @staticmethod
    def merge(pairs_t: str) -> str:
        return MERGE

    @staticmethod
    def group_merge(group_pairs_t: str) -> str:
        return GROUP_MERGE

    packed = staticmethod(members.packed)
    packed_key = staticmethod(members.packed_key)
    packed_position = staticmethod(members.packed_position)
    # The groups' statements below are plain SQL that SQLite and PostgreSQL both run but for
    # these hooks (``projections.pg.related``).
    group_prefix = PREFIX

    def bulk(self, conn: sqlite3.Connection, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        pairs_t, members_t = self.table(PAIRS, tag), self.table(MEMBERS, tag)
        members.fill_plain(conn, members_t, low, high)
        if deferred:
            return  # the pairs come from the members once the rebuild has caught up
        # (start_key, position) packed into one sortable string, once per event; SQLite takes a
        # bare column (occurred_at) from the row that gives the MAX.
        conn.execute(
            f"""WITH k AS MATERIALIZED (
                    SELECT position, {members.packed()} AS sk, occurred_at
                    FROM event_meta WHERE position > ? AND position <= ? AND plain)
                INSERT INTO {pairs_t} (entity_id, other_id, count, last_key, last_position, last_at)
                SELECT entity_id, other_id, cnt, {members.packed_key('lc')}, {members.packed_position('lc')},
                       occurred_at
                FROM (SELECT a.entity_id, b.entity_id AS other_id, COUNT(*) AS cnt, MAX(k.sk) AS lc, k.occurred_at
                      FROM k
                      JOIN event_entities a ON a.position = k.position
                      JOIN event_entities b ON b.position = k.position AND b.entity_id != a.entity_id
                      GROUP BY a.entity_id, b.entity_id)
                WHERE true {MERGE}""",
            (low, high),
        )
        self._bulk_groups(conn, tag, low, high)

    def _bulk_groups(self, conn: sqlite3.Connection, tag: str, low: int, high: int) -> None:
        """The group rows of the plain news events of ``low < position <= high``: each event joins
        the sets of the members it names, once a set, and counts once for each (set, side)."""
        group_members, group_pairs, sets = self._group_tables(tag)
        conn.execute(
            f"""INSERT INTO {group_members} (set_id, position, start_key, occurred_at)
                SELECT DISTINCT g.set_id, e.position, e.start_key, e.occurred_at
                FROM event_meta e JOIN event_entities m ON m.position = e.position
                JOIN {sets} g ON g.entity_id = m.entity_id
                WHERE e.position > ? AND e.position <= ? AND e.plain <> 0 AND m.position > ? AND m.position <= ?""",
            (low, high, low, high),
        )
        conn.execute(
            f"""INSERT INTO {group_pairs} (set_id, other_id, count, last_key, last_position, last_at)
                SELECT t.set_id, t.other_id, t.cnt, {self.packed_key('t.lc')}, {self.packed_position('t.lc')},
                       (SELECT x.occurred_at FROM {group_members} x
                        WHERE x.set_id = t.set_id AND x.position = {self.packed_position('t.lc')})
                FROM (SELECT g0.set_id, COALESCE(g.set_id, m.entity_id) AS other_id,
                             COUNT(DISTINCT e.position) AS cnt, MAX({self.packed('e')}) AS lc
                      FROM event_meta e JOIN event_entities m0 ON m0.position = e.position
                      JOIN {sets} g0 ON g0.entity_id = m0.entity_id
                      JOIN event_entities m ON m.position = e.position
                      LEFT JOIN {sets} g ON g.entity_id = m.entity_id
                      WHERE e.position > ? AND e.position <= ? AND e.plain <> 0
                      AND m0.position > ? AND m0.position <= ? AND m.position > ? AND m.position <= ?
                      AND COALESCE(g.set_id, m.entity_id) <> g0.set_id
                      GROUP BY g0.set_id, COALESCE(g.set_id, m.entity_id)) t
                WHERE true {self.group_merge(group_pairs)}""",
            (low, high) * 3,
        )

    def _group_tables(self, tag: str) -> tuple[str, str, str]:
        return self.table(GROUP_MEMBERS, tag), self.table(GROUP_PAIRS, tag), self.table(PREFIX + groups.GROUPS, tag)

    def _side_counts(self, tag: str, where: str) -> str:
        """SQL: ``(set_id, other_id, count, packed latest)`` of the sets' events (``rel_group_members``
        as ``gm``, filtered by ``where``) against each side they name: one row a (set, side)."""
        group_members, _, sets = self._group_tables(tag)
        return f"""SELECT gm.set_id, COALESCE(g.set_id, m.entity_id) AS other_id,
                          COUNT(DISTINCT gm.position) AS cnt, MAX({self.packed('gm')}) AS lc
                   FROM {group_members} gm JOIN {self.table(MEMBERS, tag)} m ON m.position = gm.position
                   LEFT JOIN {sets} g ON g.entity_id = m.entity_id
                   WHERE COALESCE(g.set_id, m.entity_id) <> gm.set_id {where}
                   GROUP BY gm.set_id, COALESCE(g.set_id, m.entity_id)"""

    def _file_all(self, conn: sqlite3.Connection, tag: str) -> None:
        """Every group's rows from the members and the groups (a rebuild's finish, a re-declaration,
        an erased declaration)."""
        group_members, group_pairs, sets = self._group_tables(tag)
        conn.execute(f"DELETE FROM {group_members}")
        conn.execute(f"DELETE FROM {group_pairs}")
        conn.execute(
            f"""INSERT INTO {group_members} (set_id, position, start_key, occurred_at)
                SELECT DISTINCT g.set_id, m.position, m.start_key, m.occurred_at
                FROM {sets} g JOIN {self.table(MEMBERS, tag)} m ON m.entity_id = g.entity_id
                ORDER BY 1, 2"""
        )
        conn.execute(
            f"""INSERT INTO {group_pairs} (set_id, other_id, count, last_key, last_position, last_at)
                SELECT t.set_id, t.other_id, t.cnt, {self.packed_key('t.lc')}, {self.packed_position('t.lc')},
                       (SELECT x.occurred_at FROM {group_members} x
                        WHERE x.set_id = t.set_id AND x.position = {self.packed_position('t.lc')})
                FROM ({self._side_counts(tag, "")}) t ORDER BY 1, 2"""
        )

    def _recompute_group(self, conn: sqlite3.Connection, tag: str, set_id: str, other: str) -> None:
        """A (set, side) row from the set's events (time in their number)."""
        group_members, group_pairs, _ = self._group_tables(tag)
        row = conn.execute(
            f"SELECT t.cnt, t.lc FROM ({self._side_counts(tag, 'AND gm.set_id = ? AND COALESCE(g.set_id, m.entity_id) = ?')}) t",
            (set_id, other),
        ).fetchone()
        if row is None:
            conn.execute(f"DELETE FROM {group_pairs} WHERE set_id = ? AND other_id = ?", (set_id, other))
            return
        last_key, position = members.unpack(row[1])
        (occurred_at,) = conn.execute(
            f"SELECT occurred_at FROM {group_members} WHERE set_id = ? AND position = ?", (set_id, position)
        ).fetchone()
        conn.execute(
            f"INSERT INTO {group_pairs} (set_id, other_id, count, last_key, last_position, last_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(set_id, other_id) DO UPDATE SET count = excluded.count,"
            " last_key = excluded.last_key, last_position = excluded.last_position, last_at = excluded.last_at",
            (set_id, other, row[0], last_key, position, occurred_at),
        )

    def _file(self, conn: sqlite3.Connection, tag: str, done: Regrouped) -> None:
        """After a declaration joined or regrouped sets (``GroupedProjection.declare``): a merged
        set's events join the set it joined (those it did not have yet, each counted once against
        every side it names), and its rows go; a re-declaration files every group anew."""
        if done.dissolved or done.created:  # a re-declaration (rare): every group filed anew
            self._file_all(conn, tag)
            return
        group_members, group_pairs, _ = self._group_tables(tag)
        own = f"SELECT position, start_key, occurred_at FROM {self.table(MEMBERS, tag)} WHERE entity_id = ?"
        for gone, gone_lone, keep, keep_lone, _ in done.merged:
            if keep_lone:  # a new set: its own events (the sets' rows against it already count them)
                self._absorb(conn, tag, keep, own, keep, mirror=False)
            if gone_lone:
                self._absorb(conn, tag, keep, own, gone, mirror=True)
            else:
                self._absorb(
                    conn, tag, keep, f"SELECT position, start_key, occurred_at FROM {group_members} WHERE set_id = ?",
                    gone, mirror=True,
                )
                conn.execute(f"DELETE FROM {group_members} WHERE set_id = ?", (gone,))
                conn.execute(f"DELETE FROM {group_pairs} WHERE set_id = ?", (gone,))
            conn.execute(f"DELETE FROM {group_pairs} WHERE other_id = ?", (gone,))

    def _absorb(
        self, conn: sqlite3.Connection, tag: str, keep: str, source: str, arg: str, *, mirror: bool
    ) -> None:
        """The events of ``source`` (``position, start_key, occurred_at`` rows) that set ``keep``
        does not have yet join it: each adds one to (keep, side) for every side it names other than
        ``keep`` (and, ``mirror``, to (side, keep) for a side that is a set)."""
        group_members, group_pairs, sets = self._group_tables(tag)
        fresh = f"NOT EXISTS (SELECT 1 FROM {group_members} k WHERE k.set_id = ? AND k.position = src.position)"
        counted = conn.execute(
            f"""SELECT COALESCE(g.set_id, m.entity_id), g.set_id IS NOT NULL, COUNT(DISTINCT src.position),
                       MAX({self.packed('src')})
                FROM ({source}) src JOIN {self.table(MEMBERS, tag)} m ON m.position = src.position
                LEFT JOIN {sets} g ON g.entity_id = m.entity_id
                WHERE COALESCE(g.set_id, m.entity_id) <> ? AND {fresh}
                GROUP BY COALESCE(g.set_id, m.entity_id), g.set_id IS NOT NULL""",
            (arg, keep, keep),
        ).fetchall()
        rows = []
        for other, grouped, count, lc in counted:
            last_key, position = members.unpack(lc)
            (occurred_at,) = conn.execute(
                f"SELECT occurred_at FROM {self.table(MEMBERS, tag)} WHERE position = ? LIMIT 1", (position,)
            ).fetchone()
            rows.append((keep, other, count, last_key, position, occurred_at))
            if mirror and grouped:
                rows.append((other, keep, count, last_key, position, occurred_at))
        conn.executemany(
            f"INSERT INTO {group_pairs} (set_id, other_id, count, last_key, last_position, last_at)"
            f" VALUES (?, ?, ?, ?, ?, ?) {self.group_merge(group_pairs)}",
            rows,
        )
        conn.execute(
            f"INSERT INTO {group_members} (set_id, position, start_key, occurred_at)"
            f" SELECT ?, src.position, src.start_key, src.occurred_at FROM ({source}) src WHERE {fresh}",
            (keep, arg, keep),
        )

    def finish(self, conn: sqlite3.Connection, tag: str, position: int) -> None:
        # Before the members' entity index exists: the self-join reads them in store order. A
        # pair's figures are the same both ways: each pair is counted once (entity_id < other_id),
        # then mirrored, which sorts half as many rows.
        pairs_t, members_t = self.table(PAIRS, tag), self.table(MEMBERS, tag)
        conn.execute(
            f"""INSERT INTO {pairs_t} (entity_id, other_id, count, last_key, last_position, last_at)
                SELECT entity_id, other_id, cnt, {members.packed_key('lc')}, {members.packed_position('lc')},
                       occurred_at
                FROM (SELECT a.entity_id, b.entity_id AS other_id, COUNT(*) AS cnt,
                             MAX({members.packed('a')}) AS lc, a.occurred_at
                      FROM {members_t} a JOIN {members_t} b ON b.position = a.position AND b.entity_id > a.entity_id
                      GROUP BY a.entity_id, b.entity_id)"""
        )
        conn.execute(
            f"""INSERT INTO {pairs_t} (entity_id, other_id, count, last_key, last_position, last_at)
                SELECT other_id, entity_id, count, last_key, last_position, last_at FROM {pairs_t}
                WHERE entity_id < other_id ORDER BY other_id, entity_id"""
        )
        self._file_all(conn, tag)

    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str, *, deferred: bool = False) -> None:
        pairs_t, members_t = self.table(PAIRS, tag), self.table(MEMBERS, tag)
        adds: dict[tuple[str, str], list[Any]] = {}
        # pair -> the (start key, position) of each shared event a change took away
        removed: dict[tuple[str, str], list[tuple[str, int]]] = {}
        member_rows: list[tuple[Any, ...]] = []
        insert = self.members_insert(members_t)
        # position -> [ids it counted for before the batch, (ids, start key, date) after]: the groups'
        # rows follow the difference (``_apply_groups``)
        touched: dict[int, list[Any]] = {}
        for change in changes:
            old, new = change.old, change.new
            event = old if old is not None else new
            if event is not None:
                slot = touched.setdefault(
                    event.position, [[e["id"] for e in old.entities] if old is not None and old.counted else None, None]
                )
                slot[1] = (
                    ([e["id"] for e in new.entities], new.start_key, new.body["occurred_at"])
                    if new is not None and new.counted else None
                )
            if old is not None and old.counted:
                if member_rows:
                    conn.executemany(insert, member_rows)
                    member_rows.clear()
                ids = [e["id"] for e in old.entities]
                conn.executemany(
                    members.delete_sql(members_t), [(old.position, i) for i in ids]
                )
                for a in ids:
                    for b in ids:
                        if a != b:
                            removed.setdefault((a, b), []).append((old.start_key, old.position))
            if new is None or not new.counted:
                continue
            ids = [e["id"] for e in new.entities]
            occurred_at = new.body["occurred_at"]
            member_rows.extend((new.position, eid, new.start_key, occurred_at) for eid in ids)
            if len(ids) < 2 or deferred:
                continue
            for a in ids:
                for b in ids:
                    if a == b:
                        continue
                    acc = adds.get((a, b))
                    if acc is None:
                        adds[(a, b)] = [a, b, 1, new.start_key, new.position, occurred_at]
                    else:
                        acc[2] += 1
                        if (new.start_key, new.position) > (acc[3], acc[4]):
                            acc[3:6] = [new.start_key, new.position, occurred_at]
        if member_rows:
            conn.executemany(insert, member_rows)
        if deferred:
            return  # ``finish`` derives the pairs from the members
        conn.executemany(
            f"INSERT INTO {pairs_t} (entity_id, other_id, count, last_key, last_position, last_at)"
            f" VALUES (?, ?, ?, ?, ?, ?) {self.merge(pairs_t)}",
            list(adds.values()),
        )
        for (a, b), gone in removed.items():
            self._take_away(conn, pairs_t, members_t, a, b, gone)
        if touched:
            self._apply_groups(conn, tag, touched)

    def _apply_groups(self, conn: sqlite3.Connection, tag: str, touched: dict[int, list[Any]]) -> None:
        """The sets' rows of the events a batch changed: each leaves the sets it counted for (their
        counts against its sides fall by one; a row whose latest event it was is recomputed) and
        joins those of its version now."""
        group_members, group_pairs, _ = self._group_tables(tag)
        ids = {i for before, after in touched.values() for i in (before or []) + (after[0] if after else [])}
        sets = self.groups(conn, tag).sets_of(ids)
        if not sets:
            return
        set_ids = set(sets.values())
        recompute: set[tuple[str, str]] = set()
        for position, (before, after) in touched.items():
            sides = {sets.get(i, i) for i in before or ()}
            for set_id in sides & set_ids:
                conn.execute(f"DELETE FROM {group_members} WHERE set_id = ? AND position = ?", (set_id, position))
                for other in sides - {set_id}:
                    row = conn.execute(
                        f"SELECT count, last_position FROM {group_pairs} WHERE set_id = ? AND other_id = ?",
                        (set_id, other),
                    ).fetchone()
                    if row is None:
                        continue
                    if row[0] <= 1:
                        conn.execute(f"DELETE FROM {group_pairs} WHERE set_id = ? AND other_id = ?", (set_id, other))
                    elif row[1] == position:
                        recompute.add((set_id, other))
                    else:
                        conn.execute(
                            f"UPDATE {group_pairs} SET count = count - 1 WHERE set_id = ? AND other_id = ?", (set_id, other)
                        )
            if after is None:
                continue
            now, start_key, occurred_at = after
            sides = {sets.get(i, i) for i in now}
            for set_id in sides & set_ids:
                conn.execute(
                    f"INSERT INTO {group_members} (set_id, position, start_key, occurred_at) VALUES (?, ?, ?, ?)",
                    (set_id, position, start_key, occurred_at),
                )
                conn.executemany(
                    f"INSERT INTO {group_pairs} (set_id, other_id, count, last_key, last_position, last_at)"
                    f" VALUES (?, ?, 1, ?, ?, ?) {self.group_merge(group_pairs)}",
                    [(set_id, other, start_key, position, occurred_at) for other in sorted(sides - {set_id})],
                )
        for set_id, other in sorted(recompute):
            self._recompute_group(conn, tag, set_id, other)

    def remove(self, conn: sqlite3.Connection, tag: str, gone: Erased, reached: int) -> None:
        """Its members go; each pair it counted is recomputed from what is left (and goes if
        nothing is). A rebuild that has not derived its pairs yet (``finish``) has none to fix."""
        if gone.kind == "entity_alias":  # the groups as if it had never been declared
            table = self.groups(conn, tag)
            table.replay(table.stored_declarations(reached))
            self._file_all(conn, tag)
            return
        pairs_t, members_t = self.table(PAIRS, tag), self.table(MEMBERS, tag)
        ids = [row[0] for row in conn.execute(f"SELECT entity_id FROM {members_t} WHERE position = ?", (gone.position,))]
        conn.execute(f"DELETE FROM {members_t} WHERE position = ?", (gone.position,))
        group_members, group_pairs, _ = self._group_tables(tag)
        sets = self.groups(conn, tag).sets_of(ids)
        sides = {sets.get(i, i) for i in ids}
        for set_id in sides & set(sets.values()):
            conn.execute(f"DELETE FROM {group_members} WHERE set_id = ? AND position = ?", (set_id, gone.position))
            for other in sorted(sides - {set_id}):
                exists = conn.execute(
                    f"SELECT 1 FROM {group_pairs} WHERE set_id = ? AND other_id = ?", (set_id, other)).fetchone()
                if exists:
                    self._recompute_group(conn, tag, set_id, other)
        for a in ids:
            for b in ids:
                exists = conn.execute(
                    f"SELECT 1 FROM {pairs_t} WHERE entity_id = ? AND other_id = ?", (a, b)).fetchone()
                if a != b and exists:
                    self._recompute(conn, pairs_t, members_t, a, b)

    @classmethod
    def _take_away(
        cls, conn: sqlite3.Connection, pairs_t: str, members_t: str, a: str, b: str, gone: list[tuple[str, int]]
    ) -> None:
        """Shared events taken away from a pair whose row already counts this batch's additions:
        its count falls by as many; its latest date only changes if the latest shared event went,
        in which case the pair is recomputed from the members (a scan of one entity's members:
        hundreds of milliseconds for the busiest pairs, so only when it must)."""
        row = conn.execute(
            f"SELECT count, last_key, last_position FROM {pairs_t} WHERE entity_id = ? AND other_id = ?", (a, b)
        ).fetchone()
        count = row[0] - len(gone) if row else 0
        if count <= 0:  # nothing shared any more (most pairs share one event or a few)
            conn.execute(f"DELETE FROM {pairs_t} WHERE entity_id = ? AND other_id = ?", (a, b))
        elif any(g == (row[1], row[2]) for g in gone):
            cls._recompute(conn, pairs_t, members_t, a, b)
        else:
            conn.execute(f"UPDATE {pairs_t} SET count = ? WHERE entity_id = ? AND other_id = ?", (count, a, b))

    @staticmethod
    def _recompute(conn: sqlite3.Connection, pairs_t: str, members_t: str, a: str, b: str) -> None:
        """A pair's count and latest shared event from the members, in one scan of the members
        of whichever of the two has fewer (probing the other's by position)."""
        capped = f"SELECT COUNT(*) FROM (SELECT 1 FROM {members_t} WHERE entity_id = ? LIMIT ?)"

        def size(entity: str, cap: int) -> int:
            return conn.execute(capped, (entity, cap)).fetchone()[0]

        size_a, size_b = size(a, RECOMPUTE_SMALL), size(b, RECOMPUTE_SMALL)
        if size_a == size_b == RECOMPUTE_SMALL:  # both busy: count further (b no further than a)
            size_a = size(a, RECOMPUTE_PROBE)
            size_b = size(b, size_a + 1)
        outer, inner = (a, b) if size_a <= size_b else (b, a)
        count, lc = conn.execute(
            f"SELECT COUNT(*), MAX({members.packed('m1')})"
            f" FROM {members_t} m1 CROSS JOIN {members_t} m2 ON m2.position = m1.position AND m2.entity_id = ?"
            " WHERE m1.entity_id = ?",
            (inner, outer),
        ).fetchone()
        if count == 0:
            conn.execute(f"DELETE FROM {pairs_t} WHERE entity_id = ? AND other_id = ?", (a, b))
            return
        last_key, position = members.unpack(lc)
        (occurred_at,) = conn.execute(
            f"SELECT occurred_at FROM {members_t} WHERE position = ? AND entity_id = ?", (position, outer)
        ).fetchone()
        last = (last_key, position, occurred_at)
        conn.execute(
            f"INSERT INTO {pairs_t} (entity_id, other_id, count, last_key, last_position, last_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_id, other_id) DO UPDATE SET count = excluded.count,"
            " last_key = excluded.last_key, last_position = excluded.last_position, last_at = excluded.last_at",
            (a, b, count, *last),
        )
