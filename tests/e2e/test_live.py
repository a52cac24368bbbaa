"""Live streams (docs/live.md) on a real ``timeline serve`` and a real Redis: server-sent events
of entries, updates and removals, resumed with ``Last-Event-ID``, heartbeats, the cap on streams,
a client that does not read disconnected while the others go on."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import uuid4
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from e2e_support import Server

pytestmark = pytest.mark.e2e

TARGET = "live-target"
CHANGES = ("entry", "update", "remove")


def news(event_id: str, entity: str, **over: Any) -> dict[str, Any]:
    event = {
        "id": event_id, "kind": "report", "occurred_at": f"2025-{1 + sum(event_id.encode()) % 12:02d}-01",
        "headline": f"Headline of {event_id}",
        "entities": [{"id": entity, "name": entity.replace("-", " ").title(), "role": "subject"}],
    }
    event.update(over)
    return event


def post(http: httpx.Client, events: list[dict[str, Any]], wait: bool = True) -> None:
    for i in range(0, len(events), 500):
        response = http.post("/events", params={"wait": "true"} if wait else {}, json=events[i : i + 500])
        assert response.status_code in (201, 202), response.text
        assert not response.json()["rejected"], response.text


class Listener(threading.Thread):
    """One SSE client in a thread of its own: collects messages until ``wanted`` changes came."""

    def __init__(self, server: Server, path: str, wanted: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.server, self.path, self.wanted, self.headers = server, path, wanted, headers or {}
        self.messages: list[tuple[str, int, dict[str, Any]]] = []  # (event, id, entry)
        self.comments = 0
        self.opened = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.server.base_url, timeout=httpx.Timeout(60.0)) as http:
                with connect_sse(http, "GET", self.path, headers=self.headers) as source:
                    assert source.response.status_code == 200, source.response.read()
                    assert source.response.headers["content-type"].startswith("text/event-stream")
                    self.opened.set()
                    for sse in source.iter_sse():
                        if sse.event in CHANGES:
                            self.messages.append((sse.event, int(sse.id), json.loads(sse.data)))
                        if len(self.messages) >= self.wanted:
                            return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.opened.set()

    def result(self, timeout: float = 120.0) -> list[tuple[str, int, dict[str, Any]]]:
        self.join(timeout)
        assert not self.is_alive(), f"{self.path}: {len(self.messages)} of {self.wanted} messages"
        assert self.error is None, repr(self.error)
        return self.messages


def _stored(http: httpx.Client, event_id: str) -> int:
    response = http.get(f"/events/{event_id}")
    assert response.status_code == 200, response.text
    return response.json()["position"]


def test_twenty_clients_get_their_entity_s_changes_and_one_resumes(serve) -> None:
    server = serve()
    with server.client() as http:
        post(http, [news("seed", TARGET)])
        clients = [Listener(server, f"/entities/{TARGET}/timeline/stream", 202) for _ in range(20)]
        for c in clients:
            c.start()
        for c in clients:
            assert c.opened.wait(30)
        mine = [news(f"mine-{i}", TARGET) for i in range(200)]
        others = [news(f"other-{i}", f"other-{i % 50}") for i in range(2000)]
        mixed = mine + others
        random.Random(17).shuffle(mixed)
        ordered = [e["id"] for e in mixed if e["id"].startswith("mine-")]  # publish order = store order
        post(http, mixed)
        post(http, [{"id": "fix", "kind": "correction", "occurred_at": "2025-06-01",
                     "details": {"corrects": ordered[10], "changes": {"headline": "Corrected"}}}])
        post(http, [{"id": "gone", "kind": "retraction", "occurred_at": "2025-06-02",
                     "details": {"retracts": ordered[20], "reason": "false"}}])
        fix, gone = _stored(http, "fix"), _stored(http, "gone")
        for c in clients:
            got = c.result()
            entries = [m for m in got if m[0] == "entry"]
            assert [m[2]["event_id"] for m in entries] == ordered
            assert [m[1] for m in entries] == [m[2]["position"] for m in entries]  # id: the store position
            assert [m[1] for m in got] == sorted(m[1] for m in got) and len({m[1] for m in got}) == 202
            assert got[200][:2] == ("update", fix) and got[200][2]["event_id"] == ordered[10]
            assert got[200][2]["headline"] == "Corrected" and got[200][2]["status"] == "corrected"
            assert got[201][:2] == ("remove", gone) and got[201][2]["event_id"] == ordered[20]
            assert got[201][2]["status"] == "retracted"
        # The same entry as the page shows it.
        page = {e["event_id"]: e for e in http.get(f"/entities/{TARGET}/timeline", params={"limit": 500}).json()["entries"]}
        assert clients[0].messages[200][2] == page[ordered[10]]
        assert clients[0].messages[5][2] == page[ordered[5]]
        # One reconnects after the 120th entry: exactly the rest, then what comes next.
        last = clients[3].messages[119][1]
        again = Listener(server, f"/entities/{TARGET}/timeline/stream", 83, headers={"Last-Event-ID": str(last)})
        again.start()
        assert again.opened.wait(30)
        post(http, [news("after", TARGET)])
        got = again.result()
        assert [(m[0], m[1]) for m in got] == [(m[0], m[1]) for m in clients[3].messages[120:]] + [
            ("entry", _stored(http, "after"))
        ]


def test_a_stream_resumes_from_far_back_and_with_the_query_parameter(serve) -> None:
    """Thousands of events later, a client resuming from a position far back reads the change
    log (no buffer holds them): every change of its entity, in order, none twice."""
    server = serve()
    with server.client() as http:
        events = [news(f"far-{i}", TARGET if i % 250 == 0 else f"noise-{i % 97}") for i in range(5000)]
        post(http, events)
        first = _stored(http, "far-0")
        wanted = [e["id"] for e in events if e["entities"][0]["id"] == TARGET]
        late = Listener(server, f"/entities/{TARGET}/timeline/stream?after={first - 1}", len(wanted))
        late.start()
        got = late.result()
        assert [m[2]["event_id"] for m in got] == wanted and {m[0] for m in got} == {"entry"}
        # Last-Event-ID wins over ``after`` (a browser reconnecting to a URL that has one).
        header = Listener(server, f"/entities/{TARGET}/timeline/stream?after=0", len(wanted) - 10,
                          headers={"Last-Event-ID": str(got[9][1])})
        header.start()
        assert [m[2]["event_id"] for m in header.result()] == wanted[10:]
        # Bad positions are refused, naming what was wrong.
        for params, headers, name in (({"after": "-1"}, {}, "after"), ({}, {"Last-Event-ID": "x"}, "Last-Event-ID"),
                                      ({"after": "99999999"}, {}, "after")):
            response = http.get(f"/entities/{TARGET}/timeline/stream", params=params, headers=headers)
            assert response.status_code == 422 and response.json()["error"].startswith(name), response.text
        assert http.get("/entities/nobody-at-all/timeline/stream").status_code == 404
        assert http.get("/timeline/stream", params={"role": "subject"}).status_code == 422
        assert http.get("/timeline/stream", params={"as_of": "2025"}).status_code == 422


def test_an_alias_moves_entries_into_a_stream(serve) -> None:
    server = serve()
    with server.client() as http:
        post(http, [news("tw-2", "twitter-inc", occurred_at="2023-02-01"),
                    news("tw-1", "twitter-inc", occurred_at="2023-01-01"), news("x-1", "x-corp")])
        listener = Listener(server, "/entities/x-corp/timeline/stream", 3)
        listener.start()
        assert listener.opened.wait(30)
        post(http, [{"id": "merge", "kind": "entity_alias", "occurred_at": "2023-07-24",
                     "details": {"alias": "twitter-inc", "canonical": "x-corp"}}])
        post(http, [news("tw-3", "twitter-inc")])
        merge = _stored(http, "merge")
        got = listener.result()
        assert [(m[0], m[1], m[2]["event_id"]) for m in got] == [  # moved in: in timeline order
            ("update", merge, "tw-1"), ("update", merge, "tw-2"), ("entry", _stored(http, "tw-3"), "tw-3")
        ]


def test_heartbeat_and_the_cap(serve) -> None:
    server = serve(TIMELINE_STREAM_HEARTBEAT_SECONDS="0.3", TIMELINE_STREAM_MAX_CLIENTS="2")
    with server.client() as http:
        post(http, [news("hb", TARGET)])
        with httpx.Client(base_url=server.base_url, timeout=30) as a, httpx.Client(base_url=server.base_url, timeout=30) as b:
            with a.stream("GET", f"/entities/{TARGET}/timeline/stream") as one, b.stream("GET", "/timeline/stream") as two:
                assert one.status_code == two.status_code == 200
                lines = one.iter_lines()
                seen = [next(lines) for _ in range(6)]  # an idle stream: its start, then heartbeats only
                assert seen.count(": keepalive") >= 2, seen
                refused = http.get("/timeline/stream")
                assert refused.status_code == 503 and refused.headers["retry-after"].isdigit()
                assert "TIMELINE_STREAM_MAX_CLIENTS" in refused.json()["error"]
            # Closed streams give their places back.
            deadline = time.monotonic() + 10
            while True:
                with http.stream("GET", "/timeline/stream") as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline, "the closed streams' places were not given back"
                time.sleep(0.1)


def test_a_client_that_does_not_read_is_disconnected_and_the_others_go_on(serve) -> None:
    server = serve(TIMELINE_STREAM_SEND_TIMEOUT_SECONDS="1")
    with server.client() as http:
        post(http, [news("start", TARGET)])
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET /timeline/stream HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        # ~45 KB an entry, 13 MB in all: more than the sockets' buffers hold
        events = [
            news(f"big-{i}", TARGET, summary="s" * 5000,
                 sources=[{"url": f"https://example.com/{i}/{j}/{'a' * 1900}"} for j in range(20)])
            for i in range(300)
        ]
        fast = Listener(server, "/timeline/stream", len(events))
        fast.start()
        assert fast.opened.wait(30)
        for i in range(0, len(events), 30):
            post(http, events[i : i + 30])
        got = fast.result()
        assert [m[2]["event_id"] for m in got] == [e["id"] for e in events]
        # The slow client's socket did not drain within a second: the server closed it.
        deadline = time.monotonic() + 30
        while "did not read for 1 s" not in server.stderr():
            assert time.monotonic() < deadline, server.stderr()[-2000:]
            time.sleep(0.2)
        slow.settimeout(30)
        received = 0
        while chunk := slow.recv(1 << 20):
            received += len(chunk)
        assert received < sum(len(json.dumps(e)) for e in events)  # cut off, not served whole
        slow.close()


def test_open_streams_end_when_the_server_stops(serve) -> None:
    """SIGTERM with streams open: they are ended and the server exits (not held by them)."""
    server = serve()
    with server.client() as http:
        post(http, [news("bye", TARGET)])
    listeners = [Listener(server, "/timeline/stream", 10**6) for _ in range(3)]
    for listener in listeners:
        listener.start()
        assert listener.opened.wait(30)
    started = time.monotonic()
    assert server.terminate(timeout=30) == 0
    for listener in listeners:
        listener.join(10)
        assert not listener.is_alive()
    assert time.monotonic() - started < 30, time.monotonic() - started


def test_an_erasure_is_told_to_open_streams_and_a_resumed_one_never_shows_it(serve, tmp_path) -> None:
    """Erased through the API (the serving process) and with ``timeline erase`` (another
    process): open streams that showed the entry get ``remove`` with nothing of its content; a
    client resuming from before the event never sees it, one resuming after it is told."""
    token = "live-erasure-token"
    auth = {"Authorization": f"Bearer {token}"}
    marker = f"Zq{uuid4().hex[:10]}"
    data = tmp_path / "data"
    server = serve(token=token, db=data / "timeline.db")
    secret = news("erase-me", TARGET, headline=f"{marker} accused", summary=f"{marker} said so")
    secret["entities"].append({"id": f"{marker.lower()}-person", "name": f"{marker} Person", "role": "target"})
    with server.client(headers=auth) as http:
        post(http, [news("keep-0", TARGET), secret, news("keep-1", TARGET)])
        first, erased_at, last = (_stored(http, i) for i in ("keep-0", "erase-me", "keep-1"))
        held = Listener(server, f"/entities/{TARGET}/timeline/stream?after=0", 4)  # 3 entries, then the removal
        everyone = Listener(server, "/timeline/stream", 1)  # starts now: the page shows erase-me
        for listener in (held, everyone):
            listener.start()
            assert listener.opened.wait(30)
        deadline = time.monotonic() + 60
        while len(held.messages) < 3:
            assert time.monotonic() < deadline, held.messages
            time.sleep(0.05)
        answer = http.post("/events/erase-me/erase", json={"reason": "court order"})
        assert answer.status_code == 200, answer.text
        removed = {"event_id": "erase-me", "kind": "report", "position": erased_at, "status": "erased"}
        got = held.result()
        assert [(m[0], m[2]["event_id"]) for m in got[:3]] == [("entry", "keep-0"), ("entry", "erase-me"), ("entry", "keep-1")]
        assert got[3] == ("remove", last, removed)  # its id: the position the stream had reached
        assert everyone.result() == [("remove", last, removed)]

        # Reconnecting from before the event: never shown; from after it: told to remove it.
        before = Listener(server, f"/entities/{TARGET}/timeline/stream", 1, headers={"Last-Event-ID": str(first)})
        after = Listener(server, "/timeline/stream", 2, headers={"Last-Event-ID": str(erased_at)})
        for listener in (before, after):
            listener.start()
        assert [(m[0], m[1], m[2]["event_id"]) for m in before.result()] == [("entry", last, "keep-1")]
        assert [(m[0], m[1], m[2]) for m in after.result()][0] == ("remove", erased_at, removed)
        assert after.messages[1][2]["event_id"] == "keep-1"
        assert marker not in repr(before.messages + after.messages + got[3:])

    # Erased by another process while a stream is open: the stream is told within its poll.
    watching = Listener(server, f"/entities/{TARGET}/timeline/stream", 1)
    watching.start()
    assert watching.opened.wait(30)
    # (erased before its first read or after: a stream is told of erasures made once the
    # tables had reached its start)
    cli = subprocess.run([str(Path(sys.executable).parent / "timeline"), "erase", "keep-1", "--reason", "request"],
                         env=server.env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert [(m[0], m[2]["event_id"], m[2]["status"]) for m in watching.result()] == [("remove", "keep-1", "erased")]
    # No byte of any file keeps the marker (the entity it named has no id left either).
    found = [str(p) for p in data.rglob("*") if p.is_file() and marker.lower().encode() in p.read_bytes().lower()]
    assert found == []


def test_a_client_dropped_part_way_through_an_alias_s_entries_resumes_with_them(serve, backend) -> None:
    """A declaration that moves more entries than a page (50) into an entity's stream tells them
    all with its position as id: a client that drops after a few of them and reconnects with
    that id (``Last-Event-ID``) is told all of them again, then reads on, and holds every one."""
    server = serve()
    moved = [news(f"big-{i:03d}", "big-twitter", occurred_at=f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}")
             for i in range(60)]
    with server.client() as http:
        post(http, [*moved, news("big-x", "big-x")])
        before = _stored(http, "big-x")
        post(http, [{"id": "big-merge", "kind": "entity_alias", "occurred_at": "2023-07-24",
                     "details": {"alias": "big-twitter", "canonical": "big-x"}}])
        post(http, [news("big-later", "big-x")])
        merge, later = _stored(http, "big-merge"), _stored(http, "big-later")
        held: dict[str, dict[str, Any]] = {}

        def hold(event: str, entry: dict[str, Any]) -> None:
            if event == "remove":
                held.pop(entry["event_id"], None)
            else:
                held[entry["event_id"]] = entry

        first: list[tuple[str, int]] = []
        with httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(60.0)) as client:
            with connect_sse(client, "GET", "/entities/big-x/timeline/stream",
                             headers={"Last-Event-ID": "0"}) as source:
                assert source.response.status_code == 200, source.response.read()
                for sse in source.iter_sse():
                    if sse.event in CHANGES:
                        first.append((sse.event, int(sse.id)))
                        hold(sse.event, json.loads(sse.data))
                    if len(first) == 4:
                        break  # the connection drops here: closed with the rest of the page unread
        assert first == [("entry", before)] + [("update", merge)] * 3
        again = Listener(server, "/entities/big-x/timeline/stream", 61, headers={"Last-Event-ID": str(merge)})
        again.start()
        got = again.result()
        for event, _, entry in got:
            hold(event, entry)
        assert [m[1] for m in got] == [merge] * 60 + [later]  # all of the declaration's again, then on
        assert {m[0] for m in got[:60]} == {"update"} and len({m[2]["event_id"] for m in got[:60]}) == 60
        page = http.get("/entities/big-x/timeline", params={"limit": 500}).json()["entries"]
        assert held.keys() == {e["event_id"] for e in page} == {e["id"] for e in moved} | {"big-x", "big-later"}
