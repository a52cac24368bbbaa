"""The read side: timelines, entities and events, as of now or as of any instant.

Every read runs in one SQLite read transaction (a WAL snapshot), on a connection of its own
thread, so it never sees a half-applied batch or a half-swapped rebuild. ``P`` below is the
store position a read answers for: the projection's checkpoint, or less for ``as_of``.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # json.dumps' own: non-ASCII as is
from typing import Any

import orjson

from events.dates import parse_partial
from events.erasure import Gone, erasure_count, tombstone
from events.ids import compact_json, fold
from events.store import EventStore, attach_read_only

from . import default_projections
from .aliases import AliasIndex
from .changes import RANK
from . import groups
from .directory import GROUP_SAID, GROUP_STATS, MEMBERS, SAID, STATS, group_naming, naming
from .engine import ProjectionStatus, Tables, projection_path, read_checkpoints
from .members import KEY_WIDTH, PACKED_WIDTH, packed, unpack
from .related import MEMBERS as RELATED_MEMBERS
from .related import GROUP_PAIRS, PAIRS
from .search import SEARCH, SearchSyntaxError, match_expression
from .timelines import ENTRIES, EVENTS, GROUP_ENTRIES


PROJECTIONS = tuple(p.name for p in default_projections())  # whose files the reads attach
# A search within an entity in time order first walks up to this many of its rows, asking the
# index about each (``Queries._search_entity``): enough to fill a page of a frequent word, few
# enough that a walk which does not fill it costs little beside reading the index once.
WALK_FIRST = 200


class QueryError(ValueError):
    """A parameter that breaks the rules: names the parameter (answered with 422)."""

    def __init__(self, field: str, message: str, **detail: Any) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = {"field": field, **detail}


class NotFound(LookupError):
    pass


class ReadTimeout(RuntimeError):
    """A read stopped at its time limit, or not started before it (``Queries.time_limit``)."""


class StoreUnreachable(RuntimeError):
    """A read could not reach the store's server (PostgreSQL down, restarting, or cut off by the
    network): the reader's connection is replaced at its next read (``Queries.time_limit``)."""


class RawJson(str):
    """A value already rendered as JSON text (see ``render_json``)."""


