"""A timeline's query, its page cursors and list cursors, and the values the reads parse."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from events.dates import parse_partial

from ..search import SearchSyntaxError, match_expression

from .errors import QueryError


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
