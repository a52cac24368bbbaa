"""Timeline pages: an entity's, or the global one, searched or not, as of any instant."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..changes import RANK
from ..groups import OPEN
from ..search import SEARCH
from ..timelines import ENTRIES, EVENTS, GROUP_ENTRIES

from .cards import ENTRY_COLUMNS, POSITION, START_KEY, VALID_FROM
from .cursors import Cursor, GLOBAL, TimelineQuery, _partial, as_of_key, binding, check_binding, decode_cursor, encode_cursor, fts_query
from .errors import NotFound, QueryError, RawJson
from .search import SearchReads, _execute


class TimelineReads(SearchReads):
    def timeline(
        self, entity_id: str | None, query: TimelineQuery, *, render: bool = False, total: bool = False,
        keep_cards: bool = True, updated: bool = False,
    ) -> dict[str, Any]:
        """A page of a timeline; with ``render`` its entries are ``RawJson`` (JSON text, for the API);
        with ``total``, also how many entries match in all (its ``total``: every page's, at the
        same snapshot; a count of the whole selection, for the CLI rather than the hot path).
        ``keep_cards=False`` (an export's pages, read once) leaves the caches of stored events
        (``StoredCards``) and of rendered entities as they were: a whole timeline read through
        would evict the hot ones, or fill memory.
        With ``updated``, the page's ``updated`` lists, for each entry, when the change that made
        it as it stands was recorded (its ``recorded_at``, or its latest correction's or
        retraction's): what an Atom feed's ``updated`` is."""
        if query.role is not None and entity_id is None:
            raise QueryError("role", "only an entity's timeline has roles")
        if query.order == "relevance" and not query.q:
            raise QueryError("order", "order=relevance ranks full-text matches: it needs q")
        expression = fts_query(query.q) if query.q else None
        match = self._match(query.q, expression) if query.q and expression else None
        since = _partial("since", query.since).start_key if query.since else None
        until = _partial("until", query.until).end_key if query.until else None
        as_of = as_of_key(query.as_of) if query.as_of else None
        after = decode_cursor(query.cursor) if query.cursor else None
        self._refresh()
        with self.snapshot() as conn:
            position, tag = self._checkpoint(conn, "timelines")
            search_tag = None
            if match is not None:
                # A search answers for the position both projections have reached.
                searched, search_tag = self._checkpoint(conn, "search")
                position = min(position, searched)
            if after is not None:  # a forged snapshot ahead of the projection reads what it has
                snapshot = min(after.snapshot, position)
            elif as_of is not None:
                snapshot = min(position, self.store.position_at(as_of))
            else:
                snapshot = position
            entity = None
            members: list[str] = []
            set_id, set_to = None, OPEN
            if entity_id is not None:
                # Aliases as the store knew them at the snapshot: later ones do not merge yet.
                target = self.aliases.resolve(entity_id, snapshot)
                # an entity with aliases: its rows filed under its set (a search's too), or (an
                # ``as_of`` before its latest declaration) those its set held then, from the
                # sets' history; or (no such set: tables from before it) those of each member
                set_id = self._set(conn, "timelines", target, snapshot)
                if set_id is None and (held := self._held(conn, target, snapshot)) is not None:
                    set_id, set_to = held
                group = None if set_id is not None else self._group(conn, target, snapshot)
                entity = self._entity(conn, target, snapshot, as_of=as_of is not None, group=group)
                if entity is None:
                    now = max(position, self.aliases.seen)
                    entity = self._entity(conn, self.aliases.resolve(entity_id, now), now)
                    if entity is not None and as_of is not None:  # known now, not yet then: today's
                        # name, the id and aliases as they resolved then (not those declared since)
                        entity = {
                            **entity, "id": target, "aliases": self.aliases.members(target, snapshot)[1:],
                            "event_count": 0, "first_at": None, "last_at": None,
                        }
                if entity is None:
                    raise NotFound(f"no entity {entity_id!r}")
                # the ids the events are filed under (an id no event names has no entries)
                members = [target] if group is None else group[1] or [target]
            scope = target if entity_id is not None else GLOBAL
            bound = lambda: binding({  # noqa: E731 - only a page with a cursor, in or out, needs it
                "entity": scope, "order": query.order, "since": since, "until": until,
                "kind": ",".join(sorted(set(query.kinds))) or None, "role": query.role, "q": expression,
                "as_of": as_of, "include_retracted": "true" if query.include_retracted else None,
            })
            if after is not None:
                check_binding(after, bound())
            rows = self._rows(
                conn, tag, search_tag, entity_id is not None, members, snapshot, query, since, until, after, match,
                set_id=set_id, set_to=set_to,
            )
            pairs = self._render(
                conn, rows[: query.limit], snapshot, by_entity=entity_id is not None, as_of=as_of is not None,
                keep=keep_cards,
            )
            entries = [text for _, text in pairs]
            changed = self._changed_at(conn, [row for row, _ in pairs]) if updated else None
            shown = [row for row, _ in pairs]
            matching = None
            if total:
                matching = self._rows(
                    conn, tag, search_tag, entity_id is not None, members, snapshot, query, since, until, None, match,
                    count=True, set_id=set_id, set_to=set_to,
                )[0][0]
        next_cursor = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            if query.order == "relevance":  # ranked pages go by offset within the pinned snapshot
                offset = (after.position if after else 0) + query.limit
                next_cursor = encode_cursor(Cursor("", offset, snapshot, bound()))
            else:
                next_cursor = encode_cursor(Cursor(last[START_KEY], last[POSITION], snapshot, bound()))
        result: dict[str, Any] = {
            "entries": [RawJson(e) for e in entries] if render else [json.loads(e) for e in entries],
            "next_cursor": next_cursor,
        }
        if matching is not None:
            result["total"] = matching
        if changed is not None:
            result["updated"] = [changed[row[VALID_FROM]] for row in shown]
        if entity is not None:
            result = {"entity": entity, **result}
        return result

    def _rows(
        self,
        conn: sqlite3.Connection,
        tag: str,
        search_tag: str | None,
        by_entity: bool,
        members: list[str],
        p: int,
        query: TimelineQuery,
        since: str | None,
        until: str | None,
        after: Cursor | None,
        match: str | None = None,
        count: bool = False,
        set_id: str | None = None,
        set_to: int = OPEN,
    ) -> list[tuple[Any, ...]]:
        """The rows of a page (``limit`` + 1 of them); with ``count``, ``[(rows that match,)]``.
        ``set_id``: the entity's rows are those filed under its group's set (``tl_group_entries``),
        one range in timeline order like an entity's own (``members`` is then not asked): those
        of the set that stands (``set_to`` OPEN) or went at ``set_to`` (an ``as_of`` before the
        group's latest declaration), that were the set's at ``p`` (``set_from``)."""
        # ``en`` (by entity) or ``v`` gives the order; a version's other columns are in ``v``.
        # ``keyed``: conditions on the ordering table's own columns (an entity's entries can be
        # read by them alone); ``versioned``: on the version's.
        alias = "en" if by_entity else "v"
        keyed, keyed_args = [f"{alias}.valid_from <= ?"], [p]
        versioned, versioned_args = ["v.valid_to > ?"], [p]
        grouped = by_entity and set_id is not None
        best = None  # the condition that keeps one row a version of a group's (its best role)
        if grouped:
            # (``+``: set_from is a filter, not what an index is chosen by: the order is the key's)
            keyed[0:0] = ["en.set_id = ?", "en.set_to = ?", "+en.set_from <= ?"]
            keyed_args[0:0] = [set_id, set_to, p]
            if not query.role:  # an event filed under members in several roles: once, its best
                best = (  # (no argument: ``p`` written in, an integer)
                    f"NOT EXISTS (SELECT 1 FROM {GROUP_ENTRIES}{tag} b WHERE b.set_id = en.set_id"
                    " AND b.set_to = en.set_to AND b.start_key = en.start_key AND b.position = en.position"
                    f" AND b.valid_from = en.valid_from AND b.rank < en.rank AND +b.set_from <= {int(p)})"
                )
                keyed.append(best)
        elif by_entity and len(members) == 1:
            keyed.insert(0, "en.entity_id = ?")
            keyed_args[0:0] = members
        elif by_entity:
            among, among_args = self._in("en.entity_id", members)
            keyed.insert(0, among)
            keyed_args[0:0] = among_args
        if not query.include_retracted:
            versioned.append("v.status != 'retracted'")
        if query.kinds:
            versioned.append(f"v.kind IN ({','.join('?' * len(query.kinds))})")
            versioned_args += list(query.kinds)
        if by_entity and query.role:
            keyed.append("en.rank = ?")
            keyed_args.append(RANK.get(query.role, -1))
        if since is not None:
            versioned.append("v.end_key >= ?")
            versioned_args.append(since)
        if until is not None:
            keyed.append(f"{alias}.start_key <= ?")
            keyed_args.append(until)
        desc = query.order == "desc"
        relevance = query.order == "relevance"
        if after is not None and not relevance:
            keyed.append(f"({alias}.start_key, {alias}.position) {'<' if desc else '>'} (?, ?)")
            keyed_args += [after.start_key, after.position]
        direction = "DESC" if desc else "ASC"
        order = f"ORDER BY {alias}.start_key {direction}, {alias}.position {direction}"
        if by_entity and match is not None:
            return self._search_entity(conn, tag, search_tag, members, query, keyed, keyed_args,
                                       versioned, versioned_args, order, after, match, count,
                                       grouped=grouped, best=best)
        where, args = keyed + versioned, keyed_args + versioned_args
        joined, joined_args = "", []
        if match is not None:
            # the version's headline and summary ranked; the index's row = the version's id
            joined, matches, score = self._search_join(f"{SEARCH}{search_tag}")
            where.append(matches)
            (args if "?" in matches else joined_args).append(match)
            if relevance:
                order = f"ORDER BY {score}, {alias}.start_key, {alias}.position"
        if by_entity:
            # An entry row belongs to the version that shares its valid_from.
            join = f"JOIN {EVENTS}{tag} v ON v.valid_from = en.valid_from"
            if grouped:
                sql = (
                    f"SELECT {ENTRY_COLUMNS}, en.rank FROM {GROUP_ENTRIES}{tag} en {join}"
                    f" WHERE {' AND '.join(where)} {order} LIMIT ?"
                )
            elif len(members) > 1:  # an event filed under several of the members: once, its best role
                sql = (
                    f"SELECT {ENTRY_COLUMNS}, MIN(en.rank) FROM {ENTRIES}{tag} en {join}"
                    f" WHERE {' AND '.join(where)}{self.BY_EVENT} {order} LIMIT ?"
                )
            else:
                sql = f"SELECT {ENTRY_COLUMNS}, en.rank FROM {ENTRIES}{tag} en {join} WHERE {' AND '.join(where)} {order} LIMIT ?"
        else:
            sql = f"SELECT {ENTRY_COLUMNS} FROM {EVENTS}{tag} v{joined} WHERE {' AND '.join(where)} {order} LIMIT ?"
            args = joined_args + args
        if count:
            return _execute(conn, f"SELECT COUNT(*) FROM ({sql}) AS page", [*args, self.NO_LIMIT])
        args.append(query.limit + 1)
        if relevance:
            sql += " OFFSET ?"
            args.append(after.position if after else 0)
        return _execute(conn, sql, args)
