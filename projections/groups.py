"""Alias groups filed in a projection: each id of an entity with aliases, and the set it is in.

The timelines and entities projections each keep the groups (each projection owns its tables
and rebuilds alone) and file the rows of a group's members under the group's *set id* as well,
so that a read of an entity with 10,000 aliases reads one range of rows, not 10,000
(docs/entities.md). Three tables, ``{prefix}`` being ``tl`` or ``ent``:

- ``{prefix}_links(alias, canonical)``: the declarations in force (the alias graph now, as far
  as the projection has applied the store), with an index on ``canonical`` to walk a tree down;
- ``{prefix}_groups(entity_id, set_id)``: every id of a group of two or more ids, and its set's
  id (an entity without aliases has no row: its set is itself);
- ``{prefix}_sets(set_id, root, size)``: each set's canonical id (the root of its tree) and
  how many ids it holds.

A set's id is one of its members, kept across merges: a declaration joins the alias's set and
the canonical's by **union by size** (the smaller set takes the larger one's id; on a tie the
alias's side takes the canonical's), so an id, and the rows filed under it, change sets at most
log2(n) times however the chains are declared. A re-declaration (an alias declared again, which
moves a subtree from one tree to another) dissolves the two sets concerned and makes a set of
each tree of two or more ids afterwards, with its root as its id (time in their size, once per
re-declaration). An erased declaration replays every declaration left (``replay``).

With ``history`` (the timelines and entities projections, for ``as_of`` reads), two logs more:

- ``{prefix}_member_log(entity_id, set_from, set_id, set_to)``: each id's memberships, from the
  declaration that put it in a set to the one that took it out (``OPEN`` while it is there);
- ``{prefix}_set_log(set_id, set_from, root, size, filed)``: each set's canonical id and size
  from each declaration that changed it on (size 0 once it went), and its size when its rows
  were filed last (``filed``: where its current run of rows began).

A merge writes the smaller set's members anew (log2(n) times an id at most, as its rows) and a
re-declaration those of the sets it dissolves and makes; the projection keeps the rows of a set
that went, closed there, so that the group as of any position is one set's rows as they stood.
A set that has grown to more than twice its size when its rows were filed (``REFILE_GROWTH``)
is *refiled* at the declaration that makes it so: its rows until then are kept closed there, as
those of a set that went, and its members join it anew (its rows run on from there). A read as
of any position then finds the set's rows of then in one run that is at most twice the group's
size then (the rows of the ids that joined later, which it skips, are fewer than the group's),
whatever the set grew to since; the runs cost each row O(1) copies more (a geometric series).

The set ids depend on the order of the declarations only, never on the events or on how they
were batched: a rebuild, which applies the declarations in store order through ``declare`` as
live batches do, makes the same rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from events.records import AliasDeclaration, StoredEvent

LINKS, GROUPS, SETS = "_links", "_groups", "_sets"
MEMBER_LOG, SET_LOG = "_member_log", "_set_log"  # the sets' history (``history``)
OPEN = 2**62  # set_to of a membership (or a set's rows) still in force
#: how much larger than when its rows were filed a set grows before its rows are filed anew, a
#: run of its history closed (``Groups._union``): an ``as_of`` read skips at most the rows of
#: ``REFILE_GROWTH - 1`` times the group's size then
REFILE_GROWTH = 2


#: a grouped projection's events of each set (``ent_group_members``, ``rel_group_members``): the
#: same table in the directory and the related projections
GROUP_MEMBERS_SCHEMA = """CREATE TABLE {t} (
    set_id TEXT NOT NULL, position INTEGER NOT NULL, start_key TEXT NOT NULL, occurred_at TEXT NOT NULL,
    PRIMARY KEY (set_id, position)
) WITHOUT ROWID"""


def schema(prefix: str, *, history: bool = False) -> dict[str, list[str]]:
    """The tables' CREATE statements (for a projection's ``schema``); with ``history``, the two
    logs of the sets' history as well."""
    logs = {
        f"{prefix}{MEMBER_LOG}": [
            "CREATE TABLE {t} (entity_id TEXT NOT NULL, set_from INTEGER NOT NULL, set_id TEXT NOT NULL,"
            " set_to INTEGER NOT NULL, PRIMARY KEY (entity_id, set_from)) WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS {t}_set ON {t}(set_id, set_to)",
        ],
        f"{prefix}{SET_LOG}": [
            "CREATE TABLE {t} (set_id TEXT NOT NULL, set_from INTEGER NOT NULL, root TEXT NOT NULL,"
            " size INTEGER NOT NULL, filed INTEGER NOT NULL, PRIMARY KEY (set_id, set_from)) WITHOUT ROWID",
        ],
    } if history else {}
    return {
        **logs,
        f"{prefix}{LINKS}": [
            "CREATE TABLE {t} (alias TEXT PRIMARY KEY, canonical TEXT NOT NULL) WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS {t}_canonical ON {t}(canonical)",
        ],
        f"{prefix}{GROUPS}": [
            "CREATE TABLE {t} (entity_id TEXT PRIMARY KEY, set_id TEXT NOT NULL) WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS {t}_set ON {t}(set_id)",
        ],
        f"{prefix}{SETS}": [
            "CREATE TABLE {t} (set_id TEXT PRIMARY KEY, root TEXT NOT NULL, size INTEGER NOT NULL) WITHOUT ROWID",
        ],
    }


