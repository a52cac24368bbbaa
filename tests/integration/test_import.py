"""``timeline.importer`` on real SQLite files: the consumer's judgment of each line, the rejects
file (every rejected line kept as it was, even one too long to hold), file order, idempotency,
and the same store whatever the number of validating processes."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from events.models import MAX_EVENT_BYTES
from timeline import importer
from timeline.importer import RejectsFile, import_events, rejects_path_for
from timeline.service import DeadLetter, TimelineService, classify
from timeline.settings import Settings


def report(i: int, **over: Any) -> dict[str, Any]:
    event = {"id": f"im-{i}", "kind": "report", "occurred_at": f"2025-{1 + i % 12:02d}", "headline": f"Report {i}",
             "entities": [{"id": f"im-e{i % 3}", "name": f"E {i % 3}", "role": "subject"}]}
    event.update(over)
    return event


def line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


@pytest.fixture
def service(db: Path) -> Any:
    svc = TimelineService(Settings(TIMELINE_DB=str(db), TIMELINE_VALIDATORS=0))
    yield svc
    svc.close()


def stored(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT position, event_id, kind, content_hash, raw, body FROM events ORDER BY position"
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def hostile_lines() -> list[bytes]:
    too_large = line(report(900, summary="x" * 4000, details={"category": "y" * (MAX_EVENT_BYTES)}))
    return [
        line(report(1)),
        b"   ",  # blank: skipped, but counted as a line
        b"  " + line(report(2)) + b"\t",  # stripped, as timeline publish strips
        b'{"kind": "report", "occurred_at": "2025-05"',  # bad_json
        b'{"kind": "report", "occurred_at": "2025", "headline": "caf\xe9", "entities": []}',  # not UTF-8
        line({"kind": "report", "occurred_at": "2025"}),  # schema
        line(report(1)),  # the same again: a duplicate
        line(report(1, headline="Other")),  # id_conflict
        too_large,  # too_large, held
        line({"id": "im-fix", "kind": "correction", "occurred_at": "2025-06",
              "details": {"corrects": "im-3", "changes": {"headline": "Report 3, corrected"}}}),  # waits for im-3
        line(report(3)),
        b'{"kind": "report", "headline": "' + b"z" * (importer.LINE_LIMIT * 2 + 17) + b'"}',  # too long to hold
        line(report(4)),
    ]


def test_each_line_is_judged_as_the_consumer_judges_it(service: TimelineService, db: Path, tmp_path: Path) -> None:
    lines = hostile_lines()
    rejects_path = tmp_path / "in.jsonl.rejected.jsonl"
    result = import_events(service, io.BytesIO(b"\n".join(lines) + b"\n"), rejects_path, workers=2,
                           transaction_events=3)
    assert (result.lines, result.stored, result.duplicates, result.rejected) == (12, 5, 1, 6)
    assert result.reasons == {"bad_json": 2, "schema": 1, "id_conflict": 1, "too_large": 2}
    assert [r[1] for r in stored(db)] == ["im-1", "im-2", "im-fix", "im-3", "im-4"]
    rejects = [json.loads(r) for r in rejects_path.read_bytes().splitlines()]
    by_line = {r["line"]: r for r in rejects}
    assert sorted(by_line) == [4, 5, 6, 8, 9, 12]
    for number, reject in by_line.items():
        original = lines[number - 1].strip()
        assert reject["event"].encode("utf-8", "surrogateescape") == original, number  # kept as it was
        if number != 12:  # the consumer, given the line as a stream entry's event, says the same
            judged = classify(b"1-0", {b"event": original})
            if isinstance(judged, DeadLetter):
                assert (reject["reason"], reject["error"]) == (judged.reason, judged.error)
    assert by_line[8]["reason"] == "id_conflict"
    assert by_line[12]["reason"] == "too_large" and f"{len(lines[11])} bytes" in by_line[12]["error"]
    state = service.store.state("im-3")
    assert state is not None and state[1].body["headline"] == "Report 3, corrected"


_POOL_RUNS = """
import io, json, sys, threading
from pathlib import Path
from timeline.importer import import_events
from timeline.service import TimelineService
from timeline.settings import Settings

tmp, data = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes()
out = {}
for workers, threads in ((0, 0), (1, 0), (2, 0), (2, 1)):
    name = f"w{workers}t{threads}"
    svc = TimelineService(Settings(TIMELINE_DB=str(tmp / name / "timeline.db")))
    stop = threading.Event()
    other = [threading.Thread(target=stop.wait) for _ in range(threads)]  # another thread: no fork
    for thread in other:
        thread.start()
    try:  # every chunk validated by the pool (none here while it starts)
        result = import_events(svc, io.BytesIO(data), tmp / f"{name}.rejects", workers=workers, local_start=False)
    finally:
        stop.set()
        svc.close()
    out[name] = [result.chunks_here, result.chunks_pooled, result.pool_start]
