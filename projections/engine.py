"""The projection engine: every registered projection runs from its own checkpoint.

A projection is a name, a version, its tables and ``apply(conn, changes, tag)``. The engine
reads stored events after a projection's checkpoint, turns them into changes and applies them;
the rows and the new checkpoint commit in one transaction, and the checkpoint only moves
forward (``WHERE position < :new``), so a batch is applied exactly once whatever crashes.
Tables carry a *tag* so that a rebuild can build a second set beside the live one.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from events.store import EventStore

from .changes import Change, compute_changes


class Projection(ABC):
    name: str
    version: int
    #: base table name -> CREATE statements, with ``{t}`` for the tagged table name
    schema: dict[str, list[str]]

    def table(self, base: str, tag: str) -> str:
        return f"{base}{tag}"

    def create(self, conn: sqlite3.Connection, tag: str) -> None:
        for base, statements in self.schema.items():
            for sql in statements:
                conn.execute(sql.format(t=self.table(base, tag), tag=tag))

    def drop(self, conn: sqlite3.Connection, tag: str) -> None:
        for base in self.schema:
            conn.execute(f"DROP TABLE IF EXISTS {self.table(base, tag)}")

    @abstractmethod
    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str) -> None:
        """Write the rows for these changes (inside the engine's transaction)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class ProjectionEngine:
    def __init__(self, store: EventStore, projections: Sequence[Projection], batch_size: int = 5000) -> None:
        self.store = store
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size

    @property
    def conn(self) -> sqlite3.Connection:
        return self.store.conn

    def setup(self) -> None:
        """Create checkpoints and tables for projections seen for the first time."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for p in self.projections.values():
                row = conn.execute(
                    "SELECT version, tables_tag FROM projection_checkpoints WHERE name = ?", (p.name,)
                ).fetchone()
                if row is None:
                    tag = f"_v{p.version}"
                    p.create(conn, tag)
                    conn.execute(
                        "INSERT INTO projection_checkpoints (name, version, position, state, tables_tag, updated_at)"
                        " VALUES (?, ?, 0, 'live', ?, ?)",
                        (p.name, p.version, tag, _now()),
                    )
                elif row[0] != p.version:
                    # A new version starts from nothing; rebuilds without downtime come later.
                    p.drop(conn, row[1])
                    tag = f"_v{p.version}"
                    p.drop(conn, tag)
                    p.create(conn, tag)
                    conn.execute(
                        "UPDATE projection_checkpoints SET version = ?, position = 0, state = 'live',"
                        " tables_tag = ?, updated_at = ? WHERE name = ?",
                        (p.version, tag, _now(), p.name),
                    )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def checkpoints(self) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute("SELECT name, version, position, state, tables_tag FROM projection_checkpoints")
        return {
            name: {"name": name, "version": version, "position": position, "state": state, "tag": tag}
            for name, version, position, state, tag in rows
            if name in self.projections
        }

    def catch_up(self, upto: int | None = None) -> int:
        """Apply every stored event up to ``upto`` (default: the head); return the lowest checkpoint."""
        while True:
            applied = self._step(upto)
            if applied is None:
                cps = self.checkpoints()
                return min((c["position"] for c in cps.values()), default=0)

    def _step(self, upto: int | None) -> int | None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            cps = self.checkpoints()
            head = self.store.head() if upto is None else min(upto, self.store.head())
            behind = [c for c in cps.values() if c["position"] < head]
            if not behind:
                conn.execute("COMMIT")
                return None
            low = min(c["position"] for c in behind)
            group = [c for c in behind if c["position"] == low]
            batch = self.store.read(low, self.batch_size, head)
            new_position = batch[-1].position
            changes = compute_changes(self.store, batch)
            for cp in group:
                self.projections[cp["name"]].apply(conn, changes, cp["tag"])
                cur = conn.execute(
                    "UPDATE projection_checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position < ?",
                    (new_position, _now(), cp["name"], new_position),
                )
                if cur.rowcount != 1:
                    raise RuntimeError(f"checkpoint of {cp['name']} moved under us")
            conn.execute("COMMIT")
            return new_position
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def status(self) -> list[dict[str, Any]]:
        head = self.store.head()
        out = []
        for name, cp in sorted(self.checkpoints().items()):
            out.append(
                {
                    "name": name,
                    "version": cp["version"],
                    "position": cp["position"],
                    "head": head,
                    "lag": head - cp["position"],
                    "state": cp["state"],
                }
            )
        return out
