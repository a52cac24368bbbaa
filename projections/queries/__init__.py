"""The read side: timelines, entities and events, as of now or as of any instant.

Every read runs in one SQLite read transaction (a WAL snapshot), on a connection of its own
thread, so it never sees a half-applied batch or a half-swapped rebuild. ``P`` in these modules is the
store position a read answers for: the projection's checkpoint, or less for ``as_of``.

The package is laid out by responsibility, each module a part of one class, ``Queries``:
``base`` (the dialect and the plumbing: snapshot, time limit, checkpoints, events), ``sets``
(the alias-group sets the projections keep), ``render`` (an entry's stored fields and the names
of its entities), ``entities`` (entity cards and the directory), ``related``, ``search`` (a
search within one entity) and ``timelines`` (pages), each a mixin over the one before; and the
functions and values they share: ``errors``, ``cursors`` and ``cards``. ``Queries`` and every
name the callers import are re-exported here.
"""

from __future__ import annotations

from .base import PROJECTIONS, QueriesBase
from .cards import (
    CARD_OVERHEAD,
    CARDS_BUDGET,
    ENTITIES_KEPT,
    ENTRY_COLUMNS,
    NAMES_KEPT,
    ROLE_OF,
    STORED_FIELDS,
    Card,
    LaterChanges,
    StoredCards,
    render_entry,
)
from .cursors import (
    BOUND,
    CURSOR_VERSION,
    GLOBAL,
    GROUP_PREFIX,
    LIST_BOUND,
    MAX_POSITION,
    Cursor,
    TimelineQuery,
    as_of_key,
    binding,
    check_binding,
    decode_cursor,
    decode_list_cursor,
    encode_cursor,
    encode_list_cursor,
    fts_query,
    list_binding,
)
from .errors import ConnectionLost, NotFound, QueryError, RawJson, ReadTimeout, StoreUnreachable, render_json
from .timelines import TimelineReads

__all__ = [
    "BOUND",
    "CARDS_BUDGET",
    "CARD_OVERHEAD",
    "CURSOR_VERSION",
    "ENTITIES_KEPT",
    "ENTRY_COLUMNS",
    "GLOBAL",
    "GROUP_PREFIX",
    "LIST_BOUND",
    "MAX_POSITION",
    "NAMES_KEPT",
    "PROJECTIONS",
    "ROLE_OF",
    "STORED_FIELDS",
    "Card",
    "Cursor",
    "LaterChanges",
    "NotFound",
    "Queries",
    "QueriesBase",
    "QueryError",
    "RawJson",
    "ReadTimeout",
    "StoreUnreachable",
    "ConnectionLost",
    "StoredCards",
    "TimelineQuery",
    "as_of_key",
    "binding",
    "check_binding",
    "decode_cursor",
    "decode_list_cursor",
    "encode_cursor",
    "encode_list_cursor",
    "fts_query",
    "list_binding",
    "render_entry",
    "render_json",
]


class Queries(TimelineReads):
    """Every read of the projections, over a SQLite store: ``QueriesBase`` with each family of
    reads (``GroupReads``, ``RenderReads``, ``EntityReads``, ``RelatedReads``, ``SearchReads``,
    ``TimelineReads``) over it. ``projections.pg.queries.PgQueries`` is its PostgreSQL dialect."""
