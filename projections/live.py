"""Live streams' reads: what changed in a timeline after a store position, a page at a time.

A change is read from the timelines projection's change log (``tl_changes``, see
``projections.timelines``), never from memory, so a reader that comes back after a million
events reads on from where it was. Each change is told as a message named by the store position
that made it:

- ``entry``: an entry the timeline did not show before (a new event, or one a correction filed
  under the entity);
- ``update``: an entry it shows before and after (a correction), or one an alias declaration
  moved into it from the entity's new alias (or new canonical);
- ``remove``: one it showed and no longer does (a retraction, or a correction that took the
  entity off the event, or an alias declaration that moved it away); or an erased event's entry
  (``status: erased``, nothing of its content).

An erasure deletes the event's rows of the change log, so a reader that had not read them never
sees the event; one that may have (it had read past the event's position) is told from
``tl_removals`` (see ``projections.timelines``), as soon as it reads after the erasure, with the
position it has reached as the message's id. A reader that resumes after position ``P`` is told
of the erasures made once the tables had reached ``P`` or later, of events at ``P`` or before.
An erased alias declaration splits groups retroactively: a reader is told of the entries that
leave its group (or change role in it), the group as it had it against the group as it is; a
reader part-way through the declaration's own entries (``StreamCursor.moved``) takes back those
it was told of and reads on after its position.

A client may drop part-way through a declaration's messages (they all have its position as id,
over several pages when there are more than a page's): it reconnects with that position as its
``Last-Event-ID``, having had some of them and not the others, and no id tells which. So a
stream that resumes at the position of a declaration that changes its group tells all of the
declaration's messages again (``StreamCursor.resumed``), then reads on: a client that had some
gets them twice (an ``update`` replaces, a ``remove`` of what it no longer holds does nothing),
none is missing, and ids never decrease (the first again has the id the client resumed at).

Aliases are resolved as the store knew them at each position (a change before a declaration
belongs to the timeline as it was then): the members of an entity's group are constant between
the declarations that touch it, and at such a declaration the entries that moved in or out are
read from ``tl_entries`` as of it (timeline order). The filters a stream takes (kind, role,
retracted or not) decide which of these a change is; the rest of the page's filters (dates,
text, ``as_of``) do not apply to a stream.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from events.aliases import EVERYTHING
from events.ids import compact_json

from .aliases import AliasIndex
from .changes import RANK
from .queries import ENTRY_COLUMNS, Queries, QueryError
from .timelines import CHANGES, ENTRIES, EVENTS, GLOBAL, REMOVALS, VANISHED

Key = tuple[str, int]  # (start_key, event position): timeline order


class NotLive(RuntimeError):
    """The timelines projection has no change log yet (it is being rebuilt to a version with one)."""


@dataclass(frozen=True, slots=True)
class StreamFilter:
    kinds: tuple[str, ...] = ()
    role: str | None = None
    include_retracted: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    position: int  # the store position of the change (the message's id)
    kind: str  # entry | update | remove
    data: str  # the entry as the timeline page renders it (JSON text)


@dataclass(frozen=True, slots=True)
class StreamCursor:
    """Every change up to ``position`` has been read; ``moved``: the (start_key, event position)
    of the last entry read of the alias declaration at ``position + 1``, part-way through it;
    ``seen`` and ``resumed``: see below."""

    position: int
    moved: Key | None = None
    #: the last erasure (``tl_removals.seq``) taken into account; None: not read yet (a stream
    #: resuming after the position it was told of is told of those made once the tables had
    #: reached it)
    seen: int | None = None
    #: part-way through the declaration at ``position + 1`` because the stream resumed at it
    #: (``moved``: ``FIRST`` until its first entry is told again): the client may hold any of
    #: its entries, told before it reconnected
    resumed: bool = False

    @property
    def told(self) -> int:
        """The id of the stream's last messages: its position, or, part-way through the
        declaration after it, the declaration's."""
        return self.position if self.moved is None else self.position + 1


