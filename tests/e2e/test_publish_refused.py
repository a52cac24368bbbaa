"""A Redis that stops taking writes (here: full, at its `maxmemory` with `noeviction`; also
MISCONF after a failed save, READONLY, or down past the retries) while the service runs:
`POST /events` answers a JSON `503` with `Retry-After` saying to send the events again, and
`timeline publish` a one-line error saying how far it got, never a bare `500` or a traceback.
Once Redis takes writes again, the same events are published and stored once."""

from __future__ import annotations

import pytest
import redis

from e2e_support import jsonl, report_event, settle, store_counts
from test_cli import run
from timeline.embedded_redis import RedisServer

pytestmark = pytest.mark.e2e


def test_a_redis_refusing_writes_is_a_503_and_a_one_line_error(serve, tmp_path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=False) as private:
        client = redis.Redis.from_url(private.url)
        server = serve(redis_url=private.url)
        http = server.client()
        assert http.post("/events?wait=true", json=report_event(0, prefix="full")).status_code == 201

        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)  # used memory is over it: every write command is refused
        try:
            refused = http.post("/events", json=[report_event(1, prefix="full"), {"kind": "nonsense"}])
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == "application/json" and "Retry-After" in refused.headers
            body = refused.json()
            assert "the stream cannot take events now" in body["error"] and "OutOfMemoryError" in body["error"]
            assert body["detail"]["accepted"] == [] and body["detail"]["rejected"][0]["index"] == 1

            source = tmp_path / "events.jsonl"
            source.write_bytes(jsonl([report_event(i, prefix="full") for i in range(1, 4)]))
            published = run(["publish", str(source)], tmp_path, REDIS_URL=private.url, TIMELINE_STREAM=server.stream)
            assert published.returncode == 1, published.stdout + published.stderr
            assert "Traceback" not in published.stderr and "─" not in published.stderr, published.stderr
            assert "stopped taking events after 0 of 3 lines (OutOfMemoryError" in published.stderr
            assert "publishing the file again is safe" in published.stderr
        finally:
            client.config_set("maxmemory", 0)

        again = run(["publish", str(source)], tmp_path, REDIS_URL=private.url, TIMELINE_STREAM=server.stream)
        assert again.returncode == 0, again.stderr
        assert http.post("/events", json=report_event(1, prefix="full")).status_code == 202
        settle(server, client)
        assert store_counts(server.db)[:2] == (4, 4)
        http.close()
        client.close()
