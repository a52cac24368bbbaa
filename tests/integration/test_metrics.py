"""GET /metrics in process (``httpx.ASGITransport``) over a real store: the exposition parses,
route labels are templates with bounded label sets, each runtime has its own registry, and the
token setting (issue 18). The real ``timeline serve`` with Redis: tests/e2e/test_metrics_serve.py."""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from helpers import append_and_project, candidate, news
from timeline.api import create_app
from timeline.runtime import Runtime
from timeline.settings import Settings


class App:
    """A runtime (no consumer) and its app, driven from a private event loop."""

    def __init__(self, db: Path, mp: pytest.MonkeyPatch, **env: str) -> None:
        mp.setenv("TIMELINE_DB", str(db))
        mp.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never used: no consumer, no publishing
        for name, value in env.items():
            mp.setenv(name, value)
        self.runtime = Runtime(Settings(), consume=False)
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=create_app(self.runtime, manage=False))
        self.http = httpx.AsyncClient(transport=transport, base_url="http://t")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, path, **kwargs))

    def metrics(self, **kwargs: Any) -> dict[str, Any]:
        """``{sample name: {labels as a sorted tuple: value}}`` of a scrape."""
        response = self.request("GET", "/metrics", **kwargs)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples: dict[str, Any] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return samples

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()
        self.runtime.service.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    db = tmp_path / "timeline.db"
    append_and_project(db, [news("n1", "2025-05-24", ("x",)), news("n2", "2025-05-25", ("x", "y"))])
    with pytest.MonkeyPatch.context() as mp:
        made = App(db, mp)
        try:
            yield made
        finally:
            made.close()


def http_series(samples: dict[str, Any]) -> set[tuple[Any, ...]]:
    return set(samples.get("timeline_http_request_duration_seconds_count", {}))


def test_gauges_are_read_from_the_checkpoints(app: App) -> None:
    samples = app.metrics()
    positions = samples["timeline_projection_position"]
    assert positions and all(value == 2 for value in positions.values())
    assert {dict(labels)["projection"] for labels in positions} == set(app.runtime.service.engine.projections)
    assert all(value == 0 for value in samples["timeline_projection_lag_events"].values())
    assert all(value == 0 for value in samples["timeline_projection_lag_seconds"].values())
    assert all(value == 1 for value in samples["timeline_rebuild_progress"].values())
    assert samples["timeline_store_head"] == {(): 2}
    assert "timeline_stream_pending" not in samples  # no consumer here: absent, not a made-up 0
    # every dead-letter reason is there from the start, at zero
    assert samples["timeline_dead_letters_total"] == {
        (("reason", r),): 0.0 for r in ("no_event", "too_large", "bad_json", "schema", "id_conflict")
    }


def test_appends_are_counted_and_timed_where_the_store_appends(app: App) -> None:
    store = app.runtime.service.store
    store.append([candidate(news("n3", "2025-05-26", ("x",))), candidate(news("n4", "2025-05-27", ("y",)))])
    store.append([candidate(news("n3", "2025-05-26", ("x",)))])  # a duplicate: timed, not counted
    samples = app.metrics()
    assert samples["timeline_events_stored_total"] == {(): 2.0}
    assert samples["timeline_append_seconds_count"] == {(): 2.0}
    # the projections have not applied them yet: two events behind, the oldest a moment old
    assert all(value == 2 for value in samples["timeline_projection_lag_events"].values())
    assert all(0 <= value < 60 for value in samples["timeline_projection_lag_seconds"].values())


def test_requests_are_labelled_by_route_template(app: App) -> None:
    assert app.request("GET", "/entities/x").status_code == 200
    assert app.request("GET", "/entities/y").status_code == 200
    assert app.request("GET", "/entities/nobody").status_code == 404
    assert app.request("GET", "/events/n1").status_code == 200
    series = http_series(app.metrics())
    labels = {dict(s)["route"]: dict(s) for s in series}
    assert ("route", "/entities/{entity_id}") in {(k, v) for s in series for k, v in s}
    assert {dict(s)["status"] for s in series if dict(s)["route"] == "/entities/{entity_id}"} == {"200", "404"}
    assert labels["/events/{event_id}"]["method"] == "GET"
    assert not any("/entities/x" == dict(s)["route"] or "nobody" in dict(s)["route"] for s in series)


