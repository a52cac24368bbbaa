"""A projection's PostgreSQL connection, as the projection code calls it.

The projections' Python code (``apply``: the rows of corrections, retractions and new events)
is shared by both backends and calls ``conn.execute(sql, params)`` and
``conn.executemany(sql, rows)`` with DB-API ``qmark`` placeholders (``?``), SQLite's style.
psycopg takes ``%s`` placeholders (``format`` style), so ``Qmark`` converts a statement's
placeholders once (cached) and passes everything else to psycopg unchanged: the SQL of a
statement that must differ between the two databases is written per backend
(``projections.pg``), never rewritten here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import psycopg


@lru_cache(maxsize=4096)
def to_format(sql: str) -> str:
    """``sql`` with its ``?`` placeholders as ``%s`` and its literal ``%`` doubled (outside
    quoted strings and identifiers only, where a ``?`` is text)."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class Qmark:
    """A psycopg connection that takes ``?`` placeholders (``execute``, ``executemany``); every
    other attribute is the connection's own."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.raw.execute(to_format(sql), tuple(params))  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor:
        cur = self.raw.cursor()
        rows = [tuple(r) for r in rows]
        if rows:
            cur.executemany(to_format(sql), rows)  # type: ignore[arg-type]
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)
