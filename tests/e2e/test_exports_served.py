"""Exports on a real ``timeline serve`` over a real Redis: a 44,000-entry timeline streams with
the server's memory flat (its resident set measured while it sends 44,000 entries against while it
sends 4,000); on a 3,100-entry timeline (several of the exports' pages) every format holds what the
pages show, ``timeline export`` writes the same file from the store, and the directory and related
page through every entity exactly once."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import feedparser
import httpx
import pytest
import redis

from e2e_support import Server, all_pages, settle
from events.store import READER_CACHE_KIB

BIG = 44_000  # the flat memory test: sizes whose difference dwarfs what the server holds anyway
MEDIUM = 3_100  # the formats' test: several pages of the exports (PAGE = 500), not a memory test
SUMMARY = "A summary long enough to make each entry weigh about a kilobyte. " * 10


def _publish(redis_client: redis.Redis, stream: str, events: list[dict]) -> None:
    for i in range(0, len(events), 2000):
        with redis_client.pipeline(transaction=False) as pipe:
            for event in events[i : i + 2000]:
                pipe.xadd(stream, {"event": json.dumps(event)})
            pipe.execute()


def _event(i: int) -> dict:
    return {
        "id": f"big-{i:06}", "kind": ("report", "outage", "statement")[i % 3],
        "occurred_at": f"{2000 + i % 25}-{1 + i % 12:02}" + (f"-{1 + i % 28:02}" if i % 2 else ""),
        "headline": f"Event {i} = +{i} @ {'-' * (i % 3)}", "summary": SUMMARY,
        "entities": [{"id": "big", "name": "Big Entity", "role": "subject"},
                     {"id": f"other-{i % 1300:04}", "name": f"Other {i % 1300}", "role": "mentioned"}],
        **({"details": {"service": "Big"}} if i % 3 == 1 else {}),
        **({"details": {"speaker": "big", "quote": "q"}} if i % 3 == 2 else {}),
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _export_peak(server: Server, params: dict) -> tuple[int, int, int]:
    """``(bytes received, lines, the server's RSS growth in KiB at its peak while sending)``."""
    pid = server.pid
    assert pid is not None
    before = _rss_kib(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    size = lines = 0
    try:
        with httpx.stream("GET", f"{server.base_url}/entities/big/timeline", params=params, timeout=300) as response:
            assert response.status_code == 200, response.read()
            for chunk in response.iter_bytes():
                size += len(chunk)
                lines += chunk.count(b"\n")
    finally:
        done.set()
        sampler.join()
    return size, lines, peak - before


def _serving(serve, redis_client: redis.Redis, stream_name: str, n: int, **settings: str) -> Server:
    server = serve(TIMELINE_BATCH_SIZE="2000", **settings)
    _publish(redis_client, stream_name, [_event(i) for i in range(n)])
    settle(server, redis_client, timeout=300)
    return server


@pytest.fixture
def big(serve, redis_client: redis.Redis, stream_name: str) -> Server:
    """BIG entries, served by one reader thread (its page caches are the ones that fill)."""
    return _serving(serve, redis_client, stream_name, BIG, TIMELINE_READERS="1")


@pytest.fixture
def medium(serve, redis_client: redis.Redis, stream_name: str) -> Server:
    """MEDIUM entries: every format and the CLI across several of the exports' pages (500 entries
    each), every "other" entity named (1,300 of them, more than two directory pages)."""
    return _serving(serve, redis_client, stream_name, MEDIUM)


def test_a_44000_entry_export_streams_with_flat_memory(big: Server) -> None:
    _export_peak(big, {"format": "ndjson", "limit": "4000"})  # warm: threads, connections, caches
    small_size, small_lines, small_growth = _export_peak(big, {"format": "ndjson", "limit": "4000"})
    size, lines, growth = _export_peak(big, {"format": "ndjson"})
    assert (small_lines, lines) == (4000, BIG)
    assert size > 40 * 1024 * 1024  # ~1 KB an entry: the whole would be ~45 MB in memory
    # Flat: sending eleven times as many entries grows the server by no more than what 4,000 did
    # plus what its one reader's SQLite page caches may still fill (a ceiling per connection:
    # the store's READER_CACHE_KIB and SQLite's default 2 MB for each attached projection file,
    # reached sooner by a longer read; with the default four reader threads, four such ceilings,
    # which made the old 12 MiB allowance fail when the pages of a read landed on several threads):
    # far from the 45 MB the whole export weighs, before any Python object of it.
    print(f"RSS growth: 4,000 entries {small_growth} KiB ({small_size} bytes); {BIG} entries {growth} KiB ({size} bytes)")
    caches = READER_CACHE_KIB + 4 * 2048
    assert growth < small_growth + caches + 2048, (small_growth, growth)
    assert growth < size // 1024 * 2 // 3


def test_every_format_exports_the_whole_timeline_as_the_pages_show_it(medium: Server, tmp_path: Path) -> None:
    big = medium
    with big.client(timeout=300) as http:
        paged = all_pages(http, "/entities/big/timeline", limit=500)
        assert len(paged) == MEDIUM
        ids = [e["event_id"] for e in paged]
        csv_rows = list(csv.DictReader(io.StringIO(http.get("/entities/big/timeline", params={"format": "csv"}).text)))
        assert [r["event_id"] for r in csv_rows] == ids
        assert [r["headline"] for r in csv_rows[:100]] == [e["headline"] for e in paged[:100]]
        slides = http.get("/entities/big/timeline", params={"format": "timelinejs"}).json()["events"]
        assert [s["unique_id"] for s in slides] == ids
        feed = feedparser.parse(http.get("/entities/big/timeline", params={"format": "atom"}).content)
        assert not feed.bozo and len(feed.entries) == MEDIUM
        lines = http.get("/timeline", params={"format": "ndjson", "kind": "outage"}).text.splitlines()
        assert [json.loads(line) for line in lines] == all_pages(http, "/timeline", limit=500, kind="outage")
    # the CLI, on the same store while the server runs, writes the same CSV
    out = tmp_path / "big.csv"
    env = {**os.environ, **{k: v for k, v in big.env.items() if k.startswith("TIMELINE_") or k == "REDIS_URL"}}
    script = Path(sys.executable).parent / "timeline"
    done = subprocess.run([str(script), "export", "big", "--format", "csv", "--output", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["event_id"] for r in rows] == ids
    assert not (tmp_path / "big.csv.partial").exists()
    # the directory and related page through every entity exactly once
    with big.client(timeout=60) as http:
        listed = []
        cursor = None
        while True:
            body = http.get("/entities", params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
            listed += [e["id"] for e in body["entities"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(listed) == len(set(listed)) == 1301  # big and other-0000 .. other-1299
        related = all_pages_of(http, "/entities/big/related")
        assert sorted(related) == sorted(i for i in listed if i != "big")


def all_pages_of(http: httpx.Client, path: str) -> list[str]:
    out, cursor = [], None
    while True:
        body = http.get(path, params={"limit": 200, **({"cursor": cursor} if cursor else {})}).json()
        out += [e["id"] for e in body["entities"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return out
