"""End-to-end fixtures: the real ``timeline serve`` as a child process, on a real Redis.

``serve(...)`` starts ``timeline serve`` on a free port with its own SQLite file, the test's
stream, ``TIMELINE_CLAIM_IDLE_SECONDS=1`` and a unique consumer name, waits until ``GET /health``
answers 200 (at most 60 s; otherwise fails with the process's stderr) and hands back a
:class:`e2e_support.Server` (``base_url``, ``process``, ``kill()``, ``terminate()``,
``restart()``). Every server a test starts is killed (SIGKILL) when it ends: a test that checks
how ``serve`` stops calls ``terminate()`` itself. ``serve_module`` is the same for servers that
a module's read-only tests share (module scope, a stream of the module's own).

A test that also asks for the ``backend`` fixture (tests/conftest.py) runs once per backend: on
PostgreSQL, its servers' ``TIMELINE_DB`` is the test's own schema (``pg_db``) unless it names one.
The guarantees' tests do (SIGKILL during ingest and rebuild, two consumers, poison, Redis
restarts); the API's tests run on SQLite only, so the tier does not take twice as long.
"""

from __future__ import annotations

import os
from typing import Any
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from e2e_support import PROJECT_ROOT, Server
from events.backend import is_postgres

ServeFactory = Callable[..., Server]


class Servers:
    """Starts ``timeline serve`` processes on ``redis_url`` with the stream ``stream_name``, files
    under ``workdir`` (the store in ``shared_db`` when given: a PostgreSQL schema); :meth:`close`
    stops every one it started."""

    def __init__(self, redis_url: str, stream_name: str, workdir: Path, shared_db: str | None = None) -> None:
        self.default_url = redis_url
        self.stream_name = stream_name
        self.workdir = workdir
        self.shared_db = shared_db
        self.servers: list[Server] = []

    def __call__(
        self,
        *,
        token: str | None = None,
        redis_url: str | None = None,
        consumer: str | None = None,
        stream: str | None = None,
        db: Path | str | None = None,
        autostart: bool = True,
        workdir: Path | None = None,
        netns: Any = None,
        **extra: str,
    ) -> Server:
        """``workdir``: the process's working folder, where its stderr goes (default the
        test's folder). ``netns``: a tests/e2e/netns.py Namespace to run it in (it reaches Redis
        and PostgreSQL through forwarders on the namespace's gateway; the test reaches it at the
        namespace's address)."""
        name = f"serve{len(self.servers)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
        env.update(
            {
                "REDIS_URL": redis_url or self.default_url,
                "TIMELINE_DB": str(db or self.shared_db or self.workdir / f"{name}" / "timeline.db"),
                "TIMELINE_STREAM": stream or self.stream_name,
                "TIMELINE_CLAIM_IDLE_SECONDS": "1",
                "TIMELINE_CONSUMER": consumer or f"e2e-{uuid4().hex[:12]}",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])),
            }
        )
        if token is not None:
            env["TIMELINE_API_TOKEN"] = token
        env.update(extra)
        if not is_postgres(env["TIMELINE_DB"]):
            Path(env["TIMELINE_DB"]).parent.mkdir(parents=True, exist_ok=True)
        elif netns is not None:
            env["TIMELINE_DB"] = netns.postgres_url(env["TIMELINE_DB"])
        if netns is not None:
            env["REDIS_URL"] = netns.redis_url(env["REDIS_URL"])
        if workdir is not None:  # a folder of its own (another machine's, as far as it can tell)
            workdir.mkdir(parents=True, exist_ok=True)
        server = Server(env, workdir or self.workdir, name, netns=netns)
        self.servers.append(server)
        if autostart:
            server.start()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture
def serve(redis_url: str, stream_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServeFactory]:
    """Factory: ``serve(token=None, redis_url=None, consumer=None, stream=None, db=None,
    autostart=True, workdir=None, **extra_env) -> Server``."""
    shared_db: str | None = None  # PostgreSQL (the ``backend`` fixture): the test's schema
    if "backend" in request.fixturenames:
        chosen = request.getfixturevalue("backend")
        if is_postgres(chosen):
            shared_db = chosen
    servers = Servers(redis_url, stream_name, tmp_path, shared_db)
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="module")
def serve_module(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeFactory]:
    """``serve`` for a module's tests that only read what they share: servers (on a stream of
    the module's own) that live until the module's last test."""
    servers = Servers(redis_url, f"test:{uuid4().hex}:events", tmp_path_factory.mktemp("serve-module"))
    try:
        yield servers
    finally:
        servers.close()
