"""PostgreSQL for the tests, found like Redis: ``POSTGRES_URL`` when it is set, else a server
started for the session from the ``pgserver`` package (PostgreSQL's binaries on PyPI), so that a
fresh machine with only Python runs the PostgreSQL tests too.

Tests isolate themselves by schema, not by database: ``fresh_schema`` creates one and returns
the URL whose ``search_path`` names it (events.pg.connect.with_schema); dropping it removes
everything a test made. Creating a schema takes milliseconds; a database, far more.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from events.pg.connect import with_schema


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL for the session: ``POSTGRES_URL`` when set (and not empty), else
    a pgserver-started one in a temporary folder, stopped and removed afterwards."""
    url = os.environ.get("POSTGRES_URL", "").strip()
    if url:
        yield url
        return
    import pgserver  # the test extra: a PostgreSQL server from PyPI

    folder = tempfile.mkdtemp(prefix="timeline-pg-")
    # pgserver runs the server as the unprivileged user "pgserver" when it is started by root:
    # the folder (mkdtemp makes it 0700) must be reachable by it
    os.chmod(folder, 0o755)
    server = pgserver.get_server(os.path.join(folder, "data"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        try:
            server.cleanup()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def fresh_schema(url: str, prefix: str = "t") -> str:
    """Create a schema of its own and return ``url`` with that schema as its search_path."""
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return with_schema(url, schema)


def drop_schema(url: str) -> None:
    """Drop the schema that ``url``'s search_path names, and everything in it."""
    with psycopg.connect(url, autocommit=True) as conn:
        (schema,) = conn.execute("SELECT current_schema()").fetchone() or (None,)
        if schema is not None and schema != "public":
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
