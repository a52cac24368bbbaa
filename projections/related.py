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
from . import members
from .engine import Projection
from .erasure import Erased

PAIRS = "rel_pairs"

MERGE = """
ON CONFLICT(entity_id, other_id) DO UPDATE SET
  count = count + excluded.count,
  last_at = CASE WHEN (excluded.last_key, excluded.last_position) > (last_key, last_position)
                 THEN excluded.last_at ELSE last_at END,
  last_position = CASE WHEN (excluded.last_key, excluded.last_position) > (last_key, last_position)
                 THEN excluded.last_position ELSE last_position END,
  last_key = CASE WHEN (excluded.last_key, excluded.last_position) > (last_key, last_position)
                 THEN excluded.last_key ELSE last_key END
"""
MEMBERS = "rel_members"
# A pair's recompute scans the members of whichever of its two entities has fewer: each is
# counted up to RECOMPUTE_SMALL first, and only if both reach it, further (up to RECOMPUTE_PROBE).
RECOMPUTE_SMALL = 1024
RECOMPUTE_PROBE = 1_000_000


class RelatedProjection(Projection):
    name = "related"
    version = 4
    schema = {
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

    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str, *, deferred: bool = False) -> None:
        pairs_t, members_t = self.table(PAIRS, tag), self.table(MEMBERS, tag)
        adds: dict[tuple[str, str], list[Any]] = {}
        # pair -> the (start key, position) of each shared event a change took away
        removed: dict[tuple[str, str], list[tuple[str, int]]] = {}
        member_rows: list[tuple[Any, ...]] = []
        insert = self.members_insert(members_t)
        for change in changes:
            old, new = change.old, change.new
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

    def remove(self, conn: sqlite3.Connection, tag: str, gone: Erased, reached: int) -> None:
        """Its members go; each pair it counted is recomputed from what is left (and goes if
        nothing is). A rebuild that has not derived its pairs yet (``finish``) has none to fix."""
        if gone.kind == "entity_alias":
            return  # aliases are merged when reading: no rows of this projection
        pairs_t, members_t = self.table(PAIRS, tag), self.table(MEMBERS, tag)
        ids = [row[0] for row in conn.execute(f"SELECT entity_id FROM {members_t} WHERE position = ?", (gone.position,))]
        conn.execute(f"DELETE FROM {members_t} WHERE position = ?", (gone.position,))
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