print(json.dumps(out))
"""


def test_the_number_of_validating_processes_changes_nothing(tmp_path: Path) -> None:
    """In a fresh interpreter (whether the pool forks depends on the threads the process runs,
    and a test session runs others'): forked, spawned or no validating processes, one store."""
    data = tmp_path / "lines.jsonl"
    data.write_bytes(b"\n".join(hostile_lines() + [line(report(i)) for i in range(10, 2500)]))
    done = subprocess.run([sys.executable, "-c", _POOL_RUNS, str(tmp_path), str(data)],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert runs == {"w0t0": [3, 0, ""], "w1t0": [0, 3, "fork"], "w2t0": [0, 3, "fork"], "w2t1": [0, 3, "spawn"]}
    stores = [stored(tmp_path / name / "timeline.db") for name in runs]
    assert stores[0] == stores[1] == stores[2] == stores[3]
    for name in runs:
        assert (tmp_path / f"{name}.rejects").read_bytes() == (tmp_path / "w0t0.rejects").read_bytes()


class SlowStart(io.BytesIO):
    """A file whose line ``hold`` is read only once the importer's pool is up: the lines before it
    are validated here while the pool starts, the rest by the pool (a chunk in flight at most)."""

    def __init__(self, data: bytes, hold: int) -> None:
        super().__init__(data)
        self.hold, self.read_so_far = hold, 0
        self.importer: Any = None

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        self.read_so_far += 1
        if self.read_so_far == self.hold and self.importer.workers:
            deadline = time.monotonic() + 120
            while not (self.importer.pool_ready is not None and self.importer.pool_ready.done()):
                assert time.monotonic() < deadline, "the validating processes did not start"
                time.sleep(0.01)
        return super().readline(size)


def test_lines_validated_here_while_the_pool_starts_are_judged_alike(tmp_path: Path) -> None:
    import threading

    data = b"\n".join(hostile_lines() + [line(report(i)) for i in range(10, 5000)])
    results = {}
    for name, workers in (("here", 0), ("both", 2)):
        db = tmp_path / name / "timeline.db"
        svc = TimelineService(Settings(TIMELINE_DB=str(db)))
        stop = threading.Event()
        other = threading.Thread(target=stop.wait)  # another thread: the pool is spawned, slowly
        other.start()
        try:
            imp = importer.Importer(svc, RejectsFile(tmp_path / f"{name}.rejects"), workers=workers)
            source = SlowStart(data, hold=2500)
            source.importer = imp
            result = imp.run(source)
            imp.rejects.close()
        finally:
            stop.set()
            svc.close()
        results[name] = (result, stored(db), (tmp_path / f"{name}.rejects").read_bytes())
    both = results["both"][0]
    assert both.pool_start == "spawn"
    assert both.chunks_here >= 2 and both.chunks_pooled >= 2, both  # each validated a part
    assert results["here"][1:] == results["both"][1:]
    assert (both.stored, both.rejected) == (results["here"][0].stored, results["here"][0].rejected)


def test_again_stores_nothing_and_leaves_no_stale_rejects(service: TimelineService, db: Path, tmp_path: Path) -> None:
    data = b"\n".join(line(report(i)) for i in range(50))
    path = tmp_path / "r.jsonl"
    path.write_text("from an earlier import\n")
    first = import_events(service, io.BytesIO(data), path)
    assert (first.stored, first.rejected, first.projected_by) == (50, 0, "rebuild")
    assert not path.exists()  # nothing rejected: the earlier file is gone
    again = import_events(service, io.BytesIO(data), path)
    assert (again.stored, again.duplicates, again.projected_by) == (0, 50, "catch-up")
    assert [r[0] for r in stored(db)] == list(range(1, 51))
    lowest = service.engine.lowest()
    assert lowest == 50  # the projections are at the head


def test_a_small_import_into_a_large_store_catches_up(service: TimelineService, tmp_path: Path) -> None:
    import_events(service, io.BytesIO(b"\n".join(line(report(i)) for i in range(100))), tmp_path / "a")
    small = import_events(service, io.BytesIO(b"\n".join(line(report(i)) for i in range(100, 120))), tmp_path / "b")
    assert small.projected_by == "catch-up" and service.engine.lowest() == 120


def test_rejects_path() -> None:
    assert rejects_path_for("data/events.jsonl", None) == Path("data/events.jsonl.rejected.jsonl")
    assert rejects_path_for("-", None) == Path("stdin.rejected.jsonl")
    assert rejects_path_for("-", "out/r.jsonl") == Path("out/r.jsonl")


def test_a_failed_import_leaves_no_partial_rejects(tmp_path: Path) -> None:
    rejects = RejectsFile(tmp_path / "r.jsonl")
    rejects.add(1, "bad_json", "event: not valid JSON", b"{")
    rejects.abandon()
    assert list(tmp_path.iterdir()) == []


def test_a_validating_process_killed_midway_changes_nothing(tmp_path: Path) -> None:
    import os
    import signal

    class Killing(importer.Importer):
        killed = False

        def _take(self, chunk: Any, future: Any) -> None:
            if not self.killed and self._pool is not None:
                Killing.killed = True
                os.kill(next(iter(self._pool._processes)), signal.SIGKILL)  # noqa: SLF001
                time.sleep(0.5)
            super()._take(chunk, future)

    data = b"\n".join(line(report(i)) for i in range(12_000))
    stores = []
    for name, cls in (("plain", importer.Importer), ("killed", Killing)):
        db = tmp_path / name / "timeline.db"
        svc = TimelineService(Settings(TIMELINE_DB=str(db)))
        try:
            result = cls(svc, RejectsFile(tmp_path / f"{name}.rejects"), workers=2, local_start=False).run(
                io.BytesIO(data)
            )
        finally:
            svc.close()
        assert (result.stored, result.rejected) == (12_000, 0)
        stores.append([r[1:] for r in stored(db)])
    assert Killing.killed and stores[0] == stores[1]


def mixed(n: int) -> list[bytes]:
    """News with shared entities, corrections (some before their target), retractions, an alias
    and a statement: what a rebuild defers (counts, pairs, names) and what it applies one by one."""
    out = []
    for i in range(n):
        entities = [{"id": f"mx-p{i % 7}", "name": f"Person {i % 7}", "type": "person", "role": "subject"},
                    {"id": f"mx-o{i % 5}", "name": f"Org {i % 5}", "type": "organization"}]
        out.append(line(report(i, id=f"mx-{i}", entities=entities, summary=f"storm number {i}")))
        if i % 50 == 10:
            out.append(line({"id": f"mx-fix-{i}", "kind": "correction", "occurred_at": "2025-12",
                             "details": {"corrects": f"mx-{i + 5}", "changes": {"headline": f"Corrected {i + 5}"}}}))
        if i % 97 == 3:
            out.append(line({"id": f"mx-retract-{i}", "kind": "retraction", "occurred_at": "2025-12",
                             "details": {"retracts": f"mx-{i - 1}", "reason": "wrong"}}))
        if i % 400 == 7:
            out.append(line({"id": f"mx-said-{i}", "kind": "statement", "occurred_at": "2025-03",
                             "headline": "Said", "entities": [{"id": "mx-p1", "name": f"P. One {i}", "type": "person"}],
                             "details": {"speaker": "mx-p1", "quote": "words"}}))
    out.insert(40, line({"id": "mx-alias", "kind": "entity_alias", "occurred_at": "2025-01",
                         "details": {"alias": "mx-o4", "canonical": "mx-o3"}}))
    return out


def tables(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table's rows, by projection and table, sorted (as test_rebuild_property's)."""
    from projections import default_projections

    bases = {p.name: list(p.schema) for p in default_projections()}
    out = {}
    for name, cp in engine.checkpoints().items():
        conn, tag = engine.connection(name), cp.tag
        for base in bases[name]:
            columns = "rowid, *" if base == "tl_search" else "*"  # a contentless index: its rowids
            out[f"{name}.{base}"] = sorted(conn.execute(f"SELECT {columns} FROM {base}{tag}").fetchall(), key=repr)
    assert len(out) == sum(map(len, bases.values()))
    return out


class Waiting(importer.Importer):
    """Waits, after each transaction, for the rebuild beside it to take that transaction's events:
    every batch of that rebuild runs while lines remain to be stored."""

    def _flush(self) -> None:
        super()._flush()
        follower, deadline = self._follower, time.monotonic() + 120
        while follower is not None and follower.failed is None and min(follower.reached.values()) < (
            self.report.last_position or 0
        ):
            assert time.monotonic() < deadline, "the rebuild beside the import did not move"
            time.sleep(0.01)


def test_projections_rebuilt_beside_the_import_equal_a_rebuild_after_it(tmp_path: Path) -> None:
    data = b"\n".join(mixed(3000))
    found = {}
    for name, follow in (("after", False), ("beside", True)):
        db = tmp_path / name / "timeline.db"
        svc = TimelineService(Settings(TIMELINE_DB=str(db)))
        try:
            result = Waiting(svc, RejectsFile(tmp_path / f"{name}.rejects"), workers=1, transaction_events=700,
                             follow=follow).run(io.BytesIO(data))
            assert result.projected_by == "rebuild" and result.rejected == 0
            assert result.projected_while_storing == (result.last_position if follow else 0)
            assert svc.engine.lowest() == svc.store.head() == result.last_position
            found[name] = tables(svc.engine)
        finally:
            svc.close()
    assert found["after"] == found["beside"]


def test_import_leaves_garbage_collection_as_it_was(service: TimelineService, tmp_path: Path) -> None:
    import gc

    assert gc.isenabled()
    import_events(service, io.BytesIO(b"\n".join(line(report(i)) for i in range(30))), tmp_path / "r", workers=0)
    assert gc.isenabled()
    with pytest.raises(OSError):
        import_events(service, Unreadable(b"\n".join(line(report(i)) for i in range(30))), tmp_path / "r", workers=0)
    assert gc.isenabled()


class Unreadable(io.BytesIO):
    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        if self.tell() > 100:
            raise OSError("the disk went away")
        return super().readline(size)