def render_json(value: Any) -> str:
    """JSON text of a value, ``RawJson`` spliced in as it is: the value itself, a list's items, or
    a dict's values and its list values' items (the shapes of the API's answers)."""
    if isinstance(value, RawJson):
        return value
    if isinstance(value, dict) and any(_holds_raw(v) for v in value.values()):
        return "{" + ",".join(f"{compact_json(str(k))}:{render_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list) and any(isinstance(v, RawJson) for v in value):
        return "[" + ",".join(render_json(v) for v in value) + "]"
    return compact_json(value)  # nothing pre-rendered inside: one call


def _holds_raw(value: Any) -> bool:
    return isinstance(value, RawJson) or (isinstance(value, list) and any(isinstance(v, RawJson) for v in value))


# A timeline entry's fields from a stored event's body, rendered by SQLite: the dates, headline
# and summary, then the sources and details (an entry's role, for an entity, goes between).
STORED_FIELDS = (
    "json_object('occurred_at', body ->> '$.occurred_at', 'ended_at', body ->> '$.ended_at',"
    " 'headline', body ->> '$.headline', 'summary', body ->> '$.summary'),"
    " json_object('sources', json(coalesce(body -> '$.sources', '[]')),"
    " 'details', json(coalesce(body -> '$.details', '{}')))"
)


@dataclass(frozen=True, slots=True)
class TimelineQuery:
    since: str | None = None
    until: str | None = None
    kinds: Sequence[str] = ()
    role: str | None = None
    q: str | None = None
    limit: int = 50
    cursor: str | None = None
    order: str = "asc"
    as_of: str | None = None
    include_retracted: bool = False


def _desc(key: str | None) -> tuple[int, ...]:
    """Sort key that puts later keys first."""
    return tuple(-ord(c) for c in key or "")


# A cursor: where the page ends, the snapshot it reads, and what query it belongs to.
CURSOR_VERSION = 2
MAX_POSITION = 2**62  # store positions (and relevance offsets) a cursor may hold: SQLite takes < 2**63
_KEY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
# What a cursor is bound to, in the order a mismatch is named; ``limit`` is not among them (any
# page size may go on), and ``entity`` is the canonical id at the snapshot (an alias goes on).
BOUND = ("entity", "order", "since", "until", "kind", "role", "q", "as_of", "include_retracted")
GLOBAL = "*"  # the ``entity`` of /timeline
# The prefix of each projection's group tables (``projections.groups``).
GROUP_PREFIX = {"timelines": "tl", "entities": "ent", "related": "rel"}


@dataclass(frozen=True, slots=True)
class Cursor:
    start_key: str
    position: int  # for order=relevance: the offset of the next page
    snapshot: int
    binding: dict[str, str]  # parameter -> digest of its value (unset parameters absent)


def _digest(value: str) -> str:
    return base64.urlsafe_b64encode(hashlib.blake2b(value.encode(), digest_size=6).digest()).decode()


def binding(values: dict[str, str | None]) -> dict[str, str]:
    """Digests of a query's parameters as it means them (``BOUND``; unset ones left out)."""
    return {name: _digest(values[name]) for name in BOUND if values.get(name) is not None}


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps(
        [CURSOR_VERSION, cursor.start_key, cursor.position, cursor.snapshot, cursor.binding], separators=(",", ":")
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _position(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_POSITION  # not a bool, not beyond SQLite's integers


def decode_cursor(cursor: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, start_key, position, snapshot, bound = json.loads(raw)
    except (ValueError, TypeError, RecursionError):  # binascii.Error, UnicodeDecodeError, JSONDecodeError
        raise QueryError("cursor", "not a cursor this API gave out") from None
    if version != CURSOR_VERSION or not isinstance(start_key, str) or not isinstance(bound, dict):
        raise QueryError("cursor", "not a cursor this API gave out")
    if not (start_key == "" or _KEY.fullmatch(start_key)):
        raise QueryError("cursor", "not a cursor this API gave out: its date key is malformed")
    if not (_position(position) and _position(snapshot)):
        raise QueryError("cursor", f"not a cursor this API gave out: its positions must be 0 to {MAX_POSITION}")
    if not all(k in BOUND and isinstance(v, str) for k, v in bound.items()):
        raise QueryError("cursor", "not a cursor this API gave out: unknown parameters in it")
    return Cursor(start_key, position, snapshot, bound)


def check_binding(cursor: Cursor, expected: dict[str, str]) -> None:
    """A cursor goes on only with the query that gave it out: a 422 naming what differs."""
    differs = [name for name in BOUND if cursor.binding.get(name) != expected.get(name)]
    if not differs:
        return
    glob = _digest(GLOBAL)
    if "entity" in differs:
        was, now = cursor.binding.get("entity"), expected.get("entity")
        if was == glob:
            what = "it was given out for /timeline, not for an entity's timeline"
        elif now == glob:
            what = "it was given out for an entity's timeline, not for /timeline"
        else:
            what = "it was given out for another entity's timeline"
        others = [d for d in differs if d != "entity"]
        if others:
            what += f", and with other {', '.join(others)}"
    else:
        what = f"it was given out for a query with other {', '.join(differs)}"
    raise QueryError(
        "cursor", f"{what}; send the same parameters as the request that gave it, or leave cursor out",
        differs=differs,
    )


# A directory cursor (``GET /entities``, ``related``): the sort key of the last item a page
# listed (JSON scalars) and what the list is bound to: which list, and its parameters' digests.
LIST_BOUND = ("list", "entity", "q", "type")


def encode_list_cursor(key: Sequence[int | str], bound: dict[str, str]) -> str:
    raw = json.dumps([CURSOR_VERSION, "list", list(key), bound], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_list_cursor(cursor: str, expected: dict[str, str], shape: Sequence[type]) -> tuple[int | str, ...]:
    """The sort key a directory cursor holds (of the types in ``shape``), if given out for this
    list with these parameters: else a 422 naming ``cursor`` (and what differs)."""
    bad = QueryError("cursor", "not a cursor this API gave out for this list")
    try:
        version, what, key, bound = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, RecursionError):
        raise bad from None
    if version != CURSOR_VERSION or what != "list" or not isinstance(key, list) or not isinstance(bound, dict):
        raise bad
    if len(key) != len(shape) or not all(type(k) is t for k, t in zip(key, shape)):
        raise bad
    if any(type(k) is int and not _position(k) for k in key):
        raise bad
    differs = [name for name in LIST_BOUND if bound.get(name) != expected.get(name)]
    if differs:
        raise QueryError(
            "cursor", f"it was given out for a list with other {', '.join(differs)}; send the same parameters"
            " as the request that gave it, or leave cursor out", differs=differs,
        )
    return tuple(key)


def list_binding(**values: str | None) -> dict[str, str]:
    return {name: _digest(value) for name, value in values.items() if value is not None}


def fts_query(q: str) -> str:
    """What a user typed in ``q`` as an FTS5 expression (``projections.search``: the language)."""
    try:
        return match_expression(q)
    except SearchSyntaxError as exc:
        raise QueryError("q", str(exc)) from None


def as_of_key(value: str) -> str:
    """The instant an ``as_of`` stands for: an instant itself, or the end of a year, month or
    day (UTC): ``2026-12-05`` is the store as it stood at the end of that day."""
    try:
        return parse_partial(value).end_key
    except ValueError as exc:
        raise QueryError("as_of", str(exc)) from None


def _partial(field: str, value: str) -> Any:
    try:
        return parse_partial(value)
    except ValueError as exc:
        raise QueryError(field, str(exc)) from None


# A row of _rows; the event's id, recording time and, for a version that is the event as stored
# (details NULL), its fields as written come from the store (see projections.timelines).
ENTRY_COLUMNS = (
    "v.position, v.kind, v.occurred_at, v.ended_at, v.headline, v.summary, v.sources, v.details,"
    " v.status, v.start_key, v.valid_from"
)
# A row's columns by name (a row of an entity's timeline has its entity's role rank last).
POSITION, KIND, OCCURRED_AT, ENDED_AT, HEADLINE, SUMMARY, SOURCES, DETAILS, STATUS, START_KEY, VALID_FROM, RANK_OF = (
    range(12)
)
ROLE_OF = {rank: role for role, rank in RANK.items()}
# What an entry takes from its stored event (``Queries._stored``): its id as JSON, recording
# time, the members of two JSON objects (dates and texts; sources and details) without their
# braces, and its entities as stored: ``(id, name, role rank)`` each.
Card = tuple[str, str, str, str, tuple[tuple[str, str, int], ...]]


def _mentions(entities: str | None) -> tuple[tuple[str, str, int], ...]:
    """``(id, name, role rank)`` of each entity of a stored body's ``entities`` (JSON), by role
    then id (the order entries list them in), each id once (its best role)."""
    best: dict[str, tuple[str, str, int]] = {}
    for e in orjson.loads(entities or "[]"):
        rank = RANK[e["role"]]
        if e["id"] not in best or rank < best[e["id"]][2]:
            best[e["id"]] = (e["id"], e["name"], rank)
    return tuple(sorted(best.values(), key=lambda m: (m[2], m[0])))


def _merged(entities: Sequence[tuple[str, str, int]], canonical: dict[str, str]) -> tuple[tuple[str, str, int], ...]:
    """Mentions with their ids resolved to canonical ones: an entity named by two of its ids
    once, with its best role (its canonical id's own mention on a tie), by role then id."""
    best: dict[str, tuple[str, str, int]] = {}
    for entity_id, written, rank in entities:
        c = canonical[entity_id]
        if c not in best or rank < best[c][2] or (c == entity_id and rank == best[c][2]):
            best[c] = (c, written, rank)
    return tuple(sorted(best.values(), key=lambda m: (m[2], m[0])))


def render_entry(row: Sequence[Any], card: Card, entities: str, by_entity: bool) -> str:
    """A timeline entry as JSON text (docs/contract.md §4's field order): ``row`` a row of
    ``ENTRY_COLUMNS`` (with its role rank last for an entity's timeline), ``card`` what
    ``Queries._stored`` read of the stored event, ``entities`` the JSON array of its entities as
    ``Queries._involved`` resolved them. The one place an entry is rendered: pages, exports and
    anything else that shows entries use it."""
    event_id, recorded_at, dated, described, _ = card
    if row[DETAILS] is not None:  # a corrected version carries its own copies
        dated = compact_json({
            "occurred_at": row[OCCURRED_AT], "ended_at": row[ENDED_AT], "headline": row[HEADLINE],
            "summary": row[SUMMARY],
        })[1:-1]
        described = f'"sources":{row[SOURCES]},"details":{row[DETAILS]}'
    role = f',"role":"{ROLE_OF[row[RANK_OF]]}"' if by_entity else ""
    return (
        f'{{"event_id":{event_id},"kind":"{row[KIND]}",{dated}{role},"entities":{entities},{described},'
        f'"position":{row[POSITION]},"recorded_at":"{recorded_at}","status":"{row[STATUS]}"}}'
    )


# What a card costs beyond its strings (each counted by ``sys.getsizeof``: text stored one, two
# or four bytes a character, as Python keeps it): the tuple, the dict's slot, the allocator's
# rounding. Measured: the process grows ~1.1-1.3 KB a card whose strings take ~800 bytes.
CARD_OVERHEAD = 300
# The cards' memory, by bytes rather than by number: events range from a few hundred bytes to
# tens of kilobytes (a 5,000-character summary, twenty sources), and a cache of so many cards
# would hold whatever they weigh. The budget keeps the benchmark's mix as fast as a larger one
# did while a mixed load of ingest and reads stays within its memory target (docs/performance.md).
CARDS_BUDGET = 40 * 1024 * 1024
ENTITIES_KEPT = 50_000  # rendered ``entities`` kept between two moves of the projections (``_involved``)
NAMES_KEPT = 100_000  # directory names kept between two moves of its checkpoint (``_directory_names``)


def _weight(value: Any) -> int:
    """The bytes a card's strings and tuples take (``sys.getsizeof``, nested tuples summed)."""
    if isinstance(value, tuple):
        return sys.getsizeof(value) + sum(map(_weight, value))
    return sys.getsizeof(value)


class StoredCards:
    """What timeline entries take from stored events, by store position, most recently used.

    A stored event never changes (corrections are events of their own, and corrected entries
    carry their own copies), so an entry is never stale. Two generations of at most half the
    budget (its strings' bytes plus ``CARD_OVERHEAD`` a card) each, switched when the young one
    fills: an approximate LRU whose lookups and inserts are single dict operations, safe for the
    API's threads without a lock (a race at worst reads an event twice or miscounts a card).
    """

    def __init__(self, budget: int = CARDS_BUDGET) -> None:
        self.budget = budget
        self._young: dict[int, tuple[str, ...]] = {}
        self._old: dict[int, tuple[str, ...]] = {}
        self._young_bytes = 0

    def get(self, position: int) -> tuple[str, ...] | None:
        card = self._young.get(position)
        if card is None:
            card = self._old.get(position)
            if card is not None:
                self.put(position, card)
        return card

    def put(self, position: int, card: tuple[Any, ...]) -> None:
        young = self._young
        young[position] = card
        self._young_bytes += CARD_OVERHEAD + _weight(card)
        if self._young_bytes >= self.budget // 2:
            self._old, self._young, self._young_bytes = young, {}, 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


class LaterChanges:
    """The corrections and retractions of events stored before them, by store position: what
    makes an event's state at a position differ from its state now. Append-only, so kept in
    memory and read on from where it was (a cold start reads the store's index of targets),
    with the entities each changed event was ever filed under, so that a read looks only at
    those of its entity. A correction stored before its target changes nothing after the
    target arrives: not kept."""

    def __init__(self) -> None:
        self.positions: list[int] = []  # of the corrections and retractions, ascending
        self.targets: list[int] = []  # the position of the event each one changed
        self.versions: dict[int, list[int]] = {}  # an event's position -> those changing it, ascending
        self.filed: dict[int, set[str]] = {}  # an event's position -> every entity any version filed it under
        self.seen: int | None = None
        self._lock = threading.Lock()

    def refresh(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            (head,) = conn.execute("SELECT coalesce(MAX(position), 0) FROM events").fetchone()
            if self.seen is not None and head <= self.seen:
                return
            rows = conn.execute(self.statement(cold=self.seen is None), (self.seen or 0, head)).fetchall()
            for position, target, moved, stored in rows:
                self.positions.append(position)
                self.targets.append(target)
                self.versions.setdefault(target, []).append(position)
                filed = self.filed.setdefault(target, set(json.loads(stored)))
                if moved:
                    filed.update(e["id"] for e in json.loads(moved))
            self.seen = head

    @staticmethod
    def statement(*, cold: bool) -> str:
        """The corrections and retractions stored in ``(?, ?]``: each one's position, its target's,
        the entities it moved (JSON or NULL) and those its target was stored with (a JSON list)."""
        # cold: the whole index of targets; warm: the events stored since (by position)
        source = "events c INDEXED BY events_target" if cold else "events c"
        return (
            "SELECT c.position, t.position, c.body -> '$.details.changes.entities',"
            " (SELECT json_group_array(entity_id) FROM event_entities e WHERE e.position = t.position)"
            f" FROM {source} CROSS JOIN events t ON t.event_id = c.target_id"
            " WHERE c.target_id IS NOT NULL AND c.position > ? AND c.position <= ?"
            " AND t.position < c.position AND c.body <> '' AND t.body <> '' ORDER BY c.position"
        )

    def between(self, p: int, upto: int, members: Sequence[str]) -> list[tuple[int, int]]:
        """``(position, version at p)`` of the events stored up to ``p``, ever filed under one of
        ``members``, that a correction or retraction in ``(p, upto]`` changed; a version is
        named by the position that made it."""
        low, high = bisect.bisect_right(self.positions, p), bisect.bisect_right(self.positions, upto)
        wanted = set(members)
        out = []
        for target in sorted({t for t in self.targets[low:high] if t <= p and not wanted.isdisjoint(self.filed[t])}):
            changes = self.versions[target]
            before = bisect.bisect_right(changes, p)
            out.append((target, changes[before - 1] if before else target))
        return out


class Queries:
    # --- the dialect: what the reads' SQL says differently on PostgreSQL -------------------
    # (``projections.pg.queries.PgQueries`` overrides these and nothing of the reads themselves)
    later_class = LaterChanges
    naming = staticmethod(naming)
    group_naming = staticmethod(group_naming)
    packed = staticmethod(packed)
    NO_LIMIT: Any = -1  # ``LIMIT`` without a bound
    # an entity's rows filed under several of its ids, once an event (one version an event at p)
    BY_EVENT = " GROUP BY v.position"
    BY_HIT = BY_EVENT  # the same, of a search's hits ``h`` (each with its score)

    @staticmethod
    def _in(expr: str, values: Sequence[Any], *, negate: bool = False) -> tuple[str, list[Any]]:
        """SQL: ``expr`` is (``negate``: is not) one of ``values``; and its arguments."""
        return f"{expr} {'NOT ' if negate else ''}IN (SELECT value FROM json_each(?))", [compact_json(list(values))]

    @staticmethod
    def _ordered(values: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL: a table ``(value, key)`` of ``values`` with their index; and its arguments."""
        return "SELECT value, key FROM json_each(?)", [compact_json(list(values))]

    @staticmethod
    def _pairs(pairs: Sequence[tuple[int, int]]) -> tuple[str, list[Any]]:
        """SQL: a table ``(position, version)`` of integer pairs; and its arguments."""
        return "SELECT value ->> 0, value ->> 1 FROM json_each(?)", [json.dumps(pairs)]

    @staticmethod
    def _contains(column: str) -> str:
        return f"instr({column}, ?)"

    DISTINCT = "IS NOT"  # one value differs from another, NULL a value like any

    @staticmethod
    def reread(read: Callable[..., Any], *args: Any) -> Any:
        """``read(*args)``, read again if a rebuild's swap dropped the tables it read (on
        PostgreSQL; SQLite's snapshot keeps them)."""
        return read(*args)

    @staticmethod
    def _has_table(conn: Any, projection: str, table: str) -> bool:
        """Whether a projection's table exists (in the snapshot's view)."""
        return conn.execute(f"SELECT 1 FROM p_{projection}.sqlite_master WHERE name = ?", (table,)).fetchone() is not None

    @staticmethod
    def _in_file(projection: str, table: str) -> str:
        """A projection's table as a statement names it."""
        return f"p_{projection}.{table}"

    @staticmethod
    def _text_max(expr: str) -> str:
        return f"MAX({expr})"

    @staticmethod
    def _stored_rows(conn: Any, positions: Sequence[int]) -> Iterator[tuple[Any, ...]]:
        """``(position, event_id, recorded_at, dates, texts, entities)`` of stored events: their
        dates and headline, and their sources and details, as JSON objects (``STORED_FIELDS``),
        their entities as JSON text."""
        return conn.execute(
            f"SELECT position, event_id, recorded_at, {STORED_FIELDS}, body -> '$.entities' FROM events"
            f" WHERE position IN ({','.join('?' * len(positions))}) AND body <> ''",
            positions,
        )

    @staticmethod
    def _entities_at(conn: Any, versions: Sequence[tuple[int, int]]) -> Iterator[tuple[int, str | None]]:
        """``(position, entities as JSON)`` of events at versions: the latest change to each up to
        the version's start."""
        return conn.execute(
            "SELECT d.value ->> 0, (SELECT s.body -> '$.entities' FROM event_states s"
            "  WHERE s.target_id = (SELECT event_id FROM events WHERE position = d.value ->> 0)"
            "  AND s.position <= d.value ->> 1 ORDER BY s.position DESC LIMIT 1)"
            " FROM json_each(?) d",
            (compact_json(versions),),
        )

    def _match(self, q: str, expression: str) -> str:
        """What a user typed in ``q`` in the index's language (``expression``: as FTS5's, what a
        cursor is bound to on either database)."""
        return expression

    @staticmethod
    def _search_join(fts: str) -> tuple[str, str, str]:
        """SQL joining the search index ``s`` to the versions ``v``: what goes in FROM (with the
        query's argument, if it takes it there), the condition in WHERE (or there), and a
        version's score (lower first)."""
        return f" JOIN {fts} s", f"s.rowid = v.valid_from AND {fts} MATCH ?", f"bm25({fts})"

    @staticmethod
    def _hits(fts: str, score: str, within: str) -> str:
        """SQL: ``(id, score)`` of the index's matches (the query's argument first) among the
        versions ``within`` selects."""
        # ``+rowid``: not a constraint the index would be asked with once per value
        return f"SELECT rowid AS id, {score} AS score FROM {fts} WHERE {fts} MATCH ? AND +rowid IN ({within})"

    def __init__(self, path: str, names: Sequence[str] = PROJECTIONS, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only  # a read-only node's: every connection opened so that it cannot write
        self.names = tuple(names)  # the projections whose files readers attach
        self.aliases = AliasIndex()
        self.later = self.later_class()
        self.cards = StoredCards()
        self._kept_names: tuple[tuple[int, str] | None, dict[str, str]] = (None, {})  # ``_directory_names``
        self._kept_entities: tuple[tuple[Any, ...] | None, dict[int, str]] = (None, {})  # ``_involved``
        self._local = threading.local()
        self._open: list[EventStore] = []  # every thread's connection, for ``close``
        self._open_lock = threading.Lock()
        self._generation = 0  # bumped by ``close``: a thread's older connection is closed
        self._erasures = 0  # erasures made when the memory below was read

    # --- plumbing ------------------------------------------------------------------------

    def _refresh(self) -> AliasIndex:
        """The alias index, read on. After an erasure (made by any process) what the read side
        keeps in memory (aliases, later changes, cached entries) is dropped and read again
        without what was erased (docs/erasure.md)."""
        store = self.store
        erased = erasure_count(store.conn)
        if erased != self._erasures:
            self.aliases, self.later, self.cards = AliasIndex(), self.later_class(), StoredCards()
            self._erasures = erased
        self.aliases.refresh(store)
        return self.aliases

    @property
    def store(self) -> EventStore:
        store = getattr(self._local, "store", None)
        if store is None or self._local.generation != self._generation:
            store = self._local.store = EventStore(self.path, reader=True, read_only=self.read_only)
            self._local.attached = set()
            self._local.generation = self._generation
            with self._open_lock:
                self._open.append(store)
        return store

    @contextmanager
    def time_limit(self, deadline: float) -> Iterator[Callable[[], None]]:
        """Run this thread's read until ``deadline`` (``time.monotonic()``) at the latest.

        Yields the function that stops the read (``sqlite3.Connection.interrupt``, callable from
        any thread): whoever keeps the time calls it at the deadline, and again while the read
        goes on (an interrupt that falls between two statements is lost). The read then raises
        ``ReadTimeout``; its snapshot is rolled back."""
        if time.monotonic() >= deadline:
            raise ReadTimeout("the read did not start before its time limit")
        conn = self.store.conn
        try:
            yield conn.interrupt
        except sqlite3.OperationalError as exc:
            if str(exc) != "interrupted":
                raise
            raise ReadTimeout("the read was stopped at its time limit") from None
        finally:
            if conn.in_transaction:  # an interrupted read leaves its snapshot open
                conn.execute("ROLLBACK")

    def _attach(self) -> None:
        """Attach the projections' files (``p_<name>``, read-only) that exist and are not yet."""
        conn, attached = self.store.conn, self._local.attached
        for name in self.names:
            if name not in attached and projection_path(self.path, name).exists():
                attach_read_only(conn, projection_path(self.path, name), f"p_{name}")
                attached.add(name)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction over the store and the projections' files: each file is read
        as it was at the first read of it (a projection's rows and checkpoint agree)."""
        conn = self.store.conn
        if len(self._local.attached) < len(self.names):
            self._attach()  # not inside a transaction: ATTACH cannot be
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection (each thread opens another if it reads again)."""
        with self._open_lock:
            stores, self._open = self._open, []
            self._generation += 1
        for store in stores:
            store.close()
        self._local.store = None

    def _checkpoint(self, conn: sqlite3.Connection, name: str) -> Tables:
        row = None
        if name in self._local.attached:
            row = conn.execute(
                f"SELECT position, tables_tag FROM p_{name}.projection_checkpoints WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise RuntimeError(f"projection {name!r} is not set up")
        return Tables(row[0], row[1])

    def projections(self) -> list[ProjectionStatus]:
        """Each projection's version, checkpoint, the store's head, the lag and the state."""
        with self.snapshot() as conn:
            head = self.store.head()
            checkpoints = {}
            for name in sorted(self._local.attached):
                checkpoints.update(read_checkpoints(conn, f"p_{name}"))
        return [ProjectionStatus(cp, head) for cp in checkpoints.values()]

    def projected(self, conn: sqlite3.Connection) -> int:
        """The lowest checkpoint of the projections (inside a snapshot); 0 when one is not set up."""
        positions = [self._checkpoint(conn, name)[0] for name in self.names if name in self._local.attached]
        return min(positions) if len(positions) == len(self.names) else 0

    # --- events --------------------------------------------------------------------------

    def event(self, event_id: str, as_of: str | None = None) -> dict[str, Any]:
        with self.snapshot():
            store = self.store
            upto = store.position_at(as_of_key(as_of)) if as_of else None
            found = store.state(event_id, upto)
            left = tombstone(store.conn, event_id) if found is None else None
        if left is not None:
            raise Gone(left)
        if found is None:
            raise NotFound(f"no event {event_id!r}" + (f" as of {as_of}" if as_of else ""))
        event, state = found
        return {
            **state.body,
            "position": event.position,
            "recorded_at": event.recorded_at,
            "status": state.status,
            "history": state.history,
        }

    # --- entities ------------------------------------------------------------------------

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
        try:
            row = conn.execute(
                f"SELECT s.set_id, s.root, s.size FROM {prefix}{groups.GROUPS}{tag} g"
                f" JOIN {prefix}{groups.SETS}{tag} s ON s.set_id = g.set_id WHERE g.entity_id = ?",
                (canonical,),
            ).fetchone()
        except sqlite3.OperationalError as exc:  # the tables of a version from before the groups
            if "no such table" not in str(exc):
                raise
            return None
        if row is None or row[1] != canonical or row[2] != len(aliases.members(canonical, upto)):
            return None
        return row[0]

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
        try:
            rows = conn.execute(
                f"SELECT s.root, p.count, p.last_key, p.last_at FROM {GROUP_PAIRS}{tag} p"
                f" JOIN {prefix}{groups.SETS}{tag} s ON s.set_id = p.set_id WHERE p.other_id = ?",
                (entity_id,),
            ).fetchall()
        except sqlite3.OperationalError as exc:  # the tables of a version from before the groups
            if "no such table" not in str(exc):
                raise
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

    def _entity(
        self, conn: sqlite3.Connection, canonical: str, upto: int, *, as_of: bool = False,
        group: tuple[list[str], list[str]] | None = None,
    ) -> dict[str, Any] | None:
        """An entity's card (``canonical`` and the ids that resolve to it as of ``upto``); with
        ``as_of``, as the store stood at position ``upto``."""
        projected, tag = self._checkpoint(conn, "entities")
        if not (as_of and upto < projected):
            set_id = self._set(conn, "entities", canonical, upto)
            if set_id is not None:
                return self._group_entity(conn, canonical, upto, tag, set_id)
        group = group or self._group(conn, canonical, upto)
        if as_of and upto < projected:
            return self._entity_at(conn, canonical, upto, projected, tag, group)
        members, known = group
        if not known:
            return None
        if len(known) == 1:
            row = conn.execute(
                f"SELECT name, type, event_count, first_at, last_at FROM {STATS}{tag} WHERE id = ?", (known[0],)
            ).fetchone()
            if row is None:
                return None
            name, kind, count, first_at, last_at = row
        else:
            among, args = self._in("entity_id", known)
            # One event, one position: an event filed under several members counts once.
            count, first, last = conn.execute(
                f"SELECT COUNT(DISTINCT position), MIN({self.packed()}), MAX({self.packed()}) FROM {MEMBERS}{tag}"
                f" WHERE {among}",
                args,
            ).fetchone()
            first_at = last_at = None
            if count:
                first_at, last_at = (
                    conn.execute(
                        f"SELECT occurred_at FROM {MEMBERS}{tag} WHERE position = ? LIMIT 1", (unpack(value)[1],)
                    ).fetchone()[0]
                    for value in (first, last)
                )
            named = self.naming(conn, f"{SAID}{tag}", known)
            name, kind = named[:2] if named is not None else (canonical, "other")
        return {
            "id": canonical,
            "name": self.aliases.display_name(canonical, upto) or name,
            "type": kind,
            "aliases": members[1:],
            "event_count": count,
            "first_at": first_at,
            "last_at": last_at,
        }

    def _group_entity(self, conn: sqlite3.Connection, canonical: str, upto: int, tag: str, set_id: str) -> dict[str, Any] | None:
        """The card of an entity with aliases from the rows the directory files under its set: a
        few indexed reads, whatever the number of its members."""
        named = self.group_naming(conn, f"{GROUP_SAID}{tag}", set_id, canonical)
        if named is None:
            return None  # no event names any of its ids
        count, first_at, last_at = conn.execute(
            f"SELECT event_count, first_at, last_at FROM {GROUP_STATS}{tag} WHERE set_id = ?", (set_id,)
        ).fetchone()
        return {
            "id": canonical,
            "name": self.aliases.display_name(canonical, upto) or named[0],
            "type": named[1],
            "aliases": self.aliases.members(canonical, upto)[1:],
            "event_count": count,
            "first_at": first_at,
            "last_at": last_at,
        }

    def _entity_at(
        self, conn: sqlite3.Connection, canonical: str, p: int, projected: int, tag: str,
        group: tuple[list[str], list[str]],
    ) -> dict[str, Any] | None:
        """An entity's card as the store stood at position ``p`` (below the entities projection's
        ``projected``), without walking the entity's history:

        - the count: its members now (the entities projection) recorded up to p, counted on the
          smaller side of p in the members' (entity, position) index (for one id: the count now
          less those recorded after p), corrected for the events that a correction or retraction
          recorded after p changed: each counts as its version at p says (the timelines
          projection keeps every version). Those are kept in memory (``LaterChanges``): the
          corrections after p that touch the entity, not its size, bound the work;
        - the first and last dates: the first entry of its timeline at p in each order, as a
          page of that timeline finds it.
        """
        _, ttag = self._checkpoint(conn, "timelines")
        all_members, members = group  # the ids that events name are those asked about
        if not members:
            return None
        marks = ",".join("?" * len(members))
        if len(members) == 1 and p >= projected // 2:
            (after,) = conn.execute(
                f"SELECT COUNT(*) FROM {MEMBERS}{tag} WHERE entity_id = ? AND position > ?", (members[0], p)
            ).fetchone()
            now = conn.execute(f"SELECT event_count FROM {STATS}{tag} WHERE id = ?", (members[0],)).fetchone()
            count = (now[0] if now else 0) - after
        else:
            distinct = "COUNT(DISTINCT position)" if len(members) > 1 else "COUNT(*)"
            (count,) = conn.execute(
                f"SELECT {distinct} FROM {MEMBERS}{tag} WHERE entity_id IN ({marks}) AND position <= ?", [*members, p]
            ).fetchone()
        self.later.refresh(conn)
        changed = self.later.between(p, projected, members)
        if changed:  # each counted now as it stands now, and at p as its version then says
            pairs, pairs_args = self._pairs(changed)
            now, then = conn.execute(
                f"""WITH d(position, version) AS ({pairs})
                    SELECT (SELECT COUNT(*) FROM d WHERE EXISTS (SELECT 1 FROM {MEMBERS}{tag} m
                              WHERE m.position = d.position AND m.entity_id IN ({marks}))),
                           (SELECT COUNT(*) FROM d JOIN {EVENTS}{ttag} v ON v.valid_from = d.version
                            WHERE v.valid_to > ? AND v.status != 'retracted' AND EXISTS (
                              SELECT 1 FROM {ENTRIES}{ttag} en WHERE en.entity_id IN ({marks})
                              AND en.start_key = v.start_key AND en.position = d.position
                              AND en.valid_from = d.version))""",
                [*pairs_args, *members, p, *members],
            ).fetchone()
            count += then - now
        # Names and types as the store knew them: its statements in force then (docs/entities.md).
        named = self.naming(conn, f"{SAID}{tag}", members, p)
        if named is None and not count:
            return None  # not known by then
        return {
            "id": canonical,
            "name": self.aliases.display_name(canonical, p) or (named[0] if named else canonical),
            "type": named[1] if named else "other",
            "aliases": all_members[1:],
            "event_count": count,
            "first_at": self._end_at(conn, members, p, ttag, "ASC") if count else None,
            "last_at": self._end_at(conn, members, p, ttag, "DESC") if count else None,
        }

    @staticmethod
    def _end_at(conn: sqlite3.Connection, members: list[str], p: int, ttag: str, direction: str) -> str | None:
        """``occurred_at`` as written of the first (ASC) or last (DESC) entry of the entity's
        timeline at position p: for each id, its entries' key in that order, up to the first
        one valid then (what a page of the timeline reads)."""
        best = None
        for member in members:
            row = conn.execute(
                f"SELECT en.start_key, en.position, coalesce(v.occurred_at, m.occurred_at) FROM {ENTRIES}{ttag} en"
                f" JOIN {EVENTS}{ttag} v ON v.valid_from = en.valid_from JOIN event_meta m ON m.position = en.position"
                " WHERE en.entity_id = ? AND en.valid_from <= ? AND v.valid_to > ? AND v.status != 'retracted'"
                f" ORDER BY en.start_key {direction}, en.position {direction} LIMIT 1",
                (member, p, p),
            ).fetchone()
            if row is not None and (best is None or (row[:2] < best[:2]) == (direction == "ASC")):
                best = row
        return best[2] if best else None

    def entity(self, entity_id: str, as_of: str | None = None) -> dict[str, Any]:
        """One entity (an alias answers with its canonical one); with ``as_of``, as it stood then."""
        key = as_of_key(as_of) if as_of else None
        self._refresh()
        with self.snapshot() as conn:
            head, _ = self._checkpoint(conn, "entities")
            if key is None:
                upto = max(head, self.aliases.seen)
            else:
                upto = min(head, self.store.position_at(key))
            found = self._entity(conn, self.aliases.resolve(entity_id, upto), upto, as_of=key is not None)
        if found is None:
            raise NotFound(f"no entity {entity_id!r}" + (f" as of {as_of}" if as_of else ""))
        return found

    def entities(self, q: str | None = None, type: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The first ``limit`` entities of the directory (``directory``)."""
        return self.directory(q, type, limit)["entities"]

    def directory(
        self, q: str | None = None, type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """A page of the directory, most events first (then by id), and the cursor of the next:
        entities without aliases straight from their rows (from the cursor's key on, in the
        order of their index), each canonical entity with aliases merged (its aliases never
        listed on their own). Each page reads the directory as it stands then."""
        folded = fold(q) if q else None
        bound = list_binding(list="entities", q=folded, type=type)
        after = decode_list_cursor(cursor, bound, (int, str)) if cursor else None
        aliases = self._refresh()
        with self.snapshot() as conn:
            head, tag = self._checkpoint(conn, "entities")
            upto = max(head, aliases.seen)
            groups = set(aliases.groups)
            out: dict[str, dict[str, Any]] = {}
            # the ids of alias groups are not listed on their own (the groups are, below): the
            # directory flags them (``grouped``), so that the listing does not pass them
            where, args = ["grouped = 0"], []
            if q:
                needle = fold(q).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                where.append("search LIKE ? ESCAPE '\\'")
                args.append(f"%{needle}%")
            if type:
                where.append("type = ?")
                args.append(type)
            if after is not None:  # after the last one listed: fewer events, or as many and a later id
                where.append("(event_count < ? OR (event_count = ? AND id > ?))")
                args += [after[0], after[0], after[1]]
            sql = f"SELECT id, name, type, event_count, first_at, last_at FROM {STATS}{tag} WHERE " + " AND ".join(where)
            sql += " ORDER BY event_count DESC, id"
            try:
                listed = conn.execute(sql, args)
            except sqlite3.OperationalError as exc:  # tables of a version from before the flag
                if "grouped" not in str(exc):
                    raise
                listed = conn.execute(sql.replace("WHERE grouped = 0 AND", "WHERE").replace(" WHERE grouped = 0 ", " "), args)
            # Entities without aliases, in order, until one more than ``limit`` of them (aliases
            # and canonical ids with aliases are skipped: merged below; the index's view of them
            # decides, as the directory may not have applied the latest declarations yet).
            for eid, name, kind, count, first_at, last_at in listed:
                if eid in groups or aliases.is_alias(eid, upto):
                    continue
                out[eid] = {"id": eid, "name": name, "type": kind, "aliases": [], "event_count": count,
                            "first_at": first_at, "last_at": last_at}
                if len(out) > limit:
                    break
            # Canonical ids with aliases: merged; with ``q``, those whose name or any member's
            # name or id matches.
            for canonical in sorted(groups):
                found = self._entity(conn, canonical, upto)
                if found is None or (type is not None and found["type"] != type):
                    continue
                if after is not None and (-found["event_count"], canonical) <= (-after[0], after[1]):
                    continue
                if folded is not None and not self._matches(conn, tag, found, folded):
                    continue
                out[canonical] = found
        ranked = sorted(out.values(), key=lambda e: (-e["event_count"], e["id"]))
        page = ranked[:limit]
        next_cursor = None
        if len(ranked) > limit:
            next_cursor = encode_list_cursor([page[-1]["event_count"], page[-1]["id"]], bound)
        return {"entities": page, "next_cursor": next_cursor}

    def _matches(self, conn: sqlite3.Connection, tag: str, entity: dict[str, Any], folded: str) -> bool:
        if folded in fold(entity["name"]) or any(folded in fold(a) for a in [entity["id"], *entity["aliases"]]):
            return True
        among, args = self._in("id", [entity["id"], *entity["aliases"]])
        row = conn.execute(
            f"SELECT 1 FROM {STATS}{tag} WHERE {among} AND {self._contains('search')} LIMIT 1", [*args, folded]
        ).fetchone()
        return row is not None

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

    def _stored(self, conn: sqlite3.Connection, page: list[int], *, keep: bool = True) -> dict[int, Card]:
        """``{position: Card}`` of stored events.

        A timeline's events lie all over the store (by position), so each one read from the
        ``events`` table costs page reads of its own; they are kept (``StoredCards``), as what
        is stored at a position never changes.
        """
        cards = self.cards
        stored: dict[int, Card] = {}
        missing = []
        for position in page:
            card = cards.get(position)
            if card is None:
                missing.append(position)
            else:
                stored[position] = card
        for i in range(0, len(missing), 900):
            chunk = missing[i : i + 900]
            for position, *rest in self._stored_rows(conn, chunk):
                event_id, recorded_at, dated, described, entities = rest
                card = stored[position] = (
                    compact_json(event_id), recorded_at, dated[1:-1], described[1:-1], _mentions(entities),
                )
                if keep:
                    cards.put(position, card)
        return stored

    def _involved(
        self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], stored: dict[int, Card], p: int, *, as_of: bool,
        keep: bool = True,
    ) -> dict[int, str]:
        """``{position: JSON array}``: each entry's entities as its version states them (a
        correction that set ``entities`` replaced them), ids resolved to their canonical entity as
        of ``p`` (an event naming two members of one entity lists it once, with its best role),
        each with the name the directory shows for it (``_names``), by role then id.

        Batched: the stored events' entities come with their cards (``_stored``), the corrected
        versions' (rare) from one statement, the names from one or a few; never one per entry.
        Reads of the present keep what they rendered, by version, until the timelines or the
        directory move on or an alias arrives: a page asked again costs a look-up an entry
        (``keep=False``, an export's pages, read once: looked up, not kept)."""
        if as_of:
            return self._render_involved(conn, rows, stored, p, as_of=True)
        key = (p, *self._checkpoint(conn, "entities"), len(self.aliases))
        kept_key, kept = self._kept_entities
        if kept_key != key or len(kept) > ENTITIES_KEPT:
            kept = {}
            self._kept_entities = (key, kept)
        out = {row[POSITION]: kept[row[VALID_FROM]] for row in rows if row[VALID_FROM] in kept}
        missing = [row for row in rows if row[POSITION] not in out]
        if missing:
            fresh = self._render_involved(conn, missing, stored, p, as_of=False)
            for row in missing:
                out[row[POSITION]] = fresh[row[POSITION]]
                if keep:
                    kept[row[VALID_FROM]] = out[row[POSITION]]
        return out

    def _render_involved(
        self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], stored: dict[int, Card], p: int, *, as_of: bool
    ) -> dict[int, str]:
        """What ``_involved`` returns, read and rendered."""
        listed: dict[int, tuple[tuple[str, str, int], ...]] = {}  # position -> (id, name as written, rank)
        corrected = [(row[POSITION], row[VALID_FROM]) for row in rows if row[DETAILS] is not None]
        for row in rows:
            if row[DETAILS] is None:
                listed[row[POSITION]] = stored[row[POSITION]][4]
        if corrected:
            # the event's state at the version: the latest change to it up to the version's start
            for position, entities in self._entities_at(conn, corrected):
                listed[position] = _mentions(entities)
        aliases = self.aliases
        canonical = {i: i for entities in listed.values() for i, _, _ in entities}
        if len(aliases):  # each id once a page
            canonical = {i: aliases.resolve(i, p) for i in canonical}
        names = self._names(conn, set(canonical.values()), p, as_of=as_of)
        out: dict[int, str] = {}
        for position, entities in listed.items():
            if len(aliases) and any(canonical[i] != i for i, _, _ in entities):
                entities = _merged(entities, canonical)
            out[position] = "[" + ",".join(
                f'{{"id":{encode_basestring(i)},"name":{encode_basestring(names.get(i) or written)},'
                f'"role":"{ROLE_OF[rank]}"}}'
                for i, written, rank in entities
            ) + "]"
        return out

    def _changed_at(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> dict[int, str]:
        """``{valid_from: recorded_at}``: when the change that made each version was recorded
        (the event's own recording, or its correction's or retraction's)."""
        among, args = self._in("position", sorted({row[VALID_FROM] for row in rows}))
        return dict(conn.execute(f"SELECT position, recorded_at FROM events WHERE {among}", args).fetchall())

    def render_rows(
        self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], p: int, *, by_entity: bool,
        as_of: bool = False, keep: bool = True,
    ) -> list[str]:
        """Timeline entries as JSON text, from rows of ``ENTRY_COLUMNS`` (with the entity's role
        rank last in an entity's timeline) read in a snapshot at position ``p``: what the timeline
        pages, the exports and the live streams (``projections.live``) send. Each takes from its
        stored event what it shows and its ``entities`` (``_involved``), rendered by
        ``render_entry``; a row whose event was erased since the projections were read is left
        out (erasure.md). ``keep=False``: what is read is not kept in the caches."""
        return [text for _, text in self._render(conn, rows, p, by_entity=by_entity, as_of=as_of, keep=keep)]

    def _render(
        self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], p: int, *, by_entity: bool,
        as_of: bool, keep: bool,
    ) -> list[tuple[Sequence[Any], str]]:
        """``render_rows``, each entry with its row."""
        stored = self._stored(conn, [row[POSITION] for row in rows], keep=keep)
        shown = [row for row in rows if row[POSITION] in stored]
        involved = self._involved(conn, shown, stored, p, as_of=as_of, keep=keep)
        return [(row, render_entry(row, stored[row[POSITION]], involved[row[POSITION]], by_entity)) for row in shown]

    def _directory_names(self, conn: sqlite3.Connection, ids: set[str], projected: int, tag: str) -> dict[str, str]:
        """The directory's names of these ids, kept until its checkpoint moves (a page's entries
        name many of the same entities; each read from the directory is an index and a row)."""
        kept_at, kept = self._kept_names
        if kept_at != (projected, tag) or len(kept) > NAMES_KEPT:
            kept = {}
            self._kept_names = ((projected, tag), kept)
        missing = [i for i in ids if i not in kept]
        if missing:
            among, args = self._in("id", missing)
            kept.update(conn.execute(f"SELECT id, name FROM {STATS}{tag} WHERE {among}", args).fetchall())
        return {i: kept[i] for i in ids if i in kept}

    def _names(self, conn: sqlite3.Connection, ids: set[str], p: int, *, as_of: bool) -> dict[str, str]:
        """The name the directory shows for each of these canonical ids (``GET /entities/{id}``'s):
        now from the directory's rows, in one statement; ``as_of``, from the statements in force at
        ``p``; an entity with aliases from its alias name or its members' statements."""
        if not ids:
            return {}
        projected, tag = self._checkpoint(conn, "entities")
        aliases = self.aliases
        grouped = {i for i in ids if i in aliases.groups}
        names: dict[str, str] = {}
        if not as_of:
            names = self._directory_names(conn, ids - grouped, projected, tag)
        for entity_id in sorted(ids if as_of else grouped):
            named = aliases.display_name(entity_id, p) if entity_id in grouped else None
            if named is None:
                # a group's statements filed under its set (as of p: its members then are those of now)
                set_id = self._set(conn, "entities", entity_id, p) if entity_id in grouped else None
                if set_id is not None:
                    said = self.group_naming(conn, f"{GROUP_SAID}{tag}", set_id, entity_id, p)
                else:
                    members = aliases.members(entity_id, p) if entity_id in grouped else [entity_id]
                    said = self.naming(conn, f"{SAID}{tag}", members, p)
                named = said[0] if said is not None else None
            if named is not None:
                names[entity_id] = named
        return names

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
            set_id = None
            if entity_id is not None:
                # Aliases as the store knew them at the snapshot: later ones do not merge yet.
                target = self.aliases.resolve(entity_id, snapshot)
                # an entity with aliases: its rows filed under its set (a search's too), or (an
                # ``as_of`` before its latest declaration) those of each of its members
                set_id = self._set(conn, "timelines", target, snapshot)
                group = None if set_id is not None else self._group(conn, target, snapshot)
                entity = self._entity(conn, target, snapshot, as_of=as_of is not None, group=group)
                if entity is None:
                    now = max(position, self.aliases.seen)
                    entity = self._entity(conn, self.aliases.resolve(entity_id, now), now)
                    if entity is not None and as_of is not None:  # known now, not yet then
                        entity = {**entity, "event_count": 0, "first_at": None, "last_at": None}
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
                set_id=set_id,
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
                    count=True, set_id=set_id,
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
    ) -> list[tuple[Any, ...]]:
        """The rows of a page (``limit`` + 1 of them); with ``count``, ``[(rows that match,)]``.
        ``set_id``: the entity's rows are those filed under its group's set (``tl_group_entries``),
        one range in timeline order like an entity's own (``members`` is then not asked)."""
        # ``en`` (by entity) or ``v`` gives the order; a version's other columns are in ``v``.
        # ``keyed``: conditions on the ordering table's own columns (an entity's entries can be
        # read by them alone); ``versioned``: on the version's.
        alias = "en" if by_entity else "v"
        keyed, keyed_args = [f"{alias}.valid_from <= ?"], [p]
        versioned, versioned_args = ["v.valid_to > ?"], [p]
        grouped = by_entity and set_id is not None
        best = None  # the condition that keeps one row a version of a group's (its best role)
        if grouped:
            keyed.insert(0, "en.set_id = ?")
            keyed_args[0:0] = [set_id]
            if not query.role:  # an event filed under members in several roles: once, its best
                best = (
                    f"NOT EXISTS (SELECT 1 FROM {GROUP_ENTRIES}{tag} b WHERE b.set_id = en.set_id"
                    " AND b.start_key = en.start_key AND b.position = en.position AND b.valid_from = en.valid_from"
                    " AND b.rank < en.rank)"
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
