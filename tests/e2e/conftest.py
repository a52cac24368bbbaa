"""End-to-end fixtures: the real ``timeline serve`` as a child process, on a real Redis.

``serve(...)`` starts ``timeline serve`` on a free port with its own SQLite file, the test's
stream, ``TIMELINE_CLAIM_IDLE_SECONDS=1`` and a unique consumer name, waits until ``GET /health``
answers 200 (at most 60 s; otherwise fails with the process's stderr) and hands back a
:class:`e2e_support.Server` (``base_url``, ``process``, ``kill()``, ``terminate()``,
``restart()``). Every server a test starts is killed (SIGKILL) when it ends: a test that checks
how ``serve`` stops calls ``terminate()`` itself. ``serve_module`` is the same for servers that
a module's read-only tests share (module scope, a stream of the module's own).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from e2e_support import PROJECT_ROOT, Server

ServeFactory = Callable[..., Server]


class Servers:
    """Starts ``timeline serve`` processes on ``redis_url`` with the stream ``stream_name``, files
    under ``workdir``; :meth:`close` stops every one it started."""

    def __init__(self, redis_url: str, stream_name: str, workdir: Path) -> None:
        self.default_url = redis_url
        self.stream_name = stream_name
        self.workdir = workdir
        self.servers: list[Server] = []

    def __call__(
        self,
        *,
        token: str | None = None,
        redis_url: str | None = None,
        consumer: str | None = None,
        stream: str | None = None,
        db: Path | None = None,
        autostart: bool = True,
        **extra: str,
    ) -> Server:
        name = f"serve{len(self.servers)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
        env.update(
            {
                "REDIS_URL": redis_url or self.default_url,
                "TIMELINE_DB": str(db or self.workdir / f"{name}" / "timeline.db"),
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
        Path(env["TIMELINE_DB"]).parent.mkdir(parents=True, exist_ok=True)
        server = Server(env, self.workdir, name)
        self.servers.append(server)
        if autostart:
            server.start()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture
def serve(redis_url: str, stream_name: str, tmp_path: Path) -> Iterator[ServeFactory]:
    """Factory: ``serve(token=None, redis_url=None, consumer=None, **extra_env) -> Server``."""
    servers = Servers(redis_url, stream_name, tmp_path)
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