#: ``StreamCursor.moved`` of a stream that resumed at a declaration and has not been told of
#: any of its entries again yet: before every entry in timeline order
FIRST: Key = ("", -1)


@dataclass(slots=True)
class ChangePage:
    messages: list[Message] = field(default_factory=list)
    cursor: StreamCursor = StreamCursor(0)
    upto: int = 0  # the projection's checkpoint the page was read at
    erased: int = 0  # and its last erasure told to streams
    more: bool = False  # changes up to ``upto`` remain: read again at once


@dataclass(frozen=True, slots=True)
class _Move:
    """An alias declaration that changed an entity's group at ``position``: its members before
    and after, and those that moved in or out."""

    position: int
    before: list[str]
    after: list[str]
    moved: list[str]


def checkpoint(queries: Queries) -> tuple[int, int]:
    """What streams have read up to: the timelines projection's checkpoint, and its last erasure
    told to streams (``tl_removals.seq``; an erasure does not move the checkpoint)."""
    return queries.reread(_checkpoint, queries)


def _checkpoint(queries: Queries) -> tuple[int, int]:
    with queries.snapshot() as conn:
        position, tag = queries._checkpoint(conn, "timelines")
        return position, _last_removal(queries, conn, tag)


def _last_removal(queries: Queries, conn: Any, tag: str) -> int:
    table = f"{REMOVALS}{tag}"
    if not queries._has_table(conn, "timelines", table):
        return 0  # tables of a version without it, being rebuilt
    return conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {queries._in_file('timelines', table)}").fetchone()[0]


def opening(queries: Queries, entity_id: str | None) -> tuple[int, int]:
    """Whether a stream can open (``NotFound``: no such entity; ``NotLive``: no change log yet):
    the timelines projection's checkpoint and the store's head."""
    if entity_id is not None:
        queries.entity(entity_id)
    return queries.reread(_opening, queries)


def _opening(queries: Queries) -> tuple[int, int]:
    with queries.snapshot() as conn:
        position, tag = queries._checkpoint(conn, "timelines")
        _require_log(queries, conn, tag)
        return position, queries.store.head()


def _require_log(queries: Queries, conn: Any, tag: str) -> None:
    if not queries._has_table(conn, "timelines", f"{CHANGES}{tag}"):
        raise NotLive("the timelines projection is being rebuilt with its change log: streams open once it is live")


def changes(queries: Queries, entity_id: str | None, cursor: StreamCursor, filters: StreamFilter, limit: int) -> ChangePage:
    """Up to about ``limit`` messages of the changes after ``cursor`` (the global timeline's
    when ``entity_id`` is None), read in one snapshot."""
    if filters.role is not None and entity_id is None:
        raise QueryError("role", "only an entity's timeline has roles")
    return queries.reread(_changes, queries, entity_id, cursor, filters, limit)


def _resuming(reader: "_Reader", cursor: StreamCursor) -> StreamCursor:
    """A stream resuming at ``cursor.position``: part-way through the declaration there, before
    its first entry, when it is one that changes the stream's group (the client may have
    dropped part-way through its messages, which all have that id); else as it was."""
    at = cursor.position
    if reader.entity_id is None or at == 0 or cursor.seen is not None or cursor.moved is not None:
        return cursor
    move = reader.next_move(at - 1, at)
    return cursor if move is None else StreamCursor(at - 1, FIRST, resumed=True)


