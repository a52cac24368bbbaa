"""``projections.groups`` on PostgreSQL: the group tables' DDL and the statements whose SQL
differs (the rest of ``Groups`` runs as it is).

- an id list is one ``text[]`` (or ``bigint[]``) parameter (``= ANY(?)``), not JSON;
- a recursive query's first term names its id's type and collation (PostgreSQL infers them from
  it, and ids compare byte by byte, ``COLLATE "C"``, as on SQLite);
- an alias declaration's ids are read from the stored body (``text``) as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from events.records import AliasDeclaration

from ..groups import GROUPS, LINKS, MEMBER_LOG, SET_LOG, SETS, Groups

C = 'COLLATE "C"'


#: ``projections.groups.GROUP_MEMBERS_SCHEMA`` on PostgreSQL (the directory's and the related's)
GROUP_MEMBERS_SCHEMA = f"""CREATE TABLE {{t}} (
    set_id TEXT {C} NOT NULL, position BIGINT NOT NULL, start_key TEXT {C} NOT NULL,
    occurred_at TEXT NOT NULL, PRIMARY KEY (set_id, position)
)"""


def schema(prefix: str, *, history: bool = False) -> dict[str, list[str]]:
    """``projections.groups.schema`` on PostgreSQL."""
    logs = {
        f"{prefix}{MEMBER_LOG}": [
            f"CREATE TABLE {{t}} (entity_id TEXT {C} NOT NULL, set_from BIGINT NOT NULL, set_id TEXT {C} NOT NULL,"
            " set_to BIGINT NOT NULL, PRIMARY KEY (entity_id, set_from))",
            "CREATE INDEX IF NOT EXISTS {t}_set ON {t}(set_id, set_to)",
        ],
        f"{prefix}{SET_LOG}": [
            f"CREATE TABLE {{t}} (set_id TEXT {C} NOT NULL, set_from BIGINT NOT NULL, root TEXT {C} NOT NULL,"
            " size INTEGER NOT NULL, filed INTEGER NOT NULL, PRIMARY KEY (set_id, set_from))",
        ],
    } if history else {}
    return {
        **logs,
        f"{prefix}{LINKS}": [
            f"CREATE TABLE {{t}} (alias TEXT {C} PRIMARY KEY, canonical TEXT {C} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {t}_canonical ON {t}(canonical)",
        ],
        f"{prefix}{GROUPS}": [
            f"CREATE TABLE {{t}} (entity_id TEXT {C} PRIMARY KEY, set_id TEXT {C} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {t}_set ON {t}(set_id)",
        ],
        f"{prefix}{SETS}": [
            f"CREATE TABLE {{t}} (set_id TEXT {C} PRIMARY KEY, root TEXT {C} NOT NULL, size INTEGER NOT NULL)",
        ],
    }


class PgGroups(Groups):
    ID = f"CAST(? AS TEXT) {C}"

    @staticmethod
    def in_ids(expr: str) -> str:
        return f"{expr} = ANY(?)"

    @staticmethod
    def ids(values: Iterable[Any]) -> Any:
        return sorted(values)

    def stored_declarations(self, upto: int) -> list[AliasDeclaration]:
        details = "body::json -> 'details'"
        return [
            AliasDeclaration(*row)
            for row in self.conn.execute(
                f"SELECT position, {details} ->> 'alias', {details} ->> 'canonical', {details} ->> 'name'"
                " FROM events WHERE kind = 'entity_alias' AND position <= ? AND body <> '' ORDER BY position",
                (upto,),
            )
        ]
