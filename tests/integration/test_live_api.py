"""The live streams' answers that are not streams (the app in process, ``httpx.ASGITransport``,
over a real store): unknown entities, bad parameters and positions, a change log not built yet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import app_in_process, append_and_project, news, projection_conn


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    db = tmp_path / "timeline.db"
    append_and_project(db, [news("n1", "2025-05-24", ("x",))])
    with app_in_process(db) as request:
        yield request, db


@pytest.mark.parametrize(
    ("path", "params", "headers", "named"),
    [
        ("/entities/x/timeline/stream", {"after": "-1"}, {}, "after"),
        ("/entities/x/timeline/stream", {"after": "1e3"}, {}, "after"),
        ("/entities/x/timeline/stream", {"after": "9" * 19}, {}, "after"),
        ("/entities/x/timeline/stream", {"after": "5"}, {}, "after"),  # beyond the store's head (1)
        ("/entities/x/timeline/stream", {}, {"Last-Event-ID": "²".encode()}, "Last-Event-ID"),
        ("/entities/x/timeline/stream", {"after": "0"}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
        ("/entities/x/timeline/stream", {"role": "boss"}, {}, "invalid parameter: role"),
        ("/entities/x/timeline/stream", {"kind": "nope"}, {}, "invalid parameter: kind"),
        ("/entities/x/timeline/stream", {"since": "2025"}, {}, "unknown query parameter: since"),
        ("/timeline/stream", {"role": "subject"}, {}, "unknown query parameter: role"),
        ("/timeline/stream", {"as_of": "2025"}, {}, "unknown query parameter: as_of"),
    ],
)
def test_bad_parameters_are_named(client: Any, path: str, params: dict, headers: dict, named: str) -> None:
    get, _ = client
    response = get(path, params=params, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(named), response.text


def test_an_unknown_entity_has_no_stream(client: Any) -> None:
    get, _ = client
    response = get("/entities/nobody/timeline/stream")
    assert response.status_code == 404 and "nobody" in response.json()["error"]


def test_no_change_log_yet_is_503_with_retry_after(client: Any) -> None:
    """Timelines projection tables of a version before the change log (being rebuilt): 503."""
    get, db = client
    conn = projection_conn(db, "timelines")
    (tag,) = conn.execute("SELECT tables_tag FROM projection_checkpoints WHERE name = 'timelines'").fetchone()
    conn.execute(f"DROP TABLE tl_changes{tag}")
    conn.commit()
    conn.close()
    response = get("/timeline/stream")
    assert response.status_code == 503 and response.headers["retry-after"].isdigit()
    assert "change log" in response.json()["error"]


def test_refused_streams_give_their_place_back(client: Any) -> None:
    """A request refused after taking a place (bad position, unknown entity) gives it back."""
    get, _ = client
    for _ in range(3):  # TIMELINE_STREAM_MAX_CLIENTS is 100: more than 100 refusals would show a leak
        for _ in range(40):
            assert get("/entities/x/timeline/stream", params={"after": "5"}).status_code == 422
            assert get("/entities/nobody/timeline/stream").status_code == 404
    assert get("/entities/x/timeline/stream", params={"after": "bad"}).status_code == 422