@dataclass
class Regrouped:
    """What a batch of declarations did to the sets, for the projection to file its rows anew.

    ``merged``: (the set id that went, whether it was a lone id, the set id it joined, whether
    that was a lone id, whether that set was refiled first: its rows until ``at`` closed there
    and run anew from there, ``REFILE_GROWTH``) for each union, in order; ``dissolved``: set ids
    whose rows must go; ``created``: set ids whose rows must be filed from their members' (after ``dissolved``);
    ``ids``: the ids that may have joined or left a group; ``at``: the store position of the
    (last) declaration, when a set that went or was dissolved stopped holding its members."""

    merged: list[tuple[str, bool, str, bool, bool]] = field(default_factory=list)
    dissolved: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    at: int = 0

    def __bool__(self) -> bool:
        return bool(self.merged or self.dissolved or self.created)


class Groups:
    """The group tables of one projection (``prefix``) and tag.

    Its statements are plain SQL that SQLite and PostgreSQL both run, but for a few marked as
    the database's (``ID``, ``in_ids``, ``stored_declarations``): ``projections.pg.groups``."""

    #: an id given as a parameter where its type must be known (a recursive query's first term)
    ID = "?"

    @staticmethod
    def in_ids(expr: str) -> str:
        """SQL: ``expr`` is one of the values given as the one parameter ``ids(values)``."""
        return f"{expr} IN (SELECT value FROM json_each(?))"

    @staticmethod
    def ids(values: Iterable[Any]) -> Any:
        """The parameter of ``in_ids``."""
        return json.dumps(sorted(values))

    def __init__(self, conn: sqlite3.Connection, prefix: str, tag: str, *, history: bool = False) -> None:
        self.conn = conn
        self.links = f"{prefix}{LINKS}{tag}"
        self.groups = f"{prefix}{GROUPS}{tag}"
        self.sets = f"{prefix}{SETS}{tag}"
        # the sets' history: each id's memberships (``member_log``: from which position to which
        # it was in which set) and each set's root and size from each position on (``set_log``,
        # size 0 once it went, and its size when its rows were filed last); kept by projections
        # that answer ``as_of`` reads from their sets
        self.history = history
        self.member_log = f"{prefix}{MEMBER_LOG}{tag}"
        self.set_log = f"{prefix}{SET_LOG}{tag}"

    def set_of(self, entity_id: str) -> tuple[str, int, str, bool]:
        """``(set id, size, root, lone)`` of the set an id is in (``lone``: no aliases, no row)."""
        row = self.conn.execute(
            f"SELECT s.set_id, s.size, s.root FROM {self.groups} g JOIN {self.sets} s ON s.set_id = g.set_id"
            " WHERE g.entity_id = ?",
            (entity_id,),
        ).fetchone()
        return (entity_id, 1, entity_id, True) if row is None else (row[0], row[1], row[2], False)

    def members(self, set_id: str) -> list[str]:
        return [r[0] for r in self.conn.execute(f"SELECT entity_id FROM {self.groups} WHERE set_id = ?", (set_id,))]

    def declare(self, declarations: list[AliasDeclaration], out: Regrouped | None = None) -> Regrouped:
        """Apply ``(position, alias, canonical)`` declarations in store order (the store has
        refused cycles)."""
        out = out if out is not None else Regrouped()
        conn = self.conn
        for declaration in declarations:
            alias, canonical = declaration.alias, declaration.canonical
            out.at = at = declaration.position
            row = conn.execute(f"SELECT canonical FROM {self.links} WHERE alias = ?", (alias,)).fetchone()
            if row is None:
                conn.execute(f"INSERT INTO {self.links} (alias, canonical) VALUES (?, ?)", (alias, canonical))
                self._union(alias, canonical, out, at)
                continue
            if row[0] == canonical:
                continue  # declared again as it was: the same groups
            old_set = self.set_of(alias)
            conn.execute(f"UPDATE {self.links} SET canonical = ? WHERE alias = ?", (canonical, alias))
            new_set = self.set_of(canonical)
            if old_set[0] == new_set[0]:
                continue  # moved within its tree: the same members, the same root
            self._regroup([old_set, new_set], out, at)
        return out

    def _logged(self, set_id: str, at: int, root: str, size: int, filed: int) -> None:
        """A set's root and size from position ``at`` on (size 0: it went), and its size when its
        rows were filed last."""
        self.conn.execute(
            f"INSERT INTO {self.set_log} (set_id, set_from, root, size, filed) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (set_id, set_from) DO UPDATE SET root = excluded.root, size = excluded.size,"
            " filed = excluded.filed",
            (set_id, at, root, size, filed),
        )

    def _filed(self, set_id: str) -> int:
        """A set's size when its rows were filed last (one probe of its log)."""
        row = self.conn.execute(
            f"SELECT filed FROM {self.set_log} WHERE set_id = ? ORDER BY set_from DESC LIMIT 1", (set_id,)
        ).fetchone()
        return row[0] if row else 0

    def _close(self, set_id: str, at: int) -> None:
        """Its members' memberships of a set end at ``at``."""
        self.conn.execute(
            f"UPDATE {self.member_log} SET set_to = ? WHERE set_id = ? AND set_to = {OPEN}", (at, set_id)
        )

    def _leave(self, set_id: str, at: int) -> None:
        """The history of a set that goes at ``at`` (merged into another, or dissolved): its
        members' memberships end there."""
        self._close(set_id, at)
        self._logged(set_id, at, "", 0, 0)

    def _join(self, entity_ids: list[str], set_id: str, at: int) -> None:
        self.conn.executemany(
            f"INSERT INTO {self.member_log} (entity_id, set_from, set_id, set_to) VALUES (?, ?, ?, {OPEN})",
            [(i, at, set_id) for i in entity_ids],
        )

    def _union(self, alias: str, canonical: str, out: Regrouped, at: int) -> None:
        sa, na, _, lone_a = self.set_of(alias)
        sc, nc, root, lone_c = self.set_of(canonical)
        if sa == sc:  # cannot happen (no cycles): file the tree anew rather than trust it
            self._regroup([(sa, na, root, lone_a)], out, at)
            return
        if na > nc:
            keep, keep_lone, gone, gone_lone = sa, lone_a, sc, lone_c
        else:
            keep, keep_lone, gone, gone_lone = sc, lone_c, sa, lone_a
        conn = self.conn
        conn.execute(
            f"INSERT INTO {self.sets} (set_id, root, size) VALUES (?, ?, ?)"
            " ON CONFLICT(set_id) DO UPDATE SET root = excluded.root, size = excluded.size",
            (keep, root, na + nc),
        )
        refiled = False
        if self.history:  # the smaller set's members move: each id at most log2(n) times
            filed = na + nc if keep_lone else self._filed(keep)
            refiled = not keep_lone and na + nc > REFILE_GROWTH * filed
            if refiled:  # a run of its history closed here, before the merge; its members join anew
                self._close(keep, at)
                self._join(self.members(keep), keep, at)
                filed = na + nc
            self._logged(keep, at, root, na + nc, filed)
            self._join([keep] if keep_lone else [], keep, at)
            if gone_lone:
                self._join([gone], keep, at)
            else:
                self._leave(gone, at)
                self._join(self.members(gone), keep, at)
        if keep_lone:
            conn.execute(f"INSERT INTO {self.groups} (entity_id, set_id) VALUES (?, ?)", (keep, keep))
        if gone_lone:
            conn.execute(f"INSERT INTO {self.groups} (entity_id, set_id) VALUES (?, ?)", (gone, keep))
        else:
            conn.execute(f"UPDATE {self.groups} SET set_id = ? WHERE set_id = ?", (keep, gone))
            conn.execute(f"DELETE FROM {self.sets} WHERE set_id = ?", (gone,))
        out.merged.append((gone, gone_lone, keep, keep_lone, refiled))
        out.ids.extend(i for i, lone in ((keep, keep_lone), (gone, gone_lone)) if lone)

    def _tree(self, root: str) -> list[str]:
        """The ids whose chain ends at ``root`` (itself first), by the links in force."""
        return [
            r[0]
            for r in self.conn.execute(
                f"""WITH RECURSIVE t(id) AS (SELECT {self.ID} UNION ALL
                        SELECT l.alias FROM {self.links} l JOIN t ON l.canonical = t.id)
                    SELECT id FROM t""",
                (root,),
            )
        ]

    def _root(self, entity_id: str) -> str:
        """Where ``entity_id``'s chain ends (a re-declaration's rare path: walks the links)."""
        (root,) = self.conn.execute(
            f"""WITH RECURSIVE up(id, n) AS (SELECT {self.ID}, 0 UNION ALL
                    SELECT l.canonical, up.n + 1 FROM {self.links} l JOIN up ON l.alias = up.id)
                SELECT id FROM up ORDER BY n DESC LIMIT 1""",
            (entity_id,),
        ).fetchone()
        return root

    def _regroup(self, old: list[tuple[str, int, str, bool]], out: Regrouped, at: int) -> None:
        """Dissolve these sets and make one of each tree of two or more ids their members now
        form, named by its root."""
        conn = self.conn
        ids: list[str] = []
        for set_id, _, _, lone in old:
            if lone:
                ids.append(set_id)
                continue
            ids.extend(self.members(set_id))
            if self.history:
                self._leave(set_id, at)
            conn.execute(f"DELETE FROM {self.groups} WHERE set_id = ?", (set_id,))
            conn.execute(f"DELETE FROM {self.sets} WHERE set_id = ?", (set_id,))
            out.dissolved.append(set_id)
        out.ids.extend(ids)
        for root in sorted({self._root(i) for i in ids}):
            tree = self._tree(root)
            if len(tree) < 2:
                continue
            conn.execute(f"INSERT INTO {self.sets} (set_id, root, size) VALUES (?, ?, ?)", (root, root, len(tree)))
            conn.executemany(f"INSERT INTO {self.groups} (entity_id, set_id) VALUES (?, ?)", [(i, root) for i in tree])
            if self.history:
                self._logged(root, at, root, len(tree), len(tree))
                self._join(tree, root, at)
            out.created.append(root)

    def replay(self, declarations: list[AliasDeclaration]) -> None:
        """Forget every group and apply these declarations again (after one was erased): what a
        rebuild without it makes. The projection then files every set's rows anew."""
        for table in (self.links, self.groups, self.sets) + ((self.member_log, self.set_log) if self.history else ()):
            self.conn.execute(f"DELETE FROM {table}")
        self.declare(declarations)

    def held_at(self, entity_id: str, p: int) -> tuple[str, int, str, int] | None:
        """``(set id, set_to, root, size)`` of the set that held ``entity_id`` at position ``p``
        (``set_to``: where that set's rows end, ``OPEN`` while it stands), from the history; None
        when it was in no group then. Two indexed probes."""
        row = self.conn.execute(
            f"SELECT set_id, set_to FROM {self.member_log} WHERE entity_id = ? AND set_from <= ?"
            " ORDER BY set_from DESC LIMIT 1",
            (entity_id, p),
        ).fetchone()
        if row is None or row[1] <= p:
            return None
        logged = self.conn.execute(
            f"SELECT root, size FROM {self.set_log} WHERE set_id = ? AND set_from <= ? ORDER BY set_from DESC LIMIT 1",
            (row[0], p),
        ).fetchone()
        if logged is None or logged[1] == 0:
            return None
        return row[0], row[1], logged[0], logged[1]

    def set_ids(self) -> list[str]:
        return [r[0] for r in self.conn.execute(f"SELECT set_id FROM {self.sets} ORDER BY set_id")]

    def sets_of(self, entity_ids: list[str] | set[str] | frozenset[str]) -> dict[str, str]:
        """``{entity id: set id}`` of those of these ids that are in a group."""
        if not entity_ids:
            return {}
        return dict(self.conn.execute(
            f"SELECT entity_id, set_id FROM {self.groups} WHERE {self.in_ids('entity_id')}", (self.ids(entity_ids),)
        ).fetchall())

    def stored_declarations(self, upto: int) -> list[AliasDeclaration]:
        """Every alias declaration the store holds up to a position (``stored_declarations``)."""
        return stored_declarations(self.conn, upto)


