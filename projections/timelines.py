"""The timelines projection: every version of every news event, and who it is filed under.

Rows are versioned by store position: a row is true for ``valid_from <= P < valid_to``.
A correction or retraction closes the event's open version at its position and opens a new one,
so the timeline as the store knew it at any position (``as_of``) is one indexed query, and an
event that a correction moves to other entities leaves one timeline and joins another.
Aliases are resolved when reading (``projections.aliases``), so they merge retroactively.

Alias groups (``projections.groups``): ``tl_links``, ``tl_groups`` and ``tl_sets`` keep which
set each id of a group of two or more ids is in, and ``tl_group_entries`` files the group's
entries under its set as well: ``(set_id, start_key, position, valid_from, rank)``, one row per
(set, version, rank), so that a group's timeline is one range of it, like an entity's of
``tl_entries`` (an event filed under two members with different roles has a row for each role:
a page without a role takes the best, one by role the role asked for). Rows join it with the
entries of a member (``apply``, ``bulk``), move with a merged set (``declare``), and go with an
erased event (``remove``); a rebuild files them all at the end (``finish``), and an erased alias
declaration files them all again.

Rows point into the store rather than copy it: ``tl_events`` keeps what a version's reads
filter and sort on (kind, status, date keys), and the event's id, recording time and, for a
version that is the event as stored (no correction applied: most of them), its dates as
written, headline, summary, sources and details come from the store's ``events`` row at
``position`` (these columns are NULL). Only corrected versions carry their own copies.
``tl_entries`` files each version under its entities, in each entity's timeline order (its
key), so that a timeline is one range of it; its rows never change (a version's validity is
its ``tl_events`` row's). A rebuild fills it at the end, in key order, with one sort: the rows
of plain news events come from the store's ``event_entities`` (``finish``), those of other
versions as they are applied.

``tl_changes`` is the change log that live streams read (``projections.live``): a row per store
position that changed an entity's timeline, keyed ``(entity_id, position)``, with the entity's
role (rank) in the version before and after the change and the status before (the status after
is the version's, ``tl_events`` at ``valid_from = position``); the global timeline's rows are
filed under ``GLOBAL``. Whether a change is a new entry, an update or a removal for a reader is
decided when reading, from these and the reader's filters (role, retracted or not). Its rows,
like ``tl_entries``', are written by ``apply`` and ``bulk`` (or, in a rebuild, ``finish``), so
a rebuild writes the same rows as incremental runs.

An erasure deletes the change log's rows of the event and of its corrections and retraction
(an entity's id is made from its name, which may be the erased text), so a reader that had not
read them never sees the event. ``tl_removals`` tells the readers that had, with nothing of the
content: a row per erasure, entity the event was filed under (or ``GLOBAL``) and version, with
the version's validity, the entity's rank and the status (so that only a reader that showed it
is told), the event's id, kind and position and the checkpoint the tables had reached when it
was erased. An erasure of an event the tables had not reached leaves none (no reader saw it).
The rows of an entity that an erasure leaves without entries lose its id: they are kept under
``VANISHED``, which a stream of an entity without entries reads (the only streams that can
have shown them); an id that a live alias declaration still names (it is in a group) is in the
store anyway and keeps its rows, until the last declaration that names it is erased. The store
does not keep which entities an erased event named, so a rebuild cannot derive these rows: it
takes them over from the tables it replaces (``carry``), and an erasure during a rebuild writes
the same rows into both: a rebuild's rows are the incremental ones.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from events.ids import compact_json

from .changes import RANK, Change, Version
from . import groups
from .engine import Projection
from .erasure import Erased
from .groups import GroupedProjection, Regrouped

OPEN = 2**62  # valid_to of a row that is still true
RANK_SQL = "CASE m.role " + " ".join(f"WHEN '{role}' THEN {rank}" for role, rank in RANK.items()) + " END"

EVENTS = "tl_events"
ENTRIES = "tl_entries"
CHANGES = "tl_changes"
REMOVALS = "tl_removals"
GROUP_ENTRIES = "tl_group_entries"
PREFIX = "tl"  # of the group tables (``projections.groups``): tl_links, tl_groups, tl_sets
GLOBAL = "*"  # the change log's entity id of the global timeline (never a slug)
VANISHED = ""  # tl_removals' entity id of an entity that only erased events named (never a slug)


class TimelinesProjection(GroupedProjection, Projection):
    name = "timelines"
    # 5: the change log (tl_changes); 6: erasures told to live streams (tl_removals); 7: alias
    # groups (tl_links, tl_groups, tl_sets) and their rows (tl_group_entries); 8: the sets'
    # history (tl_member_log, tl_set_log) and the rows of the sets that went (set_to, set_from); 9:
    # a set refiled as it grows (tl_set_log.filed: runs of its rows, for ``as_of`` anywhere)
    version = 9
    group_history = True
    schema = {
        **groups.schema(PREFIX, history=True),
        GROUP_ENTRIES: [
            # The entries of a group's members, filed under its set: one row per (set, version,
            # rank), i.e. an event filed under two members with one role once. ``set_to``: where
            # the set stopped holding them (OPEN while it stands: a set that went keeps its rows,
            # for ``as_of``); ``set_from``: from where the row is the set's (a member's entry
            # once it joined, and once the version was made).
            """CREATE TABLE {t} (
                set_id TEXT NOT NULL, set_to INTEGER NOT NULL, start_key TEXT NOT NULL, position INTEGER NOT NULL,
                valid_from INTEGER NOT NULL, rank INTEGER NOT NULL, set_from INTEGER NOT NULL,
                PRIMARY KEY (set_id, set_to, start_key, position, valid_from, rank)
            ) WITHOUT ROWID""",
        ],
        EVENTS: [
            # A version's id is the store position of the change that made it (one per position).
            # occurred_at .. details are NULL for a version that is the stored event unchanged.
            """CREATE TABLE {t} (
                valid_from INTEGER PRIMARY KEY, valid_to INTEGER NOT NULL, position INTEGER NOT NULL,
                kind TEXT NOT NULL, status TEXT NOT NULL, start_key TEXT NOT NULL, end_key TEXT NOT NULL,
                occurred_at TEXT, ended_at TEXT, headline TEXT, summary TEXT, sources TEXT, details TEXT
            )""",
        ],
        ENTRIES: [
            # One row per (version, entity), keyed by the entity's timeline order (start_key,
            # position) and the version.
            """CREATE TABLE {t} (
                entity_id TEXT NOT NULL, start_key TEXT NOT NULL, position INTEGER NOT NULL,
                valid_from INTEGER NOT NULL, rank INTEGER NOT NULL,
                PRIMARY KEY (entity_id, start_key, position, valid_from)
            ) WITHOUT ROWID""",
        ],
        CHANGES: [
            # One row per (entity, position of a change to its timeline); old_* are NULL when
            # the entity was not in the version before (or there was none), rank when it is
            # not in the version after.
            """CREATE TABLE {t} (
                entity_id TEXT NOT NULL, position INTEGER NOT NULL,
                old_rank INTEGER, rank INTEGER, old_status TEXT,
                PRIMARY KEY (entity_id, position)
            ) WITHOUT ROWID""",
        ],
        REMOVALS: [
            # One row per (erasure, entity the erased event was filed under or GLOBAL, version):
            # where the version was in the entity's timeline (valid_from .. valid_to, its role's
            # rank, its status), so that a reader tells the removal only to a client that held it.
            # An erased alias declaration (kind 'entity_alias'): a row for its alias and one for
            # its canonical id (status 'alias', 'canonical'; valid_from its position).
            """CREATE TABLE {t} (
                seq INTEGER NOT NULL, entity_id TEXT NOT NULL, valid_from INTEGER NOT NULL,
                valid_to INTEGER NOT NULL, rank INTEGER, status TEXT NOT NULL, reached INTEGER NOT NULL,
                event_position INTEGER NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL,
                PRIMARY KEY (seq, entity_id, valid_from)
            ) WITHOUT ROWID""",
        ],
    }
    retired = ("tl_search",)  # full-text search is its own projection since version 3
    indexes = {
        EVENTS: ["CREATE INDEX IF NOT EXISTS {t}_order ON {t}(start_key, position)"],
        # an ``as_of`` card counts a set's entries at p from the side after p: the rows that
        # joined the set after p, and the events a later change touched
        GROUP_ENTRIES: [
            "CREATE INDEX IF NOT EXISTS {t}_joined ON {t}(set_id, set_to, set_from)",
            "CREATE INDEX IF NOT EXISTS {t}_event ON {t}(set_id, set_to, position, set_from)",
        ],
    }

    def bulk(self, conn: sqlite3.Connection, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        events_t = self.table(EVENTS, tag)
        conn.execute(
            f"""INSERT INTO {events_t} (valid_from, valid_to, position, kind, status, start_key, end_key)
                SELECT position, {OPEN}, position, kind, 'active', start_key, end_key
                FROM event_meta WHERE position > ? AND position <= ? AND plain""",
            (low, high),
        )
        if not deferred:
            self._entries(conn, tag, low, high)
            self._group_bulk(conn, tag, low, high)

    # The statements of the groups' rows below are plain SQL that SQLite and PostgreSQL both run
    # (``projections.pg.timelines`` gives the tables' DDL and ``groups_class``).
    group_prefix = PREFIX

    def _group_bulk(self, conn: sqlite3.Connection, tag: str, low: int, high: int) -> None:
        """The entries of the plain news events of ``low < position <= high`` filed under the sets
        of the members they name."""
        conn.execute(
            f"""INSERT INTO {self.table(GROUP_ENTRIES, tag)} (set_id, set_to, start_key, position, valid_from, rank, set_from)
                SELECT g.set_id, {OPEN}, e.start_key, e.position, e.position, {RANK_SQL}, e.position
                FROM event_meta e JOIN event_entities m ON m.position = e.position
                JOIN {self.table(PREFIX + groups.GROUPS, tag)} g ON g.entity_id = m.entity_id
                WHERE e.position > ? AND e.position <= ? AND e.plain <> 0 AND m.position > ? AND m.position <= ?
                ON CONFLICT DO NOTHING""",
            (low, high, low, high),
        )

    def finish(self, conn: sqlite3.Connection, tag: str, position: int) -> None:
        self._entries(conn, tag, 0, position)
        self._file_all(conn, tag)

    def _file_all(self, conn: sqlite3.Connection, tag: str) -> None:
        """Every group's rows, from its members' entries and the sets' history (a rebuild's
        finish, an erased alias): a member's entries made before its set went are that set's,
        each from when the member joined or the version was made, whichever is later (the
        earliest such of the set's members that have it)."""
        group_entries = self.table(GROUP_ENTRIES, tag)
        conn.execute(f"DELETE FROM {group_entries}")
        conn.execute(
            f"""INSERT INTO {group_entries} (set_id, set_to, start_key, position, valid_from, rank, set_from)
                SELECT l.set_id, l.set_to, en.start_key, en.position, en.valid_from, en.rank,
                       MIN(CASE WHEN en.valid_from > l.set_from THEN en.valid_from ELSE l.set_from END)
                FROM {self.table(PREFIX + groups.MEMBER_LOG, tag)} l
                JOIN {self.table(ENTRIES, tag)} en ON en.entity_id = l.entity_id
                WHERE en.valid_from < l.set_to
                GROUP BY l.set_id, l.set_to, en.start_key, en.position, en.valid_from, en.rank
                ORDER BY 1, 2, 3, 4, 5, 6"""
        )

    def _file(self, conn: sqlite3.Connection, tag: str, done: Regrouped) -> None:
        """After a declaration at ``done.at`` joined or regrouped sets
        (``GroupedProjection.declare``): a merged set's rows are copied to the set it joined (the
        smaller set's: each row is copied at most log2(n) times) and kept, closed at ``at``, for
        ``as_of`` reads before it; a refiled set's (``groups.REFILE_GROWTH``) are copied, closed
        at ``at``, and its open ones run from ``at`` on; a lone id's are copied from its entries;
        a dissolved set's are closed, a new set's filed anew. A row joins a set from ``at`` (or
        from its version, if later: a batch files its events before its declarations)."""
        group_entries, entries = self.table(GROUP_ENTRIES, tag), self.table(ENTRIES, tag)
        columns = "start_key, position, valid_from, rank"
        at = done.at
        since = "CASE WHEN valid_from > ? THEN valid_from ELSE ? END"
        copy = (
            f"INSERT INTO {group_entries} (set_id, set_to, {columns}, set_from)"
            f" SELECT ?, {OPEN}, {columns}, {since} FROM {entries} WHERE entity_id = ? ON CONFLICT DO NOTHING"
        )

        def close(set_id: str) -> None:
            """A set that went at ``at``: its rows kept as they stood until then."""
            conn.execute(
                f"DELETE FROM {group_entries} WHERE set_id = ? AND set_to = {OPEN} AND valid_from > ?", (set_id, at)
            )
            conn.execute(f"UPDATE {group_entries} SET set_to = ? WHERE set_id = ? AND set_to = {OPEN}", (at, set_id))

        for gone, gone_lone, keep, keep_lone, refiled in done.merged:
            if refiled:  # its rows until ``at`` kept, closed there; from ``at`` on, all of them
                conn.execute(
                    f"INSERT INTO {group_entries} (set_id, set_to, {columns}, set_from)"
                    f" SELECT set_id, ?, {columns}, set_from FROM {group_entries}"
                    f" WHERE set_id = ? AND set_to = {OPEN} AND valid_from <= ?",
                    (at, keep, at),
                )
                conn.execute(
                    f"UPDATE {group_entries} SET set_from = ? WHERE set_id = ? AND set_to = {OPEN} AND set_from < ?",
                    (at, keep, at),
                )
            if keep_lone:
                conn.execute(copy, (keep, at, at, keep))
            if gone_lone:
                conn.execute(copy, (keep, at, at, gone))
            else:
                conn.execute(
                    f"INSERT INTO {group_entries} (set_id, set_to, {columns}, set_from)"
                    f" SELECT ?, {OPEN}, {columns}, {since} FROM {group_entries}"
                    f" WHERE set_id = ? AND set_to = {OPEN} ON CONFLICT DO NOTHING",
                    (keep, at, at, gone),
                )
                close(gone)
        for set_id in done.dissolved:
            close(set_id)
        for set_id in done.created:
            conn.execute(
                f"""INSERT INTO {group_entries} (set_id, set_to, {columns}, set_from)
                    SELECT g.set_id, {OPEN}, en.start_key, en.position, en.valid_from, en.rank,
                           CASE WHEN en.valid_from > ? THEN en.valid_from ELSE ? END
                    FROM {self.table(PREFIX + groups.GROUPS, tag)} g JOIN {entries} en ON en.entity_id = g.entity_id
                    WHERE g.set_id = ? ON CONFLICT DO NOTHING""",
                (at, at, set_id),
            )

    def _entries(self, conn: sqlite3.Connection, tag: str, low: int, high: int) -> None:
        """The entries and change-log rows of the plain news events of ``low < position <= high``,
        in key order. The change log's rows in two statements, the global timeline's (in store
        order already: no sort) and the entities' (sorted), rather than one sorted UNION ALL: the
        same rows, a third less CPU in a rebuild's finish (docs/performance.md, Session 11)."""
        changes = self.table(CHANGES, tag)
        conn.execute(
            f"""INSERT INTO {changes} (entity_id, position, rank)
                SELECT '{GLOBAL}', e.position, NULL FROM event_meta e
                WHERE e.position > ? AND e.position <= ? AND e.plain ORDER BY e.position""",
            (low, high),
        )
        conn.execute(
            f"""INSERT INTO {changes} (entity_id, position, rank)
                SELECT m.entity_id, e.position, {RANK_SQL}
                FROM event_meta e JOIN event_entities m ON m.position = e.position
                WHERE e.position > ? AND e.position <= ? AND e.plain
                ORDER BY 1, 2""",
            (low, high),
        )
        conn.execute(
            f"""INSERT INTO {self.table(ENTRIES, tag)} (entity_id, start_key, position, valid_from, rank)
                SELECT m.entity_id, e.start_key, e.position, e.position, {RANK_SQL}
                FROM event_meta e JOIN event_entities m ON m.position = e.position
                WHERE e.position > ? AND e.position <= ? AND e.plain
                ORDER BY m.entity_id, e.start_key, e.position""",
            (low, high),
        )

    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str, *, deferred: bool = False) -> None:
        events_t, entries_t = self.table(EVENTS, tag), self.table(ENTRIES, tag)
        event_rows = []
        entry_rows: list[tuple[str, str, int, int, int]] = []
        filed: list[tuple[str, str, int, int, int]] = []  # every entry row of the batch
        conn.executemany(
            f"INSERT INTO {self.table(CHANGES, tag)} (entity_id, position, old_rank, rank, old_status)"
            " VALUES (?, ?, ?, ?, ?)",
            (row for change in changes for row in change_rows(change)),
        )
        for change in changes:
            if change.old is not None:
                self._flush(conn, events_t, entries_t, event_rows, entry_rows)
                cur = conn.execute(
                    f"UPDATE {events_t} SET valid_to = ? WHERE valid_from = ? AND valid_to = ?",
                    (change.position, change.old.since, OPEN),
                )
                if cur.rowcount != 1:
                    raise RuntimeError(f"{events_t}: no open version of {change.old.event_id} at {change.old.since}")
            new = change.new
            if new is None:
                continue
            body = new.body
            copies: tuple[object, ...] = (None,) * 6
            if new.corrected:
                copies = (
                    body["occurred_at"], body.get("ended_at"), body["headline"], body.get("summary"),
                    compact_json(body.get("sources", [])), compact_json(body.get("details", {})),
                )
            event_rows.append(
                (change.position, OPEN, new.position, new.kind, new.status, new.start_key, new.end_key, *copies)
            )
            rows = [
                (entity["id"], new.start_key, new.position, change.position, RANK[entity["role"]])
                for entity in new.entities
            ]
            entry_rows.extend(rows)
            filed.extend(rows)
        self._flush(conn, events_t, entries_t, event_rows, entry_rows)
        if filed and not deferred:  # a deferred rebuild files every group's rows in ``finish``
            sets = self.groups(conn, tag).sets_of({row[0] for row in filed})
            if sets:
                conn.executemany(
                    f"INSERT INTO {self.table(GROUP_ENTRIES, tag)}"
                    " (set_id, set_to, start_key, position, valid_from, rank, set_from)"
                    f" VALUES (?, {OPEN}, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [(sets[row[0]], *row[1:], row[3]) for row in filed if row[0] in sets],
                )

    def remove(self, conn: sqlite3.Connection, tag: str, gone: Erased, reached: int) -> None:
        if gone.kind == "entity_alias":  # the groups as if it had never been declared
            table = self.groups(conn, tag)
            table.replay(table.stored_declarations(reached))
            self._file_all(conn, tag)
            # (told once the groups are without it: an id a declaration still names keeps its rows)
            live = _live(conn, self.name)
            removals = self.table(REMOVALS, tag)
            if live is not None and self._exists(conn, removals):
                self._tell_regrouping(conn, tag, gone, live)
                if gone.declared is not None:  # an id only the erased declaration named is gone now
                    self._forget_vanished(conn, removals, *self._naming(conn, live[0]), frozenset(gone.declared))
            return
        # the event's rows in every set its entities were ever in (those that went keep theirs)
        table = self.groups(conn, tag)
        held = conn.execute(
            f"SELECT DISTINCT set_id FROM {table.member_log} WHERE {table.in_ids('entity_id')}",
            (table.ids(gone.entities),),
        ).fetchall() if gone.entities else []
        for (set_id,) in held:
            conn.execute(
                f"DELETE FROM {self.table(GROUP_ENTRIES, tag)} WHERE set_id = ? AND position = ?", (set_id, gone.position)
            )
        removals = self.table(REMOVALS, tag)
        live = _live(conn, self.name)
        if live is not None and self._exists(conn, removals):
            self._tell_removal(conn, tag, gone, live)
        for base in (EVENTS, ENTRIES):
            conn.execute(f"DELETE FROM {self.table(base, tag)} WHERE position = ?", (gone.position,))
        # The change log's rows of the event and of its corrections and retraction: an entity's id
        # is made from its name, which may be the erased text itself (docs/erasure.md).
        conn.executemany(
            f"DELETE FROM {self.table(CHANGES, tag)} WHERE position = ?", ((p,) for p in gone.positions)
        )
        if live is not None and self._exists(conn, removals):
            self._forget_vanished(conn, removals, *self._naming(conn, live[0]), gone.entities)

    def _naming(self, conn: sqlite3.Connection, live_tag: str) -> tuple[str, str]:
        """The live tables that name ids: the entries and the groups (the ids that live alias
        declarations name)."""
        return self.table(ENTRIES, live_tag), self.groups(conn, live_tag).groups

    @staticmethod
    def _forget_vanished(
        conn: sqlite3.Connection, removals: str, entries: str, grouped: str, entities: frozenset[str]
    ) -> None:
        """No id is left of an entity that only erased events named (the live tables decide):
        its rows are kept under ``VANISHED``, which a stream of an entity without entries reads.
        An id that an entry or a live alias declaration names is in the store anyway: kept."""
        for entity_id in sorted(entities):
            if _named(conn, entries, grouped, entity_id):
                continue
            _forget_regroupings(conn, removals, entity_id)
            conn.execute(
                f"UPDATE OR IGNORE {removals} SET entity_id = '{VANISHED}', rank = NULL WHERE entity_id = ?", (entity_id,)
            )
            conn.execute(f"DELETE FROM {removals} WHERE entity_id = ?", (entity_id,))

    def _tell_regrouping(self, conn: sqlite3.Connection, tag: str, gone: Erased, live: tuple[str, int]) -> None:
        """``tl_removals``' rows of an erased alias declaration: its alias (``status`` 'alias') and
        canonical id ('canonical'), so that a stream whose group it split is told of the entries
        that left it (``projections.live``). None when the live tables had not applied it (no
        reader saw the merge) or neither id has entries; an id that neither an entry nor a live
        declaration names is kept as ``VANISHED``, as for an erased event; a rebuild's tables
        take the live ones'."""
        removals = self.table(REMOVALS, tag)
        live_tag, reached = live
        if tag != live_tag:
            self._copy_removals(conn, removals, self.table(REMOVALS, live_tag), gone.seq)
            return
        if gone.declared is None or reached < gone.position:
            return
        entries, grouped = self._naming(conn, tag)
        # An id that neither an entry nor a live declaration names is kept as VANISHED (a stream
        # of it reads those rows as its own)
        sides = [
            entity_id if _named(conn, entries, grouped, entity_id) else VANISHED for entity_id in gone.declared
        ]
        if all(side == VANISHED for side in sides):
            return  # no entries moved: nothing to tell
        conn.executemany(
            f"INSERT INTO {removals} (seq, entity_id, valid_from, valid_to, rank, status, reached, event_position,"
            " event_id, kind) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
            [
                (gone.seq, entity_id, gone.position, OPEN, side, reached, gone.position, gone.event_id, gone.kind)
                for entity_id, side in zip(sides, ("alias", "canonical"))
            ],
        )

    def _copy_removals(self, conn: sqlite3.Connection, removals: str, live_removals: str, seq: int) -> None:
        if self._exists(conn, live_removals):
            conn.execute(f"INSERT INTO {removals} SELECT * FROM {live_removals} WHERE seq = ? ON CONFLICT DO NOTHING", (seq,))

    def _tell_removal(self, conn: sqlite3.Connection, tag: str, gone: Erased, live: tuple[str, int]) -> None:
        """``tl_removals``' rows of an erasure, before the event's rows go: the versions of it
        the live tables show (what readers may hold), with each entity's rank, and the global
        timeline's; a rebuild's tables take the same rows (the engine erases from the live
        tables first)."""
        removals = self.table(REMOVALS, tag)
        live_tag, reached = live
        if tag != live_tag:
            live_removals = self.table(REMOVALS, live_tag)
            if self._exists(conn, live_removals):
                conn.execute(
                    f"INSERT OR IGNORE INTO {removals} SELECT * FROM {live_removals} WHERE seq = ?", (gone.seq,)
                )
            return
        tail = (reached, gone.position, gone.event_id, gone.kind)
        events, entries = self.table(EVENTS, tag), self.table(ENTRIES, tag)
        conn.execute(
            f"""INSERT INTO {removals}
                SELECT ?, en.entity_id, v.valid_from, v.valid_to, MIN(en.rank), v.status, ?, ?, ?, ?
                FROM {events} v JOIN {entries} en ON en.valid_from = v.valid_from
                WHERE v.position = ? AND en.entity_id IN (SELECT value FROM json_each(?))
                GROUP BY en.entity_id, v.valid_from
                UNION ALL SELECT ?, '{GLOBAL}', v.valid_from, v.valid_to, NULL, v.status, ?, ?, ?, ?
                FROM {events} v WHERE v.position = ?""",
            (gone.seq, *tail, gone.position, compact_json(sorted(gone.entities)), gone.seq, *tail, gone.position),
        )

    def carry(self, conn: sqlite3.Connection, old: str, new: str) -> None:
        old_t, new_t = self.table(REMOVALS, old), self.table(REMOVALS, new)
        if self._exists(conn, old_t):
            conn.execute(f"INSERT OR IGNORE INTO {new_t} SELECT * FROM {old_t}")

    @staticmethod
    def _exists(conn: sqlite3.Connection, table: str) -> bool:
        return _exists(conn, table)

    @staticmethod
    def _flush(conn: sqlite3.Connection, events_t: str, entries_t: str, event_rows: list, entry_rows: list) -> None:
        if event_rows:
            conn.executemany(f"INSERT INTO {events_t} VALUES ({','.join('?' * 13)})", event_rows)
            event_rows.clear()
        if entry_rows:
            conn.executemany(
                f"INSERT INTO {entries_t} (entity_id, start_key, position, valid_from, rank) VALUES (?, ?, ?, ?, ?)",
                entry_rows,
            )
            entry_rows.clear()


