"""Shared pytest fixtures.

Sections (append new fixtures under their own header):
  - Redis: a real Redis server for the test session (``REDIS_URL`` when set, else a
    ``redis-server`` child process), a private one per test for stop/restart/kill tests, and a
    unique stream name per test so tests on a shared Redis never see each other's entries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
import redis

from timeline.embedded_redis import RedisServer

# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the Redis shared by the whole session.

    ``REDIS_URL`` when it is set (and not empty); otherwise a real redis-server started in a
    temporary directory for the session (no AOF: nothing there has to survive the session).
    """
    url = os.environ.get("REDIS_URL", "").strip()
    if url:
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis-session"), appendonly=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A started redis-server of this test's own (AOF on), for tests that stop, restart or
    kill Redis. Its files are under ``tmp_path / "redis"``; it is stopped after the test."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stream_name() -> str:
    """A stream name of this test's own; its dead-letter stream is ``stream_name + ":dead"``."""
    return f"test:{uuid4().hex}:events"


@pytest.fixture
def redis_client(redis_url: str, stream_name: str) -> Iterator[redis.Redis]:
    """A sync client on the session's Redis; deletes this test's streams afterwards."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        try:
            client.delete(stream_name, f"{stream_name}:dead")
        finally:
            client.close()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of the PostgreSQL shared by the whole session: ``POSTGRES_URL`` when set, else a
    server started from the ``pgserver`` package for the session (tests/pg_support.py)."""
    from pg_support import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[str]:
    """A ``TIMELINE_DB`` URL of this test's own: a fresh schema, dropped after the test."""
    from pg_support import drop_schema, fresh_schema

    url = fresh_schema(pg_url)
    try:
        yield url
    finally:
        drop_schema(url)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ``TIMELINE_DB`` value on each backend in turn: a SQLite file in the test's folder, then
    a PostgreSQL schema of the test's own (``pg_db``)."""
    if request.param == "sqlite":
        return str(tmp_path / "timeline.db")
    return request.getfixturevalue("pg_db")


@pytest.fixture(scope="session")
def pg_replica() -> Iterator[object]:
    """A real streaming replica of the session's own: a private primary and a hot standby made
    from it by ``pg_basebackup -R`` (tests/pg_replica.py), whether ``POSTGRES_URL`` is set or not.
    Both are stopped and removed when the session ends."""
    from pg_replica import streaming_replica

    with streaming_replica() as replica:
        yield replica


@pytest.fixture
def replica_db(pg_replica: object) -> Iterator[tuple[str, str]]:
    """``(primary, standby)``: ``TIMELINE_DB`` URLs of one fresh schema of this test's own on the
    primary and on its standby (the schema reaches the standby by replication; dropped after)."""
    from events.pg.connect import with_schema
    from pg_support import drop_schema, fresh_schema

    primary = fresh_schema(pg_replica.primary)  # type: ignore[attr-defined]
    with psycopg.connect(primary) as conn:
        (schema,) = conn.execute("SELECT current_schema()").fetchone()  # type: ignore[misc]
    try:
        yield primary, with_schema(pg_replica.standby, schema)  # type: ignore[attr-defined]
    finally:
        drop_schema(primary)