def test_random_paths_and_methods_add_no_series(app: App) -> None:
    rng = random.Random(18)
    for method in ("GET", "BREW"):  # the two series unknown paths may make, made beforehand
        app.request(method, "/no/such/path")
    app.metrics()
    before = http_series(app.metrics())
    for _ in range(1000):
        path = "/" + "/".join(
            "".join(rng.choices(string.ascii_letters + string.digits + "-._~%", k=rng.randint(1, 12)))
            for _ in range(rng.randint(1, 4))
        )
        method = rng.choice(["GET", "BREW", "PROPFIND", "X" + str(rng.randint(0, 10**6))])
        assert app.request(method, path).status_code in (404, 405)
    after = http_series(app.metrics())
    assert after == before, after - before  # not one series per path or method
    unmatched = {s for s in after if dict(s)["route"] == "unmatched"}
    assert {(dict(s)["method"], dict(s)["status"]) for s in unmatched} <= {("GET", "404"), ("other", "404")}
    assert app.metrics()["timeline_http_request_duration_seconds_count"][
        (("method", "other"), ("route", "unmatched"), ("status", "404"))
    ] >= 1


def test_each_runtime_has_its_own_registry(app: App, tmp_path: Path) -> None:
    other_db = tmp_path / "other.db"
    append_and_project(other_db, [news("m1", "2025-01-01", ("z",))])
    with pytest.MonkeyPatch.context() as mp:
        other = App(other_db, mp)
        try:
            other.runtime.service.store.append([candidate(news("m2", "2025-01-02", ("z",)))])
            assert other.metrics()["timeline_events_stored_total"] == {(): 1.0}
            assert app.metrics()["timeline_events_stored_total"] == {(): 0.0}
            assert other.metrics()["timeline_store_head"] == {(): 2}
        finally:
            other.close()


def test_metrics_are_open_unless_the_setting_asks_for_the_token(tmp_path: Path) -> None:
    db = tmp_path / "timeline.db"
    append_and_project(db, [news("n1", "2025-05-24", ("x",))])
    with pytest.MonkeyPatch.context() as mp:
        open_ = App(db, mp, TIMELINE_API_TOKEN="s3cret")
        try:
            assert open_.request("GET", "/metrics").status_code == 200
            assert open_.request("GET", "/metrics", params={"x": "1"}).status_code == 422
        finally:
            open_.close()
    with pytest.MonkeyPatch.context() as mp:
        closed = App(db, mp, TIMELINE_API_TOKEN="s3cret", TIMELINE_METRICS_REQUIRE_TOKEN="true")
        try:
            refused = closed.request("GET", "/metrics")
            assert refused.status_code == 401 and "Bearer" in refused.json()["error"]
            assert closed.request("GET", "/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
            assert closed.metrics(headers={"Authorization": "Bearer s3cret"})["timeline_store_head"] == {(): 1}
        finally:
            closed.close()


def test_requiring_the_token_without_a_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIMELINE_API_TOKEN", raising=False)
    monkeypatch.setenv("TIMELINE_METRICS_REQUIRE_TOKEN", "1")
    with pytest.raises(ValidationError, match="TIMELINE_API_TOKEN"):
        Settings()


def test_rebuild_progress_moves_from_zero_to_one(app: App) -> None:
    service = app.runtime.service
    service.start_rebuild(["timelines"])
    progress = by_projection(app.metrics()["timeline_rebuild_progress"])
    assert progress.pop("timelines") == 0.0 and set(progress.values()) == {1.0}
    while not service.rebuild_step(["timelines"])[2]:
        pass
    assert set(by_projection(app.metrics()["timeline_rebuild_progress"]).values()) == {1.0}


def by_projection(samples: dict[tuple[Any, ...], float]) -> dict[str, float]:
    return {dict(labels)["projection"]: value for labels, value in samples.items()}