def _changes(queries: Queries, entity_id: str | None, cursor: StreamCursor, filters: StreamFilter, limit: int) -> ChangePage:
    queries._refresh()  # dropped and read again after an erasure
    with queries.snapshot() as conn:
        upto, tag = queries._checkpoint(conn, "timelines")
        _require_log(queries, conn, tag)
        reader = _Reader(queries, conn, tag, upto, entity_id, filters)
        page = ChangePage(cursor=_resuming(reader, cursor), upto=upto)
        if not reader.removals(page, limit):
            page.more = True
            return page
        while len(page.messages) < limit and page.cursor.position < upto:
            position = page.cursor.position
            move = reader.next_move(position, upto) if entity_id is not None else None
            if page.cursor.moved is None:
                high = move.position - 1 if move is not None else upto
                if position < high:
                    done = reader.log(page, position, high, limit - len(page.messages))
                    if not done:
                        break
                if move is None:
                    continue
            elif move is None or move.position != position + 1:
                # Part-way through a declaration that no longer changes the group (erased, or an
                # erased declaration before it made it change nothing): what the stream told of
                # it was taken back by ``removals``; nothing else happened at its position.
                page.cursor = StreamCursor(position + 1, seen=page.cursor.seen)
                continue
            if len(page.messages) >= limit or not reader.moved(page, move, limit - len(page.messages)):
                break  # the declaration's entries (or the rest of them) come with the next page
        page.more = page.cursor.position < upto
    return page


def _erased(message: Message) -> Message:
    """A ``remove`` as an erasure's reads: the entry's id, kind and position, ``status: erased``."""
    entry = json.loads(message.data)
    return Message(message.position, "remove", compact_json(
        {"event_id": entry["event_id"], "kind": entry["kind"], "position": entry["position"], "status": "erased"}
    ))