def _forget_regroupings(conn: sqlite3.Connection, removals: str, entity_id: str) -> None:
    """An erased alias declaration's row that names an id no entry names any more: kept as
    ``VANISHED`` (no id of an entity that only erased events named is kept); both go once both
    sides are."""
    conn.execute(
        f"DELETE FROM {removals} WHERE kind = 'entity_alias' AND seq IN"
        f" (SELECT seq FROM {removals} WHERE entity_id = ? AND kind = 'entity_alias') AND seq IN"
        f" (SELECT seq FROM {removals} WHERE entity_id = '{VANISHED}' AND kind = 'entity_alias')",
        (entity_id,),
    )
    conn.execute(
        f"UPDATE {removals} SET entity_id = '{VANISHED}' WHERE kind = 'entity_alias' AND entity_id = ?", (entity_id,)
    )


def _named(conn: sqlite3.Connection, entries: str, grouped: str, entity_id: str) -> bool:
    """Whether an entry or a live alias declaration (an id in a group) names an id."""
    return any(
        conn.execute(f"SELECT 1 FROM {table} WHERE entity_id = ? LIMIT 1", (entity_id,)).fetchone()
        for table in (entries, grouped)
    )


def _live(conn: sqlite3.Connection, name: str) -> tuple[str, int] | None:
    """The live tables' tag and checkpoint."""
    row = conn.execute("SELECT tables_tag, position FROM projection_checkpoints WHERE name = ?", (name,)).fetchone()
    return None if row is None else (row[0], row[1])


def _exists(conn: sqlite3.Connection, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is not None


def _ranks(version: Version | None) -> dict[str, int]:
    """Each entity of a version with its best role's rank."""
    out: dict[str, int] = {}
    for entity in version.entities if version is not None else ():
        rank = RANK[entity["role"]]
        out[entity["id"]] = min(rank, out.get(entity["id"], rank))
    return out


def change_rows(change: Change) -> list[tuple[str, int, int | None, int | None, str | None]]:
    """The change log's rows of a change: one for every entity in the version before or after
    (entity order), and one for the global timeline."""
    before, after = _ranks(change.old), _ranks(change.new)
    old_status = change.old.status if change.old is not None else None
    rows = [
        (entity_id, change.position, before.get(entity_id), after.get(entity_id), old_status if entity_id in before else None)
        for entity_id in sorted(before.keys() | after.keys())
    ]
    rows.append((GLOBAL, change.position, None, None, old_status))
    return rows
