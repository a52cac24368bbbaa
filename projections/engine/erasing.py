"""An erased event taken out of every projection's tables, live and a rebuild's, without a
rebuild (``projections.erasure``, docs/erasure.md)."""

from __future__ import annotations

import sqlite3

from events.erasure import truncate_log, zero_free_pages
from events.store import EventStore

from ..erasure import Erased
from .base import EngineBase


class ErasingEngine(EngineBase):
    def remove(self, gone: Erased | None) -> None:
        """Take an erased event out of every projection, live tables and a rebuild's, with the
        freed bytes overwritten (``secure_delete``, and the pages freed earlier: ``zero_free_pages``)
        and the write-ahead log emptied after. ``None``: only overwrite and empty (again)."""
        def run(name: str) -> None:
            projection, conn = self.projections[name], self.connection(name)

            def work(conn: sqlite3.Connection, _store: EventStore) -> None:
                cp = self._read_checkpoints(conn).get(name)
                if cp is None or gone is None:
                    zero_free_pages(conn)
                    return
                for tables in cp.tables():
                    projection.remove(conn, tables.tag, gone, tables.position)
                zero_free_pages(conn)  # what earlier rebuilds and merges freed

            with self._locks[name]:
                conn.execute("PRAGMA secure_delete = ON")
                try:
                    self._transaction(name, work)
                    truncate_log(conn)
                finally:
                    conn.execute("PRAGMA secure_delete = FAST")

        self._each(list(self.projections), run)
