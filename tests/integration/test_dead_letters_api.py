"""``GET /dead-letters`` in process (``httpx.ASGITransport``) over a real Redis: the token,
pages and cursors, the reason filter with its bounded work, bytes that are not UTF-8, and
hostile parameters (drawn by Hypothesis) that are answered 4xx naming the parameter, never 5xx."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import InProcessApi as Api, append_and_project, news
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timeline.api import create_app
from timeline.deadletters import REASONS, read_page
from timeline.runtime import Runtime
from timeline.settings import Settings

TOKEN = "s3cret"



@pytest.fixture
def dead(redis_client: redis.Redis, stream_name: str) -> Iterator[list[str]]:
    """40 dead letters, reasons in turn (each fifth one is ``id_conflict``); the last is not UTF-8."""
    ids = []
    for i in range(40):
        event = b'{"kind":"report" \xff}' if i == 39 else f'{{"n": {i}}}'.encode()
        ids.append(redis_client.xadd(f"{stream_name}:dead", {
            "event": event, "reason": REASONS[i % 5], "error": f"event: number {i}", "source_id": f"1-{i}",
        }).decode())
    yield ids


def make_api(tmp_path: Any, redis_url: str, stream_name: str, token: str | None) -> tuple[Api, Runtime]:
    db = tmp_path / "timeline.db"
    append_and_project(db, [news("n1", "2025-05-24", ("x",))])
    env = {"TIMELINE_DB": str(db), "REDIS_URL": redis_url, "TIMELINE_STREAM": stream_name}
    if token:
        env["TIMELINE_API_TOKEN"] = token
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        runtime = Runtime(Settings(), consume=False)
    return Api(create_app(runtime, manage=False)), runtime


@pytest.fixture
def api(tmp_path: Any, redis_url: str, stream_name: str, dead: list[str]) -> Iterator[Api]:
    client, runtime = make_api(tmp_path, redis_url, stream_name, TOKEN)
    try:
        yield client
    finally:
        client.close()
        runtime.service.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_the_token_is_needed_to_read(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        answer = api.get("/dead-letters", headers=headers)
        assert answer.status_code == 401 and "dead letters" in answer.json()["error"]
    assert api.get("/dead-letters", headers=AUTH).status_code == 200


def test_without_a_token_setting_it_is_open(tmp_path: Any, redis_url: str, stream_name: str, dead: list[str]) -> None:
    client, runtime = make_api(tmp_path, redis_url, stream_name, None)
    try:
        assert len(client.get("/dead-letters").json()["dead_letters"]) == 40
    finally:
        client.close()
        runtime.service.close()


def follow(api: Api, **params: Any) -> tuple[list[dict[str, Any]], int]:
    letters, cursor, pages = [], None, 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        answer = api.get("/dead-letters", params=query, headers=AUTH)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        letters += body["dead_letters"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return letters, pages


def test_pages_follow_the_stream_and_the_fields_are_the_contract_s(api: Api, dead: list[str]) -> None:
    letters, pages = follow(api, limit=7)
    assert [d["id"] for d in letters] == dead and pages == 6
    first = letters[0]
    assert first == {
        "id": dead[0], "reason": "no_event", "error": "event: number 0", "source_id": "1-0", "event": '{"n": 0}',
        "event_base64": None,
    }
    last = letters[-1]
    assert last["event"] is None and base64.b64decode(last["event_base64"]) == b'{"kind":"report" \xff}'


def test_the_reason_filter(api: Api, dead: list[str]) -> None:
    letters, _ = follow(api, reason="id_conflict", limit=3)
    assert [d["id"] for d in letters] == dead[4::5]
    assert {d["reason"] for d in letters} == {"id_conflict"}


def test_a_filter_that_matches_little_does_bounded_work(redis_client: redis.Redis, stream_name: str, dead: list[str]) -> None:
    """With a budget of 3 entries examined, pages come back short (even empty) with a cursor,
    and following them finds every match."""
    found, cursor, pages = [], None, 0
    while True:
        page = read_page(redis_client, f"{stream_name}:dead", reason="id_conflict", limit=50, cursor=cursor, scan_budget=3)
        assert len(page.dead_letters) <= 1
        found += [d.id for d in page.dead_letters]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert found == dead[4::5] and pages >= 40 // 3


def test_a_page_holds_a_bounded_amount_of_event_bytes(redis_client: redis.Redis, stream_name: str, dead: list[str]) -> None:
    page = read_page(redis_client, f"{stream_name}:dead", limit=50, byte_budget=20)
    assert len(page.dead_letters) == 3 and page.next_cursor == dead[2]  # 8 + 8 + 8 bytes: over 20 at the third


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit"), ("limit=99999999999999999999999", "limit"),
        ("reason=nope", "reason"), ("cursor=abc", "cursor"), ("cursor=1-2-3", "cursor"), ("cursor=-1-0", "cursor"),
        ("cursor=18446744073709551616-0", "cursor"), ("cursor=" + "9" * 100, "cursor"), ("order=desc", "order"),
    ],
)
def test_bad_parameters_are_named(api: Api, query: str, named: str) -> None:
    answer = api.get(f"/dead-letters?{query}", headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert named in answer.json()["error"]


@pytest.mark.parametrize("cursor", ["0-0", "18446744073709551615-18446744073709551615", "18446744073709551615-0"])
def test_cursors_at_the_ends(api: Api, dead: list[str], cursor: str) -> None:
    answer = api.get("/dead-letters", params={"cursor": cursor}, headers=AUTH)
    assert answer.status_code == 200
    assert len(answer.json()["dead_letters"]) == (40 if cursor == "0-0" else 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["reason", "limit", "cursor"]),
    value=st.one_of(st.text(max_size=60), st.integers().map(str), st.from_regex(r"-?[0-9]{1,30}-[0-9]{1,30}", fullmatch=True)),
)
def test_hostile_parameters_never_5xx(api: Api, name: str, value: str) -> None:
    answer = api.get("/dead-letters", params={name: value}, headers=AUTH)
    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 422:
        assert name in answer.json()["error"]


def test_redis_away_is_503_naming_it(tmp_path: Any, stream_name: str) -> None:
    client, runtime = make_api(tmp_path, "redis://127.0.0.1:1/0", stream_name, None)
    try:
        answer = client.get("/dead-letters")
        assert answer.status_code == 503 and "dead-letter stream cannot be read" in answer.json()["error"]
    finally:
        client.close()
        runtime.service.close()
