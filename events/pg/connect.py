"""Connections to the PostgreSQL that holds a store: one place for how they are opened.

A store lives in the schema the connection's ``search_path`` names first (``public`` unless the
URL says otherwise, e.g. ``?options=-csearch_path%3Dnews``), so several stores (a test's, a
staging copy) can share one database. Connections are in autocommit mode: every write is an
explicit ``conn.transaction()`` block, as every SQLite write is an explicit ``BEGIN IMMEDIATE``.

psycopg 3 picks its fastest implementation by itself: the C one (``psycopg[binary]`` ships it
prebuilt with its own libpq; ``psycopg[c]`` builds it against the system's).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from ..backend import is_postgres  # noqa: F401 - the one test of which backend a value names


def connect(url: str, *, application_name: str = "timeline") -> psycopg.Connection:
    """A connection in autocommit mode (writes open ``conn.transaction()`` themselves)."""
    conn = psycopg.connect(url, autocommit=True, application_name=application_name)
    return conn


def pool(url: str, *, max_size: int = 8, application_name: str = "timeline-reader") -> ConnectionPool:
    """A pool of autocommit connections for readers (one per thread that reads at a time)."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True, "application_name": application_name},
        open=True,
        name="timeline-readers",
    )


def current_schema(conn: psycopg.Connection) -> str:
    """The schema the connection's tables are created in and read from (its search_path's first)."""
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        (path,) = conn.execute("SHOW search_path").fetchone() or ("?",)
        raise RuntimeError(
            f"PostgreSQL: no schema of the search_path ({path}) exists: create it first (CREATE SCHEMA ...)"
        )
    return str(row[0])


def advisory_key(schema: str, name: str) -> int:
    """A 64-bit advisory-lock key for ``name`` (``append``, ``migrate``, a projection's lease) in a
    schema: stores in different schemas of one database never wait on each other."""
    digest = hashlib.blake2b(f"timeline\x1f{schema}\x1f{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def with_schema(url: str, schema: str) -> str:
    """``url`` with its ``search_path`` set to ``schema`` (through libpq's ``options``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact(url: str) -> str:
    """The URL without its password (for logs and ``timeline info``)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def pg_text(text: str) -> str:
    """A text PostgreSQL can store or compare: U+0000, which its ``text`` cannot hold (SQLite's
    can), as U+FFFD. Every text the store derives from content is written so (an entity's name, a
    folded headline: the body is JSON, where U+0000 is escaped), and every text parameter of a
    statement (``Qmark.execute``) is passed so: a lookup by a name, an id or a search that holds
    U+0000 finds what was stored from such a text, as on SQLite, and nothing else, instead of
    failing."""
    return text.replace("\x00", "\ufffd")


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, (list, tuple)) and any(_holds_nul(v) for v in value)


def _nul_free_value(value: Any) -> Any:
    if isinstance(value, str):
        return pg_text(value)
    if isinstance(value, (list, tuple)):  # an array parameter (``unnest(?::text[])``)
        return type(value)(_nul_free_value(v) for v in value)
    return value


def _nul_free(params: Sequence[Any]) -> Sequence[Any]:
    """The parameters, with ``pg_text`` of each text (also inside an array) that holds U+0000."""
    if not any(_holds_nul(v) for v in params):
        return params
    return tuple(_nul_free_value(v) if _holds_nul(v) else v for v in params)


class Qmark:
    """A psycopg connection that takes SQLite's ``?`` marks: the store's SQL (events.store,
    events.erasure, events.integrity) is plain SQL that both databases run, so the PostgreSQL
    store runs the same statements instead of a second copy of each. ``raw`` is the psycopg
    connection (transactions, COPY, server-side cursors)."""

    __slots__ = ("raw", "_streaming", "_cursors")

    def __init__(self, raw: psycopg.Connection, *, streaming: bool = False) -> None:
        self.raw = raw
        #: run each query through a server-side cursor (rows fetched as they are read, not all
        #: at once): for whole-store scans inside a transaction (``timeline verify``)
        self._streaming = streaming
        self._cursors = 0

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        """``sql`` with ``?`` marks; a text parameter holding U+0000 is passed as ``pg_text`` of it."""
        query = _pg_marks(sql) if params else sql
        if params:
            params = _nul_free(params)
        if self._streaming:
            self._cursors += 1
            cursor = self.raw.cursor(name=f"q{self._cursors}")
            cursor.itersize = 5000
            return cursor.execute(query, params or None)
        return self.raw.execute(query, params or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        """The statement for each row. A plain ``INSERT INTO t [(columns)] VALUES (?, ...)`` runs
        as one ``COPY t [(columns)] FROM STDIN`` of the rows instead: the same rows, the same
        triggers and constraints, in one stream rather than a statement per row (the store's
        appends write four tables a batch: docs/performance.md)."""
        cursor = self.raw.cursor()
        rows = list(rows)
        if not rows:
            return cursor
        copy = _copy_statement(sql)
        if copy is None:
            cursor.executemany(_pg_marks(sql), rows)
            return cursor
        with cursor.copy(copy) as stream:
            for row in rows:
                stream.write_row(row)
        return cursor

    def close(self) -> None:
        self.raw.close()


_INSERT = re.compile(
    r"\s*INSERT\s+INTO\s+(?P<table>\w+)\s*(?P<columns>\([\w\s,]+\))?\s*VALUES\s*\((?:\s*\?\s*,)*\s*\?\s*\)\s*",
    re.IGNORECASE,
)


@lru_cache(maxsize=512)
def _copy_statement(sql: str) -> str | None:
    """``COPY table (columns) FROM STDIN`` for a plain multi-row ``INSERT ... VALUES (?, ...)``."""
    match = _INSERT.fullmatch(sql)
    if match is None:
        return None
    return f"COPY {match['table']} {match['columns'] or ''} FROM STDIN"


@lru_cache(maxsize=512)
def _pg_marks(sql: str) -> str:
    """SQLite's ``?`` marks as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")
