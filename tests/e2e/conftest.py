"""End-to-end fixtures: the real ``timeline serve`` as a child process, on a real Redis.

``serve(...)`` starts ``timeline serve`` on a free port with its own SQLite file, the test's
stream, ``TIMELINE_CLAIM_IDLE_SECONDS=1`` and a unique consumer name, waits until ``GET /health``
answers 200 (at most 20 s; otherwise fails with the process's stderr) and hands back a
:class:`e2e_support.Server` (``base_url``, ``process``, ``kill()``, ``terminate()``,
``restart()``). Every server a test starts is stopped (SIGTERM, then SIGKILL) when it ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from e2e_support import PROJECT_ROOT, Server

ServeFactory = Callable[..., Server]


@pytest.fixture
def serve(redis_url: str, stream_name: str, tmp_path: Path) -> Iterator[ServeFactory]:
    """Factory: ``serve(token=None, redis_url=None, consumer=None, **extra_env) -> Server``."""
    servers: list[Server] = []
    default_url = redis_url

    def factory(
        *,
        token: str | None = None,
        redis_url: str | None = None,
        consumer: str | None = None,
        stream: str | None = None,
        db: Path | None = None,
        autostart: bool = True,
        **extra: str,
    ) -> Server:
        name = f"serve{len(servers)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
        env.update(
            {
                "REDIS_URL": redis_url or default_url,
                "TIMELINE_DB": str(db or tmp_path / f"{name}" / "timeline.db"),
                "TIMELINE_STREAM": stream or stream_name,
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
        server = Server(env, tmp_path, name)
        servers.append(server)
        if autostart:
            server.start()
        return server

    try:
        yield factory
    finally:
        for server in servers:
            server.close()


