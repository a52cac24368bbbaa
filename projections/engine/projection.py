"""What a projection is, to the engine: a name, a version, its tables and how it writes them.

The engine (``projections.engine``) calls these inside its transactions; a projection never
opens a connection, a transaction or a checkpoint of its own. Each projection module
(``projections.timelines``, ``projections.directory``, ...) implements one, and its PostgreSQL
counterpart (``projections.pg``) overrides the SQL that differs.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from events.records import AliasDeclaration

    from ..changes import Change
    from ..erasure import Erased


class Projection(ABC):
    name: str
    version: int
    #: base table name -> CREATE statements of the table and of the indexes that writing it
    #: needs, with ``{t}`` for the tagged table name
    schema: dict[str, list[str]]
    #: base table name -> CREATE INDEX statements that only reads need: a rebuild fills its
    #: tables without them and creates them once caught up, before the swap
    indexes: dict[str, list[str]] = {}
    #: base names of tables that earlier versions had and this one has not: dropped with a tag
    retired: tuple[str, ...] = ()

    def table(self, base: str, tag: str) -> str:
        return f"{base}{tag}"

    def create(self, conn: sqlite3.Connection, tag: str, *, indexes: bool = True) -> None:
        for base, statements in self.schema.items():
            for sql in statements:
                conn.execute(sql.format(t=self.table(base, tag), tag=tag))
        if indexes:
            self.create_indexes(conn, tag)

    def create_indexes(self, conn: sqlite3.Connection, tag: str) -> None:
        for base, statements in self.indexes.items():
            for sql in statements:
                conn.execute(sql.format(t=self.table(base, tag), tag=tag))

    def drop(self, conn: sqlite3.Connection, tag: str) -> None:
        for base in (*self.schema, *self.retired):
            conn.execute(f"DROP TABLE IF EXISTS {self.table(base, tag)}")

    @abstractmethod
    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str, *, deferred: bool = False) -> None:
        """Write the rows for these changes (inside the engine's transaction).

        ``deferred``: a set-based rebuild that has not finished yet (see ``finish``): rows that
        ``finish`` derives may be left out.
        """

    def bulk(self, conn: sqlite3.Connection, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        """Optionally, apply the plain news events of ``low < position <= high`` set-based, in SQL.

        Plain news events are those that no correction or retraction waited for (most of
        them): the store's ``event_meta`` rows with ``plain = 1``, whose entities are in
        ``event_entities``. ``apply`` then gets the changes of the rest. A projection that
        implements this must give the same rows whatever the order.

        ``deferred``: a rebuild that has not finished yet; rows that ``finish`` derives (from the
        store's plain events up to its position, or from the tables) may be left out.
        """
        raise NotImplementedError

    def finish(self, conn: sqlite3.Connection, tag: str, position: int) -> None:
        """Once, when a set-based rebuild (every batch ``deferred``) has caught up with ``position``:
        write the rows that were deferred, so that the tables are what live batches would have
        made. Runs before ``create_indexes``, in the same transaction (a finish that needs one of
        the read-side indexes creates it; they say IF NOT EXISTS). Default: nothing deferred."""

    def declare(
        self, conn: sqlite3.Connection, tag: str, declarations: list[AliasDeclaration], *, deferred: bool = False
    ) -> None:
        """The alias declarations of a batch, in store order,
        after its changes (``projections.groups``). Default: aliases change no rows.

        ``deferred``: as for ``apply`` (rows that ``finish`` derives may be left out)."""

    def remove(self, conn: sqlite3.Connection, tag: str, gone: Erased, reached: int) -> None:
        """Take an erased news event out of the tables of a tag that has applied the events up to
        ``reached`` (projections.erasure): afterwards they are what a rebuild without it makes."""
        raise NotImplementedError(f"{self.name} cannot remove an erased event")

    def carry(self, conn: sqlite3.Connection, old: str, new: str) -> None:
        """At a rebuild's swap, before the tables of tag ``old`` are dropped: keep in those of
        ``new`` what the store cannot give a rebuild (default: nothing)."""

    @property
    def has_bulk(self) -> bool:
        return type(self).bulk is not Projection.bulk
