"""The web page's routes (docs/ui.md), in process (``httpx.ASGITransport``) over a real store:
what is served, with which headers, and that it is all in the package."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import app_in_process, append_and_project, news
from timeline.ui import STATIC


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db = tmp_path_factory.mktemp("ui") / "timeline.db"
    append_and_project(db, [news("n1", "2025-05-24", ("x",))])
    with app_in_process(db) as request:
        yield request


def test_the_root_is_a_search_page_with_a_search_box(client: Any) -> None:
    answer = client("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert re.search(r'<input type="search"[^>]*name="q"', answer.text)
    assert answer.headers["content-security-policy"].startswith("default-src 'self';")
    assert "script-src 'self';" in answer.headers["content-security-policy"]
    assert client("/", "HEAD").status_code == 200  # curl -I, link checkers


def test_an_entity_page_is_served_for_a_known_entity_and_404_for_an_unknown_one(client: Any) -> None:
    known, unknown = client("/ui/entities/x"), client("/ui/entities/nobody-at-all")
    assert known.status_code == 200 and 'id="entries"' in known.text
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")


def test_every_script_and_style_the_pages_load_is_served_from_the_package(client: Any) -> None:
    pending = ["/", "/ui/entities/x"]
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        answer = client(path)
        assert answer.status_code == 200, path
        if path.endswith(".js") or path.endswith(".mjs"):
            assert answer.headers["content-type"].startswith("text/javascript"), path  # module scripts need it
        refs = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', answer.text)
        refs += [
            "/ui/static/" + str((STATIC / path.removeprefix("/ui/static/")).parent.joinpath(ref).resolve().relative_to(STATIC))
            for ref in re.findall(r'from "(\.{1,2}/[^"]+)"', answer.text)
        ]
        for ref in refs:
            if ref not in seen:
                seen.add(ref)
                pending.append(ref)
    assert "/ui/static/vendor/vis-timeline/vis-timeline-graph2d.min.mjs" in seen
    assert "/ui/static/ui/entries.js" in seen


def test_the_page_routes_stay_out_of_the_api_description(client: Any) -> None:
    paths = client("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/ui") for path in paths)


def test_a_path_outside_the_static_folder_is_not_served(client: Any) -> None:
    assert client("/ui/static/../api.py").status_code == 404
    assert client("/ui/static/%2e%2e/api.py").status_code == 404
