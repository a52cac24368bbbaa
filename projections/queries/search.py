"""A search within one entity's timeline."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..search import SEARCH
from ..timelines import ENTRIES, EVENTS, GROUP_ENTRIES

from .cards import ENTRY_COLUMNS
from .cursors import Cursor, TimelineQuery
from .errors import QueryError
from .related import RelatedReads


# A search within an entity in time order first walks up to this many of its rows, asking the
# index about each (``Queries._search_entity``): enough to fill a page of a frequent word, few
# enough that a walk which does not fill it costs little beside reading the index once.
WALK_FIRST = 200


class SearchReads(RelatedReads):
    def _search_entity(
        self,
        conn: sqlite3.Connection,
        tag: str,
        search_tag: str | None,
        members: list[str],
        query: TimelineQuery,
        keyed: list[str],
        keyed_args: list[Any],
        versioned: list[str],
        versioned_args: list[Any],
        order: str,
        after: Cursor | None,
        match: str,
        count: bool = False,
        *,
        grouped: bool = False,
        best: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """A search within one entity's timeline, planned from the smaller side.

        Asking the index whether one row matches costs a lookup of every term of the query, and
        ranking a row on its own (bm25) counts the rows that hold each term: done for each of an
        entity's rows, a search costs (entity size × matches). So the index is asked once: its
        matches among the entity's rows (``h``), ranked as they come, joined with the entity's
        rows. Only in time order, and only for the first ``WALK_FIRST`` rows of an entity, is the
        entity walked in order and each row asked, which answers a page of a frequent word at
        once: kept when that page is complete, or the walk saw every row.

        ``grouped``: the entity's rows are its group's set's (``tl_group_entries``, ``keyed``
        naming the set), one range in timeline order like an entity's own, so the group is
        searched as one entity is; ``best`` is the condition of ``keyed`` that keeps a version's
        best role, which the index's side (a version of the group or not) does without. Else an
        entity of several ``members`` (an ``as_of`` before its group's latest declaration) has
        each hit looked up under each member, once a version.
        """
        fts = f"{SEARCH}{search_tag}"
        table = f"{GROUP_ENTRIES if grouped else ENTRIES}{tag}"
        several = len(members) > 1 and not grouped  # rows of several ids: grouped by version here
        joined, matches, score = self._search_join(fts)
        join_args, match_args = ([], [match]) if "?" in matches else ([match], [])
        keyed_sql, versioned_sql = " AND ".join(keyed), " AND ".join(versioned)
        relevance = query.order == "relevance"
        limit = query.limit + 1
        if not relevance and not count and not several and WALK_FIRST > 0:
            rows = _execute(
                conn,
                f"SELECT {ENTRY_COLUMNS}, en.rank"
                f" FROM (SELECT * FROM {table} en WHERE {keyed_sql} {order} LIMIT ?) en"
                f" JOIN {EVENTS}{tag} v ON v.valid_from = en.valid_from{joined}"
                f" WHERE {versioned_sql} AND {matches} {order} LIMIT ?",
                [*keyed_args, WALK_FIRST, *join_args, *versioned_args, *match_args, limit],
            )
            if len(rows) >= limit:
                return rows
            (seen,) = conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} en WHERE {keyed_sql} LIMIT ?) AS walked",
                [*keyed_args, WALK_FIRST],
            ).fetchone()
            if seen < WALK_FIRST:
                return rows
        score = score if relevance and not count else "0"
        rank = "MIN(en.rank)" if several else "en.rank"
        group = self.BY_HIT if several else ""  # filed under several members: once
        if relevance:
            order = "ORDER BY h.score, en.start_key, en.position"
        within = " AND ".join(k for k in keyed if k != best)  # no argument in ``best``
        hits = self._hits(fts, score, f"SELECT en.valid_from FROM {table} en WHERE {within}")
        sql = (
            f"WITH h AS MATERIALIZED ({hits})"
            f" SELECT {ENTRY_COLUMNS}, {rank} FROM h JOIN {EVENTS}{tag} v ON v.valid_from = h.id"
            # the version's own key: each entry is one lookup, not a walk of the entity's rows
            f" JOIN {table} en ON en.start_key = v.start_key AND en.position = v.position"
            f" AND en.valid_from = v.valid_from"
            f" WHERE {keyed_sql} AND {versioned_sql}{group} {order} LIMIT ?"
        )
        args = [match, *keyed_args, *keyed_args, *versioned_args]
        if count:
            return _execute(conn, f"SELECT COUNT(*) FROM ({sql}) AS page", [*args, self.NO_LIMIT])
        args.append(limit)
        if relevance:
            sql += " OFFSET ?"
            args.append(after.position if after else 0)
        return _execute(conn, sql, args)


def _execute(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if "fts5" not in str(exc):
            raise
        # ``match_expression`` writes nothing FTS5 refuses; should it ever, the caller hears why
        raise QueryError("q", f"the search index could not read this query ({exc})") from None