class _Reader:
    def __init__(
        self, queries: Queries, conn: Any, tag: str, upto: int, entity_id: str | None, filters: StreamFilter
    ) -> None:
        self.queries, self.conn, self.tag, self.upto = queries, conn, tag, upto
        self.entity_id, self.filters = entity_id, filters
        self.aliases: AliasIndex = queries.aliases
        self.rank = RANK[filters.role] if filters.role else None
        self._bare: dict[str, int] = {}  # ``_bare_until``'s answers, kept for this read's snapshot

    # --- the group's members and the declarations that change them ----------------------

    def members(self, position: int) -> list[str]:
        if self.entity_id is None:
            return [GLOBAL]
        return self.aliases.members(self.aliases.resolve(self.entity_id, position), position)

    def next_move(self, low: int, high: int) -> _Move | None:
        """The first declaration in ``(low, high]`` that changes the entity's group."""
        assert self.entity_id is not None
        aliases, me = self.aliases, self.entity_id
        declarations = aliases.declarations
        start = bisect.bisect_right(declarations, low, key=lambda d: d[0])
        for position, alias, _canonical, _name in declarations[start:]:
            if position > high:
                return None
            # Only a declaration whose alias moves into or out of the entity's group changes it.
            if aliases.resolve(alias, position) != aliases.resolve(me, position) and aliases.resolve(
                alias, position - 1
            ) != aliases.resolve(me, position - 1):
                continue
            before, after = self.members(position - 1), self.members(position)
            if set(before) != set(after):
                return _Move(position, before, after, sorted(set(before) ^ set(after)))
        return None

    # --- the change log -----------------------------------------------------------------

    def log(self, page: ChangePage, low: int, high: int, limit: int) -> bool:
        """The changes in ``(low, high]`` (the group constant there) into ``page``, up to
        ``limit`` positions of them; True once all of them are read."""
        members = self.members(low)
        changes_t = f"{CHANGES}{self.tag}"
        bound, done = high, True
        for member in members:  # each member's ``limit``-th change: read no further than the first
            row = self.conn.execute(
                f"SELECT position FROM {changes_t} WHERE entity_id = ? AND position > ? AND position <= ?"
                " ORDER BY position LIMIT 1 OFFSET ?",
                (member, low, bound, limit - 1),
            ).fetchone()
            if row is not None:
                bound, done = row[0], False
        by_position: dict[int, list[tuple[Any, ...]]] = {}
        among, among_args = self.queries._in("entity_id", members)
        for row in self.conn.execute(
            f"SELECT position, old_rank, rank, old_status FROM {changes_t}"
            f" WHERE {among} AND position > ? AND position <= ? ORDER BY position",
            [*among_args, low, bound],
        ):
            by_position.setdefault(row[0], []).append(row)
        versions = self._versions(list(by_position))
        out: list[tuple[int, str, tuple[Any, ...]]] = []
        for position, rows in by_position.items():
            told = self._classify(versions[position], rows)
            if told is not None:
                out.append((position, *told))
        self._add(page, out)
        page.cursor = StreamCursor(high if done else bound, seen=page.cursor.seen)
        return done

    def _versions(self, positions: list[int]) -> dict[int, tuple[Any, ...]]:
        out: dict[int, tuple[Any, ...]] = {}
        for i in range(0, len(positions), 900):
            chunk = positions[i : i + 900]
            for row in self.conn.execute(
                f"SELECT {ENTRY_COLUMNS}, v.valid_from FROM {EVENTS}{self.tag} v"
                f" WHERE v.valid_from IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[row[-1]] = row[:-1]
        return out

    def _classify(self, version: tuple[Any, ...], rows: list[tuple[Any, ...]]) -> tuple[str, tuple[Any, ...]] | None:
        """What a change is to this stream: (message kind, entry row), or None (not in its view)."""
        f = self.filters
        if f.kinds and version[1] not in f.kinds:
            return None
        wanted = self.rank
        by_entity = self.entity_id is not None
        old = [r for r in rows if r[3] is not None and (wanted is None or r[1] == wanted)]
        new = [r for r in rows if (r[2] is not None or not by_entity) and (wanted is None or r[2] == wanted)]
        was = any(f.include_retracted or r[3] != "retracted" for r in old)
        now = bool(new) and (f.include_retracted or version[8] != "retracted")
        if not was and not now:
            return None
        kind = "update" if was and now else "entry" if now else "remove"
        rank = min(r[2] for r in new) if now and by_entity else min(r[1] for r in old) if by_entity else None
        return kind, (*version, rank)

    # --- erasures -----------------------------------------------------------------------

    def removals(self, page: ChangePage, limit: int) -> bool:
        """The erasures not taken into account yet of entries this stream shows at its position
        (a version of the event there, filed under its entity, in its filters), as ``remove``
        messages with that position as their id, up to ``limit``; True once all are read."""
        table = f"{REMOVALS}{self.tag}"
        last = page.erased = _last_removal(self.queries, self.conn, self.tag)
        cursor = page.cursor
        seen = cursor.seen
        # Part-way through the declaration at ``at + 1``, the stream's last messages had its
        # position as id: ids never decrease.
        told_at = cursor.told
        if seen is None:  # resuming: erasures made before the tables reached the position were told then
            # (the position the client resumed at: ``told_at`` too when it resumed at a declaration)
            seen = 0 if not last else self.conn.execute(
                f"SELECT COALESCE(MAX(seq), 0) FROM {table} WHERE reached < ?", (told_at,)
            ).fetchone()[0]
        if seen >= last:  # nothing new: the usual case
            page.cursor = replace(cursor, seen=seen)
            return True
        f, at = self.filters, cursor.position
        # The group as the stream has it: with the alias declarations erased since ``seen`` (it
        # is told of the entries they took out below, after the erasures before them), and, part-
        # way through the declaration at ``at + 1``, its entries up to ``cursor.moved`` too (a
        # remove of one after them is of an entry the stream does not hold: nothing to do).
        declared = self._erased_declarations(table, seen, at + (cursor.moved is not None)) if self.entity_id else []
        held = self._with(declared)
        members = sorted({m for p in {at, told_at} for m in self._members(held, p)})
        among, among_args = self.queries._in("entity_id", members)
        # Rows of entities only erased events named (no id left) are VANISHED's: they may be a
        # member's that had no entries when the erasure was made (it may have some again since).
        bare = max(self._bare_until([m for m in members if m != GLOBAL]).values(), default=0)
        if bare:
            among, among_args = f"({among} OR (entity_id = '{VANISHED}' AND reached < ?))", [*among_args, bare]
        where = ["seq > ?", "kind != 'entity_alias'", among, "valid_from <= ?", "valid_to > ?"]
        args: list[Any] = [seen, *among_args, at, at]
        if self.rank is not None:
            where.append(f"(rank = {self.rank} OR rank IS NULL)")
        if not f.include_retracted:
            where.append("status != 'retracted'")
        if f.kinds:
            where.append(f"kind IN ({','.join('?' * len(f.kinds))})")
            args += list(f.kinds)
        rows = self.conn.execute(
            f"SELECT DISTINCT seq, event_position, event_id, kind FROM {table} WHERE {' AND '.join(where)}"
            " ORDER BY seq LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        done = len(rows) <= limit
        rows = rows[:limit]
        bound = last if done else rows[-1][0]
        page.messages += [
            Message(told_at, "remove", compact_json({"event_id": e, "kind": k, "position": p, "status": "erased"}))
            for _, p, e, k in rows
        ]
        page.cursor = replace(cursor, seen=bound)
        if declared and self._regrouped(page, declared, bound, at, cursor.moved, cursor.resumed):
            page.cursor = StreamCursor(at + 1, seen=bound)  # the declaration it was part-way through is gone
        return done

    def _members(self, index: AliasIndex, position: int) -> list[str]:
        if self.entity_id is None:
            return [GLOBAL]
        return index.members(index.resolve(self.entity_id, position), position)

    def _with(self, declared: list[tuple[int, int, str, str, bool]]) -> AliasIndex:
        """The alias index with erased declarations ((seq, position, alias, canonical, guessed))."""
        if not declared:
            return self.aliases
        index = AliasIndex()
        for declaration in sorted([*self.aliases.declarations, *((p, a, c, None) for _, p, a, c, _ in declared)],
                                  key=lambda d: d[0]):
            # A side read from a VANISHED row is a guess: it may close a cycle the store never
            # held (and ``AliasIndex.find`` would then loop for ever). Such a declaration is left
            # out, as the store would have refused it.
            if not index.would_cycle(declaration[1], declaration[2]):
                index.add(*declaration)
        return index

    def _erased_declarations(self, table: str, seen: int, reached: int) -> list[tuple[int, int, str, str, bool]]:
        """The alias declarations at ``reached`` or before erased since ``seen`` (``tl_removals``):
        (seq, position, alias, canonical, whether a side was VANISHED, read as a member's)."""
        declared: dict[int, dict[str, Any]] = {}
        for seq, position, entity_id, side, made in self.conn.execute(
            f"SELECT seq, event_position, entity_id, status, reached FROM {table}"
            " WHERE kind = 'entity_alias' AND seq > ? ORDER BY seq",
            (seen,),
        ):
            declared.setdefault(seq, {"position": position, "reached": made})[side] = entity_id
        if not declared:
            return []
        assert self.entity_id is not None
        at = reached
        # A side kept as VANISHED (an id that no entry nor live declaration names any more; one
        # still in a group keeps its id) is either a member of this stream's group that had no
        # entries then either: its own entity first, then the group's canonical id, then the
        # others (the streams that can have shown the merge; every stream of such an entity
        # reads it so, and no id tells them apart); or else the id the stream's group was merged
        # with, or a link of a chain of erased declarations through it (a -> id -> b): read as
        # VANISHED itself, one node for every such id, whose entries are the erased ones kept
        # under VANISHED (told as erasures).
        root = self.aliases.resolve(self.entity_id, at)
        ids = [self.entity_id, root, *sorted(set(self.members(at)) - {self.entity_id, root})]
        bare = self._bare_until(ids)
        out = []
        for seq, d in declared.items():
            alias, canonical = d.get("alias"), d.get("canonical")
            if alias is None or canonical is None or d["position"] > reached:
                continue
            guessed = VANISHED in (alias, canonical)
            if guessed:
                known = canonical if alias == VANISHED else alias
                # the first such member that, read as the vanished side, closes no cycle
                side = next((m for m in ids if bare[m] > d["reached"] and m != known and (
                    self.aliases.resolve(known, at) != m if alias == VANISHED else self.aliases.resolve(m, at) != known
                )), None)
                # None such: the vanished id was not one of the group's own members but the
                # group it joined (or a link of a chain of erased declarations through it): it is
                # read as ``VANISHED`` itself, a node of the group as the stream had it, so that
                # the chain holds and the erasures of its entries (VANISHED's rows) are told.
                alias, canonical = (
                    (alias, canonical) if side is None else (side, canonical) if alias == VANISHED else (alias, side)
                )
            if alias != canonical:
                out.append((seq, d["position"], alias, canonical, guessed))
        return out

    def _regrouped(
        self, page: ChangePage, declared: list[tuple[int, int, str, str, bool]], bound: int, at: int, mid: Key | None,
        resumed: bool = False,
    ) -> bool:
        """The entries that the erased alias declarations ``declared`` of erasures up to ``bound``
        took out of the entity's group at ``at`` (``remove``), or whose best role in it they
        changed (``update``), rendered as the page renders them: the group as it was with the
        declarations, against the group as it is without them. ``mid``: the stream is part-way
        through the declaration at ``at + 1`` (it was told of its entries up to ``mid``, in
        timeline order): those entries are compared in the groups as of ``at + 1``, the others
        as of ``at``, and the messages' id is ``at + 1``; ``resumed``: the stream resumed at that
        declaration, and the client may hold any of its entries (told before it reconnected):
        all are compared as of ``at + 1``. True when that declaration is one of the erased ones:
        all that the stream was told of it is taken back, and it reads on from its position."""
        erased = [d for d in declared if d[0] <= bound]
        if not erased:
            return False
        reached = at if mid is None else at + 1  # the last position whose messages were told
        guessed = any(d[4] for d in erased)
        before, then = self._with(declared), self._with([d for d in declared if d[0] > bound])
        start = len(page.messages)
        # (group as of, entries after, entries up to): those of the declaration the stream was
        # part-way through that it was told of, then the others, in timeline order
        halves = (
            [(at, None, None)] if mid is None else [(at + 1, None, None)] if resumed
            else [(at + 1, None, mid), (at, mid, None)]
        )
        for position, after, through in halves:
            was, now = self._members(before, position), self._members(then, position)
            if set(was) == set(now):
                continue
            rows, _ = self._moved_rows(_Move(position, was, now, sorted(set(was) ^ set(now))), after, None, through)
            # (an erased re-declaration gives an earlier declaration's entries back: ``entry``)
            self._add(page, [(reached, "remove" if rank is None else "entry" if old is None else "update",
                              (*row, old if rank is None else rank)) for *row, _key, old, rank in rows])
        if guessed:
            # Read from a row without its id: this stream may never have shown these entries (it
            # is of another entity without entries), so a remove says what an erased entry's does
            # and nothing of the content. (An update is of an entry the stream shows now.)
            page.messages[start:] = [_erased(m) if m.kind == "remove" else m for m in page.messages[start:]]
        return mid is not None and any(d[1] == at + 1 for d in erased)

    def _bare_until(self, entity_ids: Sequence[str]) -> dict[str, int]:
        """For each id, the position of the first version filed under it (``EVERYTHING`` when
        none is): it had no entries before, so an erasure made when the tables had reached less
        may have left its rows as VANISHED. One statement for the ids not asked yet in this read
        (a group's members are asked by ``removals`` and again by ``_erased_declarations``)."""
        missing = [i for i in dict.fromkeys(entity_ids) if i not in self._bare]
        if missing:
            among, args = self.queries._in("entity_id", missing)
            first = {row[0]: row[1] for row in self.conn.execute(
                f"SELECT entity_id, MIN(valid_from) FROM {ENTRIES}{self.tag} WHERE {among} GROUP BY entity_id", args
            )}
            self._bare.update((i, first.get(i, EVERYTHING)) for i in missing)
        return {i: self._bare[i] for i in entity_ids}

    # --- alias declarations ---------------------------------------------------------------

    def moved(self, page: ChangePage, move: _Move, limit: int) -> bool:
        """What a declaration changed: the entries it moved into the group (``update``), out of
        it (``remove``), or whose best role in it it changed (``update``), in timeline order
        from ``page.cursor.moved`` on, into ``page``; True once all of them are read."""
        rows, done = self._moved_rows(move, page.cursor.moved, limit)
        told = [
            (move.position, "remove" if now is None else "update", (*row, now if now is not None else was))
            for *row, _key, was, now in rows
        ]
        self._add(page, told)
        cursor = page.cursor
        page.cursor = (
            StreamCursor(move.position, seen=cursor.seen)
            if done
            else replace(cursor, position=move.position - 1, moved=(rows[-1][-3], rows[-1][0]))
        )
        return done

    def _moved_rows(
        self, move: _Move, after: Key | None, limit: int | None, through: Key | None = None
    ) -> tuple[list[Any], bool]:
        """The versions shown at ``move.position`` filed under ``move.moved`` whose best rank among
        ``move.before`` and among ``move.after`` differ, in timeline order after ``after`` (and up
        to ``through``), up to ``limit`` (None: all): (entry columns, start key, rank before, rank
        after) each, and whether all were read."""
        f = self.filters
        among, among_args = self.queries._in("en.entity_id", move.moved)
        where = [among, "en.valid_from <= ?", "v.valid_to > ?"]
        args: list[Any] = [*among_args, move.position, move.position]
        if not f.include_retracted:
            where.append("v.status != 'retracted'")
        if f.kinds:
            where.append(f"v.kind IN ({','.join('?' * len(f.kinds))})")
            args += list(f.kinds)
        if after is not None and after != FIRST:
            where.append("(en.start_key, en.position) > (?, ?)")
            args += list(after)
        if through is not None:
            where.append("(en.start_key, en.position) <= (?, ?)")
            args += list(through)
        role = "" if self.rank is None else f" AND o.rank = {self.rank}"
        # a version's best rank among some members (NULL: filed under none of them)
        best = (
            f"(SELECT MIN(o.rank) FROM {ENTRIES}{self.tag} o WHERE {self.queries._in('o.entity_id', [])[0]}"
            f" AND o.start_key = m.start_key AND o.position = m.position AND o.valid_from = m.valid_from{role})"
        )
        sql = (
            f"SELECT {ENTRY_COLUMNS}, m.start_key, m.was, m.now FROM"
            f" (SELECT m.*, {best} AS was, {best} AS now FROM"
            f" (SELECT DISTINCT en.start_key, en.position, en.valid_from FROM {ENTRIES}{self.tag} en"
            f" JOIN {EVENTS}{self.tag} v ON v.valid_from = en.valid_from WHERE {' AND '.join(where)}) m) m"
            f" JOIN {EVENTS}{self.tag} v ON v.valid_from = m.valid_from"
            f" WHERE m.was {self.queries.DISTINCT} m.now ORDER BY m.start_key, m.position"
        )
        best_args = [*self.queries._in("", move.before)[1], *self.queries._in("", move.after)[1]]
        if limit is None:
            return self.conn.execute(sql, [*best_args, *args]).fetchall(), True
        rows = self.conn.execute(sql + " LIMIT ?", [*best_args, *args, limit + 1]).fetchall()
        return rows[:limit], len(rows) <= limit

    # --- rendering ------------------------------------------------------------------------

    def _add(self, page: ChangePage, told: Sequence[tuple[int, str, tuple[Any, ...]]]) -> None:
        """(position, kind, entry row) as messages, the entries rendered as the timeline page
        renders them (``Queries.render_rows``, at the page's checkpoint)."""
        rows = [row for _, _, row in told]
        data = self.queries.render_rows(self.conn, rows, self.upto, by_entity=self.entity_id is not None)
        page.messages += [Message(position, kind, text) for (position, kind, _), text in zip(told, data)]
