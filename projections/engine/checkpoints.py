"""Checkpoints: how far each projection has got, as typed records.

A projection's checkpoint is one row of ``projection_checkpoints`` (in the projection's own file
on SQLite, in the store's schema on PostgreSQL), written in the same transaction as the rows it
accounts for. Everything that reads one gets a ``Checkpoint``: the engine, ``GET /projections``
(``ProjectionStatus``), /health and /metrics (``timeline.lag``), the read side's choice of tables
(``Tables``), a read-only node waiting for the writer's projections.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

STALE_AFTER = 60.0  # seconds without a batch after which a rebuild is taken to be dead

CHECKPOINT_TABLE = """CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name            TEXT PRIMARY KEY,
    version         INTEGER NOT NULL,  -- the version of the live tables
    position        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL DEFAULT 'live',
    tables_tag      TEXT NOT NULL DEFAULT '',
    updated_at      TEXT NOT NULL,
    rebuild_tag     TEXT,
    rebuild_version INTEGER,
    rebuild_position INTEGER,
    rebuild_started TEXT,
    rebuild_beat    REAL,
    rebuild_owner   TEXT               -- host:pid of the process running the rebuild
)"""

CHECKPOINT_COLUMNS = (
    "name, version, position, state, tables_tag, rebuild_tag, rebuild_version, rebuild_position, rebuild_beat,"
    " rebuild_owner"
)


class Tables(NamedTuple):
    """One set of a projection's tables: the events they hold (up to ``position``) and their
    ``tag`` (the suffix of their names)."""

    position: int
    tag: str


@dataclass(frozen=True, slots=True)
class Rebuild:
    """A rebuild recorded in a checkpoint: the tables it fills (``tag``), the projection version
    they are of, how far they have got, and who fills them (``owner``, ``host:pid``, and the last
    batch's time, ``beat``, Unix seconds)."""

    tag: str
    version: int
    position: int
    beat: float | None
    owner: str | None

    def alive(self) -> bool:
        """Whether a live process is behind it: its owner's process, if on this host, exists, and
        it wrote a batch within ``STALE_AFTER`` seconds."""
        host, _, pid = (self.owner or "").rpartition(":")
        if host == socket.gethostname() and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
        return self.beat is not None and time.time() - self.beat < STALE_AFTER


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One projection's checkpoint: the version and position of its live tables, their tag, its
    state (``live``, ``rebuilding``) and the rebuild under way, if one is."""

    name: str
    version: int  # the version of the code that wrote the live tables
    position: int  # the last store position the live tables have applied
    state: str
    tag: str  # the live tables' tag
    rebuild: Rebuild | None = None

    @property
    def live(self) -> Tables:
        return Tables(self.position, self.tag)

    def tables(self) -> list[Tables]:
        """The live tables and, while a rebuild runs, the rebuild's."""
        out = [self.live]
        if self.rebuild is not None:
            out.append(Tables(self.rebuild.position, self.rebuild.tag))
        return out


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """A checkpoint against the store's head: one object of ``GET /projections`` (``as_json``;
    its OpenAPI schema is ``timeline.schemas.ProjectionStatus``)."""

    checkpoint: Checkpoint
    head: int

    @property
    def name(self) -> str:
        return self.checkpoint.name

    @property
    def lag(self) -> int:
        return self.head - self.checkpoint.position

    def as_json(self) -> dict[str, Any]:
        cp = self.checkpoint
        out: dict[str, Any] = {
            "name": cp.name, "version": cp.version, "position": cp.position, "head": self.head, "lag": self.lag,
            "state": cp.state,
        }
        if cp.rebuild is not None:
            r = cp.rebuild
            out["rebuild"] = {"version": r.version, "position": r.position, "lag": self.head - r.position}
        return out


def read_checkpoints(conn: Any, schema: str = "main") -> dict[str, Checkpoint]:
    """The checkpoints in ``schema``'s table, by name (``""``: the connection's own, as on
    PostgreSQL, where they are in the store's schema)."""
    table = f"{schema}.projection_checkpoints" if schema else "projection_checkpoints"
    out = {}
    for name, version, position, state, tag, r_tag, r_version, r_position, r_beat, r_owner in conn.execute(
        f"SELECT {CHECKPOINT_COLUMNS} FROM {table} ORDER BY name"
    ):
        rebuild = Rebuild(r_tag, r_version, r_position, r_beat, r_owner) if r_tag else None
        out[name] = Checkpoint(name, version, position, state, tag, rebuild)
    return out


def now() -> str:
    """``updated_at``'s form."""
    return datetime.now(timezone.utc).isoformat()


def owner() -> str:
    """This process, as a rebuild's ``owner``."""
    return f"{socket.gethostname()}:{os.getpid()}"
