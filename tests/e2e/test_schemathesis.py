"""Hostile input at the API: Schemathesis generates requests from the service's own OpenAPI spec
and checks, against the real server, that nothing answers 5xx and every answer matches the spec."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings

from e2e_support import PROJECT_ROOT, Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live_server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    stream = f"test:{uuid4().hex}:events"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update(
        {
            "REDIS_URL": redis_url,
            "TIMELINE_DB": str(workdir / "timeline.db"),
            "TIMELINE_STREAM": stream,
            "TIMELINE_CONSUMER": f"schemathesis-{uuid4().hex[:8]}",
            "TIMELINE_WAIT_TIMEOUT_SECONDS": "5",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])),
        }
    )
    server = Server(env, workdir, "schemathesis").start()
    demo = Path(PROJECT_ROOT, "timeline", "data", "demo_events.jsonl").read_text().splitlines()
    with server.client() as http:  # something to find
        assert http.post("/events?wait=true", content="[" + ",".join(demo) + "]").status_code == 201
    try:
        yield server
    finally:
        server.close()
        import redis

        client = redis.Redis.from_url(redis_url)
        client.delete(stream, stream + ":dead")
        client.close()


def test_no_5xx_and_every_answer_matches_the_spec(live_server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/stream"):
            continue  # a valid request opens an endless stream: its hostile input is in test_live.py
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            # Every check but "a schema-valid request is accepted": a JSON schema cannot say that
            # 2025-02-30 is no date or that an id is unknown, and answering those 422 is right.
            case.call_and_validate(base_url=live_server.base_url, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collected, reported together below
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 10
    assert failures == [], "\n\n".join(failures)
