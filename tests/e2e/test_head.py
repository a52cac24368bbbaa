"""HEAD on what the API serves with GET: the same status and headers, no body (RFC 9110: a
general-purpose server supports HEAD). It was a 405 on every API path (FastAPI routes take only
the methods they name), while uptime checks and caches send it."""

from __future__ import annotations

import httpx
import pytest

from e2e_support import report_event

pytestmark = pytest.mark.e2e


def test_head_answers_as_get_without_the_body(serve) -> None:
    server = serve()
    with server.client() as http:
        assert http.post("/events?wait=true", json=report_event(1, prefix="head")).status_code == 201
        entity = report_event(1, prefix="head")["entities"][0]["id"]
        for path in ("/health", "/projections", "/timeline?limit=5", f"/entities/{entity}", "/entities?q=entity",
                     f"/entities/{entity}/timeline?format=csv", f"/entities/{entity}/related", "/events/head-1",
                     "/metrics", "/entities/nobody", "/timeline?limit=0"):
            got, head = http.get(path), http.head(path)
            assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
            assert head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
            if "content-length" in got.headers and path != "/metrics":  # (its counters move)
                assert head.headers["content-length"] == got.headers["content-length"], path
        # a live stream never ends: HEAD on it is refused at once, not held open
        assert http.head("/timeline/stream", timeout=httpx.Timeout(5)).status_code == 405
        assert http.post("/events", json=report_event(2, prefix="head")).status_code == 202  # POST as before