def declarations(events: list[StoredEvent]) -> list[AliasDeclaration]:
    """The alias declarations among stored events (an erased one has no body)."""
    return [
        AliasDeclaration(e.position, e.body["details"]["alias"], e.body["details"]["canonical"],
                         e.body["details"].get("name"))
        for e in events
        if e.kind == "entity_alias" and e.body
    ]


def stored_declarations(conn: sqlite3.Connection, upto: int) -> list[AliasDeclaration]:
    """Every alias declaration the store holds up to a position (an erased one has no body)."""
    return [
        AliasDeclaration(*row)
        for row in conn.execute(
            "SELECT position, body ->> '$.details.alias', body ->> '$.details.canonical', body ->> '$.details.name'"
            " FROM events WHERE kind = 'entity_alias' AND position <= ? AND body <> '' ORDER BY position",
            (upto,),
        )
    ]


class GroupedProjection:
    """What a projection that files rows under alias sets shares (a mixin before ``Projection``):
    its group tables (``group_prefix``, ``groups_class``: PostgreSQL's subclasses give theirs)
    and ``declare``, which joins or regroups sets one declaration at a time and has the
    projection's ``_file`` move its rows after each (a deferred rebuild files every group's rows
    in ``finish`` instead)."""

    group_prefix: str
    groups_class: type[Groups] = Groups
    group_history = False  # whether it keeps the sets' history (``Groups.history``)

    def groups(self, conn: sqlite3.Connection, tag: str) -> Groups:
        """The group tables of a tag."""
        return self.groups_class(conn, self.group_prefix, tag, history=self.group_history)

    def declare(
        self, conn: sqlite3.Connection, tag: str, declarations: list[AliasDeclaration], *, deferred: bool = False
    ) -> None:
        table = self.groups(conn, tag)
        for declaration in declarations:
            done = table.declare([declaration])
            if done and not deferred:
                self._file(conn, tag, done)  # type: ignore[attr-defined]
